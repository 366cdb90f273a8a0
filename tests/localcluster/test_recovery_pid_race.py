"""The window between the fork of an executor and the checkpoint of its pid: the cluster process dies
there (setting ``crash_at``, a ``kill -9`` at that exact point) and is started again on the same work
dir. As Mesos' containerizer (``src/slave/containerizer/mesos/containerizer.cpp`` ``_launch``/``exec``:
the child waits on a pipe until its pid is checkpointed), the executor never ran a line of its own:
nothing of its session survives, the restarted agent has no orphan, and the task is reported as the
Mesos agent reports it (``Slave::executorTerminated``: TASK_FAILED, REASON_EXECUTOR_TERMINATED for a
checkpointed task; a task of a framework without checkpointing is unknown to the agent: TASK_LOST)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster_process import ClusterProcess, alive, kill_left_behind, sessions_under
from localcluster.harness import EXECUTOR, Framework, task_info
from mesos_stateful.localcluster.procs import session_members

pytestmark = pytest.mark.slow

# The executor writes this file in its sandbox as its first act, then runs the pymesos test executor,
# whose task starts a member (``sleep``) in a process group of its own: what would be left running.
MARKER = "executor-ran"
COMMAND = f"echo $$ > {MARKER} && exec {sys.executable} {EXECUTOR}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterProcess]:
    proc = ClusterProcess(tmp_path, agents=1, executor_reregistration_timeout=2)
    try:
        yield proc
    finally:
        sessions = sessions_under(tmp_path)
        proc.stop()
        left = kill_left_behind(sessions)
        assert not left, f"processes left behind: {left}"


def _launch_and_crash(cluster: ClusterProcess, crash_at: str, checkpoint: bool) -> tuple[Framework, str, int]:
    """Start the cluster with ``crash_at``, launch one task: the cluster process dies at that point.
    Returns the framework, the task id and the pid the agent forked (from its log)."""
    cluster.flags["crash-at"] = crash_at
    cluster.start()
    cluster.wait_agents()
    fw = Framework(cluster.address, failover_timeout=3600, checkpoint=checkpoint)
    fw.start()
    offer = fw.offer()
    task = task_info(offer, "race-1", spec={"child": True})
    task["executor"]["command"] = {"value": COMMAND, "shell": True}
    fw.driver.launchTasks(offer["id"], [task])
    assert cluster.proc is not None
    cluster.proc.wait(60)  # it kills itself with SIGKILL at the crash point
    assert cluster.proc.returncode == -signal.SIGKILL, cluster.log.read_text()[-3000:]
    fw.stop(failover=True)
    forked = re.findall(r"forked executor exec-race-1 \(pid (\d+)\)", cluster.log.read_text())
    assert len(forked) == 1, cluster.log.read_text()[-3000:]
    del cluster.flags["crash-at"]
    return fw, "race-1", int(forked[0])


def _sandbox(cluster: ClusterProcess) -> Path:
    (sandbox,) = (cluster.work_dir / "cluster" / "agents").glob("*/slaves/*/frameworks/*/executors/*/runs/*")
    return sandbox


def _assert_nothing_survives(cluster: ClusterProcess, pid: int, sessions: set[int]) -> None:
    """Nothing of the forked process's session (nor of any session in the test's folders) is left,
    and it never ran the executor's command."""
    deadline = time.monotonic() + 30
    while (alive(pid) or any(session_members(s) for s in sessions | {pid})) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)
    assert not [s for s in sessions | {pid} if session_members(s)]
    assert not sessions_under(cluster.work_dir / "cluster")
    assert not (_sandbox(cluster) / MARKER).exists(), "the executor ran before its pid was checkpointed"


def _restart(cluster: ClusterProcess, fw: Framework, checkpoint: bool) -> Framework:
    cluster.start()
    cluster.wait_agents()
    again = Framework(
        cluster.address, failover_timeout=3600, framework_id=fw.framework_id, checkpoint=checkpoint
    )
    again.start()
    return again


def _reconcile(fw: Framework, task_id: str) -> Any:
    fw.clear("update")
    fw.driver.reconcileTasks([{"task_id": {"value": task_id}}])
    return fw.wait(
        "update",
        lambda s: s["task_id"]["value"] == task_id and s.get("reason") == "REASON_RECONCILIATION",
    )


def _completed(cluster: ClusterProcess, task_id: str, timeout: float = 30.0) -> str | None:
    """The state of ``task_id`` once among the completed tasks of /master/state (None if it is not
    within ``timeout``): the master completes a task when its terminal update is acknowledged,
    which pymesos sends after the framework saw the update."""
    deadline = time.monotonic() + timeout
    while True:
        for framework in cluster.state()["frameworks"]:
            for task in framework.get("completed_tasks", []):
                if task["id"] == task_id:
                    return str(task["state"])
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _containers(cluster: ClusterProcess) -> list[Path]:
    return list((cluster.work_dir / "cluster" / "agents").glob("*/containers/*.json"))


def test_crash_between_fork_and_pid_checkpoint_leaves_no_orphan(cluster: ClusterProcess) -> None:
    fw, task_id, pid = _launch_and_crash(cluster, "executor-forked", checkpoint=True)
    sessions = sessions_under(cluster.work_dir) | {pid}
    # The container was recorded before the fork, without a pid; no pid was checkpointed.
    (record,) = _containers(cluster)
    assert json.loads(record.read_text())["pid"] is None
    assert not list((cluster.work_dir / "cluster" / "agents").rglob("forked.pid"))
    # Its process, blocked before exec, exits as its agent is gone: it never ran the executor.
    _assert_nothing_survives(cluster, pid, sessions)

    again = _restart(cluster, fw, checkpoint=True)
    try:
        # The agent knows the checkpointed task, not its executor's pid: the container is gone
        # (Slave::executorTerminated: TASK_FAILED, REASON_EXECUTOR_TERMINATED, SOURCE_AGENT).
        failed = again.update(task_id, "TASK_FAILED", timeout=60)
        assert failed["reason"] == "REASON_EXECUTOR_TERMINATED" and failed["source"] == "SOURCE_AGENT"
        # The master has it completed, TASK_FAILED (reconciling a completed task answers
        # TASK_LOST in Mesos: only non-terminal tasks are looked up).
        assert _completed(cluster, task_id) == "TASK_FAILED"
        assert not _containers(cluster)  # the orphan's record is gone
        _assert_nothing_survives(cluster, pid, sessions)
        again.none("update", lambda s: s["task_id"]["value"] == task_id and s["state"] == "TASK_RUNNING")
    finally:
        again.stop(failover=True)


def test_crash_before_pid_checkpoint_without_checkpointing(cluster: ClusterProcess) -> None:
    fw, task_id, pid = _launch_and_crash(cluster, "executor-forked", checkpoint=False)
    sessions = sessions_under(cluster.work_dir) | {pid}
    _assert_nothing_survives(cluster, pid, sessions)
    again = _restart(cluster, fw, checkpoint=False)
    try:
        # Not checkpointed: unknown to the re-registered agent and to the new master.
        assert _reconcile(again, task_id)["state"] == "TASK_LOST"
        assert not _containers(cluster)
        _assert_nothing_survives(cluster, pid, sessions)
    finally:
        again.stop(failover=True)


def test_crash_after_pid_checkpoint_before_release(cluster: ClusterProcess) -> None:
    fw, task_id, pid = _launch_and_crash(cluster, "executor-checkpointed", checkpoint=True)
    sessions = sessions_under(cluster.work_dir) | {pid}
    # Its pid and start time are checkpointed (meta dir first, then the runtime record) ...
    (forked,) = (cluster.work_dir / "cluster" / "agents").rglob("forked.pid")
    assert int(forked.read_text()) == pid and (forked.parent / "forked.start").read_text()
    (record,) = _containers(cluster)
    assert json.loads(record.read_text())["pid"] == pid
    # ... but it was never released: it exits without running the executor.
    _assert_nothing_survives(cluster, pid, sessions)
    again = _restart(cluster, fw, checkpoint=True)
    try:
        failed = again.update(task_id, "TASK_FAILED", timeout=60)
        assert failed["reason"] == "REASON_EXECUTOR_TERMINATED" and failed["source"] == "SOURCE_AGENT"
        assert _completed(cluster, task_id) == "TASK_FAILED"
        assert not _containers(cluster)
    finally:
        again.stop(failover=True)


def test_released_executor_gets_the_environment_and_signals_of_a_direct_exec(cluster: ClusterProcess) -> None:
    """The launcher in between changes nothing the executor sees: its pid leads its session and is
    the checkpointed one, its environment is the agent's (README), no signal is left ignored by the
    launcher (Python ignores SIGPIPE/SIGXFSZ), and a command that cannot be exec'd fails the launch
    with the error ``subprocess`` gave (``shell: false``)."""
    cluster.start()
    cluster.wait_agents()
    fw = Framework(cluster.address, failover_timeout=3600)
    fw.start()
    try:
        offer = fw.offer()
        task = task_info(offer, "env-1", spec={"finish_in": 60})
        probe = "grep SigIgn /proc/$$/status > sigign; env -0 > environ; cat /proc/$$/stat > stat"
        task["executor"]["command"] = {"value": f"{probe}; exec {sys.executable} {EXECUTOR}", "shell": True}
        fw.driver.launchTasks(offer["id"], [task])
        fw.update("env-1", "TASK_RUNNING", timeout=60)
        sandbox = _sandbox(cluster)
        environ = dict(
            item.split("=", 1) for item in (sandbox / "environ").read_text().split("\0") if "=" in item
        )
        assert environ["MESOS_SANDBOX"] == environ["MESOS_DIRECTORY"] == str(sandbox)
        assert environ["MESOS_CHECKPOINT"] == "1" and environ["MESOS_SUBSCRIPTION_BACKOFF_MAX"] == "2secs"
        assert "LC_CTYPE" not in environ or "LC_CTYPE" in os.environ
        ignored = int((sandbox / "sigign").read_text().split()[1], 16)
        assert not ignored & (1 << (signal.SIGPIPE - 1)) and not ignored & (1 << (signal.SIGXFSZ - 1))
        stat = (sandbox / "stat").read_text()
        pid, sid = int(stat.split()[0]), int(stat[stat.rfind(")") + 2 :].split()[3])
        (forked,) = (cluster.work_dir / "cluster" / "agents").rglob("forked.pid")
        assert pid == sid == int(forked.read_text())

        offer = fw.offer()
        bad = task_info(offer, "bad-1")
        bad["executor"]["command"] = {"value": str(cluster.work_dir / "no-such-executor"), "shell": False}
        fw.driver.launchTasks(offer["id"], [bad])
        failed = fw.update("bad-1", "TASK_FAILED", timeout=60)
        assert failed["reason"] == "REASON_EXECUTOR_TERMINATED"
        assert failed["message"].startswith("Failed to launch executor: [Errno 2] No such file or directory")
    finally:
        fw.stop()
