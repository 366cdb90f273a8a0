"""`make run` as a user meets it: the suite runner starts every service, `statefulctl create
--wait` gives a running replicated Redis, and Ctrl-C stops everything with no process left."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .suite_helpers import ctl, processes_under, start_suite, stop_suite, suite_env, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    data_dir = tmp_path / "state"
    endpoint, env = suite_env(data_dir)
    runner = start_suite(env, tmp_path / "suite.log")
    try:
        yield endpoint, runner, data_dir
    finally:
        stop_suite(runner, 60)


def test_run_create_and_ctrl_c_leaves_nothing(
    suite: tuple[str, subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    endpoint, runner, data_dir = suite

    def redis_registered() -> bool:
        assert runner.poll() is None, (tmp_path / "suite.log").read_text()
        listed = ctl(endpoint, "-o", "json", "workloads")
        return listed.returncode == 0 and "redis" in listed.stdout

    wait_until(redis_registered, 120, "the suite to serve the redis workload")

    created = ctl(
        endpoint, "create", "redis", "demo", "--replicas", "3", "--wait", "--timeout", "120", timeout=150
    )
    assert created.returncode == 0, created.stdout + created.stderr
    shown = json.loads(ctl(endpoint, "get", "demo", "-o", "json").stdout)["instance"]
    assert shown["phase"] == "INSTANCE_PHASE_RUNNING"
    roles = sorted(m["role"] for m in shown["members"])
    assert roles == ["ROLE_MASTER", "ROLE_SLAVE", "ROLE_SLAVE"]
    assert any("redis-server" in p for p in processes_under(data_dir))

    runner.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert runner.wait(90) == 0, (tmp_path / "suite.log").read_text()
    wait_until(lambda: not processes_under(data_dir), 30, "every process of the suite to end")
    assert "stopped" in (tmp_path / "suite.log").read_text()

    # Tracing is on under `make run`: the deploy reads as step spans with their callbacks nested.
    traces = data_dir / "traces"
    # (The gateway's own spans are API roots, sampled at 1 % by default: its file may not exist.)
    assert {"state.jsonl", "lifecycle.jsonl"} <= {p.name for p in traces.iterdir()}
    shown = subprocess.run(
        [sys.executable, "-m", "mesos_stateful.common.tracing", "show", str(traces), "--instance", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "step launch demo-0" in shown.stdout and "instance=demo" in shown.stdout, shown.stdout
    assert "callback Config" in shown.stdout and "outcome=OK" in shown.stdout, shown.stdout
