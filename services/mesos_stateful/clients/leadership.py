"""Leader election of the controllers (lifecycle, offers): one leader per role, standbys wait.

Kubernetes' leader election (client-go ``k8s.io/client-go/tools/leaderelection/leaderelection.go``)
on a compare-and-swap record of the state service, ``KIND_LEADER`` ``/stateful/v1/leaders/<role>``
holding a ``LeaderLease``:

- A candidate reads the record every ``retry_period`` and times its expiry by its OWN monotonic
  clock, from the moment it saw the record last change (``observedTime`` in client-go): clocks of
  different machines are never compared. Once ``lease_duration`` (the record's
  ``lease_duration_seconds``) passed without a change, or the record is released (holder ""), it
  takes the lease with a compare-and-swap that raises the term.
- The leader renews every ``retry_period``. When it could not renew for ``renew_deadline``,
  measured from the START of its last successful renewal (or of the acquisition), it ends its term:
  ``Leadership.lost`` is set and the ``lead`` task is cancelled. A candidate waits
  ``lease_duration`` from when it SAW that renewal, which is later than its start; with
  ``renew_deadline < lease_duration`` the old leader stops before anyone can take over, as long as
  the two clocks' rates agree to within (lease_duration - renew_deadline) / lease_duration.
- Every write the leader makes carries its term (``StateClient.fence``, a fencing token: Martin
  Kleppmann, "How to do distributed locking"); the state service refuses it with ABORTED once
  another term began, which also covers a leader paused (GC, SIGSTOP) past its deadline. A refused
  write (``errors.NotLeader``) ends the term at once.
- On a graceful shutdown the leader releases the lease (holder "", same term, as client-go's
  ``ReleaseOnCancel``) so a standby takes over at its next poll instead of after a lease duration.

Takeover after a leader dies without releasing: at most ``lease_duration + retry_period`` after the
last renewal a standby saw (``LeadershipSettings.takeover_bound_seconds``), plus one state call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self

from google.protobuf import timestamp_pb2
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import types_pb2 as pb_types
from mesos_stateful.clients import records
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors

log = logging.getLogger(__name__)


class LeadershipSettings(BaseModel):
    """Timing of leader election, in seconds (client-go LeaderElectionConfig: LeaseDuration,
    RenewDeadline, RetryPeriod; kube-controller-manager uses 15 / 10 / 2 s, scaled down here so a
    standby acts within 2 s). Invariant, checked at construction (ValueError):
    ``retry_period < renew_deadline < lease_duration``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lease_duration_seconds: float = Field(
        1.5, gt=0, description="standbys wait this long after the last renewal they saw before taking over"
    )
    renew_deadline_seconds: float = Field(
        1.0, gt=0, description="the leader stops acting when it could not renew for this long"
    )
    retry_period_seconds: float = Field(0.2, gt=0, description="renew / campaign interval")

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(
                "leader election needs retry_period_seconds < renew_deadline_seconds < "
                f"lease_duration_seconds (got {self.retry_period_seconds} / {self.renew_deadline_seconds} / "
                f"{self.lease_duration_seconds}): a leader must renew several times within its deadline "
                "and stop before a standby may take over (client-go leaderelection)"
            )
        return self

    @property
    def takeover_bound_seconds(self) -> float:
        """Longest wait of a standby after the last renewal it saw: lease_duration + retry_period."""
        return self.lease_duration_seconds + self.retry_period_seconds


@dataclass
class Leadership:
    """One term of leadership of ``role`` held by ``holder``."""

    role: str
    term: int
    holder: str
    lost: asyncio.Event = field(default_factory=asyncio.Event)  # set when this term is over


class _Deposed(Exception):
    """The record shows another holder or term: this term is over."""


_TERM_IN_MESSAGE = re.compile(r"term (\d+)")


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class LeaderElector:
    """Campaigns for ``role`` through ``state`` and runs ``lead`` while it leads (see the module)."""

    def __init__(
        self,
        state: StateClient,
        role: str,
        address: str,
        settings: LeadershipSettings,
        identity: str | None = None,
    ) -> None:
        records.validate_name(pb.KIND_LEADER, role, "role")
        self.state = state
        self.role = role
        self.address = address
        self.settings = settings
        self.identity = identity or f"{role}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._leadership: Leadership | None = None
        self._revision = 0  # mod_revision of the record as this leader last wrote it
        self._acquired_at = timestamp_pb2.Timestamp()
        self._observed_revision = -1  # the record's mod_revision last seen (0: absent)
        self._observed_at = 0.0  # loop time when that revision was first seen
        self._expires_at: float | None = None  # loop time the observed holder's lease expires
        self._highest_term = 0  # the highest term seen (a deleted record keeps its term in the store)
        self._logged: tuple[str, int] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._crashed = False

    @property
    def leadership(self) -> Leadership | None:
        """The current term while leading, else None."""
        current = self._leadership
        return current if current is not None and not current.lost.is_set() else None

    def crash(self) -> None:
        """Test hook: stop as a killed process would (lead cancelled, the lease NOT released)."""
        self._crashed = True
        if self._run_task is not None:
            self._run_task.cancel()

    async def run(self, lead: Callable[[Leadership], Awaitable[None]]) -> None:
        """Campaign until cancelled. When elected: sets state.fence = LeaderFence(role, term) and
        state.on_fence_lost, then runs lead(leadership) as a task. When the term ends (renewal not
        done within renew_deadline, NotLeader from any write, or lead() returned/raised), it
        cancels the lead task, awaits it, clears state.fence, and campaigns again. When run() itself
        is cancelled (shutdown): stops lead, then releases the lease (holder "", same term) so a
        standby takes over at once, and re-raises CancelledError."""
        self._run_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                acquired = await self._try_acquire()
            except errors.StatefulError as error:
                log.debug("%s: campaign attempt failed: %s", self.role, error.message)
                acquired = None
            if acquired is not None:
                ended_by_lead = await self._lead_term(acquired, started, lead)
                if not ended_by_lead:
                    continue  # campaign again at once: the record tells who leads now
                await asyncio.sleep(self.settings.retry_period_seconds)
                continue
            await asyncio.sleep(self._next_attempt_in(loop.time()))

    # -- campaign -----------------------------------------------------------------------------

    def _observe(self, record: pb.Record | None, now: float) -> None:
        revision = record.mod_revision if record is not None else 0
        if revision != self._observed_revision:
            self._observed_revision = revision
            self._observed_at = now
        if record is None:
            return
        lease = record.leader
        self._highest_term = max(self._highest_term, lease.term)
        seen = (lease.holder, lease.term)
        if seen != self._logged and lease.holder != self.identity:
            self._logged = seen
            if lease.holder:
                log.info("%s: standby, leader is %s term %d", self.role, lease.holder, lease.term)
            else:
                log.info("%s: standby, the lease was released in term %d", self.role, lease.term)

    def _next_attempt_in(self, now: float) -> float:
        """Seconds to the next campaign attempt: a retry period, or less when the observed lease
        expires sooner (so a takeover is not late by up to a retry period; never early)."""
        retry = self.settings.retry_period_seconds
        if self._expires_at is None:
            return retry
        return max(0.0, min(retry, self._expires_at - now))

    async def _try_acquire(self) -> pb.Record | None:
        """One client-go tryAcquireOrRenew for a candidate: the stored record if this attempt took
        the lease, None if another holder's lease is still valid or the compare-and-swap lost."""
        record = await self.state.find(pb.KIND_LEADER, self.role)
        now = asyncio.get_running_loop().time()
        self._observe(record, now)
        current = record.leader if record is not None else None
        self._expires_at = None
        if current is not None and current.holder and current.holder != self.identity:
            duration = current.lease_duration_seconds or self.settings.lease_duration_seconds
            if now < self._observed_at + duration:
                self._expires_at = self._observed_at + duration
                return None
        # Absent, released, expired, or ours from a term that ended: a new term.
        term = max(self._highest_term, current.term if current is not None else 0) + 1
        stamp = _now()
        lease = pb_types.LeaderLease(
            holder=self.identity,
            address=self.address,
            term=term,
            lease_duration_seconds=self.settings.lease_duration_seconds,
            acquired_at=stamp,
            renewed_at=stamp,
        )
        try:
            return await self.state.put(
                lease, record.mod_revision if record is not None else 0, name=self.role, fenced=False
            )
        except (errors.Conflict, errors.AlreadyExists) as error:
            # Another candidate won, or (a deleted record) the store knows a higher term.
            self._highest_term = max([self._highest_term, *map(int, _TERM_IN_MESSAGE.findall(error.message))])
            return None

    # -- one term -----------------------------------------------------------------------------

    async def _lead_term(
        self, record: pb.Record, started: float, lead: Callable[[Leadership], Awaitable[None]]
    ) -> bool:
        """Lead in the acquired term until it ends; True when it ended because lead() finished."""
        leadership = Leadership(self.role, record.leader.term, self.identity, asyncio.Event())
        self._leadership = leadership
        self._revision = record.mod_revision
        self._acquired_at = record.leader.acquired_at
        self._logged = (self.identity, leadership.term)
        self.state.fence = pb.LeaderFence(role=self.role, term=leadership.term)

        def fence_lost() -> None:
            self._end(leadership, "a write was refused: another term began")

        self.state.on_fence_lost = fence_lost
        log.info("%s: leading in term %d", self.role, leadership.term)

        async def leading() -> None:
            await lead(leadership)

        lead_task = asyncio.create_task(leading(), name=f"{self.role}-lead-term-{leadership.term}")
        keep_task = asyncio.create_task(self._keep(leadership, started), name=f"{self.role}-renew")
        lost_task = asyncio.create_task(leadership.lost.wait())
        cancelled = False
        ended_by_lead = False
        try:
            await asyncio.wait({lead_task, keep_task, lost_task}, return_when=asyncio.FIRST_COMPLETED)
            if lead_task.done() and not leadership.lost.is_set():
                ended_by_lead = True
                error = None if lead_task.cancelled() else lead_task.exception()
                if error is not None:
                    log.error("%s: lead failed in term %d", self.role, leadership.term, exc_info=error)
                self._end(leadership, "lead returned" if error is None else f"lead raised {error!r}")
        except asyncio.CancelledError:
            cancelled = True
            reason = "crashed (test hook)" if self._crashed else "shutting down"
            self._end(leadership, reason)
            raise
        finally:
            leadership.lost.set()
            self._leadership = None
            for task in (lead_task, keep_task, lost_task):
                task.cancel()
            for task in (lead_task, keep_task, lost_task):
                with contextlib.suppress(BaseException):
                    await task
            if self.state.on_fence_lost is fence_lost:
                self.state.fence = None
                self.state.on_fence_lost = None
            log.info("%s: stopped acting as the leader of term %d", self.role, leadership.term)
            if (cancelled and not self._crashed) or ended_by_lead:
                await self._release(leadership)
        return ended_by_lead

    def _end(self, leadership: Leadership, reason: str) -> None:
        if not leadership.lost.is_set():
            log.warning("%s: term %d is over: %s", self.role, leadership.term, reason)
            leadership.lost.set()

    async def _keep(self, leadership: Leadership, last_start: float) -> None:
        """Renew every retry_period; end the term when no renewal that started within the last
        renew_deadline succeeded (client-go renew(); deadline from the start of the last success)."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        while True:
            deadline = last_start + settings.renew_deadline_seconds
            await asyncio.sleep(max(0.0, min(settings.retry_period_seconds, deadline - loop.time())))
            start = loop.time()
            if start >= deadline:
                self._end(leadership, f"could not renew the lease for {settings.renew_deadline_seconds:g} s")
                return
            try:
                async with asyncio.timeout_at(deadline):
                    await self._renew(leadership)
                last_start = start
            except TimeoutError:
                continue
            except _Deposed as deposed:
                self._end(leadership, str(deposed))
                return
            except errors.StatefulError as error:
                log.info("%s: renewal of term %d failed: %s", self.role, leadership.term, error.message)

    async def _renew(self, leadership: Leadership) -> None:
        lease = pb_types.LeaderLease(
            holder=self.identity,
            address=self.address,
            term=leadership.term,
            lease_duration_seconds=self.settings.lease_duration_seconds,
            acquired_at=self._acquired_at,
            renewed_at=_now(),
        )
        try:
            stored = await self.state.put(lease, self._revision, name=self.role, fenced=False)
        except errors.Conflict:
            # A renewal whose answer was lost may have been applied: re-read.
            record = await self.state.find(pb.KIND_LEADER, self.role)
            current = record.leader if record is not None else None
            if (
                record is None
                or current is None
                or (current.holder, current.term)
                != (
                    self.identity,
                    leadership.term,
                )
            ):
                now = f"{current.holder or 'nobody'} term {current.term}" if current else "no lease"
                raise _Deposed(f"the lease changed hands ({now})") from None
            self._revision = record.mod_revision
            stored = await self.state.put(lease, self._revision, name=self.role, fenced=False)
        self._revision = stored.mod_revision

    async def _release(self, leadership: Leadership) -> None:
        """Give the lease up (holder "", same term) so a standby takes over at its next poll."""
        lease = pb_types.LeaderLease(
            holder="",
            address="",
            term=leadership.term,
            lease_duration_seconds=self.settings.lease_duration_seconds,
            acquired_at=self._acquired_at,
            renewed_at=_now(),
        )
        try:
            async with asyncio.timeout(self.settings.renew_deadline_seconds):
                await self.state.put(lease, self._revision, name=self.role, fenced=False)
        except (TimeoutError, errors.StatefulError) as error:
            log.info(
                "%s: could not release term %d (%s); it expires by itself", self.role, leadership.term, error
            )
            return
        log.info("%s: released the lease of term %d", self.role, leadership.term)


async def find_leader(state: StateClient, role: str) -> pb_types.LeaderLease | None:
    """The stored lease of role if it has a holder (may be expired; callers retry on UNAVAILABLE)."""
    record = await state.find(pb.KIND_LEADER, role)
    if record is None or not record.leader.holder:
        return None
    return record.leader
