"""Fixtures of the framework-side conformance tests: real etcd + state service, the local cluster,
a recording proxy in front of its master, and the offers service (real pymesos) talking through it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

# pymesos must be imported on the main thread (it installs a SIGINT handler).
import mesos_stateful.offers.driver  # noqa: F401
from conformance.call_recorder import CallRecorder
from mesos_stateful.testing.cluster import RunningCluster, local_cluster  # noqa: F401
from mesos_stateful.testing.offers import OffersService
from mesos_stateful.testing.state import StateService, etcd, state_client, state_service  # noqa: F401


@pytest.fixture
def recorder(local_cluster: RunningCluster) -> Iterator[CallRecorder]:  # noqa: F811
    proxy = CallRecorder(local_cluster.master_address)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest_asyncio.fixture
async def recorded_offers_service(
    state_service: StateService,  # noqa: F811
    recorder: CallRecorder,
) -> AsyncIterator[OffersService]:
    """The offers service with its master at the recording proxy; explicit reconciliation every
    second so that RECONCILE with tasks is sent within a test."""
    service = OffersService(state_service.endpoint, recorder.address, reconcile_interval_seconds=1.0)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
