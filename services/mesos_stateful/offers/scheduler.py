"""The scheduler: a queue of launches, offers matched against it, status updates stored and then
acknowledged, kills, reconciliation, revive/suppress.

Everything that changes tasks runs under one asyncio lock, so offers, launches, kills and status
updates see each other's effects in order. Every change is written to the state service before
it is acted on (before ACCEPT, before an acknowledgement), so a restart loses nothing: QUEUED
tasks are queued again, the others are reconciled with the master (never relaunched or killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry import trace

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as opb
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors, retry, trace_context
from mesos_stateful.common.metrics import (
    LAUNCHES_PENDING,
    OFFERS_DECLINED_TOTAL,
    OFFERS_RECEIVED_TOTAL,
    TASK_UPDATES_TOTAL,
)
from mesos_stateful.offers import driver as drv
from mesos_stateful.offers import mesos
from mesos_stateful.offers.maintenance import MaintenanceBook
from mesos_stateful.offers.matching import (
    CREATE,
    RESERVE,
    AgentCapacity,
    Assignment,
    Need,
    Offer,
    WantedVolume,
    avoid_map,
    match,
    never_fits,
    orphaned,
    relax_avoid,
    summarize,
)
from mesos_stateful.offers.settings import OffersSettings
from mesos_stateful.offers.taskstore import TaskStore, copy_task

log = logging.getLogger(__name__)

Json = dict[str, Any]


@dataclass
class AgentView:
    """An agent as seen in offers."""

    agent_id: str
    hostname: str
    attributes: dict[str, str] = field(default_factory=dict)
    offered: Offer | None = None
    # Largest totals seen (offered + what our tasks held then): a lower bound of its capacity.
    cpus: float = 0.0
    mem: float = 0.0
    disk: float = 0.0
    port_count: int = 0

    def capacity(self) -> AgentCapacity:
        return AgentCapacity(
            self.agent_id, self.hostname, self.cpus, self.mem, self.disk, self.port_count, self.attributes
        )


@dataclass
class KnownReservation:
    """One of our reservations on an agent, as last seen in an offer or made by an ACCEPT."""

    key: tuple[str, str, str]  # (instance, member id, persistence id)
    cpus: float = 0.0
    mem: float = 0.0
    disk: float = 0.0  # the volume's size plus reserved disk
    ports: list[int] = field(default_factory=list)
    has_volume: bool = False
    orphaned: bool = False


def _now_stamp(task: types_pb2.Task) -> None:
    task.updated_at.GetCurrentTime()


# Why a queued launch waits, as the ``reason`` label of stateful_launches_pending (a fixed
# vocabulary; the free text stays in GetCluster and the task's message).
PENDING_REASONS = ("no_offers", "no_fit", "volume", "state_unavailable", "other")


def pending_reason(text: str) -> str:
    """The :data:`PENDING_REASONS` label of a wait text of the matcher or the scheduler:
    ``no_offers`` (no offer this round), ``no_fit`` (offers came, none fits: resources, ports,
    the placement rule, maintenance), ``volume`` (pinned to the agent of its volume, which has not
    offered it), ``state_unavailable`` (the launch could not be stored)."""
    if "state service is unavailable" in text:
        return "state_unavailable"
    if text.startswith("waiting for offers"):
        return "no_offers"
    if text.startswith("waiting for") and "volume" in text:
        return "volume"
    if text.startswith("waiting:"):
        return "no_fit"
    return "other"


def task_state_label(state: str) -> str:
    """A Mesos task state (``TASK_FAILED``) as the ``state`` label (``failed``)."""
    return state.removeprefix("TASK_").lower() or "unknown"


class PendingLaunches(dict[str, str]):
    """Queued task id -> why it waits; every change sets stateful_launches_pending by reason."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__(items or {})
        self.publish()

    def publish(self) -> None:
        counts = dict.fromkeys(PENDING_REASONS, 0)
        for text in self.values():
            counts[pending_reason(text)] += 1
        for reason, count in counts.items():
            LAUNCHES_PENDING.labels(reason=reason).set(count)

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self.publish()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.publish()

    def pop(self, key: str, default: Any = None) -> Any:
        value = super().pop(key, default)
        self.publish()
        return value

    def clear(self) -> None:
        super().clear()
        self.publish()


class OfferScheduler:
    def __init__(self, settings: OffersSettings, store: TaskStore, driver: drv.MesosDriver) -> None:
        self.settings = settings
        self.store = store
        self.driver = driver
        self.queue: dict[str, None] = {}  # queued task ids, in launch order
        self._pending = PendingLaunches()  # task id -> why it has not been placed
        self.agents: dict[str, AgentView] = {}
        # agent id -> our reservations there (reported in GetCluster)
        self.reservations: dict[str, dict[tuple[str, str, str], KnownReservation]] = {}
        # agents whose last offer held reservations released (or not decided): not suppressed
        self._agents_with_orphans: set[str] = set()
        self._lock = asyncio.Lock()
        self._statuses: asyncio.Queue[Json] = asyncio.Queue()
        self._suppressed = False
        self._idle_declined = False
        self._loops: list[asyncio.Task[None]] = []
        self._stopped = False
        self.framework_id = ""
        self._watch_revision = 0
        # Subscribing again after an ERROR event (reset once subscribed).
        self._resubscribe = retry.Backoff(
            retry.MESOS_RESUBSCRIBE.with_delays(drv.MesosDriver.RESTART_DELAY_SECONDS, 60.0)
        )
        # Storing in the state service while it is down: a fixed interval from the settings.
        self._state_retry = retry.OFFERS_STATE.with_delays(settings.state_retry_seconds)
        self._state_pause = retry.Backoff(self._state_retry)  # its fixed interval, for loops
        # Agents scheduled for maintenance (inverse offers); synced to the task records and
        # answered by _maintenance_loop, woken by _maintenance_wake.
        self.maintenance = MaintenanceBook()
        self._maintenance_wake = asyncio.Event()
        # Set by every OFFERS event; cleared by a revive for a new maintenance (see
        # _on_inverse_offers): the task records get it once the other agents' offers were seen.
        self._offers_seen = asyncio.Event()
        self._offers_seen.set()
        self._offers_wait_until = 0.0  # time.monotonic()
        # Member record key ("<instance>/<member id>") -> (instance, member id, agent id of its
        # volume): where members are while their task is down (kept by _watch_members; counted by
        # the placement rule under the member id, the same id as the member's task records).
        self.member_places: dict[str, tuple[str, str, str]] = {}
        # Queued task id -> agent id -> why that agent's last offer did not take it (a label of
        # matching.summarize), and when the summary was last written into its record (monotonic).
        self._misfits: dict[str, dict[str, str]] = {}
        self._message_written: dict[str, float] = {}

    @property
    def pending(self) -> dict[str, str]:
        """Queued task id -> why it has not been placed (kept in stateful_launches_pending)."""
        return self._pending

    @pending.setter
    def pending(self, value: Mapping[str, str]) -> None:
        self._pending = PendingLaunches(value)

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Reload tasks and the framework id from the state service, then subscribe."""
        framework = await self.store.load_framework()
        self.framework_id = framework.framework_id if framework is not None else ""
        self._watch_revision = await self.store.load()
        self.maintenance.restore(self.store.tasks.values())
        for agent_id, drain in self.maintenance.drains.items():
            log.info(
                "agent %s (%s) is scheduled for maintenance (from the task records)",
                drain.maintenance.hostname,
                agent_id,
            )
        queued = [t for t in self.store.tasks.values() if t.state == types_pb2.TASK_STATE_QUEUED]
        queued.sort(key=lambda t: (t.updated_at.seconds, t.updated_at.nanos, t.task_id))
        for task in queued:
            self.queue[task.task_id] = None
            self.pending[task.task_id] = "waiting for offers"
        log.info(
            "loaded %d tasks (%d queued); framework id %s",
            len(self.store.tasks),
            len(queued),
            self.framework_id or "(none yet)",
        )
        self._spawn(self._event_loop(), "events")
        self._spawn(self._status_loop(), "statuses")
        self._spawn(self._watch_deletions(), "watch")
        self._spawn(self._watch_members(), "members")
        self._spawn(self._maintenance_loop(), "maintenance")
        if self.settings.reconcile_interval_seconds > 0:
            self._spawn(self._reconcile_loop(), "reconcile")
        if self.settings.reconcile_unreachable_seconds > 0:
            self._spawn(self._reconcile_unreachable_loop(), "reconcile-unreachable")
        if self.settings.orphan_check_interval_seconds > 0:
            self._spawn(self._orphan_check_loop(), "orphans")
        await self.driver.start(self.framework_id or None)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._loops.append(asyncio.get_running_loop().create_task(coroutine, name=f"offers-{name}"))

    async def stop(self) -> None:
        """Disconnect with failover: Mesos keeps the tasks running until we come back."""
        self._stopped = True
        self.pending = {}  # no longer leading: nothing waits here
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.driver.stop(failover=True)

    # -- the API ----------------------------------------------------------------------------------

    async def launch(self, spec: types_pb2.LaunchSpec) -> types_pb2.Task:
        """Queue a launch (idempotent on task id); FailedPrecondition if no known agent could
        ever run it."""
        async with self._lock:
            existing = await self.store.find(spec.task_id)
            if existing is not None:
                return existing
            task = types_pb2.Task(
                task_id=spec.task_id,
                instance=spec.instance,
                member_id=spec.member_id,
                state=types_pb2.TASK_STATE_QUEUED,
                message="queued",
                launch=spec,
                # The plan step that asked (through this request's trace context): the executor
                # puts it on the task's status updates (TaskInfo label, mesos.task_labels).
                launch_trace_parent=trace_context.current_traceparent(),
            )
            need = mesos.need_of(task)
            reason = never_fits(need, [a.capacity() for a in self.agents.values()])
            if reason is not None:
                raise errors.FailedPrecondition(f"task {spec.task_id} can never be placed: {reason}")
            _now_stamp(task)
            stored, created = await self.store.create(task)
            if not created:
                return stored
            self.queue[stored.task_id] = None
            self.pending[stored.task_id] = "waiting for offers"
            log.info(
                "queued %s (%g cpus, %d MiB)", stored.task_id, spec.resources.cpus, spec.resources.mem_mb
            )
            await self._revive_if_needed()
            return stored

    async def kill(self, task_id: str) -> types_pb2.Task:
        async with self._lock:
            task = await self.store.find(task_id)
            if task is None:
                raise errors.NotFound(f"no task {task_id}")
            # A LOST task may still run on an agent that was cut off and comes back: kill it anyway
            # (Mesos answers LOST again if it is really gone), so the caller's fencing holds.
            if mesos.is_terminal(task.state) and task.state != types_pb2.TASK_STATE_LOST:
                return task
            update = copy_task(task)
            update.kill_requested = True
            if task.state == types_pb2.TASK_STATE_QUEUED:
                update.state = types_pb2.TASK_STATE_KILLED
                update.message = "killed before launch"
                _now_stamp(update)
                stored = await self.store.save(update)
                self._unqueue(task_id)
                self._maintenance_wake.set()  # it may have held an agent in maintenance
                return stored
            stored = await self.store.save(update) if not task.kill_requested else task
            try:
                await self.driver.kill(task_id, task.agent_id)
            except errors.Unavailable as error:
                # kill_requested is stored: the kill is sent again after the next subscription.
                log.warning("kill of %s not sent now (%s)", task_id, error.message)
            return stored

    def list_tasks(self, instance: str = "") -> list[types_pb2.Task]:
        tasks = [t for t in self.store.tasks.values() if not instance or t.instance == instance]
        return sorted(tasks, key=lambda t: t.task_id)

    def cluster(self) -> opb.GetClusterResponse:
        # Subscribed once the framework id is stored too (what a restart depends on).
        response = opb.GetClusterResponse(
            subscribed=self.driver.subscribed and self.framework_id == self.driver.framework_id,
            framework_id=self.driver.framework_id or self.framework_id,
            master=self.driver.current_master,
        )
        on_agent: dict[str, list[str]] = {}
        for task in self.store.tasks.values():
            if task.agent_id and not mesos.is_terminal(task.state):
                on_agent.setdefault(task.agent_id, []).append(task.task_id)
        for agent in sorted(self.agents.values(), key=lambda a: a.hostname):
            entry = response.agents.add(
                agent_id=agent.agent_id,
                hostname=agent.hostname,
                total=types_pb2.Resources(cpus=agent.cpus, mem_mb=int(agent.mem), disk_mb=int(agent.disk)),
                task_ids=sorted(on_agent.get(agent.agent_id, [])),
            )
            entry.attributes.update(agent.attributes)
            maintenance = self.maintenance.get(agent.agent_id)
            if maintenance is not None:
                entry.maintenance.CopyFrom(maintenance)
            if agent.offered is not None:
                offered = agent.offered
                entry.offered.CopyFrom(
                    types_pb2.Resources(cpus=offered.cpus, mem_mb=int(offered.mem), disk_mb=int(offered.disk))
                )
                entry.free_port_ranges.extend(f"{b}-{e}" for b, e in offered.ports)
            for known in sorted(self.reservations.get(agent.agent_id, {}).values(), key=lambda r: r.key):
                instance, member_id, persistence_id = known.key
                entry.reservations.add(
                    instance=instance,
                    member_id=member_id,
                    persistence_id=persistence_id,
                    resources=types_pb2.Resources(
                        cpus=known.cpus, mem_mb=int(known.mem), disk_mb=int(known.disk)
                    ),
                    ports=known.ports,
                    orphaned=known.orphaned,
                )
        for task_id in self.queue:
            response.pending.add(task_id=task_id, reason=self.pending.get(task_id, "waiting for offers"))
        return response

    # -- driver events ----------------------------------------------------------------------------

    async def _event_loop(self) -> None:
        while True:
            event = await self.driver.next_event()
            try:
                await self._handle(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handling %s failed", type(event).__name__)

    async def _handle(self, event: drv.DriverEvent) -> None:
        if isinstance(event, drv.OffersReceived):
            await self._on_offers(event.offers)
        elif isinstance(event, drv.StatusReceived):
            self._statuses.put_nowait(event.status)
        elif isinstance(event, drv.Subscribed):
            await self._on_subscribed(event)
        elif isinstance(event, drv.OfferRescinded):
            for agent in self.agents.values():
                if agent.offered is not None and agent.offered.offer_id == event.offer_id:
                    agent.offered = None
        elif isinstance(event, drv.InverseOffersReceived):
            await self._on_inverse_offers(event.inverse_offers)
        elif isinstance(event, drv.InverseOfferRescinded):
            await self._on_inverse_offer_rescinded(event.inverse_offer_id)
        elif isinstance(event, drv.AgentLost):
            log.warning("agent %s lost", event.agent_id)
            self.maintenance.agent_lost(event.agent_id)
            self.agents.pop(event.agent_id, None)
            self.reservations.pop(event.agent_id, None)
            self._agents_with_orphans.discard(event.agent_id)
        elif isinstance(event, drv.DriverError):
            log.error("Mesos master error: %s", event.message)
            await self._on_error(event.message)
        elif isinstance(event, drv.Disconnected):
            log.warning("disconnected from the Mesos master; pymesos reconnects")
        elif isinstance(event, drv.DriverAborted):
            log.warning("Mesos driver aborted (%s); restarting it", event.message)
            await self._on_error(event.message)

    async def _on_subscribed(self, event: drv.Subscribed) -> None:
        log.info("subscribed to %s as framework %s", event.master or self.driver.master, event.framework_id)
        self._suppressed = False
        self._idle_declined = False
        self._resubscribe.reset()
        async with self._lock:
            # Inverse offers of an earlier subscription are void; Mesos sends new ones.
            self.maintenance.resubscribed()
        if event.framework_id and event.framework_id != self.framework_id:
            await self._store_framework(event.framework_id)
        await self._reconcile()
        # Filters of earlier declines survive a resubscription: revive, so that queued launches
        # are placed and our reservations (some maybe orphaned) are seen again; with nothing to
        # do, the offers are declined and suppressed again.
        with contextlib.suppress(errors.Unavailable):
            await self.driver.revive()
        async with self._lock:
            to_kill = [
                t
                for t in self.store.tasks.values()
                if t.kill_requested
                and not mesos.is_terminal(t.state)
                and t.state != types_pb2.TASK_STATE_QUEUED
            ]
        for task in to_kill:
            with contextlib.suppress(errors.Unavailable):
                await self.driver.kill(task.task_id, task.agent_id)

    async def _store_framework(self, framework_id: str) -> None:
        framework = types_pb2.Framework(
            framework_id=framework_id, failover_timeout_seconds=self.settings.failover_timeout_seconds
        )
        framework.registered_at.GetCurrentTime()
        if self._stopped:
            return

        def failed(error: BaseException, _delay: float) -> None:
            log.warning("cannot store the framework id yet (%s); retrying", error)

        try:
            await retry.call(
                self._state_retry,
                lambda: self.store.save_framework(framework),
                stop_when=lambda: self._stopped,
                on_retry=failed,
            )
        except errors.TemporaryError:
            return  # stopped meanwhile
        self.framework_id = framework_id

    async def _on_error(self, message: str) -> None:
        """An ERROR event, or pymesos giving up (DriverAborted): come back as the same framework,
        or as a new one if ours was removed."""
        lowered = message.lower()
        await self.driver.halt()
        # Back off while the master keeps refusing us (e.g. a wrong address): 2 s doubling to 60 s.
        delay = self._resubscribe.next_delay()
        if "removed" in lowered or "torn down" in lowered:
            # The failover timeout passed (or a teardown): Mesos killed our tasks. Subscribe as a
            # new framework; reconciliation then reports the old tasks gone.
            log.warning("framework %s was removed; subscribing as a new framework", self.framework_id)
            with contextlib.suppress(errors.StatefulError):
                await self.store.delete_framework()
            self.framework_id = ""
            await asyncio.sleep(delay)
            await self.driver.restart(None)
        elif "failed over" in lowered:
            log.error("another scheduler took over framework %s; not resubscribing", self.framework_id)
        else:
            log.info("subscribing again in %.0fs", delay)
            await asyncio.sleep(delay)
            await self.driver.restart(self.driver.framework_id or self.framework_id or None)

    # -- maintenance (inverse offers; see maintenance.py) ---------------------------------------------

    async def _on_inverse_offers(self, inverse_offers: list[Json]) -> None:
        """Record each agent's maintenance. On news of one, offers are revived (if suppressed or
        declined for long) so the other agents' offers show which of them are scheduled too (their
        ``unavailability``; Mesos sends us no inverse offer for an agent where we have nothing),
        and the task records (lifecycle's cue to drain) are written once they came, or after
        ``maintenance_offers_wait_seconds``: lifecycle must not take such an agent for room."""
        revive = False
        async with self._lock:
            now = time.time()
            for inverse_offer in inverse_offers:
                agent_id = mesos.inverse_offer_agent(inverse_offer)
                agent = self.agents.get(agent_id)
                hostname = agent.hostname if agent is not None else ""
                if not hostname:
                    hostname = next(
                        (t.host for t in self.store.tasks.values() if t.agent_id == agent_id and t.host), ""
                    )
                maintenance = mesos.agent_maintenance(inverse_offer, hostname, now)
                if maintenance is None:
                    log.warning(
                        "inverse offer %s without unavailability ignored", mesos.offer_id(inverse_offer)
                    )
                    continue
                known = self.maintenance.drains.get(agent_id)
                if known is None or known.from_offer or known.maintenance.start != maintenance.start:
                    revive = True
                self.maintenance.announce(agent_id, maintenance)
                on_agent = self.maintenance.blocking(agent_id, self.store.tasks.values())
                log.info(
                    "agent %s (%s) is scheduled for maintenance from %s (inverse offer %s); our tasks "
                    "there: %s",
                    hostname or agent_id,
                    agent_id,
                    maintenance.start.ToJsonString(),
                    maintenance.inverse_offer_id,
                    ", ".join(on_agent) or "none",
                )
            if revive and (self._suppressed or self._idle_declined):
                self._offers_seen.clear()
                self._offers_wait_until = time.monotonic() + self.settings.maintenance_offers_wait_seconds
                await self._revive_if_needed()
        self._maintenance_wake.set()

    async def _on_inverse_offer_rescinded(self, inverse_offer_id: str) -> None:
        async with self._lock:
            drain = self.maintenance.rescind(inverse_offer_id, time.monotonic())
        if drain is not None:
            log.info(
                "inverse offer %s for agent %s rescinded; its maintenance is cleared unless a new "
                "inverse offer comes within %gs",
                inverse_offer_id,
                drain.maintenance.hostname or drain.agent_id,
                self.settings.maintenance_rescind_grace_seconds,
            )
        self._maintenance_wake.set()

    async def _maintenance_loop(self) -> None:
        """Keep the task records' ``maintenance`` as the book says and accept the inverse offers
        of agents we have left; woken by every change, retried while the state service or the
        master cannot be reached."""
        grace = self.settings.maintenance_rescind_grace_seconds
        while True:
            timeout = self.maintenance.next_expiry(time.monotonic(), grace)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._maintenance_wake.wait(), timeout)
            self._maintenance_wake.clear()
            left = self._offers_wait_until - time.monotonic()
            if not self._offers_seen.is_set() and left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._offers_seen.wait(), left)
            try:
                done = await self._sync_maintenance()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("maintenance sync failed")
                done = False
            if not done:
                await self._state_pause.sleep()
                self._maintenance_wake.set()

    async def _sync_maintenance(self) -> bool:
        """One pass; False if something must be tried again."""
        done = True
        async with self._lock:
            for drain in self.maintenance.expire(
                time.monotonic(), self.settings.maintenance_rescind_grace_seconds
            ):
                log.info(
                    "maintenance of agent %s cancelled (its inverse offer was rescinded and not sent again)",
                    drain.maintenance.hostname or drain.agent_id,
                )
            for update in self.maintenance.updates(self.store.tasks.values()):
                try:
                    await self.store.save(update)
                except errors.NotFound:
                    continue  # deleted meanwhile (lifecycle removes terminal tasks)
                except errors.StatefulError as error:
                    log.warning("maintenance of task %s not stored yet (%s)", update.task_id, error.message)
                    done = False
                    continue
                if update.HasField("maintenance"):
                    log.info(
                        "task %s: its agent %s is scheduled for maintenance from %s",
                        update.task_id,
                        update.maintenance.hostname or update.agent_id,
                        update.maintenance.start.ToJsonString(),
                    )
                else:
                    log.info("task %s: maintenance cleared", update.task_id)
            # Under the lock: no launch can be staged on the agent between the check and the
            # accept (a member must never be running there once we have accepted).
            # Not subscribed: nothing to answer (the next subscription brings new inverse offers).
            drained = self.maintenance.to_accept(self.store.tasks.values()) if self.driver.subscribed else []
            for drain in drained:
                inverse_offer_id = drain.inverse_offer_id
                try:
                    await self.driver.accept_inverse_offers(
                        [inverse_offer_id], self.settings.inverse_offer_refuse_seconds
                    )
                except errors.StatefulError as error:
                    log.warning("inverse offer %s not accepted yet (%s)", inverse_offer_id, error.message)
                    done = False
                    continue
                drain.accepted_id = inverse_offer_id
                log.info(
                    "accepted inverse offer %s: none of our tasks is left on agent %s",
                    inverse_offer_id,
                    drain.maintenance.hostname or drain.agent_id,
                )
        return done

    # -- reconciliation -----------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Explicit reconciliation of every task we launched and that has not ended, then an
        implicit one (any task the master has of ours)."""
        known = [
            (t.task_id, t.agent_id)
            for t in self.store.tasks.values()
            if t.state != types_pb2.TASK_STATE_QUEUED and not mesos.is_terminal(t.state)
        ]
        try:
            if known:
                await self.driver.reconcile(known)
            await self.driver.reconcile([])
            log.info("reconciling %d tasks (explicit) and implicitly", len(known))
        except errors.Unavailable as error:
            log.warning("reconciliation not sent: %s", error.message)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_seconds)
            if self.driver.subscribed:
                await self._reconcile()

    async def _reconcile_unreachable_loop(self) -> None:
        """Every ``reconcile_unreachable_seconds``, an explicit reconciliation of the tasks last
        reported TASK_UNREACHABLE or TASK_UNKNOWN. When their agent re-registers without them (it
        restarted and its executors were gone), the master forgets them and tells the framework
        nothing; a RECONCILE answers TASK_GONE (Mesos docs, reconciliation.md: a framework
        reconciles the tasks it is unsure of). Answers that change nothing are not stored."""
        while True:
            await asyncio.sleep(self.settings.reconcile_unreachable_seconds)
            doubtful = [
                (t.task_id, t.agent_id)
                for t in self.store.tasks.values()
                if t.state in (types_pb2.TASK_STATE_UNREACHABLE, types_pb2.TASK_STATE_UNKNOWN)
            ]
            if not doubtful or not self.driver.subscribed:
                continue
            try:
                await self.driver.reconcile(doubtful)
            except errors.Unavailable as error:
                log.warning("reconciliation of unreachable tasks not sent: %s", error.message)

    # -- offers -------------------------------------------------------------------------------------

    def _occupancy(self) -> dict[tuple[str, str], set[str]]:
        """The members of each instance at each agent (:func:`occupancy` of our task records and
        member records)."""
        return occupancy(self.store.tasks.values(), self.member_places.values())

    def _need(self, task: types_pb2.Task, counts: Mapping[tuple[str, str], set[str]]) -> Need:
        """What the queued ``task`` needs, with the avoid list lifecycle learnt from the member's
        failed launches (``LaunchSpec.avoid``), relaxed where it would keep it off every known
        agent (:func:`relax_avoid`)."""
        need = mesos.need_of(task)
        avoid = avoid_map((a.agent_id, a.ports) for a in task.launch.avoid)
        if not avoid:
            return need
        need = replace(need, avoid=avoid)
        return relax_avoid(need, [a.capacity() for a in self.agents.values()], counts)

    def _learn_agent(self, offer: Offer) -> None:
        agent = self.agents.get(offer.agent_id)
        if agent is None:
            agent = self.agents[offer.agent_id] = AgentView(offer.agent_id, offer.hostname)
        agent.hostname = offer.hostname
        agent.attributes = dict(offer.attributes)
        agent.offered = Offer(
            offer.offer_id,
            offer.agent_id,
            offer.hostname,
            offer.cpus,
            offer.mem,
            offer.disk,
            list(offer.ports),
            dict(offer.attributes),
        )
        cpus, mem, disk, ports = offer.cpus, offer.mem, offer.disk, offer.port_count()
        for reservation in offer.reservations:
            cpus += reservation.cpus
            mem += reservation.mem
            disk += reservation.disk + reservation.volume_size()
            ports += len(reservation.ports)
        for task in self.store.tasks.values():
            if task.agent_id == offer.agent_id and not mesos.is_terminal(task.state):
                need = mesos.need_of(task)
                cpus += need.cpus
                mem += need.mem
                disk += need.disk
                ports += len(task.ports)
        agent.cpus = max(agent.cpus, round(cpus, 6))
        agent.mem = max(agent.mem, mem)
        agent.disk = max(agent.disk, disk)
        agent.port_count = max(agent.port_count, ports)

    async def _on_offers(self, raw_offers: list[Json]) -> None:
        async with self._lock:
            role, principal = self.settings.role, self.settings.principal
            OFFERS_RECEIVED_TOTAL.inc(len(raw_offers))
            by_id = {mesos.offer_id(o): o for o in raw_offers}
            parsed = [mesos.parse_offer(o, role, principal) for o in raw_offers]
            self._offers_seen.set()
            for offer in parsed:
                self._learn_agent(offer)
                raw = by_id.get(offer.offer_id)
                window = (
                    mesos.agent_maintenance(raw, offer.hostname, time.time())
                    if offer.draining and raw is not None
                    else None
                )
                if window is not None:
                    window.inverse_offer_id = ""  # an offer's id, not an inverse offer's
                    if self.maintenance.offered(offer.agent_id, window) is not None:
                        log.info(
                            "agent %s is scheduled for maintenance from %s (its offer says)",
                            offer.hostname or offer.agent_id,
                            window.start.ToJsonString(),
                        )
                        self._maintenance_wake.set()
                elif not offer.draining and self.maintenance.cancel(offer.agent_id) is not None:
                    # Offers of a DRAINING agent carry its unavailability (docs/maintenance.md).
                    log.info(
                        "agent %s is no longer scheduled for maintenance (offered without unavailability)",
                        offer.hostname,
                    )
                    self._maintenance_wake.set()
            counts = self._occupancy()
            needs = [self._need(self.store.tasks[t], counts) for t in self.queue if t in self.store.tasks]
            result = match(parsed, needs, counts)
            self.pending = dict(result.pending)
            await self._record_why_queued(result.pending, result.misfits)
            orphans = await self._orphans(parsed)
            for offer in parsed:
                self._learn_reservations(offer, orphans.get(offer.offer_id))
            used: set[str] = set()
            for offer in parsed:
                offer_id = offer.offer_id
                operations: list[Json] = []
                infos: list[Json] = []
                staged: list[types_pb2.Task] = []
                for assignment in result.assignments.get(offer_id, []):
                    task = self.store.tasks[assignment.task_id]
                    update = copy_task(task)
                    update.state = types_pb2.TASK_STATE_STAGING
                    update.message = f"launching on {assignment.hostname}"
                    update.agent_id = assignment.agent_id
                    update.host = assignment.hostname
                    # Where its sandbox is served (statefulctl logs): the executor id is the task id.
                    update.agent_url = offer.url
                    update.sandbox_directory = mesos.sandbox_path(self.framework_id, task.task_id)
                    update.ports.clear()
                    update.ports.update(assignment.ports)
                    # A restart in place on an agent scheduled for maintenance: lifecycle moves it.
                    maintenance = self.maintenance.get(assignment.agent_id)
                    if maintenance is not None:
                        update.maintenance.CopyFrom(maintenance)
                    else:
                        update.ClearField("maintenance")
                    _now_stamp(update)
                    try:
                        # State first: after a crash right after ACCEPT the task is still known.
                        stored = await self.store.save(update)
                    except errors.StatefulError as error:
                        log.warning("not launching %s: cannot store it (%s)", task.task_id, error.message)
                        self.pending[task.task_id] = (
                            f"waiting: the state service is unavailable ({error.message})"
                        )
                        continue
                    staged.append(stored)
                    operations.extend(
                        mesos.volume_operations(stored, assignment, by_id[offer_id], role, principal)
                    )
                    infos.append(
                        mesos.task_info(
                            stored,
                            assignment,
                            by_id[offer_id],
                            self.settings.executor_command,
                            self.driver.framework_id or self.framework_id,
                            role,
                            principal,
                            self.settings.executor_container,
                        )
                    )
                if infos:
                    operations.append({"type": "LAUNCH", "launch": {"task_infos": infos}})
                cleanup = orphans.get(offer_id) or []
                if cleanup:
                    operations.extend(mesos.cleanup_operations(by_id[offer_id], role, principal, cleanup))
                if not operations:
                    continue
                for task in staged:
                    self._unqueue(task.task_id)
                refuse = self.settings.refuse_seconds_unfit if cleanup else self._refuse_seconds()
                try:
                    await self.driver.accept([offer_id], operations, refuse)
                    used.add(offer_id)
                    if not self.queue and not cleanup:
                        # The rest of this offer is filtered for long: the next launch revives.
                        self._idle_declined = True
                except errors.StatefulError as error:
                    log.warning("ACCEPT of offer %s failed (%s); requeueing", offer_id, error.message)
                    await self._requeue(staged)
                    continue
                if staged:
                    log.info(
                        "launched %s on %s",
                        ", ".join(f"{t.task_id} (ports {dict(t.ports)})" for t in staged),
                        staged[0].host,
                    )
                self._after_accept(offer.agent_id, staged, result.assignments.get(offer_id, []), cleanup)
            unused = [o for o in by_id if o not in used]
            refuse = self._refuse_seconds()
            # Agents scheduled for maintenance only as far as their offers say: their next offer
            # soon, to see a cancellation (no inverse offer will be rescinded for them).
            watched = self.maintenance.only_offered()
            soon = [o.offer_id for o in parsed if o.offer_id in unused and o.agent_id in watched]
            later = [o for o in unused if o not in soon]
            unfit_or_idle = "unfit" if self.queue else "nothing_queued"
            for ids, seconds, reason in (
                (soon, min(refuse, self.settings.refuse_seconds_unfit), "maintenance"),
                (later, refuse, unfit_or_idle),
            ):
                if not ids:
                    continue
                try:
                    await self.driver.decline(ids, seconds)
                    OFFERS_DECLINED_TOTAL.labels(reason=reason).inc(len(ids))
                    if not self.queue:
                        self._idle_declined = True
                except errors.StatefulError as error:
                    log.warning("DECLINE failed: %s", error.message)
            if not self.queue and not self._suppressed and not self._agents_with_orphans and not watched:
                try:
                    await self.driver.suppress()
                    self._suppressed = True
                    log.info("nothing queued: offers suppressed")
                except errors.StatefulError as error:
                    log.warning("SUPPRESS failed: %s", error.message)

    async def _record_why_queued(
        self, pending: Mapping[str, str], misfits: Mapping[str, dict[str, str]]
    ) -> None:
        """Write into each queued task's record (``Task.message``, shown by ``statefulctl get``)
        why it is not placed: for a launch placed by the rules the summary over every known
        agent's last offer (:func:`matching.summarize`), for a pinned one why it waits. Bounded:
        written only when the text changes, and at most once per
        ``queued_message_interval_seconds`` per task; the record's ``updated_at`` (its queue
        order after a restart) is kept."""
        now = time.monotonic()
        interval = self.settings.queued_message_interval_seconds
        for task_id, reason in pending.items():
            labels = misfits.get(task_id)
            if labels is not None:
                known = self._misfits.setdefault(task_id, {})
                known.update(labels)
                for agent_id in [a for a in known if a not in self.agents]:
                    del known[agent_id]
                text = summarize(known)
            elif reason.startswith("waiting for offers"):
                continue  # no offer this round: nothing new to say
            else:
                text = reason
            task = self.store.tasks.get(task_id)
            if task is None or task.state != types_pb2.TASK_STATE_QUEUED or task.message == text:
                continue
            last = self._message_written.get(task_id)
            if last is not None and now - last < interval:
                continue
            update = copy_task(task)
            update.message = text[:500]
            if update.message == task.message:
                continue
            self._message_written[task_id] = now
            try:
                await self.store.save(update)
            except errors.StatefulError as error:
                log.info("why %s is queued not stored (%s)", task_id, error.message)

    # -- reservations and volumes -------------------------------------------------------------------

    def _in_use(self) -> set[tuple[str, str]]:
        """(member id, persistence id) of our queued and live tasks: their reservations stay."""
        return {
            (t.launch.member_id, t.launch.volume.persistence_id)
            for t in self.store.tasks.values()
            if t.launch.volume.persistence_id and not mesos.is_terminal(t.state)
        }

    async def _read_members(self) -> dict[str, WantedVolume] | None:
        """Every member's volume, read fresh from the state service; None if it cannot be read."""
        try:
            records, _ = await self.store.client.list(spb.KIND_MEMBER)
        except errors.StatefulError as error:
            log.warning("member records cannot be read (%s): no reservation is released now", error.message)
            return None
        return {
            r.member.id: WantedVolume(r.member.volume.persistence_id, r.member.volume.agent_id)
            for r in records
        }

    async def _orphans(self, offers: list[Offer]) -> dict[str, list[mesos.ReservationKey]]:
        """Offer id -> our reservations in it that no member wants any more (decided on a fresh
        read of the member records; nothing is orphaned when they cannot be read)."""
        left = [(o, r) for o in offers for r in o.reservations if not r.used]
        if not left:
            for offer in offers:
                self._agents_with_orphans.discard(offer.agent_id)
            return {}
        members = await self._read_members()
        in_use = self._in_use()
        orphans: dict[str, list[mesos.ReservationKey]] = {}
        for offer in offers:
            # Offers keep coming while an agent may still hold orphans (not suppressed).
            self._agents_with_orphans.discard(offer.agent_id)
        for offer, reservation in left:
            if members is None:
                self._agents_with_orphans.add(offer.agent_id)
                continue
            if orphaned(reservation.key, offer.agent_id, members, in_use):
                orphans.setdefault(offer.offer_id, []).append(reservation.key)
                self._agents_with_orphans.add(offer.agent_id)
                log.info(
                    "releasing %s on %s: no member wants it (destroy + unreserve)",
                    reservation.persistence_id or reservation.member_id,
                    offer.hostname,
                )
        return orphans

    def _learn_reservations(self, offer: Offer, orphans: list[mesos.ReservationKey] | None) -> None:
        """What the offer shows of our reservations on its agent. Reservations of live tasks are
        not offered: they are kept as last seen; others missing from the offer are gone."""
        known = self.reservations.setdefault(offer.agent_id, {})
        offered = {r.key: r for r in offer.reservations}
        live = {
            mesos.task_key(t.launch)
            for t in self.store.tasks.values()
            if t.agent_id == offer.agent_id
            and t.launch.volume.persistence_id
            and t.state != types_pb2.TASK_STATE_QUEUED
            and not mesos.is_terminal(t.state)
        }
        for key in [k for k in known if k not in offered and k not in live]:
            del known[key]
        for key, reservation in offered.items():
            known[key] = KnownReservation(
                key,
                cpus=reservation.cpus,
                mem=reservation.mem,
                disk=round(reservation.disk + reservation.volume_size(), 6),
                ports=list(reservation.ports),
                has_volume=bool(reservation.volumes),
                orphaned=key in (orphans or []),
            )

    def _after_accept(
        self,
        agent_id: str,
        staged: list[types_pb2.Task],
        assignments: list[Assignment],
        released: list[mesos.ReservationKey],
    ) -> None:
        known = self.reservations.setdefault(agent_id, {})
        for key in released:
            # Shown (orphaned) until an offer from the agent no longer holds it: the master may
            # have dropped the operations.
            if key in known:
                known[key].orphaned = True
        modes = {a.task_id: a.mode for a in assignments}
        for task in staged:
            if modes.get(task.task_id) in (RESERVE, CREATE):
                spec = task.launch
                key = mesos.task_key(spec)
                previous = known.get(key)
                known[key] = KnownReservation(
                    key,
                    cpus=spec.resources.cpus if previous is None else previous.cpus,
                    mem=float(spec.resources.mem_mb) if previous is None else previous.mem,
                    disk=float(spec.volume.size_mb) if previous is None else previous.disk,
                    ports=sorted(task.ports.values()) if previous is None else previous.ports,
                    has_volume=True,
                )

    async def _watch_members(self) -> None:
        """Revive offers when a member record is deleted or its volume changes: reservations it
        held may be orphaned now (they are released when offered)."""
        seen: dict[str, tuple[str, str]] = {}
        revision = 0
        while True:
            try:
                if revision == 0:
                    records, revision = await self.store.client.list(spb.KIND_MEMBER)
                    fresh = {
                        r.key.name: (r.member.volume.persistence_id, r.member.volume.agent_id)
                        for r in records
                    }
                    self.member_places = {r.key.name: member_place(r) for r in records}
                    changed = bool(seen) and any(seen[k] != fresh.get(k) for k in seen)
                    seen = fresh
                    if changed:
                        await self._revive_for_reservations()
                async for event in self.store.client.watch(
                    [spb.KIND_MEMBER], "", start_revision=revision + 1
                ):
                    revision = event.revision
                    name = event.record.key.name
                    if event.type == spb.EVENT_TYPE_DELETE:
                        self.member_places.pop(name, None)
                        previous = seen.pop(name, None)
                        if previous is not None and previous[0]:
                            await self._revive_for_reservations()
                        continue
                    volume = event.record.member.volume
                    self.member_places[name] = member_place(event.record)
                    now = (volume.persistence_id, volume.agent_id)
                    previous = seen.get(name)
                    seen[name] = now
                    if previous is not None and previous != now and previous[0]:
                        await self._revive_for_reservations()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("member watch failed (%s); re-reading members", error)
                revision = 0
                await self._state_pause.sleep()

    async def _orphan_check_loop(self) -> None:
        """An agent that was gone may come back with volumes of members replaced meanwhile: look
        at every agent's offer now and then, so they are released (see _revive_for_reservations)."""
        while True:
            await asyncio.sleep(self.settings.orphan_check_interval_seconds)
            if self.driver.subscribed:
                await self._revive_for_reservations("periodic check for reservations nobody wants")

    async def _revive_for_reservations(
        self, why: str = "a member's volume changed or it was removed"
    ) -> None:
        async with self._lock:
            if self._suppressed or self._idle_declined:
                log.info("%s: reviving offers to release reservations", why)
            await self._revive_if_needed()

    def _refuse_seconds(self) -> float:
        return self.settings.refuse_seconds_unfit if self.queue else self.settings.refuse_seconds_idle

    async def _requeue(self, tasks: list[types_pb2.Task]) -> None:
        for task in tasks:
            update = copy_task(task)
            update.state = types_pb2.TASK_STATE_QUEUED
            update.message = "queued again: the launch could not be sent"
            update.agent_id = ""
            update.host = ""
            update.agent_url = ""
            update.sandbox_directory = ""
            update.ports.clear()
            update.ClearField("maintenance")  # it was its agent's
            try:
                await self.store.save(update)
            except errors.StatefulError as error:
                # Stays STAGING in state: reconciliation will report it lost.
                log.warning("cannot requeue %s (%s)", task.task_id, error.message)
                continue
            self.queue[task.task_id] = None
            self.pending[task.task_id] = "waiting for offers"

    async def _revive_if_needed(self) -> None:
        if not (self._suppressed or self._idle_declined):
            return
        try:
            await self.driver.revive()
            self._suppressed = False
            self._idle_declined = False
            log.info("work queued: offers revived")
        except errors.Unavailable as error:
            # Not subscribed: a fresh subscription is not suppressed anyway.
            log.info("revive not sent (%s)", error.message)

    def _unqueue(self, task_id: str) -> None:
        self.queue.pop(task_id, None)
        self.pending.pop(task_id, None)
        self._misfits.pop(task_id, None)
        self._message_written.pop(task_id, None)

    # -- status updates -----------------------------------------------------------------------------

    async def _status_loop(self) -> None:
        while True:
            status = await self._statuses.get()
            try:
                stored = await self._store_status(status)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("status update %s not stored", status)
                continue
            if not stored:
                continue
            try:
                await self.driver.acknowledge(status)
            except errors.StatefulError as error:
                # Unacknowledged updates are sent again by the agent.
                log.warning("acknowledgement not sent: %s", error.message)

    async def _store_status(self, status: Mapping[str, Any]) -> bool:
        """Write the update into the task record (in a span ``status <STATE>``, a child of the
        trace context the executor put in the update's labels: that of the launch), retrying while
        the state service is down (``retry.OFFERS_STATE``, until the scheduler stops). True when it
        may be acknowledged."""
        if self._stopped:
            return False
        parent = trace_context.context_of(mesos.status_traceparent(status))
        name = f"status {status.get('state', '')}"
        attributes = {"task": mesos.status_task_id(status), "state": str(status.get("state", ""))}
        tracer = trace.get_tracer("mesos_stateful.offers")
        with tracer.start_as_current_span(name, context=parent, attributes=attributes) as span:
            stored = await self._store_status_retried(status, trace_context.current_traceparent())
            span.set_attribute("stored", stored)
            return stored

    async def _store_status_retried(self, status: Mapping[str, Any], trace_parent: str) -> bool:
        """:meth:`_store_status` without its span; ``trace_parent``: that span, kept as
        ``Task.status_trace_parent``."""
        task_id = mesos.status_task_id(status)
        state = str(status.get("state", ""))

        def failed(error: BaseException, _delay: float) -> None:
            log.warning("cannot store %s of %s yet (%s); not acknowledged, retrying", state, task_id, error)

        try:
            return await retry.call(
                self._state_retry,
                lambda: self._store_status_once(status, task_id, state, trace_parent),
                stop_when=lambda: self._stopped,
                on_retry=failed,
            )
        except errors.NotFound:
            return True
        except errors.TemporaryError:
            return False  # stopped meanwhile

    async def _store_status_once(
        self, status: Mapping[str, Any], task_id: str, state: str, trace_parent: str
    ) -> bool:
        """One attempt of :meth:`_store_status`."""
        async with self._lock:
            task = await self.store.find(task_id)
            if task is None:
                log.warning("status %s for unknown task %s (not ours, or deleted)", state, task_id)
                return True
            reconciled = status.get("reason") == "REASON_RECONCILIATION"
            if reconciled and mesos.task_state(state) == task.state:
                return True  # nothing new; keep the last real status message
            update = copy_task(task)
            mesos.apply_status(update, status, time.time())
            if not update.host and update.agent_id in self.agents:
                update.host = self.agents[update.agent_id].hostname
            if update == task:
                return True
            update.status_trace_parent = trace_parent
            await self.store.save(update)
            TASK_UPDATES_TOTAL.labels(state=task_state_label(state)).inc()
            self._unqueue(task_id)
            if mesos.is_terminal(update.state) or update.agent_id in self.maintenance.drains:
                self._maintenance_wake.set()  # its agent may be free now
            back = task.state in (
                types_pb2.TASK_STATE_LOST,
                types_pb2.TASK_STATE_UNREACHABLE,
                types_pb2.TASK_STATE_UNKNOWN,
            )
            if update.kill_requested and back and not mesos.is_terminal(update.state):
                # A cut-off agent came back with a task we asked to kill (Mesos >= 1.5
                # recovers it as RUNNING): the kill never reached it; send it again.
                log.warning(
                    "task %s killed while its agent was away is back (%s): killing it", task_id, state
                )
                with contextlib.suppress(errors.Unavailable):
                    await self.driver.kill(task_id, update.agent_id)
            if (
                update.launch.volume.persistence_id
                and mesos.is_terminal(update.state)
                and not mesos.is_terminal(task.state)
            ):
                # Its reservation is offered again now; if no member wants it any more
                # it must be seen to be released (offers may be suppressed).
                await self._revive_if_needed()
        log.info("task %s: %s %s", task_id, state, status.get("message", ""))
        return True

    # -- deletions by lifecycle -----------------------------------------------------------------------

    async def _watch_deletions(self) -> None:
        """Forget task records lifecycle deletes (after members or instances are removed)."""
        while True:
            try:
                async for event in self.store.client.watch(
                    [spb.KIND_TASK], "", start_revision=self._watch_revision + 1
                ):
                    self._watch_revision = event.revision
                    if event.type == spb.EVENT_TYPE_DELETE:
                        task_id = event.record.key.name
                        async with self._lock:
                            self.store.forget(task_id)
                            self._unqueue(task_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # e.g. the revision was compacted: forget only what is really gone, then go on.
                log.warning("task watch failed (%s); re-reading tasks", error)
                await self._state_pause.sleep()
                with contextlib.suppress(errors.StatefulError):
                    records, revision = await self.store.client.list(spb.KIND_TASK)
                    present = {r.key.name for r in records}
                    async with self._lock:
                        for task_id in [t for t in self.store.tasks if t not in present]:
                            self.store.forget(task_id)
                            self._unqueue(task_id)
                    self._watch_revision = revision


def member_place(record: spb.Record) -> tuple[str, str, str]:
    """(instance, member id, agent id of its volume) of a member record; the member id as its
    task records name it (``Member.id``; else the last part of the key "<instance>/<member id>")."""
    member = record.member
    return member.instance, member.id or record.key.name.rpartition("/")[2], member.volume.agent_id


def occupancy(
    tasks: Iterable[types_pb2.Task], members: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str], set[str]]:
    """(agent id, instance) -> the members of the instance at that agent (member ids, or task
    ids for tasks without one), as dcos-commons' placement rules count a service's tasks
    (every task in its state store, running or not: a stateful task stays at its agent until
    replaced). A member is at the agent(s) of its live tasks; only while it has none, at the
    agent its launch is pinned to (restart in place on its volume) and at its volume's agent
    (the member record's ``volume.agent_id``, also while its task is LOST or ended). Each
    member counts once per agent: task records and member records name it by the same id
    (the member record's key is "<instance>/<member id>", not the member id).
    ``members``: (instance, member id, agent id of its volume) of each member record
    (:func:`member_place`)."""
    live: dict[tuple[str, str], set[str]] = {}
    held: dict[tuple[str, str], set[str]] = {}
    for task in tasks:
        member = (task.instance, task.member_id or task.task_id)
        if task.agent_id and not mesos.is_terminal(task.state):
            live.setdefault(member, set()).add(task.agent_id)
        elif task.state == types_pb2.TASK_STATE_QUEUED and task.launch.volume.agent_id:
            held.setdefault(member, set()).add(task.launch.volume.agent_id)
    for instance, member_id, agent_id in members:
        if agent_id:
            held.setdefault((instance, member_id), set()).add(agent_id)
    places: dict[tuple[str, str], set[str]] = {}
    for (instance, member_id), agents in (held | live).items():
        if not instance or not member_id:
            continue
        for agent_id in agents:
            places.setdefault((agent_id, instance), set()).add(member_id)
    return places
