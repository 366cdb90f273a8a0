"""The ``offers_service`` fixture: an in-process offers service (real pymesos driver) on a free
port, against the ``state_service`` and ``local_cluster`` fixtures. ``restart()`` stops it with
failover (tasks keep running) and starts it again on the same port. ``start()`` waits until it
leads (offers runs with leader election; ``OffersService(..., wait_leading=False)`` for a standby).

Several replicas, as real processes a test can SIGKILL or SIGSTOP: :class:`ServiceProcess` (one
``python -m`` replica on a free port, its output in a log file of the test's folder) and
:class:`Replicas` (a group of them; which one leads is read from its lease in state).

Use it from a conftest::

    from mesos_stateful.testing.cluster import local_cluster  # noqa: F401
    from mesos_stateful.testing.offers import offers_service  # noqa: F401
    from mesos_stateful.testing.state import etcd, state_service  # noqa: F401
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import IO, Any

import grpc
import pytest_asyncio

# pymesos must be imported on the main thread (it installs a SIGINT handler).
import mesos_stateful.offers.driver  # noqa: F401
from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.leadership import find_leader
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.channels import channel_options
from mesos_stateful.common.server import is_serving
from mesos_stateful.offers.server import OffersServed, build_offers_server
from mesos_stateful.offers.settings import OffersSettings
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.ports import free_port
from mesos_stateful.testing.state import StateService

# Fast settings for tests (the defaults suit a real cluster).
TEST_SETTINGS: dict[str, Any] = {
    "refuse_seconds_unfit": 1.0,
    "orphan_check_interval_seconds": 2.0,
    "state_retry_seconds": 0.3,
    "grace_seconds": 0.5,
    "maintenance_rescind_grace_seconds": 1.0,
}


class OffersService:
    """An offers service in this process; ``stub`` is an OfferService client of it."""

    def __init__(self, state_endpoint: str, master: str, wait_leading: bool = True, **overrides: Any) -> None:
        self.state_endpoint = state_endpoint
        self.master = master
        self.wait_leading = wait_leading
        self.overrides = overrides
        self.port = 0
        self.served: OffersServed | None = None
        self._channel: grpc.aio.Channel | None = None
        self.stub: api_grpc.OfferServiceAsyncStub | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self) -> OffersSettings:
        values: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "state_endpoint": self.state_endpoint,
            "master": self.master,
            **TEST_SETTINGS,
        }
        values.update(self.overrides)
        return OffersSettings.model_validate(values)

    async def start(self, leading_timeout: float = 30.0) -> None:
        """Start, and (unless built with ``wait_leading=False``) wait until this replica leads
        (at once when no other holds the lease; after the lease expires when its holder died)."""
        self.served = await build_offers_server(self.settings())
        self.port = self.served.port
        self._channel = grpc.aio.insecure_channel(self.endpoint, options=channel_options())
        self.stub = api_grpc.OfferServiceStub(self._channel)
        if self.wait_leading:
            await self.served.wait_leading(leading_timeout)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self.stub = None
        if self.served is not None:
            await self.served.stop(grace_seconds=0.5)
            self.served = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def wait_subscribed(self, timeout: float = 30.0) -> api.GetClusterResponse:
        return await self.wait_cluster(lambda c: c.subscribed, timeout)

    async def wait_cluster(
        self, condition: Callable[[api.GetClusterResponse], bool], timeout: float = 30.0
    ) -> api.GetClusterResponse:
        """GetCluster until ``condition`` holds; AssertionError after ``timeout``."""
        assert self.stub is not None
        deadline = time.monotonic() + timeout
        while True:
            cluster = await self.stub.GetCluster(api.GetClusterRequest())
            if condition(cluster):
                return cluster
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster condition not met in {timeout}s; last: {cluster}")
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def offers_service(
    state_service: StateService, local_cluster: RunningCluster
) -> AsyncIterator[OffersService]:
    service = OffersService(state_service.endpoint, local_cluster.master_address)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


# --- replicas as real processes ---------------------------------------------------------------------


def env_of(prefix: str, settings: Mapping[str, Any]) -> dict[str, str]:
    """``{"listen": "h:p"}`` -> ``{"STATEFUL_X_LISTEN": "h:p"}`` for a service's settings."""
    return {f"{prefix}{key.upper()}": str(value) for key, value in settings.items()}


class ServiceProcess:
    """One replica of a service as a real process (``python -m <module>``) on a free port, in its
    own session, its output in ``<folder>/<name>.log``: a test can SIGKILL or SIGSTOP it."""

    def __init__(self, name: str, module: str, env: Mapping[str, str], folder: Path, port: int) -> None:
        self.name = name
        self.module = module
        self.env = dict(env)
        self.folder = folder
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts + 1} of {self.name} ---\n".encode())
        self._log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

    async def wait_serving(self, timeout: float = 60.0) -> None:
        """Until its gRPC health answers SERVING; AssertionError with its log if it exited."""
        deadline = time.monotonic() + timeout
        while not await is_serving(self.endpoint, timeout=1.0):
            if not self.running:
                raise AssertionError(f"{self.name} exited:\n{self.log_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not serving in {timeout}s:\n{self.log_text()[-4000:]}")
            await asyncio.sleep(0.1)

    def send(self, sig: int) -> None:
        """Send a signal (SIGKILL, SIGSTOP, SIGCONT, ...) to the process."""
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL (as a crash), and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._close_log()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM (SIGCONT first, in case it is stopped), SIGKILL after ``grace_seconds``."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, grace_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Replicas:
    """Replicas of one service (leader election role ``role``) as processes; the leader is the
    replica whose address its lease in state names."""

    def __init__(self, role: str, processes: list[ServiceProcess]) -> None:
        self.role = role
        self.processes = processes

    @property
    def running(self) -> bool:
        return any(p.running for p in self.processes)

    async def start(self, timeout: float = 60.0) -> None:
        """Start every replica not running and wait until each serves."""
        for process in self.processes:
            process.start()
        for process in self.processes:
            await process.wait_serving(timeout)

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))

    async def lease(self, client: StateClient) -> types_pb2.LeaderLease | None:
        return await find_leader(client, self.role)

    async def leader(self, client: StateClient) -> ServiceProcess | None:
        """The replica the lease names (its holder may have died since: the lease can be expired)."""
        lease = await self.lease(client)
        if lease is None:
            return None
        return next((p for p in self.processes if p.endpoint == lease.address), None)

    async def wait_leader(
        self, client: StateClient, timeout: float = 30.0, other_than: ServiceProcess | None = None
    ) -> tuple[ServiceProcess, float]:
        """Until a running replica (not ``other_than``) holds the lease: (it, monotonic time seen)."""
        deadline = time.monotonic() + timeout
        while True:
            leader = await self.leader(client)
            if leader is not None and leader is not other_than and leader.running:
                return leader, time.monotonic()
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}\n{p.log_text()[-3000:]}" for p in self.processes)
                raise AssertionError(
                    f"no {self.role} leader (other than {other_than.name if other_than else None}) "
                    f"in {timeout}s; lease: {await self.lease(client)}\n{logs}"
                )
            await asyncio.sleep(0.05)


def offers_processes(
    state_endpoint: str, master: str, folder: Path, replicas: int = 2, **overrides: Any
) -> Replicas:
    """``replicas`` offers processes (offers-1, offers-2, ...) on free ports (not started)."""
    processes = []
    for index in range(1, replicas + 1):
        port = free_port()
        settings = {
            "listen": f"127.0.0.1:{port}",
            "state_endpoint": state_endpoint,
            "master": master,
            **TEST_SETTINGS,
            **overrides,
        }
        env = env_of("STATEFUL_OFFERS_", settings)
        processes.append(ServiceProcess(f"offers-{index}", "mesos_stateful.offers", env, folder, port))
    return Replicas("offers", processes)
