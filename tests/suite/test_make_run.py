"""`make run` as a user meets it: the suite runner starts every service, `statefulctl create
--wait` gives a running replicated Redis, and Ctrl-C stops everything with no process left."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mesos_stateful.testing.workloads import free_ports

pytestmark = pytest.mark.slow

STATEFULCTL = [sys.executable, "-m", "mesos_stateful.cli"]


def suite_env(data_dir: Path) -> tuple[str, dict[str, str]]:
    """Free ports for every service and agents on addresses of their own, so the test never meets
    a `make run` or another test on this machine."""
    gateway, state, offers, lifecycle, master, etcd_client, etcd_peer, workloads = free_ports(8)
    env = {
        **os.environ,
        "STATEFUL_SUITE_DATA_DIR": str(data_dir),
        "STATEFUL_SUITE_GATEWAY": f"127.0.0.1:{gateway}",
        "STATEFUL_SUITE_STATE": f"127.0.0.1:{state}",
        "STATEFUL_SUITE_OFFERS": f"127.0.0.1:{offers}",
        "STATEFUL_SUITE_LIFECYCLE": f"127.0.0.1:{lifecycle}",
        "STATEFUL_SUITE_MASTER": f"127.0.0.1:{master}",
        "STATEFUL_SUITE_WORKLOADS": json.dumps(["redis"]),
        "STATEFUL_SUITE_WORKLOAD_BASE_PORT": str(workloads),
        "STATEFUL_STATE_EMBEDDED_CLIENT_PORT": str(etcd_client),
        "STATEFUL_STATE_EMBEDDED_PEER_PORT": str(etcd_peer),
        "STATEFUL_CLUSTER_AGENT_IP_BASE": f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.2",
        "STATEFUL_CLUSTER_AGENT_PORT": "0",
    }
    return f"127.0.0.1:{gateway}", env


def processes_under(folder: Path) -> list[str]:
    """Command lines of live processes whose command line or working directory is under folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(folder) in cmdline or cwd.startswith(str(folder)):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def ctl(endpoint: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STATEFULCTL, "--endpoint", endpoint, *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    data_dir = tmp_path / "state"
    endpoint, env = suite_env(data_dir)
    log = (tmp_path / "suite.log").open("w")
    runner = subprocess.Popen(
        [sys.executable, "-m", "mesos_stateful.suite"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield endpoint, runner, data_dir
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGINT)
            try:
                runner.wait(60)
            except subprocess.TimeoutExpired:
                runner.kill()
        log.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


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
    assert {"state.jsonl", "gateway.jsonl", "lifecycle.jsonl"} <= {p.name for p in traces.iterdir()}
    shown = subprocess.run(
        [sys.executable, "-m", "mesos_stateful.common.tracing", "show", str(traces), "--instance", "demo"],
        capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "step launch demo-0" in shown.stdout and "instance=demo" in shown.stdout, shown.stdout
    assert "callback Config" in shown.stdout and "outcome=OK" in shown.stdout, shown.stdout
