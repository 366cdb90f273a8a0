"""Pytest fixtures for the state service; import them in a conftest:

from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from mesos_stateful.clients.state import StateClient
from mesos_stateful.state.server import StateServed, build_state_server
from mesos_stateful.state.store import Store
from mesos_stateful.testing.etcd import EtcdProcess


class StateService:
    """An in-process state server against a test etcd; ``restart()`` keeps its port."""

    def __init__(self, etcd_endpoint: str, port: int = 0, use_cache: bool = True) -> None:
        self.etcd_endpoint = etcd_endpoint
        self.port = port
        self.use_cache = use_cache
        self.served: StateServed | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        store = Store([self.etcd_endpoint], timeout=3.0, use_cache=self.use_cache)
        served = await build_state_server(store, f"127.0.0.1:{self.port}", health_interval=0.3)
        served.owns_store = True
        self.served = served
        self.port = served.port

    async def stop(self) -> None:
        if self.served is not None:
            await self.served.stop(grace_seconds=0.5)
            self.served = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@pytest_asyncio.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdProcess]:
    process = EtcdProcess(tmp_path / "etcd")
    await process.start()
    try:
        yield process
    finally:
        await process.kill()


@pytest_asyncio.fixture
async def state_service(etcd: EtcdProcess) -> AsyncIterator[StateService]:
    service = StateService(etcd.endpoint)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest_asyncio.fixture
async def state_client(state_service: StateService) -> AsyncIterator[StateClient]:
    client = StateClient(state_service.endpoint)
    await client.wait_ready()
    try:
        yield client
    finally:
        await client.close()
