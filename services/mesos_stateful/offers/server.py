"""Assembles the offers service: state client, gRPC server, leader election; while leading, the
task store, Mesos driver and scheduler.

Offers runs as one leader and any number of standbys (role "offers"; a lease in state with
client-go leaderelection's rules, see ``mesos_stateful.clients.leadership``). Every replica serves
at once; only the leader holds the Mesos framework connection: it subscribes with the stored
framework id (a framework failover in Mesos terms; Mesos keeps the tasks running for the
framework's ``failover_timeout`` between two leaders) and is the only one writing state, every
write carrying its term (fenced). When its term ends it cancels the calls in flight, stops its
loops and closes the connection to Mesos WITHOUT tearing the framework down, then campaigns again
as a standby. A standby answers every OfferService call with UNAVAILABLE naming the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as api_grpc
from mesos_stateful.clients.leadership import LeaderElector, Leadership, find_leader
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.common.server import Served, build_server
from mesos_stateful.offers.driver import FrameworkConfig, MesosDriver
from mesos_stateful.offers.scheduler import OfferScheduler
from mesos_stateful.offers.servicer import OfferServicer
from mesos_stateful.offers.settings import (
    OffersSettings,
    advertised,
    master_address,
    zookeeper_support_missing,
)
from mesos_stateful.offers.taskstore import TaskStore

log = logging.getLogger(__name__)

SERVICE_NAME: str = api.DESCRIPTOR.services_by_name["OfferService"].full_name
ROLE = "offers"
# The loop watchdog ticks this often (seconds) and reports a tick that came later than
# LOOP_STALL_SECONDS: the loop was blocked (e.g. by a blocking call to a frozen Mesos master),
# long enough to endanger the lease renewal (renewed every 0.2 s, given up after 1 s by default).
LOOP_TICK_SECONDS = 0.1
LOOP_STALL_SECONDS = 0.5
_T = TypeVar("_T")


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
    """The running offers replica. ``scheduler`` is set only while it leads. ``stop`` drains
    calls, then stops leading (disconnecting from Mesos with failover: tasks keep running; the
    lease is released so a standby takes over at once) and closes the state client."""

    settings: OffersSettings | None = None
    state: StateClient | None = None
    address: str = ""  # advertised in the lease
    scheduler: OfferScheduler | None = None
    leadership: Leadership | None = None
    terms_led: int = 0
    elector: LeaderElector | None = None
    _election: asyncio.Task[None] | None = None
    _leading: asyncio.Event = field(default_factory=asyncio.Event)
    _calls: set[asyncio.Task[Any]] = field(default_factory=set)
    _watchdog: asyncio.Task[None] | None = None
    loop_stalls: int = 0  # times the event loop was seen blocked longer than LOOP_STALL_SECONDS

    @property
    def leading(self) -> bool:
        """Whether this replica holds the Mesos connection now (the lease in state is the truth)."""
        return self._leading.is_set()

    async def wait_leading(self, timeout: float) -> None:
        """Until this replica leads; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self._leading.wait()

    def campaign(self) -> None:
        assert self.state is not None and self.settings is not None
        self.elector = LeaderElector(self.state, ROLE, self.address, self.settings.leadership)
        self._election = asyncio.create_task(self.elector.run(self._lead), name="offers-election")
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch_loop(), name="offers-loop-watchdog")

    async def _watch_loop(self) -> None:
        """Log every time this replica's event loop was blocked longer than
        ``LOOP_STALL_SECONDS``: nothing here may block it (a blocked leader stops renewing its
        lease and acts late on a term that ended; its writes are refused by term, but it is a
        bug). Run with ``PYTHONASYNCIODEBUG=1`` to have asyncio name the slow callback."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(LOOP_TICK_SECONDS)
            now = loop.time()
            stalled = now - last - LOOP_TICK_SECONDS
            last = now
            if stalled > LOOP_STALL_SECONDS:
                self.loop_stalls += 1
                log.warning(
                    "offers %s: the event loop was blocked for %.2fs (leading: %s); something "
                    "blocking runs on the loop",
                    self.address,
                    stalled,
                    self.leading,
                )

    async def _lead(self, leadership: Leadership) -> None:
        """One term: load state, subscribe to Mesos as the stored framework, serve; until the
        elector cancels this task."""
        settings, state = self.settings, self.state
        assert settings is not None and state is not None
        log.warning("offers %s leads (term %d): subscribing to Mesos", self.address, leadership.term)
        driver = MesosDriver(master_address(settings.master), framework_config(settings))
        scheduler = OfferScheduler(settings, TaskStore(state), driver)
        try:
            await scheduler.start()
            self.scheduler, self.leadership = scheduler, leadership
            self.terms_led += 1
            self._leading.set()
            # Until the term ends (the elector cancels this task), or Mesos says another scheduler
            # subscribed as our framework (a stale leader's driver reconnecting before it stopped):
            # then this term ends too (returning releases the lease) and the next leader, elected
            # afresh, subscribes again.
            await driver.failed_over.wait()
            log.error(
                "offers %s (term %d): another scheduler subscribed as framework %s; ending this term",
                self.address,
                leadership.term,
                scheduler.framework_id,
            )
        finally:
            self._leading.clear()
            self.scheduler = self.leadership = None
            # Standing down runs to its end even when the elector cancels this task meanwhile (a
            # term ended by a failover is then also ended by the lease): an interrupted stop
            # would leave the driver's connection and loops behind.
            stand_down = asyncio.create_task(self._stand_down(scheduler, leadership))
            try:
                await asyncio.shield(stand_down)
            except asyncio.CancelledError:
                await stand_down
                raise

    async def _stand_down(self, scheduler: OfferScheduler, leadership: Leadership) -> None:
        """End a term: cancel its calls in flight, close the Mesos connection with failover."""
        # Calls in flight belong to this term: cancel them (their callers get UNAVAILABLE and
        # retry at the next leader) before the fence is dropped by the elector.
        calls = list(self._calls)
        for call in calls:
            call.cancel()
        for call in calls:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call
        # Closes the Mesos connection with failover (no TEARDOWN): the framework and its
        # tasks stay for the next leader.
        await scheduler.stop()
        log.warning("offers %s: term %d over; standby, campaigning", self.address, leadership.term)

    async def call(self, what: str, operation: Callable[[OfferScheduler], Coroutine[Any, Any, _T]]) -> _T:
        """Run one OfferService call on the leader's scheduler, as part of the current term;
        Unavailable on a standby or when the term ends during the call."""
        scheduler = self.scheduler
        if scheduler is None:
            raise await self.standby_error()
        task: asyncio.Task[_T] = asyncio.create_task(operation(scheduler), name=f"offers-call-{what}")
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # our caller went away
            raise errors.Unavailable(
                f"{what}: the offers leader's term ended during the call; retry at the new leader"
            ) from None
        except errors.NotLeader:
            raise errors.Unavailable(
                f"{what}: this offers replica is no longer the leader; retry at the new leader"
            ) from None

    async def standby_error(self) -> errors.Unavailable:
        lease = None
        if self.state is not None:
            with contextlib.suppress(errors.StatefulError):
                lease = await find_leader(self.state, ROLE)
        if lease is not None and lease.holder and lease.address != self.address:
            return errors.Unavailable(f"standby; the offers leader is at {lease.address}")
        if lease is not None and lease.holder:
            return errors.Unavailable("this offers replica was just elected and is loading state; retry")
        return errors.Unavailable("standby; no offers leader yet (an election is under way)")

    async def stop(self, grace_seconds: float = 5.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace_seconds)
        await self.stop_scheduler()

    async def stop_scheduler(self) -> None:
        """Stop leading and campaigning (the lease is released), then close the state client."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        election, self._election = self._election, None
        if election is not None:
            election.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await election
        self.elector = None
        if self.state is not None:
            await self.state.close()
            self.state = None


async def build_offers_server(settings: OffersSettings, state_ready_timeout: float = 60.0) -> OffersServed:
    """Serve on ``settings.listen`` (port 0: any) at once and campaign for the lead; the leader
    loads state and subscribes to the master (``OffersServed.wait_leading``)."""
    missing = zookeeper_support_missing(settings.master)
    if missing is not None:
        raise errors.FailedPrecondition(missing)
    state = StateClient(settings.state_endpoint)
    holder: list[OffersServed] = []
    try:
        await state.wait_ready(state_ready_timeout)

        def register(server: grpc.aio.Server) -> None:
            api_grpc.add_OfferServiceServicer_to_server(
                OfferServicer(lambda: holder[0] if holder else None), server
            )

        served = await build_server(settings.listen, [register], [SERVICE_NAME])
    except BaseException:
        await state.close()
        raise
    offers = OffersServed(
        server=served.server,
        port=served.port,
        health=served.health,
        service_names=served.service_names,
        settings=settings,
        state=state,
        address=advertised(settings.listen, settings.advertise, served.port),
    )
    holder.append(offers)
    offers.campaign()
    log.info("offers on port %d as %s: standby, campaigning for the lead", offers.port, offers.address)
    return offers
