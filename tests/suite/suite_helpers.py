"""Helpers of the `make run` tests: the suite runner on free ports and addresses of its own, run
from a data dir; statefulctl against it; processes under a folder."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mesos_stateful.testing.poll import eventually_sync

STATEFULCTL = [sys.executable, "-m", "mesos_stateful.cli"]


def suite_env(data_dir: Path, workloads: tuple[str, ...] = ("redis",)) -> tuple[str, dict[str, str]]:
    """Free ports for every service and agents on addresses of their own, so the test never meets
    a `make run` or another test on this machine."""
    # Below the kernel's ephemeral range: a port in it can be taken, while its service is down,
    # as the local port of any outgoing connection (and held up to 60 s in TIME_WAIT), so a
    # restarted service could not bind it again. Offers and lifecycle get room for replicas.
    gateway, state, master, etcd_client, etcd_peer, offers, lifecycle, workload_port, metrics, console = (
        service_ports([1, 1, 1, 1, 1, 4, 4, len(workloads), 10 + len(workloads), 1])
    )
    env = {
        **os.environ,
        "STATEFUL_SUITE_DATA_DIR": str(data_dir),
        "STATEFUL_SUITE_GATEWAY": f"127.0.0.1:{gateway}",
        "STATEFUL_SUITE_STATE": f"127.0.0.1:{state}",
        "STATEFUL_SUITE_OFFERS": f"127.0.0.1:{offers}",
        "STATEFUL_SUITE_LIFECYCLE": f"127.0.0.1:{lifecycle}",
        "STATEFUL_SUITE_MASTER": f"127.0.0.1:{master}",
        "STATEFUL_SUITE_WORKLOADS": json.dumps(list(workloads)),
        "STATEFUL_SUITE_WORKLOAD_BASE_PORT": str(workload_port),
        "STATEFUL_SUITE_METRICS_BASE_PORT": str(metrics),
        "STATEFUL_SUITE_CONSOLE": f"127.0.0.1:{console}",
        "STATEFUL_STATE_EMBEDDED_CLIENT_PORT": str(etcd_client),
        "STATEFUL_STATE_EMBEDDED_PEER_PORT": str(etcd_peer),
        "STATEFUL_CLUSTER_AGENT_IP_BASE": f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.2",
        "STATEFUL_CLUSTER_AGENT_PORT": "0",
        # A silent agent is noticed after 0.4-0.6 s instead of Mesos' 75-90 s.
        "STATEFUL_CLUSTER_AGENT_PING_TIMEOUT": "0.2",
        "STATEFUL_CLUSTER_MAX_AGENT_PING_TIMEOUTS": "2",
    }
    return f"127.0.0.1:{gateway}", env


def service_ports(runs: list[int], low: int = 10000, high: int = 20000) -> list[int]:
    """The first port of each run of consecutive free ports, all in [low, high): outside the
    kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default) and below the
    local cluster agents' port ranges (31000 on)."""
    chosen: list[int] = []
    taken: set[int] = set()
    for count in runs:
        for _ in range(200):
            base = random.randrange(low, high - count)
            span = set(range(base, base + count))
            if not span & taken and all(_bindable(p) for p in span):
                chosen.append(base)
                taken |= span
                break
        else:
            raise RuntimeError(f"no {count} consecutive free ports in [{low}, {high})")
    return chosen


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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


def start_suite(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[str]:
    """`make run`'s runner (output appended to ``log``); ``args``: its flags (`--runtime docker`)."""
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mesos_stateful.suite", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def create_when_up(
    runner: subprocess.Popen[str],
    log: Path,
    endpoint: str,
    workload: str = "redis",
    name: str = "cache",
    replicas: int = 3,
) -> None:
    """After :func:`start_suite`: wait for the suite to be up (its log says so; a runner that
    exits fails with the log's end), for ``workload`` to be registered, then ``statefulctl create
    WORKLOAD NAME --replicas N --wait``. Bounds: 240 s up, 60 s registered, 240 s the create."""

    def up() -> bool:
        assert runner.poll() is None, log.read_text()[-5000:]
        return "suite is up" in log.read_text()

    wait_until(up, 240, "the suite to be up")
    wait_until(lambda: workload in ctl(endpoint, "workloads").stdout, 60, f"{workload} registered")
    create = ["create", workload, name, "--replicas", str(replicas), "--wait", "--timeout", "180"]
    created = ctl(endpoint, *create, timeout=240)
    assert created.returncode == 0, created.stdout + created.stderr


def stop_suite(runner: subprocess.Popen[str], timeout: float = 90) -> int:
    """What Ctrl-C does: SIGINT, then wait for the runner to stop everything."""
    if runner.poll() is None:
        runner.send_signal(signal.SIGINT)
        try:
            return runner.wait(timeout)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait(10)
    return runner.returncode


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    eventually_sync(condition, what, timeout, interval=0.2)
