"""Test support for the gateway: an in-process gateway over the ``state_service`` fixture, and
fake workload registrations.

    from mesos_stateful.testing.state import etcd, state_service, state_client  # noqa: F401
    from mesos_stateful.testing.gateway import gateway, gateway_stub  # noqa: F401

Real workload services register under a lease; gateway tests write the Workload record directly
(``register_workload``), which is all the gateway reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest_asyncio

from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import Record, StateClient
from mesos_stateful.common.channels import channel_options
from mesos_stateful.common.grpc_errors import field_violations as field_violations  # re-exported for tests
from mesos_stateful.gateway.server import GatewayServed, build_gateway_server
from mesos_stateful.gateway.settings import GatewaySettings


class RunningGateway:
    """A started in-process gateway; ``.endpoint`` is its host:port."""

    def __init__(self, served: GatewayServed, settings: GatewaySettings) -> None:
        self.served = served
        self.settings = settings

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.served.port}"

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.endpoint, options=channel_options())

    async def stop(self) -> None:
        await self.served.stop(grace_seconds=0.5)


@asynccontextmanager
async def running_gateway(state_endpoint: str, **overrides: Any) -> AsyncIterator[RunningGateway]:
    """A gateway on a free port over the state service at ``state_endpoint``; settings overridable
    (e.g. ``auth_token="t"``, ``max_replicas=5``)."""
    values: dict[str, Any] = {"listen": "127.0.0.1:0", "state_endpoint": state_endpoint, **overrides}
    settings = GatewaySettings.model_validate(values)
    running = RunningGateway(await build_gateway_server(settings), settings)
    try:
        yield running
    finally:
        await running.stop()


def fake_workload(
    name: str = "redis",
    topology: int = types_pb2.TOPOLOGY_MASTER_REPLICA,
    cpus: float = 0.5,
    mem_mb: int = 256,
    disk_mb: int = 128,
    config_keys: Iterable[types_pb2.ConfigKey] | None = None,
    min_replicas: int = 0,
    max_replicas: int = 0,
    secret_names: Iterable[str] = (),
) -> types_pb2.Workload:
    """A Workload record as a workload service would register it."""
    keys = (
        list(config_keys)
        if config_keys is not None
        else [
            types_pb2.ConfigKey(name="appendonly", default_value="no", allowed_values=["yes", "no"]),
            types_pb2.ConfigKey(name="maxmemory-policy", default_value="noeviction"),
        ]
    )
    description = types_pb2.WorkloadDescription(
        name=name,
        topology=topology,  # type: ignore[arg-type]
        default_image=f"mesos-stateful/{name}:latest",
        port_names=["client"],
        default_resources=types_pb2.Resources(cpus=cpus, mem_mb=mem_mb, disk_mb=disk_mb),
        secret_names=list(secret_names),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        config_keys=keys,
        summary=f"fake {name} for tests",
    )
    return types_pb2.Workload(name=name, endpoint="127.0.0.1:1", description=description)


async def register_workload(state: StateClient, workload: types_pb2.Workload | None = None) -> Record:
    """Write a Workload record directly (no lease): enough for the gateway."""
    return await state.put(workload if workload is not None else fake_workload())


@pytest_asyncio.fixture
async def gateway(state_service: Any) -> AsyncIterator[RunningGateway]:
    """An in-process gateway (no auth) over the ``state_service`` fixture."""
    async with running_gateway(state_service.endpoint) as running:
        yield running


@pytest_asyncio.fixture
async def gateway_stub(gateway: RunningGateway) -> AsyncIterator[api_grpc.InstanceServiceAsyncStub]:
    """A stub of the ``gateway`` fixture's InstanceService."""
    async with gateway.channel() as channel:
        yield api_grpc.InstanceServiceStub(channel)
