"""The agent's checkpoint read back as Mesos' ``state::recover`` does: a torn last update record is
ignored, an unreadable executor is skipped, and a reused pid is never taken for the executor."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mesos_stateful.localcluster.checkpoint import MetaPaths, append_record, read_state, write_atomically
from mesos_stateful.localcluster.procs import is_alive, start_time


def _executor(paths: MetaPaths, eid: str) -> Path:
    write_atomically(paths.executor_info("fw", eid), {"executor_id": {"value": eid}})
    run = paths.run("fw", eid, f"c-{eid}")
    (run / "pids").mkdir(parents=True)
    (run / "pids" / "forked.pid").write_text("4242")
    return run


def test_state_with_a_torn_last_record_and_an_unreadable_executor(tmp_path: Path) -> None:
    paths = MetaPaths(tmp_path / "meta", "S0")
    write_atomically(paths.framework_info("fw"), {"id": {"value": "fw"}, "checkpoint": True})
    run = _executor(paths, "good")
    task = run / "tasks" / "t1"
    write_atomically(task / "task.info", {"task_id": {"value": "t1"}})
    append_record(
        task / "task.updates", {"type": "UPDATE", "update": {"state": "TASK_STARTING", "uuid": "a"}}
    )
    append_record(task / "task.updates", {"type": "ACK", "uuid": "a"})
    append_record(task / "task.updates", {"type": "UPDATE", "update": {"state": "TASK_RUNNING", "uuid": "b"}})
    with open(task / "task.updates", "a") as f:
        f.write('{"type": "ACK", "uu')  # the agent died while appending
    bad = _executor(paths, "bad")
    (bad.parent.parent / "executor.info").write_text("{not json")

    state = read_state(paths)
    executors = state["fw"].executors
    assert list(executors) == ["good"]
    run_state = executors["good"].run
    assert run_state.pid == 4242 and run_state.container_id == "c-good" and not run_state.completed
    t1 = run_state.tasks["t1"]
    assert [u["state"] for u in t1.updates] == ["TASK_STARTING", "TASK_RUNNING"]
    assert t1.acks == {"a"}  # "b" is still to be acknowledged: the agent re-sends it


def test_a_pid_names_the_executor_only_with_its_start_time() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = start_time(child.pid)
        assert started is not None
        assert is_alive(child.pid, started)
        assert not is_alive(child.pid, started + 1)  # same pid, another process: not the executor
    finally:
        child.kill()
        child.wait()
    assert not is_alive(child.pid, started)
    assert start_time(os.getpid()) is not None
