"""``--start-suite``: run ``python -m mesos_stateful.suite`` isolated from any other copy on the
machine (free ports for every service and the embedded etcd, agents on their own 127.0.N.x
addresses, a temp data dir, only the redis workload), wait until its gateway serves the redis
workload, and stop it at the end (SIGTERM; then SIGKILL for anything of ours still running)."""

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

from failover_bench.procs import Children, free_ports
from failover_bench.suite import Api
from mesos_stateful.common.server import is_serving

log = logging.getLogger("bench.suite")

MARKER_VAR = "STATEFUL_BENCH_MARKER"


@dataclass
class StartedSuite:
    endpoint: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    marker: str


def suite_env(data_dir: Path, marker: str) -> tuple[str, dict[str, str]]:
    gateway, state, offers, lifecycle, master, etcd_client, etcd_peer, workload_port = free_ports(8)
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
        "STATEFUL_SUITE_WORKLOADS": json.dumps(["redis"]),
        "STATEFUL_SUITE_WORKLOAD_BASE_PORT": str(workload_port),
        # Inherited by the services the suite starts:
        "STATEFUL_STATE_EMBEDDED_CLIENT_PORT": str(etcd_client),
        "STATEFUL_STATE_EMBEDDED_PEER_PORT": str(etcd_peer),
        "STATEFUL_CLUSTER_AGENT_IP_BASE": f"127.0.{subnet}.2",
        "STATEFUL_CLUSTER_AGENT_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    return f"127.0.0.1:{gateway}", env


async def start_suite(children: Children, data_dir: Path, timeout: float) -> StartedSuite:
    marker = uuid.uuid4().hex
    if not data_dir.is_absolute():  # leftovers are recognised by this path
        raise ValueError(f"data dir {data_dir} must be absolute")
    endpoint, env = suite_env(data_dir, marker)
    log_path = data_dir / "suite.log"
    os.makedirs(data_dir, exist_ok=True)
    process = children.start([sys.executable, "-m", "mesos_stateful.suite"], log_path=log_path, env=env)
    started = StartedSuite(endpoint, process, data_dir, log_path, marker)
    log.info("starting the suite (gateway %s, log %s)", endpoint, log_path)
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
                    if "redis" in await api.workloads():
                        return started
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the suite's gateway did not serve the redis workload within {timeout:.0f}s; "
                    f"log tail:\n{tail(log_path)}"
                )
            await asyncio.sleep(0.2)
    finally:
        await api.close()


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
