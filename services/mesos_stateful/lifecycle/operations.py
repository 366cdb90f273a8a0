"""Operator actions on one member (issue 15): a planned switchover, a restart in place, a
replacement. **Pure**, like :mod:`planner`.

The gateway stores the request in the member's record (``Member.operation``, a
``MemberOperation`` with a unique id); it is pending while ``Member.operation_done`` differs from
its id. :func:`operation_plan` turns a pending one into a plan once nothing else is to be done
(``planner.converge`` asks it before the drains: a recovery, a repair or a scale comes first), and
the plan's last step (``done``) records it done, so a lifecycle restarted mid-plan resumes the same
plan from state and one request is carried out once. A plan replaced before its ``done`` (a
recovery, a delete, a spec change) leaves the request pending: it is planned again afterwards and
finds what is already done (the master moved: a switchover is over).

The plans: see the "Operator actions" table in lifecycle/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.lifecycle import planner, plans
from mesos_stateful.lifecycle.planner import Condition, Snapshot
from mesos_stateful.lifecycle.plans import Action

T = types_pb2

PLAN_NAMES = {
    T.OPERATION_KIND_SWITCHOVER: plans.SWITCHOVER,
    T.OPERATION_KIND_RESTART: plans.RESTART,
    T.OPERATION_KIND_REPLACE: plans.REPLACE,
}


def pending(member: types_pb2.Member) -> bool:
    """Whether the member's operation is asked for and not done yet."""
    op = member.operation
    return bool(op.id) and op.kind != T.OPERATION_KIND_UNSPECIFIED and op.id != member.operation_done


def pending_operations(s: Snapshot) -> list[types_pb2.Member]:
    """Members with a pending operation, oldest request first."""
    waiting = [m for m in s.members if pending(m)]
    return sorted(waiting, key=lambda m: (m.operation.requested_at.ToNanoseconds(), m.ordinal))


def switchover_targets(s: Snapshot, master_id: str) -> list[types_pb2.Member]:
    """Replicas a planned switchover may promote: ready, holding the data, consistent with the
    master (``planner.failover_view``'s candidates that are READY)."""
    candidates, _ = planner.failover_view(s, master_id)
    return [m for m in candidates if s.condition(m) == Condition.READY]


def switchover_blocker(s: Snapshot, master: types_pb2.Member, target: str) -> str:
    """Why the master cannot be switched over now ("" if it can), worded for a person."""
    _, waited = planner.failover_view(s, master.id)
    if waited:
        names = ", ".join(m.id for m in waited)
        return f"{names} (holding data) not running: a switchover never skips one"
    ready = switchover_targets(s, master.id)
    names = ", ".join(m.id for m in ready) or "none"
    if target:
        if target not in {m.id for m in ready}:
            return f"{target} is not a ready replica holding the data (ready replicas: {names})"
        return ""
    if not ready:
        return f"no ready replica to switch over to (replicas={s.instance.spec.replicas})"
    return ""


def last_copy(s: Snapshot, member: types_pb2.Member) -> str:
    """Why replacing ``member`` (a fresh, empty volume) could destroy the last copy of the data ("":
    it cannot): the instance has data and no *other* ready member holds it (its volume has the
    data, not an old master's branch waiting to rejoin). Data-safety rule 4."""
    if not s.instance.has_data or not member.volume.has_data:
        return ""
    holders = [
        m
        for m in s.members
        if m.id != member.id
        and m.volume.has_data
        and not m.volume.rejoin_pending
        and s.condition(m) == Condition.READY
    ]
    if holders:
        return ""
    return (
        f"{member.id} holds the only up-to-date copy of {s.name}'s data (no other ready member holds it); "
        "not replacing it with an empty volume: scale up or wait until a replica is ready"
    )


def switchover_steps(master_id: str) -> list[types_pb2.Step]:
    """fence → catch-up → failover; the failover appends the rest (``planner.after_failover``)."""
    return [
        plans.step(Action.FENCE, master_id),
        plans.step(Action.CATCH_UP, master_id),
        plans.step(Action.FAILOVER, master_id),
    ]


def after_switchover(plan: types_pb2.Plan, old_master: str) -> list[types_pb2.Step]:
    """What an operator's plan does to the old master after its switchover, before it is
    brought up as a replica: nothing (a switchover: restarted in place on its running task,
    re-pointed), ``kill`` (a restart: a new task on the same volume) or ``replace``."""
    kind = plan.operation.kind
    if plan.operation.member_id != old_master:
        return []
    if kind == T.OPERATION_KIND_RESTART:
        return [plans.step(Action.KILL, old_master)]
    if kind == T.OPERATION_KIND_REPLACE:
        return [plans.step(Action.REPLACE_MEMBER, old_master)]
    return []


def done_steps(plan: types_pb2.Plan) -> list[types_pb2.Step]:
    """The closing ``done`` step of an operator's plan (none for other plans)."""
    if not plan.operation.id:
        return []
    return [plans.step(Action.DONE, plan.operation.member_id)]


def operation_plan(s: Snapshot) -> types_pb2.Plan | None:
    """The plan of the oldest pending operator action, or None (none pending, or it has to wait:
    a member other than a restarted / replaced replica is not ready). An operation that no longer
    applies (a switchover of a member that is no longer master) is closed by a plan of its
    ``done`` step alone, its reason saying why."""
    waiting = pending_operations(s)
    if not waiting:
        return None
    member = waiting[0]
    op = member.operation
    name = PLAN_NAMES.get(op.kind, plans.SWITCHOVER)
    master_now = s.master()
    # The member itself may be down when an operator restarts or replaces a replica (or a peer):
    # that is the way out of a member stuck failing. Everyone else must be ready (one member at a
    # time); a master's operation (a switchover first) needs every member ready.
    spare = op.kind in (T.OPERATION_KIND_RESTART, T.OPERATION_KIND_REPLACE) and (
        master_now is None or master_now.id != member.id
    )
    if any(s.condition(m) != Condition.READY for m in s.members if not (spare and m.id == member.id)):
        return None  # a recovery first (converge plans it); the operation waits
    target = op.target_member_id
    steps: list[types_pb2.Step]
    master = s.master()
    if s.peers():
        if op.kind == T.OPERATION_KIND_SWITCHOVER:
            return _closing(s, op, name, f"{s.name} has peers, no master: nothing to switch over")
        if op.kind == T.OPERATION_KIND_RESTART:
            steps = [plans.step(Action.KILL, member.id)]
            reason = f"restart {member.id} in place (asked by an operator)"
        else:
            if len(s.members) < 2:
                return _closing(s, op, name, f"{member.id} is the only peer: not replaced (no other copy)")
            steps = [plans.step(Action.REMOVE, member.id), plans.step(Action.REPLACE_MEMBER, member.id)]
            reason = f"replace {member.id} on another agent (asked by an operator)"
        steps += planner._bring_up(member.id, Action.START, Action.PEER_RUNNING)
    elif master is not None and member.id == master.id:
        blocker = switchover_blocker(s, member, target)
        what = {
            T.OPERATION_KIND_SWITCHOVER: "switchover of",
            T.OPERATION_KIND_RESTART: "restart (after a switchover) of",
            T.OPERATION_KIND_REPLACE: "replacement (after a switchover) of",
        }[op.kind]
        if blocker:
            return _closing(s, op, name, f"no {what} master {member.id}: {blocker}")
        # No ``done`` here: the failover appends it after the old master's steps.
        plan = plans.new_plan(
            name,
            f"{what} master {member.id}" + (f" to {target}" if target else "") + " (asked by an operator)",
            s.instance.generation,
            switchover_steps(member.id),
        )
        plan.operation.CopyFrom(op)
        return plan
    elif op.kind == T.OPERATION_KIND_SWITCHOVER:
        return _closing(s, op, name, f"{member.id} is not the master any more: the switchover is done")
    else:
        if op.kind == T.OPERATION_KIND_RESTART:
            steps = [plans.step(Action.KILL, member.id)]
            reason = f"restart replica {member.id} in place (asked by an operator)"
        else:
            steps = [plans.step(Action.REPLACE_MEMBER, member.id)]
            reason = f"replace replica {member.id} on another agent (asked by an operator)"
        steps += planner._bring_up(member.id, Action.START_SLAVE, Action.SLAVE_RUNNING)
    steps.append(plans.step(Action.DONE, member.id))
    plan = plans.new_plan(name, reason, s.instance.generation, steps)
    plan.operation.CopyFrom(op)
    return plan


def _closing(s: Snapshot, op: types_pb2.MemberOperation, name: str, reason: str) -> types_pb2.Plan:
    plan = plans.new_plan(name, reason, s.instance.generation, [plans.step(Action.DONE, op.member_id)])
    plan.operation.CopyFrom(op)
    return plan


def caught_up(master_position: str, positions: dict[str, str], allowed: Sequence[str]) -> str:
    """The first of ``allowed`` whose position equals the old master's final position exactly
    ("" if none yet). An empty master position matches nothing."""
    if not master_position:
        return ""
    for mid in allowed:
        if positions.get(mid) == master_position:
            return mid
    return ""
