"""The lifecycle service: the controller plus a gRPC server with health (and reflection) only."""

from __future__ import annotations

import logging

from mesos_stateful.common.server import Served, build_server
from mesos_stateful.lifecycle.callbacks import Callbacks
from mesos_stateful.lifecycle.controller import Controller
from mesos_stateful.lifecycle.health import HealthMonitor
from mesos_stateful.lifecycle.offers import OffersClient
from mesos_stateful.lifecycle.reconciler import Reconciler
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.lifecycle.steps import StepRunner
from mesos_stateful.lifecycle.store import Store
from mesos_stateful.state.client import StateClient

log = logging.getLogger(__name__)


class LifecycleService:
    """Owns the clients, the controller and the health server; ``start`` / ``stop`` may repeat."""

    def __init__(self, settings: LifecycleSettings) -> None:
        self.settings = settings
        self.served: Served | None = None
        self.controller: Controller | None = None
        self.monitor: HealthMonitor | None = None
        self._state: StateClient | None = None
        self._offers: OffersClient | None = None
        self._callbacks: Callbacks | None = None
        self._probes: Callbacks | None = None  # the health monitor's own channels

    @property
    def port(self) -> int:
        return self.served.port if self.served is not None else 0

    async def start(self) -> None:
        settings = self.settings
        self._state = StateClient(settings.state_endpoint)
        self._offers = OffersClient(settings.offers_endpoint, settings.offers_timeout_seconds)
        self._callbacks = Callbacks(self._state, settings.callback_timeout_seconds)
        store = Store(self._state)
        runner = StepRunner(settings, store, self._offers, self._callbacks)
        controller = Controller(settings, store, Reconciler(settings, store, runner))
        self.controller = controller
        self._probes = Callbacks(self._state, settings.callback_timeout_seconds)
        self.monitor = HealthMonitor(
            settings, store, self._probes, names=lambda: list(controller.workers), wake=controller.wake
        )
        runner.master_position = self.monitor.master_position
        controller.on_change = self.monitor.touch
        self.served = await build_server(settings.listen, [], [])
        controller.start()
        self.monitor.start()
        log.info(
            "lifecycle on port %d (state %s, offers %s)",
            self.served.port,
            settings.state_endpoint,
            settings.offers_endpoint,
        )

    async def stop_controller(self) -> None:
        if self.monitor is not None:
            await self.monitor.stop()
            self.monitor = None
        if self.controller is not None:
            await self.controller.stop()
            self.controller = None
        for client in (self._probes, self._callbacks, self._offers, self._state):
            if client is not None:
                await client.close()
        self._probes = self._callbacks = self._offers = self._state = None

    async def stop(self, grace_seconds: float = 2.0) -> None:
        await self.stop_controller()
        if self.served is not None:
            await self.served.stop(grace_seconds)
            self.served = None
