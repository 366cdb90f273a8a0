"""A workload service written in Node.js (``services/redis-node``, or one scaffolded by
``statefulctl new-workload NAME --lang node``) run as a real process for tests.

    service = NodeWorkload(package_dir, "STATEFUL_REDIS_NODE_", state_endpoint, log_dir)
    await service.start()          # node src/main.js on a free port; waits until Describe answers
    await service.wait_registered(client, "redis-node")
    await service.stop(deregister=False)   # SIGKILL: its registration expires with its lease

The process is found by its own pid (``Popen``), in its own session, its output in
``<log_dir>/<name>.log``. ``start()`` after ``stop()`` keeps the port, so its registration
stays valid (as the in-process :class:`~mesos_stateful.testing.lifecycle.RedisService`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import grpc

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as wpb
from mesos_stateful.api.stateful.v1 import workload_service_pb2_grpc as wgrpc
from mesos_stateful.testing.ports import free_port

#: The project's checkout (``services/mesos_stateful/testing/`` is three levels below it).
ROOT = Path(__file__).resolve().parents[3]
#: The Node.js Redis workload.
REDIS_NODE_DIR = ROOT / "services" / "redis-node"
#: Its workload name (what ``InstanceSpec.workload`` names) and settings prefix.
REDIS_NODE_NAME = "redis-node"
REDIS_NODE_PREFIX = "STATEFUL_REDIS_NODE_"


def node_binary() -> str:
    """The ``node`` on PATH; AssertionError naming the fix when there is none."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError(
            "node is not installed: run `make setup` (scripts/install_system_deps.sh installs it)"
        )
    return node


def check_installed(package_dir: Path) -> None:
    """AssertionError naming the fix when the package's dependencies are not installed."""
    if not (package_dir / "node_modules").is_dir():
        raise AssertionError(f"{package_dir}/node_modules is missing: run `npm ci` there (or `make setup`)")


class NodeWorkload:
    """One Node.js workload service process (``node <package_dir>/src/main.js``)."""

    def __init__(
        self,
        package_dir: Path,
        env_prefix: str,
        state_endpoint: str,
        log_dir: Path,
        settings: Mapping[str, Any] | None = None,
        name: str = "redis-node",
    ) -> None:
        self.package_dir = package_dir
        self.env_prefix = env_prefix
        self.state_endpoint = state_endpoint
        self.log_dir = log_dir
        self.settings = dict(settings or {})
        self.name = name
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def env(self) -> dict[str, str]:
        values = {"listen": self.endpoint, "state_endpoint": self.state_endpoint, **self.settings}
        own = {
            f"{self.env_prefix}{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in values.items()
        }
        # Only this service's own variables, not a parent's STATEFUL_* (e.g. a suite's settings).
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(self.env_prefix)}
        return {**inherited, **own}

    async def start(self, timeout: float = 30.0) -> None:
        """Start it (on a free port the first time, the same port after) and wait until it answers."""
        if self.running:
            return
        self.spawn()
        await self.wait_serving(timeout)

    def spawn(self) -> None:
        """Start the process (on a free port the first time, the same port after); no wait."""
        check_installed(self.package_dir)
        if not self.port:
            self.port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts + 1} of {self.name} ---\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            [node_binary(), str(self.package_dir / "src" / "main.js")],
            cwd=self.package_dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

    async def wait_serving(self, timeout: float = 30.0) -> wpb.DescribeResponse:
        """Until Describe answers; AssertionError with its log if it exits or does not answer."""
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.endpoint) as channel:
            stub = wgrpc.WorkloadServiceStub(channel)
            while True:
                try:
                    response: wpb.DescribeResponse = await stub.Describe(wpb.DescribeRequest(), timeout=1.0)
                    return response
                except grpc.aio.AioRpcError:
                    pass
                if not self.running:
                    raise AssertionError(f"{self.name} exited:\n{self.log_text()[-4000:]}")
                if time.monotonic() > deadline:
                    log = self.log_text()[-4000:]
                    raise AssertionError(f"{self.name} not answering in {timeout}s:\n{log}")
                await asyncio.sleep(0.1)

    async def wait_registered(self, client: Any, workload: str, timeout: float = 30.0) -> None:
        """Until the state service holds ``workload``'s record with this service's endpoint."""
        deadline = time.monotonic() + timeout
        while True:
            record = await client.find(spb.KIND_WORKLOAD, workload)
            if record is not None and record.workload.endpoint == self.endpoint:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{workload} not registered in {timeout}s:\n{self.log_text()[-4000:]}")
            await asyncio.sleep(0.1)

    async def stop(self, deregister: bool = True, grace_seconds: float = 10.0) -> None:
        """``deregister``: SIGTERM (it revokes its lease and drains), SIGKILL after
        ``grace_seconds``. Else SIGKILL at once, as a crash: its record lasts until its lease
        expires."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM if deregister else signal.SIGKILL)
            try:
                await asyncio.to_thread(process.wait, grace_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def redis_node(state_endpoint: str, log_dir: Path, **settings: Any) -> NodeWorkload:
    """The Node.js Redis workload with the tests' fast settings (as the in-process Python one)."""
    values: dict[str, Any] = {
        "lease_ttl_seconds": 6,
        "callback_timeout_seconds": 12.0,
        "connect_timeout_seconds": 3.0,
        "check_interval_ms": 300,
        **settings,
    }
    return NodeWorkload(REDIS_NODE_DIR, REDIS_NODE_PREFIX, state_endpoint, log_dir, values, REDIS_NODE_NAME)
