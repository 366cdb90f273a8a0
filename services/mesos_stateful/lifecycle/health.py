"""The health monitor: failure detection that does not wait for Mesos, and replication watched
all the time (data-safety rules 2, 3 and 5 in DESIGN.md).

For every instance with a master/replica topology it

- **probes the master** every ``probe_interval_seconds`` with the workload's ``CheckMember``
  (deadline ``probe_timeout_seconds``). After ``probe_failures`` misses in a row it writes
  ``Member.health.unresponsive`` on the master: the planner then treats the master as lost and a
  recovery plan fences it and fails over, although Mesos may still report its task RUNNING (a
  cut-off agent is noticed by Mesos only after its ping timeouts). A miss counts only when the
  workload service itself answers (``Describe`` right after): a workload service that is down
  says nothing about the database and never causes a failover.
- **checks every running replica** every ``check_interval_seconds`` (link up, following the
  current master, lag, history consistent with the master's) and keeps the answer on the member:
  conditions (``MemberCondition``, ``since`` carried over while ``ok`` stays the same), position,
  lag and the repair the workload asks for. The planner turns a repair into a plan (re-point a
  chained or stopped replica; rebuild a diverged one) and never promotes an inconsistent member.

Workloads without ``CheckMember`` (UNIMPLEMENTED) are left to Mesos status updates alone.
Reads are a snapshot per instance, refreshed when the controller sees a change (or every check
interval); writes are read-modify-write guarded by the task id that was checked, so a check that
raced a relaunch or a failover is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.lifecycle import planner, plans
from mesos_stateful.lifecycle.callbacks import Callbacks, NotImplementedByWorkload, callback_context
from mesos_stateful.lifecycle.planner import Condition
from mesos_stateful.lifecycle.plans import Action
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.lifecycle.store import Loaded, Store

log = logging.getLogger(__name__)
T = types_pb2

# A workload that answered UNIMPLEMENTED is asked again after this long (it may be upgraded).
UNSUPPORTED_RECHECK_SECONDS = 60.0
# Actions of a plan that already handles a lost master: no probing meanwhile.
HANDLING_MASTER = (Action.FENCE, Action.FAILOVER, Action.DEMOTE, Action.ELECT)


@dataclass
class _Tracked:
    """What the monitor keeps of one instance between rounds."""

    loaded: Loaded | None = None
    loaded_at: float = 0.0
    dirty: bool = True
    misses: dict[str, int] = field(default_factory=dict)  # task id of the master -> misses in a row
    replicas_checked_at: float = 0.0  # monotonic time of the last round that checked the replicas
    replica_checks: asyncio.Task[None] | None = None  # those checks, running in the background
    written_at: dict[str, float] = field(default_factory=dict)  # member id -> last health write


async def _all(jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run the checks together; one that fails (the state service down) does not stop the others."""
    for result in await asyncio.gather(*jobs, return_exceptions=True):
        if isinstance(result, Exception):
            log.debug("a replica check failed: %s", result)


def significant(old: types_pb2.MemberHealth, new: types_pb2.MemberHealth) -> bool:
    """Whether ``new`` says something ``old`` did not (worth a write even between two checks):
    a condition or its reason changed, the repair, the role or the master followed."""

    def key(h: types_pb2.MemberHealth) -> tuple[object, ...]:
        conditions = tuple((c.type, c.ok, c.reason) for c in h.conditions)
        return (conditions, h.repair, h.observed_role, h.following, h.unresponsive, h.failed_checks > 0)

    return key(old) != key(new)


def merge(old: types_pb2.MemberHealth, new: types_pb2.MemberHealth, now: float) -> types_pb2.MemberHealth:
    """``new`` with ``checked_at`` set and each condition's ``since`` carried over from ``old``
    while its ``ok`` did not change (else ``now``)."""
    merged = types_pb2.MemberHealth()
    merged.CopyFrom(new)
    merged.checked_at.CopyFrom(plans.timestamp(now))
    before = {c.type: c for c in old.conditions}
    for c in merged.conditions:
        prev = before.get(c.type)
        if prev is not None and prev.ok == c.ok and prev.HasField("since"):
            c.since.CopyFrom(prev.since)
        else:
            c.since.CopyFrom(plans.timestamp(now))
    return merged


def unreachable(old: types_pb2.MemberHealth, misses: int, message: str, now: float) -> types_pb2.MemberHealth:
    """The last health with REACHABLE false (``misses`` checks in a row not answered)."""
    new = types_pb2.MemberHealth()
    new.CopyFrom(old)
    new.failed_checks = misses
    del new.conditions[:]
    new.conditions.extend(c for c in old.conditions if c.type != T.CONDITION_TYPE_REACHABLE)
    new.conditions.insert(
        0,
        types_pb2.MemberCondition(
            type=T.CONDITION_TYPE_REACHABLE, ok=False, reason="Unreachable", message=message
        ),
    )
    merged = merge(old, new, now)
    merged.checked_at.CopyFrom(old.checked_at)  # checked_at: the last answer
    return merged


class HealthMonitor:
    """Runs one probe loop per instance (see the module). ``names`` lists the instances the
    controller knows; ``wake`` asks the controller to reconcile one now."""

    def __init__(
        self,
        settings: LifecycleSettings,
        store: Store,
        callbacks: Callbacks,
        names: Callable[[], Iterable[str]],
        wake: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.store = store
        # Its own ``Callbacks`` (channels), not the reconciler's: a check that fails drops (closes)
        # its channel, and grpc.aio cancels every call in flight on a closed channel. Shared, the
        # probes of a frozen member cancelled the failover's MasterLost every check interval.
        self.callbacks = callbacks
        self.names = names
        self.wake = wake
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._tracked: dict[str, _Tracked] = {}
        self._unsupported: dict[str, float] = {}  # workload -> monotonic time to ask again
        self._positions: dict[str, tuple[str, str]] = {}  # instance -> (master task id, position)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._loops.values()] if t is not None]
        tasks += [t.replica_checks for t in self._tracked.values() if t.replica_checks is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._loops.clear()
        self._tracked.clear()
        self._task = None

    def master_position(self, name: str, master: types_pb2.Member) -> str:
        """The master's position at its last answered probe (fresher than the stored
        ``Member.health.position``, written at most every check interval), else the stored one."""
        task_id, position = self._positions.get(name, ("", ""))
        return position if task_id == master.task_id and position else master.health.position

    def touch(self, name: str) -> None:
        """The instance changed: read it again before the next probe."""
        tracked = self._tracked.get(name)
        if tracked is not None:
            tracked.dirty = True

    async def _run(self) -> None:
        while True:
            wanted = set(self.names())
            for name in wanted - set(self._loops):
                self._tracked[name] = _Tracked()
                self._loops[name] = asyncio.create_task(self._instance(name), name=f"health-{name}")
            for name in set(self._loops) - wanted:
                self._loops.pop(name).cancel()
                gone = self._tracked.pop(name, None)
                if gone is not None and gone.replica_checks is not None:
                    gone.replica_checks.cancel()
                self._positions.pop(name, None)
            for name, loop in list(self._loops.items()):
                if loop.done():
                    del self._loops[name]
            await asyncio.sleep(self.settings.probe_interval_seconds)

    async def _instance(self, name: str) -> None:
        interval = self.settings.probe_interval_seconds
        while True:
            began = time.monotonic()
            try:
                await self.round(name)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the state service may be down: try next round
                log.debug("%s: health round failed: %s", name, error)
            await asyncio.sleep(max(0.0, began + interval - time.monotonic()))

    async def _load(self, name: str) -> Loaded | None:
        tracked = self._tracked.setdefault(name, _Tracked())
        now = time.monotonic()
        if (
            tracked.dirty
            or tracked.loaded is None
            or now - tracked.loaded_at >= self.settings.check_interval_seconds
        ):
            tracked.dirty = False
            tracked.loaded = await self.store.load(name)
            tracked.loaded_at = now
        return tracked.loaded

    async def round(self, name: str) -> None:
        """One round for one instance: the master's probe, and the replicas' check when due."""
        ld = await self._load(name)
        if ld is None or not self._monitored(ld):
            return
        tracked = self._tracked[name]
        s = ld.snapshot
        master = s.master()
        now = time.monotonic()
        checking = tracked.replica_checks is not None and not tracked.replica_checks.done()
        if not checking and now - tracked.replicas_checked_at >= self.settings.check_interval_seconds:
            # Every ready replica in the same round: one picture of the instance per interval. In
            # the background: a replica's check also asks the master (its lag), so a silent master
            # slows it down, and the probe must keep its pace.
            tracked.replicas_checked_at = now
            jobs = [
                self._check(ld, tracked, m)
                for m in s.members
                if m.role == T.ROLE_SLAVE and self._checkable(s, m)
            ]
            if jobs:
                tracked.replica_checks = asyncio.create_task(_all(jobs), name=f"health-replicas-{name}")
        if master is not None and self._probe_due(ld, master):
            await self._probe(ld, tracked, master)

    def _monitored(self, ld: Loaded) -> bool:
        s = ld.snapshot
        if s.description is None or s.peers():
            return False
        if s.instance.phase in (T.INSTANCE_PHASE_DELETING, T.INSTANCE_PHASE_DELETED):
            return False
        until = self._unsupported.get(s.instance.spec.workload)
        return until is None or time.monotonic() >= until

    @staticmethod
    def _checkable(s: planner.Snapshot, m: types_pb2.Member) -> bool:
        """A replica whose process runs: ready, or started but not ready (one that cannot catch up,
        e.g. on a diverged branch, never gets ready: its check says why and asks for the repair)."""
        if s.condition(m) == Condition.READY:
            return True
        task = s.task_of(m)
        if task is None or task.kill_requested or not (m.host and m.ports):
            return False
        return task.state in (T.TASK_STATE_STARTING, T.TASK_STATE_RUNNING)

    def _probe_due(self, ld: Loaded, master: types_pb2.Member) -> bool:
        s = ld.snapshot
        if s.condition(master) != Condition.READY or master.health.unresponsive:
            return False
        plan = s.instance.plan
        return not (plans.is_active(plan) and plans.has_open_step(plan, master.id, HANDLING_MASTER))

    async def _ask(self, ld: Loaded, member: types_pb2.Member, timeout: float) -> types_pb2.MemberHealth:
        context = callback_context(ld.snapshot, member.id, ld.secrets, 1)
        response = await self.callbacks.call(
            ld.snapshot.instance.spec.workload,
            "CheckMember",
            context,
            timeout=timeout,
            traced=False,
            timeout_seconds=timeout * 0.8,
        )
        health: types_pb2.MemberHealth = response.health
        return health

    async def _workload_answers(self, ld: Loaded) -> bool:
        """Whether the workload service itself is up (so a failed check is the member's fault)."""
        return await self.callbacks.alive(
            ld.snapshot.instance.spec.workload, self.settings.probe_timeout_seconds
        )

    def _unsupported_now(self, ld: Loaded, error: NotImplementedByWorkload) -> None:
        workload = ld.snapshot.instance.spec.workload
        if workload not in self._unsupported or time.monotonic() >= self._unsupported[workload]:
            log.info("workload %s has no CheckMember (%s): relying on Mesos status updates", workload, error)
        self._unsupported[workload] = time.monotonic() + UNSUPPORTED_RECHECK_SECONDS

    async def _probe(self, ld: Loaded, tracked: _Tracked, master: types_pb2.Member) -> None:
        now = time.time()
        try:
            health = await self._ask(ld, master, self.settings.probe_timeout_seconds)
        except NotImplementedByWorkload as error:
            self._unsupported_now(ld, error)
            return
        except errors.StatefulError as error:
            if not await self._workload_answers(ld):
                log.warning(
                    "%s: the workload service does not answer; the probe of %s says nothing",
                    ld.name,
                    master.id,
                )
                return
            misses = tracked.misses.get(master.task_id, 0) + 1
            tracked.misses = {master.task_id: misses}
            declared = misses >= self.settings.probe_failures
            log.log(
                logging.WARNING if declared else logging.INFO,
                "%s: master %s did not answer probe %d/%d: %s",
                ld.name,
                master.id,
                misses,
                self.settings.probe_failures,
                error.message,
            )
            message = f"{misses} probe(s) in a row not answered: {error.message}"[:500]
            new = unreachable(master.health, misses, message, now)
            new.unresponsive = declared
            if declared or significant(master.health, new):
                await self._write(ld, tracked, master, new, role=T.ROLE_MASTER)
            if declared:
                self.wake(ld.name)
            return
        tracked.misses = {}
        if health.position:
            self._positions[ld.name] = (master.task_id, health.position)
        new = merge(master.health, health, now)
        await self._write_if_needed(ld, tracked, master, new)

    async def _check(self, ld: Loaded, tracked: _Tracked, member: types_pb2.Member) -> None:
        now = time.time()
        timeout = min(self.settings.callback_timeout_seconds, self.settings.check_interval_seconds)
        try:
            health = await self._ask(ld, member, timeout)
        except NotImplementedByWorkload as error:
            self._unsupported_now(ld, error)
            return
        except errors.StatefulError as error:
            if not await self._workload_answers(ld):
                return
            misses = member.health.failed_checks + 1
            new = unreachable(member.health, misses, f"not answering: {error.message}"[:500], now)
            await self._write(ld, tracked, member, new)
            return
        # A replica's check is kept each time (every check interval): lag and position stay fresh.
        await self._write(ld, tracked, member, merge(member.health, health, now))

    async def _write_if_needed(
        self, ld: Loaded, tracked: _Tracked, member: types_pb2.Member, new: types_pb2.MemberHealth
    ) -> None:
        stale = (
            time.monotonic() - tracked.written_at.get(member.id, 0.0) >= self.settings.check_interval_seconds
        )
        if stale or significant(member.health, new):
            await self._write(ld, tracked, member, new)

    async def _write(
        self,
        ld: Loaded,
        tracked: _Tracked,
        member: types_pb2.Member,
        health: types_pb2.MemberHealth,
        role: int | None = None,
    ) -> None:
        task_id = member.task_id

        def mutate(m: types_pb2.Member) -> types_pb2.Member | None:
            if m.task_id != task_id or (role is not None and m.role != role):
                return None  # relaunched or failed over meanwhile: this check is about the past
            m.health.CopyFrom(health)
            return m

        updated = await self.store.update_member(ld.name, member.id, mutate)
        tracked.written_at[member.id] = time.monotonic()
        if updated is not None:
            ld.with_member(updated)
            if significant(member.health, health):
                log.info("%s: %s health: %s", ld.name, member.id, describe(health))


def describe(health: types_pb2.MemberHealth) -> str:
    """One line for logs and the CLI: the failing conditions (or "ok") and the repair asked for."""
    bad = [c for c in health.conditions if not c.ok]
    text = "; ".join(
        f"{planner.condition_name(c.type)}: {c.reason}" + (f" ({c.message})" if c.message else "")
        for c in bad
    )
    text = text or "ok"
    if health.repair:
        text += f"; repair: {T.Repair.Name(health.repair).removeprefix('REPAIR_').lower()}"
    if health.unresponsive:
        text = "unresponsive; " + text
    return text
