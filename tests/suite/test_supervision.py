"""Supervision of `make run`: a service killed with -9 is restarted with backoff and the suite
keeps running, with the members of a Redis instance untouched (same tasks, same processes, same
data); a second suite on the same data dir is refused before it starts anything and the first
one carries on (its workloads registered, a killed master failed over); a port taken before the
start is named in the error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from mesos_stateful.suite.processes import RestartPolicy

from .suite_helpers import ctl, processes_under, start_suite, stop_suite, suite_env, wait_until

KEYS = 100
REREGISTRATION_TIMEOUT = 2.0  # the local cluster's executor_reregistration_timeout (Mesos' default)


def holds_for(check: Callable[[], bool], seconds: float) -> None:
    """``check`` (which asserts) holds at every poll for ``seconds``: the test of something that
    must not happen has to watch for a while."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check()
        time.sleep(0.25)


@dataclass
class Suite:
    endpoint: str
    env: dict[str, str]
    runner: subprocess.Popen[str]
    data_dir: Path
    log: Path

    def status(self) -> dict[str, Any]:
        services: dict[str, Any] = json.loads((self.data_dir / "suite-status.json").read_text())["services"]
        return services

    def service(self, name: str) -> tuple[str, dict[str, Any]]:
        """The service called ``name`` (or its first replica, ``name-1``)."""
        services = self.status()
        for key in (name, f"{name}-1"):
            if key in services:
                return key, services[key]
        raise AssertionError(f"no service {name} in {sorted(services)}")

    def alive(self) -> bool:
        assert self.runner.poll() is None, self.log.read_text()[-5000:]
        return True


def _get(endpoint: str, name: str) -> dict[str, Any]:
    shown = ctl(endpoint, "get", name, "-o", "json", "--show-secrets")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


def _members(endpoint: str) -> dict[str, tuple[str, str, str]]:
    """member id -> (task id, role, state)."""
    instance = _get(endpoint, "cache")["instance"]
    return {m["id"]: (m["taskId"], m["role"], m["state"]) for m in instance["members"]}


def _member_pids(data_dir: Path) -> dict[str, int]:
    """redis-server command line (it names host:port) -> pid, for the members under data_dir."""
    found = {}
    for line in processes_under(data_dir):
        pid, _, cmdline = line.partition(": ")
        if "redis-server" in cmdline.split(" ", 1)[0]:
            found[cmdline.split(" ")[1]] = int(pid)
    return found


def _master(endpoint: str) -> tuple[redis.Redis, dict[str, Any]]:
    shown = _get(endpoint, "cache")
    masters = [m for m in shown["instance"]["members"] if m.get("role") == "ROLE_MASTER"]
    assert len(masters) == 1, shown["instance"]["members"]
    m = masters[0]
    client = redis.Redis(
        host=m["host"],
        port=m["ports"]["redis"],
        password=shown["secrets"]["password"],
        socket_timeout=10,
        decode_responses=True,
    )
    return client, m


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    folder = tmp_path_factory.mktemp("supervision")
    data_dir = folder / "state"
    endpoint, env = suite_env(data_dir)
    env["STATEFUL_SUITE_CONTROLLER_REPLICAS"] = "1"  # standbys are tested with the leases
    env["STATEFUL_CLUSTER_EXECUTOR_REREGISTRATION_TIMEOUT"] = str(REREGISTRATION_TIMEOUT)
    log = folder / "suite.log"
    runner = start_suite(env, log)
    suite = Suite(endpoint, env, runner, data_dir, log)
    try:

        def registered() -> bool:
            suite.alive()
            listed = ctl(endpoint, "-o", "json", "workloads")
            return listed.returncode == 0 and "redis" in listed.stdout

        wait_until(registered, 180, "the suite to serve the redis workload")
        created = ctl(
            endpoint, "create", "redis", "cache", "--replicas", "3", "--wait", "--timeout", "180", timeout=240
        )
        assert created.returncode == 0, created.stdout + created.stderr
        client, _ = _master(endpoint)
        for i in range(KEYS):
            client.set(f"key-{i}", f"value-{i}")
        assert client.wait(2, 10_000) == 2, "both replicas acknowledge"
        yield suite
    finally:
        code = stop_suite(runner, 90)
        assert code == 0, log.read_text()[-5000:]
        wait_until(lambda: not processes_under(data_dir), 60, "every process of the suite to end")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["gateway", "redis", "state", "lifecycle", "offers", "cluster"])
def test_a_killed_service_is_restarted_and_members_are_untouched(suite: Suite, name: str) -> None:
    members = _members(suite.endpoint)
    pids = _member_pids(suite.data_dir)
    assert len(pids) == 3, pids
    key, before = suite.service(name)
    restarts = {k: v["restarts"] for k, v in suite.status().items()}

    os.kill(before["pid"], signal.SIGKILL)

    def back() -> bool:
        suite.alive()
        now = suite.service(name)[1]
        restarted: bool = (
            now["restarts"] == before["restarts"] + 1 and now["healthy"] and now["pid"] != before["pid"]
        )
        return restarted

    wait_until(back, 60, f"{key} restarted and serving")
    assert f"{key} exited with -9; restart {before['restarts'] + 1} in" in suite.log.read_text()
    # Nothing else was restarted.
    now = {k: v["restarts"] for k, v in suite.status().items()}
    assert now == {**restarts, key: restarts[key] + 1}

    # The API answers again and the members are the same tasks and the same processes.
    def answers() -> bool:
        return ctl(suite.endpoint, "get", "cache", "-o", "json").returncode == 0

    wait_until(answers, 60, "the gateway to answer through the restarted service")

    # ... and stay so for a while: a restarted local cluster waits up to the executor
    # re-registration timeout for the running executors before it reports any of them lost.
    def untouched() -> bool:
        assert _member_pids(suite.data_dir) == pids
        assert _members(suite.endpoint) == members
        return True

    holds_for(untouched, REREGISTRATION_TIMEOUT + 3.0)
    client, _ = _master(suite.endpoint)
    assert client.dbsize() == KEYS
    assert client.get(f"key-{KEYS - 1}") == f"value-{KEYS - 1}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_second_suite_on_the_same_data_dir_is_refused(suite: Suite) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "mesos_stateful.suite"],
        env=suite.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = second.stdout + second.stderr
    assert second.returncode != 0, output
    assert "another suite is running on the data dir" in output, output
    assert "Traceback" not in output, output
    assert "suite is up" not in output and "|" not in output, "it started something: " + output

    # The first suite is untouched: its workload is still registered, and a killed master is
    # still failed over (the lifecycle and offers of the first suite still act).
    suite.alive()
    listed = ctl(suite.endpoint, "-o", "json", "workloads")
    assert listed.returncode == 0 and "redis" in listed.stdout, listed.stdout + listed.stderr
    _, old = _master(suite.endpoint)
    master_pid = _member_pids(suite.data_dir)[f"{old['host']}:{old['ports']['redis']}"]
    os.kill(master_pid, signal.SIGKILL)

    def failed_over() -> bool:
        suite.alive()
        members = _members(suite.endpoint)
        masters = [m for m, (_, role, _) in members.items() if role == "ROLE_MASTER"]
        return masters not in ([], [old["id"]]) and all(
            state == "MEMBER_STATE_RUNNING" for _, _, state in members.values()
        )

    wait_until(failed_over, 180, "a replica to be promoted and the old master to come back")
    client, _ = _master(suite.endpoint)
    assert client.dbsize() == KEYS


@pytest.mark.slow
def test_a_port_in_use_is_named_before_anything_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    _, env = suite_env(data_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["STATEFUL_SUITE_STATE"] = f"127.0.0.1:{port}"
        refused = subprocess.run(
            [sys.executable, "-m", "mesos_stateful.suite"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert f"port {port} (state) is in use: is another suite running? set STATEFUL_SUITE_STATE=" in output
    assert "Traceback" not in output, output
    assert "|" not in output, "a service was started: " + output
    assert not processes_under(data_dir)


def test_an_agent_address_in_use_is_named_before_anything_starts(tmp_path: Path) -> None:
    # A second suite in another folder meets the first one's agents (127.0.0.2-6:5051): it must
    # say which setting moves them instead of crash-looping the local cluster.
    data_dir = tmp_path / "state"
    _, env = suite_env(data_dir)
    first_agent = env["STATEFUL_CLUSTER_AGENT_IP_BASE"]
    with socket.socket() as taken:
        taken.bind((first_agent, 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["STATEFUL_CLUSTER_AGENT_PORT"] = str(port)
        refused = subprocess.run(
            [sys.executable, "-m", "mesos_stateful.suite"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert f"port {port} (agent 0 executor API) is in use" in output, output
    assert "STATEFUL_CLUSTER_AGENT_IP_BASE" in output, output
    assert "Traceback" not in output, output
    assert not processes_under(data_dir)


def test_restart_backoff_doubles_then_stays_at_the_maximum() -> None:
    policy = RestartPolicy(initial_seconds=0.25, max_seconds=10.0, burst=5, window_seconds=60.0)
    assert [policy.delay(n) for n in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 10.0, 10.0, 10.0]
    with pytest.raises(ValueError, match="initial_seconds"):
        RestartPolicy(initial_seconds=5.0, max_seconds=1.0)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_suite_killed_with_9_leaves_no_service_and_its_members_run_on(tmp_path: Path) -> None:
    """Its services die with the runner (they would hold their ports), the local cluster without
    touching its members (killed, as a crashed Mesos agent), the lock is released once they are
    gone, and the suite starts again on the same data dir and ports with the same members: the
    restarted cluster recovers the running executors."""
    data_dir = tmp_path / "state"
    endpoint, env = suite_env(data_dir)
    env["STATEFUL_SUITE_CONTROLLER_REPLICAS"] = "1"
    env["STATEFUL_CLUSTER_EXECUTOR_REREGISTRATION_TIMEOUT"] = str(REREGISTRATION_TIMEOUT)
    log = tmp_path / "suite.log"
    runner = start_suite(env, log)
    try:

        def up(process: subprocess.Popen[str], times: int) -> bool:
            assert process.poll() is None, log.read_text()[-5000:]
            return log.read_text().count("suite is up") == times

        wait_until(lambda: up(runner, 1), 180, "the suite to be up")
        wait_until(lambda: "redis" in ctl(endpoint, "workloads").stdout, 60, "redis registered")
        created = ctl(
            endpoint, "create", "redis", "cache", "--replicas", "2", "--wait", "--timeout", "180", timeout=240
        )
        assert created.returncode == 0, created.stdout + created.stderr
        client, _ = _master(endpoint)
        client.set("greeting", "hello")
        assert client.wait(1, 10_000) == 1
        members = _members(endpoint)
        member_pids = _member_pids(data_dir)
        services = json.loads((data_dir / "suite-status.json").read_text())["services"]
        pids = [s["pid"] for s in services.values()]

        runner.kill()
        runner.wait(10)

        def gone() -> bool:
            return not any(Path(f"/proc/{pid}").exists() for pid in pids)

        wait_until(gone, 60, "every service to exit with the runner")
        assert _member_pids(data_dir) == member_pids, "a member was stopped with the suite"
        runner = start_suite(env, log)
        wait_until(lambda: up(runner, 2), 180, "the suite to be up again on the same ports")
        assert "is in use" not in log.read_text()

        def same_members() -> bool:
            assert _member_pids(data_dir) == member_pids
            assert _members(endpoint) == members
            return True

        holds_for(same_members, REREGISTRATION_TIMEOUT + 3.0)
        client, _ = _master(endpoint)
        assert client.get("greeting") == "hello"
    finally:
        assert stop_suite(runner, 90) == 0, log.read_text()[-5000:]
    wait_until(lambda: not processes_under(data_dir), 60, "every process of the suite to end")
