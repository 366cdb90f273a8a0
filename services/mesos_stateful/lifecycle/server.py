"""The lifecycle service: a gRPC server with health (and reflection) only, and the controller,
run only while this replica leads.

Lifecycle runs as one leader and any number of standbys (role "lifecycle"; a lease in state,
client-go leaderelection's rules, see ``mesos_stateful.clients.leadership``). Every replica serves
health at once (SERVING, leader or standby) and campaigns. Only while it leads does it run the
controller and the health monitor, i.e. everything that writes state or calls offers and the
workload services; its state client then carries the term's fence on every write, so a deposed
leader's writes are refused (NotLeader). When the term ends (a renewal missed, a write refused,
shutdown) the controller is cancelled wherever it is and the replica campaigns again as a
standby. Plans live in state, so the next leader resumes a step interrupted mid-way instead of
starting another (the reconciler keeps an active plan; steps check state before acting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mesos_stateful.clients.leadership import LeaderElector, Leadership
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.server import Served, build_server
from mesos_stateful.lifecycle.callbacks import Callbacks
from mesos_stateful.lifecycle.controller import Controller
from mesos_stateful.lifecycle.health import HealthMonitor
from mesos_stateful.lifecycle.offers import OffersClient
from mesos_stateful.lifecycle.reconciler import Reconciler
from mesos_stateful.lifecycle.settings import LifecycleSettings, advertised
from mesos_stateful.lifecycle.steps import StepRunner
from mesos_stateful.lifecycle.store import Store

log = logging.getLogger(__name__)

ROLE = "lifecycle"


class LifecycleService:
    """Owns the state client, the election and the health server; while leading, the controller
    and its clients. ``start`` / ``stop`` may repeat."""

    def __init__(self, settings: LifecycleSettings) -> None:
        self.settings = settings
        self.served: Served | None = None
        self.address = ""  # advertised in the lease
        self.elector: LeaderElector | None = None
        self.controller: Controller | None = None  # only while leading
        self.monitor: HealthMonitor | None = None  # only while leading
        self.leadership: Leadership | None = None  # the current term while leading
        self.terms_led = 0
        self._leading = asyncio.Event()
        self._election: asyncio.Task[None] | None = None
        self._state: StateClient | None = None

    @property
    def port(self) -> int:
        return self.served.port if self.served is not None else 0

    @property
    def leading(self) -> bool:
        """Whether this replica runs the controller now (the lease in state is the truth)."""
        return self._leading.is_set()

    async def wait_leading(self, timeout: float) -> None:
        """Until this replica leads; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self._leading.wait()

    async def start(self) -> None:
        settings = self.settings
        self._state = StateClient(settings.state_endpoint)
        try:
            self.served = await build_server(settings.listen, [], [])
        except BaseException:
            await self._state.close()
            self._state = None
            raise
        self.address = advertised(settings.listen, settings.advertise, self.served.port)
        self.elector = LeaderElector(self._state, ROLE, self.address, settings.leadership)
        self._election = asyncio.create_task(self.elector.run(self._lead), name="lifecycle-election")
        log.info(
            "lifecycle on port %d as %s (state %s, offers %s): standby, campaigning for the lead",
            self.served.port,
            self.address,
            settings.state_endpoint,
            settings.offers_endpoint,
        )

    async def _lead(self, leadership: Leadership) -> None:
        """One term: run the controller and the health monitor until cancelled by the elector."""
        settings = self.settings
        state = self._state
        assert state is not None
        log.warning("lifecycle %s leads (term %d): starting the controller", self.address, leadership.term)
        offers = OffersClient(settings.offers_endpoint, settings.offers_timeout_seconds, state)
        callbacks = Callbacks(state, settings.callback_timeout_seconds)
        probes = Callbacks(state, settings.callback_timeout_seconds)  # the health monitor's own channels
        store = Store(state)
        runner = StepRunner(settings, store, offers, callbacks)
        controller = Controller(settings, store, Reconciler(settings, store, runner))
        monitor = HealthMonitor(
            settings, store, probes, names=lambda: list(controller.workers), wake=controller.wake
        )
        runner.master_position = monitor.master_position
        controller.on_change = monitor.touch
        self.controller, self.monitor, self.leadership = controller, monitor, leadership
        self.terms_led += 1
        self._leading.set()
        try:
            controller.start()
            monitor.start()
            await asyncio.Future()  # until the term ends: the elector cancels this task
        finally:
            self._leading.clear()
            self.controller = self.monitor = self.leadership = None
            # Stop acting first (the fence refuses any write of this term from now on anyway).
            await monitor.stop()
            await controller.stop()
            for client in (probes, callbacks, offers):
                with contextlib.suppress(Exception):
                    await client.close()
            log.warning("lifecycle %s: term %d over; standby, campaigning", self.address, leadership.term)

    async def stop_controller(self) -> None:
        """Stop leading (the lease is released, so a standby takes over at once) and campaigning."""
        election, self._election = self._election, None
        if election is not None:
            election.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await election
        self.elector = None
        if self._state is not None:
            await self._state.close()
            self._state = None

    async def stop(self, grace_seconds: float = 2.0) -> None:
        await self.stop_controller()
        if self.served is not None:
            await self.served.stop(grace_seconds)
            self.served = None
