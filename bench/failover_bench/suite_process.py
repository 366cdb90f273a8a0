"""``--start-suite``: run ``python -m mesos_stateful.suite`` isolated from any other copy on the
machine (free ports for every service and the embedded etcd, agents on their own 127.0.N.x
addresses, a temp data dir, only the workloads asked for: redis by default), wait until its gateway
serves them, and stop it at the end (SIGTERM; then SIGKILL for anything of ours still running).
``relaunch_suite`` starts the runner again with the same settings and data dir (a restart of
``make run``); ``interrupt_suite`` stops it as Ctrl-C does (SIGINT to the runner, wait)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc

from failover_bench.procs import Children
from failover_bench.suite import Api
from mesos_stateful.common.server import is_serving
from mesos_stateful.testing.ports import free_port_run, free_ports

log = logging.getLogger("bench.suite")

MARKER_VAR = "STATEFUL_BENCH_MARKER"


@dataclass
class StartedSuite:
    endpoint: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    marker: str
    env: dict[str, str]
    workloads: tuple[str, ...] = ("redis",)
    started_at: float = 0.0  # time.monotonic() just before the runner was started


def suite_env(
    data_dir: Path, marker: str, workloads: tuple[str, ...] = ("redis",)
) -> tuple[str, dict[str, str]]:
    gateway, state, offers, lifecycle, master, etcd_client, etcd_peer, console = free_ports(8)
    # The workload services listen on consecutive ports from this base, one per workload.
    taken = {gateway, state, offers, lifecycle, master, etcd_client, etcd_peer, console}
    workload_port = free_port_run(len(workloads))
    while taken & set(range(workload_port, workload_port + len(workloads))):
        workload_port = free_port_run(len(workloads))
    subnet = random.randint(64, 250)
    env = {
        **os.environ,
        MARKER_VAR: marker,
        "STATEFUL_SUITE_DATA_DIR": str(data_dir),
        "STATEFUL_SUITE_GATEWAY": f"127.0.0.1:{gateway}",
        "STATEFUL_SUITE_STATE": f"127.0.0.1:{state}",
        "STATEFUL_SUITE_OFFERS": f"127.0.0.1:{offers}",
        "STATEFUL_SUITE_LIFECYCLE": f"127.0.0.1:{lifecycle}",
        "STATEFUL_SUITE_MASTER": f"127.0.0.1:{master}",
        "STATEFUL_SUITE_WORKLOADS": json.dumps(list(workloads)),
        "STATEFUL_SUITE_WORKLOAD_BASE_PORT": str(workload_port),
        "STATEFUL_SUITE_CONSOLE": f"127.0.0.1:{console}",
        "STATEFUL_SUITE_METRICS_BASE_PORT": "0",  # no /metrics: a bench measures, nothing scrapes
        # Inherited by the services the suite starts:
        "STATEFUL_STATE_EMBEDDED_CLIENT_PORT": str(etcd_client),
        "STATEFUL_STATE_EMBEDDED_PEER_PORT": str(etcd_peer),
        "STATEFUL_CLUSTER_AGENT_IP_BASE": f"127.0.{subnet}.2",
        "STATEFUL_CLUSTER_AGENT_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    return f"127.0.0.1:{gateway}", env


async def start_suite(
    children: Children, data_dir: Path, timeout: float, workloads: tuple[str, ...] = ("redis",)
) -> StartedSuite:
    """Start an isolated suite and wait until its gateway lists every workload asked for."""
    started = launch_suite(children, data_dir, workloads)
    await wait_serving(started, timeout)
    return started


def launch_suite(children: Children, data_dir: Path, workloads: tuple[str, ...] = ("redis",)) -> StartedSuite:
    """Start the runner of an isolated suite (new ports, marker and agent addresses); no wait."""
    marker = uuid.uuid4().hex
    if not data_dir.is_absolute():  # leftovers are recognised by this path
        raise ValueError(f"data dir {data_dir} must be absolute")
    endpoint, env = suite_env(data_dir, marker, workloads)
    os.makedirs(data_dir, exist_ok=True)
    log_path = data_dir / "suite.log"
    started_at = time.monotonic()
    process = _start_runner(children, log_path, env)
    log.info("starting the suite (gateway %s, log %s)", endpoint, log_path)
    return StartedSuite(endpoint, process, data_dir, log_path, marker, env, workloads, started_at)


def relaunch_suite(children: Children, suite: StartedSuite) -> None:
    """Start the runner again with the same ports, addresses, marker and data dir (the previous
    runner must have exited); its output is appended to the same log. No wait."""
    suite.started_at = time.monotonic()
    suite.process = _start_runner(children, suite.log_path, suite.env)
    log.info("starting the suite again (gateway %s, log %s)", suite.endpoint, suite.log_path)


def _start_runner(children: Children, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return children.start([sys.executable, "-m", "mesos_stateful.suite"], log_path=log_path, env=env)


async def wait_serving(started: StartedSuite, timeout: float) -> None:
    """Until the gateway lists every workload of ``started`` (RuntimeError with the log tail if the
    runner exits or ``timeout`` passes)."""
    process, log_path, endpoint = started.process, started.log_path, started.endpoint
    wanted = ", ".join(started.workloads)
    deadline = time.monotonic() + timeout
    api = Api(endpoint, None, 2.0)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the suite exited with code {process.returncode}; log tail:\n{tail(log_path)}"
                )
            if await is_serving(endpoint):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    if set(started.workloads) <= set(await api.workloads()):
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the suite's gateway did not serve the workloads {wanted} within {timeout:.0f}s; "
                    f"log tail:\n{tail(log_path)}"
                )
            await asyncio.sleep(0.2)
    finally:
        await api.close()


def interrupt_suite(children: Children, suite: StartedSuite, timeout: float) -> int | None:
    """What Ctrl-C in `make run`'s terminal does: SIGINT to the runner, then wait for it to stop its
    services. Returns its exit code, or None if it was still running after ``timeout``."""
    if suite.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            suite.process.send_signal(signal.SIGINT)
        try:
            suite.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
    children.forget(suite.process)
    return suite.process.returncode


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ours(pid: int, marker: str, data_dir: str) -> bool:
    """Whether a process belongs to this suite: the marker in its environment (inherited by every
    service and executor), or the data dir in its argv or as its working directory (redis-server
    rewrites its argv and environ area for its process title, but runs in its sandbox)."""
    proc = Path(f"/proc/{pid}")
    try:
        if f"{MARKER_VAR}={marker}".encode() in (proc / "environ").read_bytes().split(b"\0"):
            return True
    except OSError:
        pass
    try:
        if data_dir.encode() in (proc / "cmdline").read_bytes():
            return True
        cwd = os.readlink(proc / "cwd")
    except OSError:
        return False
    return cwd == data_dir or cwd.startswith(data_dir.rstrip("/") + "/")


def suite_processes(suite: StartedSuite) -> list[int]:
    """Pids of processes of this suite still present (other than this one)."""
    me = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != me and _ours(int(p.name), suite.marker, str(suite.data_dir))
    ]


def stop_suite(children: Children, suite: StartedSuite, grace: float) -> list[int]:
    """SIGTERM the runner (it stops its services in order), SIGKILL after ``grace``; then SIGKILL
    any process still carrying this run's marker. Returns the pids that had to be killed so."""
    children.stop(suite.process, grace)
    leftovers = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and int(p.name) != os.getpid()
        and _ours(int(p.name), suite.marker, str(suite.data_dir))
    ]
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers
