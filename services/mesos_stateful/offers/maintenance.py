"""Agents scheduled for maintenance, as the framework sees them: pure bookkeeping, no I/O.

Mesos (docs/maintenance.md, "Maintenance Primitives") moves a scheduled machine to DRAINING and
sends each framework with resources on its agents an **inverse offer** carrying the machine's
``unavailability``; offers from the agent carry it too. The framework answers:

- it sets ``Task.maintenance`` on every non-terminal task record on the agent (and on tasks
  launched there later, e.g. a restart in place), so lifecycle drains those members;
- it **accepts** the inverse offer once none of our tasks is left on the agent (nothing running,
  staging, unreachable or queued to restart on a volume there). Until then the inverse offer is
  left outstanding. Not declined: Mesos reads a decline as "an advisory notice to the operator that
  the framework is unable or unlikely to meet the maintenance schedule", which is not so while
  lifecycle moves the members off; and an outstanding inverse offer is not re-sent
  (``HierarchicalAllocatorProcess::generateInverseOffers`` skips frameworks with one outstanding),
  where a decline with a short filter would bring a new one (and a new id on every task record)
  every few seconds;
- the maintenance is cleared when it is cancelled: a RESCIND_INVERSE_OFFER not followed by a new
  inverse offer within a grace period (Mesos rescinds and re-sends inverse offers of every
  scheduled machine on each schedule update: ``Master::updateUnavailability``, so a rescind alone
  does not mean cancelled), or an offer from the agent without ``unavailability``.

Outstanding inverse offer ids are valid only in the subscription they came in: a framework
failover removes them in the master (``Master::failoverFramework``) and the allocator sends new
ones. After a restart of this service the maintenance is rebuilt from the task records (so it is
kept on them) and confirmed by the inverse offers Mesos sends after the subscription.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.offers.mesos import is_terminal
from mesos_stateful.offers.taskstore import copy_task

log = logging.getLogger(__name__)


@dataclass
class Drain:
    """One agent scheduled for maintenance."""

    agent_id: str
    maintenance: types_pb2.AgentMaintenance
    # The inverse offer outstanding in this subscription ("": none, e.g. rebuilt from records,
    # rescinded, or from an earlier subscription).
    inverse_offer_id: str = ""
    # The inverse offer we accepted (its agent had none of our tasks left).
    accepted_id: str = ""
    # time.monotonic() of a RESCIND_INVERSE_OFFER not followed by a new inverse offer yet.
    rescinded_at: float | None = None
    # Known only from the agent's offers (their ``unavailability``): no inverse offer for it, as
    # Mesos sends those only to frameworks with resources on the agent
    # (``HierarchicalAllocatorProcess::generateInverseOffers``); cancelled by an offer without.
    from_offer: bool = False


def _same_window(a: types_pb2.AgentMaintenance, b: types_pb2.AgentMaintenance) -> bool:
    return (
        a.start == b.start and a.duration == b.duration and a.HasField("duration") == b.HasField("duration")
    )


def _stamp(maintenance: types_pb2.AgentMaintenance) -> tuple[int, int]:
    return (maintenance.announced_at.seconds, maintenance.announced_at.nanos)


class MaintenanceBook:
    """agent id -> :class:`Drain`, and what follows from it for the task records."""

    def __init__(self) -> None:
        self.drains: dict[str, Drain] = {}

    def get(self, agent_id: str) -> types_pb2.AgentMaintenance | None:
        drain = self.drains.get(agent_id)
        return drain.maintenance if drain is not None else None

    def restore(self, tasks: Iterable[types_pb2.Task]) -> None:
        """Rebuild from the task records after a restart: the latest maintenance announced per
        agent, terminal records included (an agent we left, or that went DOWN, keeps its
        maintenance on them; an offer from the agent without unavailability cancels it, and that
        offer comes before any launch there). No inverse offer is outstanding yet."""
        for task in tasks:
            if not task.agent_id or not task.HasField("maintenance"):
                continue
            known = self.drains.get(task.agent_id)
            if known is None or _stamp(task.maintenance) > _stamp(known.maintenance):
                maintenance = types_pb2.AgentMaintenance()
                maintenance.CopyFrom(task.maintenance)
                self.drains[task.agent_id] = Drain(task.agent_id, maintenance)

    def announce(self, agent_id: str, maintenance: types_pb2.AgentMaintenance) -> Drain:
        """An inverse offer for the agent. ``announced_at`` stays the first one's while the window
        (start, duration) is the same."""
        drain = self.drains.get(agent_id)
        if drain is not None and _same_window(drain.maintenance, maintenance):
            maintenance.announced_at.CopyFrom(drain.maintenance.announced_at)
        if drain is None:
            drain = self.drains[agent_id] = Drain(agent_id, maintenance)
        drain.maintenance = maintenance
        drain.inverse_offer_id = maintenance.inverse_offer_id
        drain.rescinded_at = None
        drain.from_offer = False
        return drain

    def offered(self, agent_id: str, maintenance: types_pb2.AgentMaintenance) -> Drain | None:
        """An offer from the agent carrying an ``unavailability``: the offers of a DRAINING
        machine's agents carry its window (docs/maintenance.md), also for a framework with nothing
        there (which gets no inverse offer). The drain if it is new or its window changed (an
        inverse offer's id and ``announced_at`` are kept), else None."""
        drain = self.drains.get(agent_id)
        if drain is not None and _same_window(drain.maintenance, maintenance):
            return None
        if drain is None:
            drain = self.drains[agent_id] = Drain(agent_id, maintenance, from_offer=True)
            return drain
        maintenance.inverse_offer_id = drain.maintenance.inverse_offer_id
        drain.maintenance = maintenance
        return drain

    def only_offered(self) -> set[str]:
        """Agents scheduled for maintenance as far as their offers say, with no inverse offer:
        only their next offer tells whether the maintenance was cancelled."""
        return {d.agent_id for d in self.drains.values() if d.from_offer}

    def rescind(self, inverse_offer_id: str, now: float) -> Drain | None:
        """A RESCIND_INVERSE_OFFER: the agent's maintenance is cleared by :meth:`expire` unless a
        new inverse offer comes first. None if the id is not one of ours."""
        for drain in self.drains.values():
            if inverse_offer_id in (drain.inverse_offer_id, drain.maintenance.inverse_offer_id):
                drain.inverse_offer_id = ""
                drain.rescinded_at = now
                return drain
        return None

    def expire(self, now: float, grace_seconds: float) -> list[Drain]:
        """Drop the agents whose inverse offer was rescinded ``grace_seconds`` ago or more and
        not sent again: their maintenance was cancelled."""
        gone = [
            d
            for d in self.drains.values()
            if d.rescinded_at is not None and now - d.rescinded_at >= grace_seconds
        ]
        for drain in gone:
            del self.drains[drain.agent_id]
        return gone

    def next_expiry(self, now: float, grace_seconds: float) -> float | None:
        """Seconds until the next :meth:`expire` has something to drop (None: nothing pending)."""
        pending = [
            d.rescinded_at + grace_seconds - now for d in self.drains.values() if d.rescinded_at is not None
        ]
        return max(min(pending), 0.0) if pending else None

    def cancel(self, agent_id: str) -> Drain | None:
        """An offer from the agent without ``unavailability``: it is no longer scheduled."""
        return self.drains.pop(agent_id, None)

    def resubscribed(self) -> None:
        """A new subscription: earlier inverse offers are void (Mesos sends new ones)."""
        for drain in self.drains.values():
            drain.inverse_offer_id = ""
            drain.accepted_id = ""

    def agent_lost(self, agent_id: str) -> None:
        """The agent was removed (its machine went DOWN: ``Master::_removeSlave`` rescinds its
        inverse offers just before it says the agent is lost): its inverse offers are gone with
        it, but the maintenance is not cancelled; it stays until an offer from the agent comes
        without unavailability (after STOP_MAINTENANCE it registers again)."""
        drain = self.drains.get(agent_id)
        if drain is not None:
            drain.inverse_offer_id = ""
            drain.rescinded_at = None

    def wanted(self, task: types_pb2.Task) -> types_pb2.AgentMaintenance | None:
        """The maintenance ``task``'s record should carry: its agent's for a task on an agent
        scheduled for maintenance; none on an agent that is not (nor for a queued task); a
        terminal record on a scheduled agent keeps what it has (it is history)."""
        drain = self.drains.get(task.agent_id) if task.agent_id else None
        if drain is None or task.state == types_pb2.TASK_STATE_QUEUED:
            return None
        if is_terminal(task.state):
            return task.maintenance if task.HasField("maintenance") else None
        return drain.maintenance

    def updates(self, tasks: Iterable[types_pb2.Task]) -> list[types_pb2.Task]:
        """Copies of the task records whose ``maintenance`` differs from :meth:`wanted`, changed."""
        changed: list[types_pb2.Task] = []
        for task in tasks:
            wanted = self.wanted(task)
            if wanted is None and not task.HasField("maintenance"):
                continue
            if wanted is not None and task.HasField("maintenance") and task.maintenance == wanted:
                continue
            update = copy_task(task)
            if wanted is None:
                update.ClearField("maintenance")
            else:
                update.maintenance.CopyFrom(wanted)
            changed.append(update)
        return changed

    @staticmethod
    def blocking(agent_id: str, tasks: Iterable[types_pb2.Task]) -> list[str]:
        """Our tasks that keep the agent from being handed back: not terminal on it (staging,
        running, killing, unreachable: it may still run), or queued to restart on a volume there."""
        return sorted(
            t.task_id
            for t in tasks
            if (
                t.agent_id == agent_id and t.state != types_pb2.TASK_STATE_QUEUED and not is_terminal(t.state)
            )
            or (t.state == types_pb2.TASK_STATE_QUEUED and t.launch.volume.agent_id == agent_id)
        )

    def to_accept(self, tasks: Iterable[types_pb2.Task]) -> list[Drain]:
        """Agents with an outstanding inverse offer, not accepted yet, and none of our tasks left."""
        listed = list(tasks)
        return [
            d
            for d in self.drains.values()
            if d.inverse_offer_id
            and d.accepted_id != d.inverse_offer_id
            and not self.blocking(d.agent_id, listed)
        ]
