"""An instance's bounded history (``types_pb2.Event``), kept by the state service.

Each event is its own record, ``KIND_EVENT`` ``/stateful/v1/events/<instance>/<id>``: the id is 20
digits of the writer's clock in nanoseconds (made unique by a create-only put that moves one
nanosecond on), so the state service's name order is time order and a watch on the kind delivers
each event once. After every write the writer drops the instance's oldest events beyond
``history`` (default :data:`HISTORY_SIZE`); two writers trimming at once delete the same records,
which is harmless. Writers: the lifecycle (what it did and saw) and the gateway (operator actions).

Recording is best effort: a store that cannot be reached costs the event (logged), never the
operation that caused it; only a lifecycle that lost its leadership (``errors.NotLeader``) hears
about it, as from any other write.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.records import event_name
from mesos_stateful.common import errors

log = logging.getLogger(__name__)

# Events kept per instance; the oldest are dropped beyond it.
HISTORY_SIZE = 200
# The actor of what the controller does by itself.
LIFECYCLE = "lifecycle"
# Create-only puts tried with the next nanosecond when an id is taken.
_ID_TRIES = 20
_MESSAGE_LIMIT = 500


def event_id(nanoseconds: int) -> str:
    """The id of an event recorded at ``nanoseconds`` since the epoch (sortable: 20 digits)."""
    return f"{nanoseconds:020d}"


def new_event(
    instance: str,
    kind: types_pb2.EventKind,
    message: str,
    *,
    actor: str = LIFECYCLE,
    member_id: str = "",
    plan: str = "",
    step: str = "",
    action: str = "",
    decision: types_pb2.PromotionDecision | None = None,
    fence: types_pb2.FenceOutcome | None = None,
    at: float | None = None,
) -> types_pb2.Event:
    """An Event (its id and time from ``at``, seconds since the epoch, default now); the message is
    kept to one line of at most 500 characters."""
    nanoseconds = int((time.time() if at is None else at) * 1e9)
    event = types_pb2.Event(
        instance=instance,
        id=event_id(nanoseconds),
        kind=kind,
        message=" ".join(message.split())[:_MESSAGE_LIMIT],
        actor=actor,
        member_id=member_id,
        plan=plan,
        step=step,
        action=action,
    )
    event.time.FromNanoseconds(nanoseconds)
    if decision is not None:
        event.decision.CopyFrom(decision)
    if fence is not None:
        event.fence.CopyFrom(fence)
    return event


class EventLog:
    """Writes and reads instances' histories over a ``StateClient``."""

    def __init__(self, client: Any, history: int = HISTORY_SIZE) -> None:
        if history < 1:
            raise ValueError("the event history keeps at least one event")
        self.client = client
        self.history = history

    async def record(self, event: types_pb2.Event) -> types_pb2.Event | None:
        """Store ``event`` (its id moved on if taken) and trim the instance's history; returns the
        event as stored, None when the store could not be reached (logged). Raises
        ``errors.NotLeader`` only (a fenced writer that lost its term)."""
        try:
            stored = await self._put(event)
            await self._trim(event.instance)
            return stored
        except errors.NotLeader:
            raise
        except Exception as error:  # best effort: the operation that caused it goes on
            log.warning("%s: event %s not recorded (%s)", event.instance, _kind(event), error)
            return None

    async def _put(self, event: types_pb2.Event) -> types_pb2.Event:
        nanoseconds = int(event.id) if event.id.isdigit() else time.time_ns()
        for _ in range(_ID_TRIES):
            event.id = event_id(nanoseconds)
            try:
                await self.client.put(event, expected_revision=0)
                return event
            except errors.AlreadyExists:
                nanoseconds += 1
        raise errors.Conflict(f"no free event id near {event.id}")

    async def _trim(self, instance: str) -> None:
        records, _ = await self.client.list(pb.KIND_EVENT, f"{instance}/")
        excess = len(records) - self.history
        for record in records[: max(0, excess)]:
            await self.client.delete(pb.KIND_EVENT, record.key.name)

    async def list(self, instance: str, limit: int = 0) -> list[types_pb2.Event]:
        """The instance's events, oldest first; the last ``limit`` when > 0."""
        records, _ = await self.client.list(pb.KIND_EVENT, f"{instance}/")
        events = sorted((r.event for r in records), key=lambda e: e.id)
        return events[-limit:] if limit > 0 else events

    async def forget(self, instance: str) -> int:
        """Delete the instance's whole history (once the instance itself is removed); the count."""
        records, _ = await self.client.list(pb.KIND_EVENT, f"{instance}/")
        for record in records:
            await self.client.delete(pb.KIND_EVENT, event_name(instance, record.event.id))
        return len(records)


def _kind(event: types_pb2.Event) -> str:
    return types_pb2.EventKind.Name(event.kind).removeprefix("EVENT_KIND_")
