"""Assembles the gateway: state client, domain, servicer, auth, server with health/reflection."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.server import Served, build_server
from mesos_stateful.gateway.auth import BearerTokenInterceptor
from mesos_stateful.gateway.service import InstanceDomain
from mesos_stateful.gateway.servicer import InstanceServicer
from mesos_stateful.gateway.settings import GatewaySettings
from mesos_stateful.gateway.validation import RUNTIMES, Limits

SERVICE_NAME = api.DESCRIPTOR.services_by_name["InstanceService"].full_name


def limits_of(settings: GatewaySettings) -> Limits:
    return Limits(
        max_replicas=settings.max_replicas,
        max_cpus=settings.max_cpus,
        max_mem_mb=settings.max_mem_mb,
        max_disk_mb=settings.max_disk_mb,
        max_config_entries=settings.max_config_entries,
        default_runtime=RUNTIMES[settings.default_runtime],
    )


@dataclass
class GatewayServed(Served):
    """The running gateway server; it owns its state client and closes it on stop."""

    state: StateClient | None = None

    async def stop(self, grace_seconds: float = 5.0) -> None:
        await super().stop(grace_seconds)
        await self.close_state()

    async def close_state(self) -> None:
        if self.state is not None:
            await self.state.close()
            self.state = None


async def build_gateway_server(settings: GatewaySettings) -> GatewayServed:
    """Start the gateway on ``settings.listen`` (port 0: any; see ``.port``)."""
    state = StateClient(settings.state_endpoint)
    domain = InstanceDomain(
        state, limits_of(settings), settings.state_endpoint, settings.state_timeout_seconds
    )
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if settings.auth_token:
        interceptors.append(BearerTokenInterceptor(settings.auth_token))

    def register(server: grpc.aio.Server) -> None:
        api_grpc.add_InstanceServiceServicer_to_server(InstanceServicer(domain), server)

    try:
        served = await build_server(settings.listen, [register], [SERVICE_NAME], interceptors)
    except BaseException:
        await state.close()
        raise
    return GatewayServed(
        server=served.server,
        port=served.port,
        health=served.health,
        service_names=served.service_names,
        state=state,
    )
