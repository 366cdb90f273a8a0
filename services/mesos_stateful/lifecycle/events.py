"""The lifecycle's side of an instance's history (``clients.events``): what it saw and did.

Events are derived from the writes that make them true, so that one fact is one event:
- :func:`plan_events` compares the stored plan before and after a save of the reconciler: a new
  plan (PLAN_STARTED, and PLAN_REPLACED for the unfinished one it replaces), a fence step
  COMPLETE (FENCED, with the method), a failover / election COMPLETE (PROMOTED, with the decision:
  candidates and their positions), a step turned ERROR (STEP_FAILED, why), a step held by a pause
  (STEP_HELD), every step COMPLETE (PLAN_FINISHED);
- :func:`member_events` compares a member before and after the reconciler synced it with its task:
  its task ended without a kill asked for (MEMBER_LOST, with the task's state and message);
- :class:`MemberWatch` compares what a pass sees with the pass before (in memory): a fresh volume
  (REPLACED) and a master the health probe declared silent (MEMBER_LOST).

They are recorded right after that write (``record_event``); a lifecycle that dies in between
loses that one event, it never records one twice. ``MemberWatch`` starts from what the first pass
of a (new) leader sees.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.events import LIFECYCLE, EventLog, new_event
from mesos_stateful.lifecycle import plans
from mesos_stateful.lifecycle.plans import Action

log = logging.getLogger(__name__)
T = types_pb2
K = types_pb2

_ENDED_STATES = (T.MEMBER_STATE_FAILED, T.MEMBER_STATE_LOST)
_PROMOTING = (Action.FAILOVER, Action.ELECT)
# Characters of a task's message kept in an event (its first line: `statefulctl logs` has the rest).
_DETAIL = 160


async def record_event(
    log_: EventLog | None,
    instance: str,
    kind: types_pb2.EventKind,
    message: str,
    **fields: object,
) -> types_pb2.Event | None:
    """Record one event of ``instance`` (actor ``lifecycle`` unless given); keyword fields as
    :func:`clients.events.new_event` (member_id, plan, step, action, decision, fence, actor, at).
    None when there is no log or the store could not be reached."""
    if log_ is None:
        return None
    fields.setdefault("actor", LIFECYCLE)
    event = new_event(instance, kind, message, **fields)  # type: ignore[arg-type]
    return await log_.record(event)


def _status(status: int) -> str:
    return types_pb2.StepStatus.Name(status).removeprefix("STEP_STATUS_")


def same_plan(a: types_pb2.Plan, b: types_pb2.Plan) -> bool:
    return bool(a.name) and a.name == b.name and a.started_at == b.started_at


def positions_text(decision: types_pb2.PromotionDecision) -> str:
    """``cache-1=1234 cache-2=1200`` (every candidate's position, by member id)."""
    shown = [f"{m}={decision.positions[m]}" if m in decision.positions else m for m in decision.candidate_ids]
    shown += [f"{m}={p}" for m, p in sorted(decision.positions.items()) if m not in decision.candidate_ids]
    return " ".join(shown)


def fence_method(fence: types_pb2.FenceOutcome) -> str:
    return types_pb2.FenceMethod.Name(fence.method).removeprefix("FENCE_METHOD_").lower().replace("_", " ")


def plan_events(instance: str, before: types_pb2.Plan, after: types_pb2.Plan) -> list[types_pb2.Event]:
    """The events a save of the plan makes true (``before`` as stored, ``after`` as written)."""
    events: list[types_pb2.Event] = []
    if not after.name:
        return events
    if not same_plan(before, after):
        if before.name and plans.first_open(before) is not None:
            index = plans.first_open(before)
            at = before.steps[index].name if index is not None else ""
            events.append(
                new_event(
                    instance,
                    K.EVENT_KIND_PLAN_REPLACED,
                    f"plan {before.name} replaced at step {at} ({_status(before.status)}) by {after.name}: "
                    f"{after.reason}",
                    plan=before.name,
                    step=at,
                )
            )
        events.append(
            new_event(
                instance,
                K.EVENT_KIND_PLAN_STARTED,
                f"plan {after.name} started: {after.reason} ({len(after.steps)} steps)",
                plan=after.name,
            )
        )
        before = types_pb2.Plan()
    old = {s.name: s for s in before.steps}
    for step in after.steps:
        was = old.get(step.name)
        events.extend(_step_events(instance, after, step, was))
    if plans.first_open(after) is None and (plans.first_open(before) is not None or not before.steps):
        events.append(
            new_event(
                instance,
                K.EVENT_KIND_PLAN_FINISHED,
                f"plan {after.name} finished: {after.reason}",
                plan=after.name,
            )
        )
    return events


def _step_events(
    instance: str, plan: types_pb2.Plan, step: types_pb2.Step, was: types_pb2.Step | None
) -> list[types_pb2.Event]:
    status_before = was.status if was is not None else T.STEP_STATUS_UNSPECIFIED
    events: list[types_pb2.Event] = []
    common = {"plan": plan.name, "step": step.name, "member_id": step.member_id}
    action = plans.action_of(step) if step.name else None
    if step.status == plans.COMPLETE and status_before != plans.COMPLETE:
        if action == Action.FENCE and step.fence.method:
            events.append(
                new_event(
                    instance,
                    K.EVENT_KIND_FENCED,
                    f"{step.member_id} fenced ({fence_method(step.fence)}): {step.fence.detail}",
                    fence=step.fence,
                    **common,  # type: ignore[arg-type]
                )
            )
        if action in _PROMOTING and step.decision.promote_member_id:
            decision = step.decision
            chosen = decision.positions.get(decision.promote_member_id, "?")
            events.append(
                new_event(
                    instance,
                    K.EVENT_KIND_PROMOTED,
                    f"{decision.promote_member_id} promoted to master (position {chosen}; "
                    f"candidates {positions_text(decision)}): {decision.reason}",
                    decision=decision,
                    plan=plan.name,
                    step=step.name,
                    member_id=decision.promote_member_id,
                )
            )
    if step.status == plans.ERROR and status_before != plans.ERROR:
        events.append(
            new_event(
                instance,
                K.EVENT_KIND_STEP_FAILED,
                f"step {step.name} of plan {plan.name} failed: {step.message}",
                **common,  # type: ignore[arg-type]
            )
        )
    if step.held and not (was is not None and was.held):
        events.append(
            new_event(
                instance,
                K.EVENT_KIND_STEP_HELD,
                f"step {step.name} of plan {plan.name} held: the instance is paused",
                **common,  # type: ignore[arg-type]
            )
        )
    return events


def member_events(instance: str, before: types_pb2.Member, after: types_pb2.Member) -> list[types_pb2.Event]:
    """MEMBER_LOST when a sync turned the member FAILED / LOST (its task ended unasked)."""
    if after.state in _ENDED_STATES and before.state not in _ENDED_STATES:
        role = types_pb2.Role.Name(after.role).removeprefix("ROLE_")
        # A member that was ready is lost; one that never got ready failed to start (a launch failure).
        what = (
            "lost" if before.state in (T.MEMBER_STATE_RUNNING, T.MEMBER_STATE_KILLING) else "failed to start"
        )
        return [
            new_event(
                instance,
                K.EVENT_KIND_MEMBER_LOST,
                f"{after.id} ({role}, task {after.task_id}) {what}: {after.message[:_DETAIL]}",
                member_id=after.id,
            )
        ]
    return []


class MemberWatch:
    """What the last pass saw of each member (in memory): a fresh volume is REPLACED, a master
    the probe declared silent is MEMBER_LOST."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, tuple[str, bool]]] = {}

    def forget(self, instance: str) -> None:
        self._seen.pop(instance, None)

    def changes(self, instance: str, members: Sequence[types_pb2.Member]) -> list[types_pb2.Event]:
        now = {m.id: (m.volume.persistence_id, m.health.unresponsive) for m in members}
        previous = self._seen.get(instance)
        self._seen[instance] = now
        if previous is None:
            return []
        events: list[types_pb2.Event] = []
        for member in members:
            old = previous.get(member.id)
            if old is None:
                continue
            volume, unresponsive = now[member.id]
            if old[0] and volume and volume != old[0]:
                events.append(
                    new_event(
                        instance,
                        K.EVENT_KIND_REPLACED,
                        f"{member.id} replaced: fresh volume {volume} (was {old[0]})",
                        member_id=member.id,
                    )
                )
            if unresponsive and not old[1]:
                events.append(
                    new_event(
                        instance,
                        K.EVENT_KIND_MEMBER_LOST,
                        f"{member.id} unresponsive: the health probe got no answer (its task may still run)",
                        member_id=member.id,
                    )
                )
        return events


async def record_all(log_: EventLog | None, events: list[types_pb2.Event]) -> None:
    """Record ``events`` in order (best effort, see ``EventLog.record``)."""
    if log_ is None:
        return
    for event in events:
        await log_.record(event)
