"""Pytest fixtures for the state service; import them in a conftest:

from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401

(``shared_etcd``, session-scoped, and ``state_etcd`` are imported by tests/conftest.py for every test area.)

One etcd serves a whole test session (per xdist worker): ``state_service`` runs on the session's
``shared_etcd`` under a key root of its own (``/stateful-test/<random>/``, the state service's
``key_root`` setting), so tests do not see each other's records. A test that requests ``etcd``
(to stop, kill or restart it, or to read its keys) gets an etcd of its own, and ``state_service``
then runs on that one with the default key root.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aetcd import rpc

from mesos_stateful.clients import records
from mesos_stateful.clients.state import StateClient
from mesos_stateful.state.etcdkv import EtcdKV, prefix_end
from mesos_stateful.state.server import StateServed, build_state_server
from mesos_stateful.state.store import Store
from mesos_stateful.testing.etcd import EtcdProcess


class StateService:
    """An in-process state server against a test etcd; ``restart()`` keeps its port."""

    def __init__(
        self,
        etcd_endpoint: str,
        port: int = 0,
        use_cache: bool = True,
        key_root: str = records.DEFAULT_KEY_ROOT,
    ) -> None:
        self.etcd_endpoint = etcd_endpoint
        self.port = port
        self.use_cache = use_cache
        self.keys = records.Keys(key_root)
        self.served: StateServed | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        store = Store([self.etcd_endpoint], timeout=3.0, use_cache=self.use_cache, keys=self.keys)
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


def fresh_key_root() -> str:
    """A key root no other test uses (``/stateful-test/<12 hex>/``)."""
    return f"/stateful-test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture(scope="session")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """One etcd for the session (per xdist worker); tests use it under their own key root."""
    process = EtcdProcess(tmp_path_factory.mktemp("shared-etcd") / "etcd")
    asyncio.run(process.start())  # a sync fixture: set up outside any test's event loop
    try:
        yield process
    finally:
        process.etcd.kill()


@pytest_asyncio.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdProcess]:
    """An etcd of the test's own (it may stop, kill or restart it)."""
    process = EtcdProcess(tmp_path / "etcd")
    await process.start()
    try:
        yield process
    finally:
        await process.kill()


@pytest.fixture
def state_etcd(request: pytest.FixtureRequest) -> tuple[EtcdProcess, str]:
    """The etcd and key root of the test's state service: the test's own ``etcd`` when it
    requests it (default key root), else the session's ``shared_etcd`` under a key root of its own.
    (A sync fixture: it may set up the async ``etcd`` fixture, which an async fixture cannot.)"""
    if "etcd" in request.fixturenames:
        own: EtcdProcess = request.getfixturevalue("etcd")
        return own, records.DEFAULT_KEY_ROOT
    shared: EtcdProcess = request.getfixturevalue("shared_etcd")
    if not shared.running:  # a test stopped it behind the fixture's back
        asyncio.run(shared.restart())
    return shared, fresh_key_root()


@pytest_asyncio.fixture
async def state_service(state_etcd: tuple[EtcdProcess, str]) -> AsyncIterator[StateService]:
    """An in-process state service on ``state_etcd``."""
    etcd_process, key_root = state_etcd
    service = StateService(etcd_process.endpoint, key_root=key_root)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        if service.keys.root != records.DEFAULT_KEY_ROOT:
            await drop_key_root(service.etcd_endpoint, service.keys)


async def drop_key_root(endpoint: str, keys: records.Keys) -> None:
    """Delete every key under ``keys.root`` (a test's records on the shared etcd)."""
    kv = EtcdKV([endpoint], timeout=5.0)
    try:
        root = keys.root.encode()
        everything = rpc.DeleteRangeRequest(key=root, range_end=prefix_end(root))
        delete = rpc.RequestOp(request_delete_range=everything)
        await kv.txn([], [delete], [])
    finally:
        await kv.close()


@pytest_asyncio.fixture
async def state_client(state_service: StateService) -> AsyncIterator[StateClient]:
    client = StateClient(state_service.endpoint)
    await client.wait_ready()
    try:
        yield client
    finally:
        await client.close()
