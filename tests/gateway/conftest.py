from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.gateway import gateway, gateway_stub, register_workload  # noqa: F401
from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401


@pytest_asyncio.fixture
async def stub(
    gateway_stub: api_grpc.InstanceServiceAsyncStub,  # noqa: F811
    state_client: StateClient,  # noqa: F811
) -> AsyncIterator[api_grpc.InstanceServiceAsyncStub]:
    """The gateway's stub with the fake "redis" workload registered."""
    await register_workload(state_client)
    yield gateway_stub
