"""``stateful-gateway``: the public API server."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import metrics
from mesos_stateful.common.logs import setup_logging
from mesos_stateful.common.metrics_server import serve_metrics
from mesos_stateful.common.server import serve_until_signal
from mesos_stateful.common.tracing import setup_tracing, shutdown_tracing
from mesos_stateful.gateway.member_metrics import MemberMetrics
from mesos_stateful.gateway.server import build_gateway_server
from mesos_stateful.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


async def run(settings: GatewaySettings) -> None:
    serve_metrics(settings.metrics_listen, metrics.GATEWAY)
    gateway = await build_gateway_server(settings)
    # The member gauges (stateful_members, ...) from the stored members: one collector per
    # suite, here (the lifecycle runs as several replicas), only while metrics are served.
    members: asyncio.Task[None] | None = None
    state: StateClient | None = None
    if settings.metrics_listen:
        state = StateClient(settings.state_endpoint)
        members = asyncio.create_task(MemberMetrics(state).run(), name="member-metrics")
    auth = "token required" if settings.auth_token else "no auth"
    log.info(
        "gateway serving stateful.v1.InstanceService on port %d (state service %s, %s)",
        gateway.port, settings.state_endpoint, auth,
    )
    try:
        await serve_until_signal(gateway)
    finally:
        if members is not None:
            members.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await members
        if state is not None:
            await state.close()
        await gateway.close_state()


def main() -> None:
    setup_tracing("gateway", start_roots=True)  # the API edge: its requests start traces
    settings = GatewaySettings.load()
    setup_logging("gateway", settings.log_level)
    try:
        asyncio.run(run(settings))
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
