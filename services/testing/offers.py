"""The ``offers_service`` fixture: an in-process offers service (real pymesos driver) on a free
port, against the ``state_service`` and ``local_cluster`` fixtures. ``restart()`` stops it with
failover (tasks keep running) and starts it again on the same port.

Use it from a conftest::

    from mesos_stateful.testing.cluster import local_cluster  # noqa: F401
    from mesos_stateful.testing.offers import offers_service  # noqa: F401
    from mesos_stateful.testing.state import etcd, state_service  # noqa: F401
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest_asyncio

# pymesos must be imported on the main thread (it installs a SIGINT handler).
import mesos_stateful.offers.driver  # noqa: F401
from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as api_grpc
from mesos_stateful.offers.server import OffersServed, build_offers_server
from mesos_stateful.offers.settings import OffersSettings
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.state import StateService


class OffersService:
    """An offers service in this process; ``stub`` is an OfferService client of it."""

    def __init__(self, state_endpoint: str, master: str, **overrides: Any) -> None:
        self.state_endpoint = state_endpoint
        self.master = master
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
            "refuse_seconds_unfit": 1.0,
            "orphan_check_interval_seconds": 2.0,
            "state_retry_seconds": 0.3,
            "grace_seconds": 0.5,
        }
        values.update(self.overrides)
        return OffersSettings.model_validate(values)

    async def start(self) -> None:
        self.served = await build_offers_server(self.settings())
        self.port = self.served.port
        self._channel = grpc.aio.insecure_channel(self.endpoint)
        self.stub = api_grpc.OfferServiceStub(self._channel)

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
