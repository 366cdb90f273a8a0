"""``stateful-gateway``: the public API server."""

from __future__ import annotations

import asyncio
import logging

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.common.server import serve_until_signal
from mesos_stateful.common.tracing import setup_tracing, shutdown_tracing
from mesos_stateful.gateway.server import build_gateway_server
from mesos_stateful.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


async def run(settings: GatewaySettings) -> None:
    gateway = await build_gateway_server(settings)
    auth = "token required" if settings.auth_token else "no auth"
    log.info(
        "gateway serving stateful.v1.InstanceService on port %d (state service %s, %s)",
        gateway.port, settings.state_endpoint, auth,
    )
    try:
        await serve_until_signal(gateway)
    finally:
        await gateway.close_state()


def main() -> None:
    setup_tracing("gateway")
    settings = GatewaySettings.load()
    setup_logging("gateway", settings.log_level)
    try:
        asyncio.run(run(settings))
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
