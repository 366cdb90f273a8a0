"""gRPC server plumbing shared by every service: health, reflection, graceful shutdown.

``build_server`` returns ``(server, port)`` so tests bind port 0. ``serve_forever`` runs a server
until SIGTERM or SIGINT, then flips health to NOT_SERVING and stops with a grace period.
Every server takes its keepalive policy and port options from ``mesos_stateful.common.channels``
(the same place the clients' keepalive comes from, so servers never answer it with GOAWAY).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesos_stateful.common.channels import Keepalive, channel_options, server_options

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.aio.Server], None]


@dataclass
class Served:
    """A started server and what its owner needs to stop it."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str] = field(default_factory=list)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        for name in self.service_names:
            await self.health.set(name, status)

    async def stop(self, grace_seconds: float = 5.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace_seconds)


async def build_server(
    address: str,
    registrars: Iterable[Registrar],
    service_names: Iterable[str],
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    keepalive: Keepalive | None = None,
) -> Served:
    """Create, bind and start a server with health and reflection. ``address`` may use port 0.

    The port is never shared (``grpc.so_reuseport`` 0): if another process listens on it, or a
    connection still holds it (e.g. TIME_WAIT of a client connection that used it as its local
    port, up to 60 s on Linux), this raises OSError naming the address, and the service exits
    (under ``make run`` it is restarted with backoff until the port is free)."""
    server = grpc.aio.server(interceptors=list(interceptors), options=server_options(keepalive))
    for register in registrars:
        register(server)
    names = list(service_names)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:  # grpcio raises RuntimeError("Failed to bind to address ...")
        port = 0
        cause: Exception | None = error
    else:
        cause = None
    if port == 0:
        raise OSError(
            errno.EADDRINUSE,
            f"cannot bind gRPC server to {address}: the address is in use (another process listens "
            "on it, or a recent connection still holds the port) or not local",
        ) from cause
    await server.start()
    served = Served(server=server, port=port, health=health_servicer, service_names=names)
    await served.set_serving(True)
    return served


async def wait_for_signal() -> None:
    """Return on the first SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_until_signal(
    served: Served,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    grace_seconds: float = 5.0,
) -> None:
    await wait_for_signal()
    log.info("stopping: draining calls for up to %.0fs", grace_seconds)
    await served.set_serving(False)
    if on_stop is not None:
        await on_stop()
    await served.server.stop(grace_seconds)


async def is_serving(address: str, timeout: float = 1.0, service: str = "") -> bool:
    """Whether the gRPC server at ``address`` answers grpc.health.v1 Check with SERVING."""
    async with grpc.aio.insecure_channel(address, options=channel_options()) as channel:
        # The typeshed stubs of HealthStub declare no methods.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
