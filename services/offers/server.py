"""Assembles the offers service: state client, task store, Mesos driver, scheduler, gRPC server."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass

import grpc

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as api_grpc
from mesos_stateful.common import errors
from mesos_stateful.common.server import Served, build_server
from mesos_stateful.offers.driver import FrameworkConfig, MesosDriver
from mesos_stateful.offers.scheduler import OfferScheduler
from mesos_stateful.offers.servicer import OfferServicer
from mesos_stateful.offers.settings import OffersSettings, master_address, zookeeper_support_missing
from mesos_stateful.offers.taskstore import TaskStore
from mesos_stateful.state.client import StateClient

SERVICE_NAME: str = api.DESCRIPTOR.services_by_name["OfferService"].full_name


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "root"


def framework_config(settings: OffersSettings) -> FrameworkConfig:
    return FrameworkConfig(
        name=settings.framework_name,
        role=settings.role,
        user=settings.user or _current_user(),
        hostname=settings.hostname or socket.gethostname(),
        failover_timeout_seconds=settings.failover_timeout_seconds,
        principal=settings.principal,
        secret=settings.secret,
    )


@dataclass
class OffersServed(Served):
    """The running offers service. ``stop`` drains calls, then disconnects from Mesos with
    failover (tasks keep running) and closes the state client."""

    scheduler: OfferScheduler | None = None
    state: StateClient | None = None

    async def stop(self, grace_seconds: float = 5.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace_seconds)
        await self.stop_scheduler()

    async def stop_scheduler(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
            self.scheduler = None
        if self.state is not None:
            await self.state.close()
            self.state = None


async def build_offers_server(settings: OffersSettings, state_ready_timeout: float = 60.0) -> OffersServed:
    """Load state, subscribe to the master and serve on ``settings.listen`` (port 0: any)."""
    missing = zookeeper_support_missing(settings.master)
    if missing is not None:
        raise errors.FailedPrecondition(missing)
    state = StateClient(settings.state_endpoint)
    scheduler: OfferScheduler | None = None
    try:
        await state.wait_ready(state_ready_timeout)
        driver = MesosDriver(master_address(settings.master), framework_config(settings))
        scheduler = OfferScheduler(settings, TaskStore(state), driver)
        await scheduler.start()

        def register(server: grpc.aio.Server) -> None:
            assert scheduler is not None
            api_grpc.add_OfferServiceServicer_to_server(OfferServicer(scheduler), server)

        served = await build_server(settings.listen, [register], [SERVICE_NAME])
    except BaseException:
        if scheduler is not None:
            await scheduler.stop()
        await state.close()
        raise
    return OffersServed(
        server=served.server,
        port=served.port,
        health=served.health,
        service_names=served.service_names,
        scheduler=scheduler,
        state=state,
    )
