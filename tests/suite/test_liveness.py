"""Liveness of `make run`'s services: a service that hangs (SIGSTOP stands for a blocked event loop
or a deadlock) does not exit, so the supervisor probes it (Kubernetes' liveness probe: period,
timeout, failure threshold) and kills (SIGKILL) and restarts one that stops answering; a service
that answers NOT_SERVING is alive and left running.

The first tests run a :class:`Supervisor` over a small real gRPC server process; the others run the
whole suite with short liveness settings (``STATEFUL_SUITE_LIVENESS_*``) and a 3-member Redis, and
SIGSTOP the gateway, the redis workload service and the local cluster: each is killed and
restarted within the bound, the restart is counted, and the members are untouched (same tasks,
same processes, same data)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from mesos_stateful.suite.processes import Child, LivenessPolicy, Probe, RestartPolicy, Supervisor
from mesos_stateful.suite.settings import SuiteSettings
from mesos_stateful.testing.poll import eventually

from .suite_helpers import ctl, processes_under, service_ports, start_suite, stop_suite, suite_env, wait_until

# The suite's liveness settings in these tests: a hung service is killed within
# (failures + 1) * max(interval, timeout) = 4 s. The timeout leaves room for a loaded machine
# (a healthy service that answers late would be killed: the other services must stay untouched).
LIVENESS = LivenessPolicy(interval_seconds=0.5, timeout_seconds=1.0, failures=3)
KEYS = 100
REREGISTRATION_TIMEOUT = 2.0  # the local cluster's executor_reregistration_timeout (Mesos' default)

# A gRPC server with health only: SERVING for argv[2] seconds, then NOT_SERVING for good.
HEALTH_SERVER = """
import asyncio, sys
from mesos_stateful.common.server import build_server

async def main() -> None:
    served = await build_server(sys.argv[1], [], [])
    await asyncio.sleep(float(sys.argv[2]))
    await served.set_serving(False)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def poll(condition: Any, timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout`` seconds."""
    started = time.monotonic()
    await eventually(condition, what, timeout, interval=0.05)
    return time.monotonic() - started


def test_liveness_settings_are_checked_at_start_up() -> None:
    assert SuiteSettings.load([]).liveness_policy() == LivenessPolicy(1.0, 2.0, 5)
    for field, value in (
        ("liveness_interval_seconds", 0.0),
        ("liveness_timeout_seconds", -1.0),
        ("liveness_failures", 0),
    ):
        with pytest.raises(ValidationError, match="liveness"):
            SuiteSettings.model_validate({field: value})
    assert LivenessPolicy(0.5, 1.0, 3).bound_seconds == 4.0


async def test_probe_tells_serving_from_answered_from_silent() -> None:
    """Any gRPC answer is alive; a listener that never answers (what a stopped process's socket
    does: the kernel accepts, nobody reads) and a closed port are not, within the timeout."""
    (port,) = service_ports([1])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HEALTH_SERVER, f"127.0.0.1:{port}", "1.5"
    )
    try:
        child = Child("probe", [], grpc_address=f"127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while await child.probe(1.0) is not Probe.SERVING:
            assert time.monotonic() < deadline, "the health server never served"
            await asyncio.sleep(0.1)
        while await child.probe(1.0) is not Probe.ANSWERED:
            assert time.monotonic() < deadline, "NOT_SERVING was not taken as an answer"
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGSTOP)
        # Each probe waits its whole timeout for an answer (none inherits the failed connection
        # of the previous one, none gives up on the connection early).
        for _ in range(2):
            started = time.monotonic()
            assert await child.probe(0.5) is Probe.SILENT
            assert 0.45 <= time.monotonic() - started < 0.5 + 1.0
    finally:
        process.kill()
        await process.wait()
    assert await Child("closed", [], grpc_address=f"127.0.0.1:{port}").probe(0.5) is Probe.SILENT
    (http_port,) = service_ports([1])
    assert await Child("http", [], http_health_url=f"http://127.0.0.1:{http_port}/health").probe(0.5) is (
        Probe.SILENT
    )


@pytest.mark.timeout(120)
async def test_a_not_serving_child_is_left_running_and_a_stopped_one_is_killed_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    (port,) = service_ports([1])
    # SERVING for 1 s after each start, then NOT_SERVING ("up, but my dependency is down").
    child = Child("health", [sys.executable, "-c", HEALTH_SERVER, f"127.0.0.1:{port}", "1"])
    child.grpc_address = f"127.0.0.1:{port}"
    policy = LivenessPolicy(interval_seconds=0.2, timeout_seconds=0.5, failures=3)
    stopping = asyncio.Event()
    supervisor = Supervisor(child, RestartPolicy(initial_seconds=0.1), stopping, liveness=policy)
    caplog.set_level(logging.INFO, logger="suite")
    supervisor.start()
    try:
        await poll(supervisor.healthy.is_set, 30, "the child to serve")
        first = child.pid
        assert first is not None
        # Healthy follows the latest probe: NOT_SERVING clears it, and the child is not killed.
        await poll(lambda: not supervisor.healthy.is_set(), 10, "healthy to follow NOT_SERVING")
        await asyncio.sleep(3 * policy.bound_seconds)
        assert (child.pid, supervisor.restarts, supervisor.liveness_kills) == (first, 0, 0)
        assert supervisor.status()["healthy"] is False and supervisor.status()["failed_probes"] == 0

        os.kill(first, signal.SIGSTOP)
        stopped = time.monotonic()
        await poll(lambda: supervisor.liveness_kills == 1, policy.bound_seconds + 2, "the kill")
        killed_after = time.monotonic() - stopped
        # Each unanswered probe waited its timeout (the first may have begun before the stop).
        assert killed_after >= (policy.failures - 1) * policy.timeout_seconds
        await poll(lambda: not pid_alive(first), 5, "the stopped child to be gone")
        await poll(lambda: supervisor.healthy.is_set() and child.pid != first, 30, "a new child serving")
        assert (supervisor.restarts, supervisor.last_exit) == (1, -signal.SIGKILL)
        status = supervisor.status()
        assert (status["restarts"], status["liveness_kills"], status["healthy"]) == (1, 1, True)
        assert "health stopped answering its health check (3 probes in" in caplog.text
        assert "; killing it (restart 1)" in caplog.text
        assert "health exited with -9; restart 1 in" in caplog.text
    finally:
        stopping.set()
        if child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGCONT)
        await supervisor.stop(5)


@dataclass
class Suite:
    endpoint: str
    runner: subprocess.Popen[str]
    data_dir: Path
    log: Path

    def status(self) -> dict[str, Any]:
        services: dict[str, Any] = json.loads((self.data_dir / "suite-status.json").read_text())["services"]
        return services

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


def _master(endpoint: str) -> redis.Redis:
    shown = _get(endpoint, "cache")
    masters = [m for m in shown["instance"]["members"] if m.get("role") == "ROLE_MASTER"]
    assert len(masters) == 1, shown["instance"]["members"]
    m = masters[0]
    return redis.Redis(
        host=m["host"],
        port=m["ports"]["redis"],
        password=shown["secrets"]["password"],
        socket_timeout=10,
        decode_responses=True,
    )


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    folder = tmp_path_factory.mktemp("liveness")
    data_dir = folder / "state"
    endpoint, env = suite_env(data_dir)
    env["STATEFUL_SUITE_CONTROLLER_REPLICAS"] = "1"
    env["STATEFUL_CLUSTER_EXECUTOR_REREGISTRATION_TIMEOUT"] = str(REREGISTRATION_TIMEOUT)
    env["STATEFUL_SUITE_LIVENESS_INTERVAL_SECONDS"] = str(LIVENESS.interval_seconds)
    env["STATEFUL_SUITE_LIVENESS_TIMEOUT_SECONDS"] = str(LIVENESS.timeout_seconds)
    env["STATEFUL_SUITE_LIVENESS_FAILURES"] = str(LIVENESS.failures)
    log = folder / "suite.log"
    runner = start_suite(env, log)
    suite = Suite(endpoint, runner, data_dir, log)
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
        client = _master(endpoint)
        for i in range(KEYS):
            client.set(f"key-{i}", f"value-{i}")
        assert client.wait(2, 10_000) == 2, "both replicas acknowledge"
        yield suite
    finally:
        code = stop_suite(runner, 90)
        assert code == 0, log.read_text()[-5000:]
        wait_until(lambda: not processes_under(data_dir), 60, "every process of the suite to end")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["gateway", "redis", "cluster"])
def test_a_stopped_service_is_killed_and_restarted_and_members_are_untouched(suite: Suite, name: str) -> None:
    members = _members(suite.endpoint)
    pids = _member_pids(suite.data_dir)
    assert len(pids) == 3, pids
    before = suite.status()[name]
    assert before["healthy"] and before["pid"], before
    others = {k: (v["pid"], v["restarts"]) for k, v in suite.status().items() if k != name}

    os.kill(before["pid"], signal.SIGSTOP)
    stopped = time.monotonic()
    try:

        def killed() -> bool:
            suite.alive()
            now = suite.status()[name]
            return now["liveness_kills"] == before["liveness_kills"] + 1 and not pid_alive(before["pid"])

        # The kill comes within the liveness bound (plus a probe's overshoot and a loaded machine).
        wait_until(killed, LIVENESS.bound_seconds + 4.0, f"{name} killed for not answering")
        killed_after = time.monotonic() - stopped

        def back() -> bool:
            suite.alive()
            now = suite.status()[name]
            return bool(
                now["restarts"] == before["restarts"] + 1 and now["healthy"] and now["pid"] != before["pid"]
            )

        wait_until(back, 60, f"{name} restarted and serving")
        serving_after = time.monotonic() - stopped
        print(f"{name}: killed {killed_after:.1f} s after SIGSTOP, serving again after {serving_after:.1f} s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            if pid_alive(before["pid"]):
                os.kill(before["pid"], signal.SIGCONT)
    text = suite.log.read_text()
    assert f"{name} stopped answering its health check ({LIVENESS.failures} probes in" in text
    assert f"; killing it (restart {before['restarts'] + 1})" in text
    assert f"{name} exited with -9; restart {before['restarts'] + 1} in" in text
    # Nothing else was restarted.
    assert {k: (v["pid"], v["restarts"]) for k, v in suite.status().items() if k != name} == others

    # The API answers through the restarted service, and the members are the same tasks and the
    # same processes, and stay so past the restarted cluster's executor re-registration timeout.
    wait_until(
        lambda: ctl(suite.endpoint, "get", "cache", "-o", "json").returncode == 0, 60, "the gateway to answer"
    )
    deadline = time.monotonic() + REREGISTRATION_TIMEOUT + 3.0
    while time.monotonic() < deadline:
        assert _member_pids(suite.data_dir) == pids
        assert _members(suite.endpoint) == members
        time.sleep(0.25)
    client = _master(suite.endpoint)
    assert client.dbsize() == KEYS
    assert client.get(f"key-{KEYS - 1}") == f"value-{KEYS - 1}"
    client.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_master_killed_while_the_redis_service_hangs_is_failed_over(suite: Suite) -> None:
    """The tester's case: the redis workload service stopped, then the Redis master killed. The
    failover waited for as long as the service hung (2.5 min); now the hung service is killed and
    restarted within the liveness bound and the failover goes on. Last in the module: it replaces
    a member."""
    before = suite.status()["redis"]
    old = _master(suite.endpoint)
    old_address = (
        f"{old.connection_pool.connection_kwargs['host']}:{old.connection_pool.connection_kwargs['port']}"
    )
    old.close()
    old_master = next(m for m, (_, role, _) in _members(suite.endpoint).items() if role == "ROLE_MASTER")
    os.kill(before["pid"], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        os.kill(_member_pids(suite.data_dir)[old_address], signal.SIGKILL)

        def failed_over() -> bool:
            suite.alive()
            members = _members(suite.endpoint)
            masters = [m for m, (_, role, _) in members.items() if role == "ROLE_MASTER"]
            return masters not in ([], [old_master]) and all(
                state == "MEMBER_STATE_RUNNING" for _, _, state in members.values()
            )

        wait_until(failed_over, 90, "a replica promoted and the old master back as a replica")
        print(f"failed over {time.monotonic() - stopped:.1f} s after the redis service was stopped")
    finally:
        with contextlib.suppress(ProcessLookupError):
            if pid_alive(before["pid"]):
                os.kill(before["pid"], signal.SIGCONT)
    assert suite.status()["redis"]["liveness_kills"] == before["liveness_kills"] + 1
    client = _master(suite.endpoint)
    assert client.dbsize() == KEYS
    client.close()
