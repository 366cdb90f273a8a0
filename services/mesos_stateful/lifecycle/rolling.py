"""Rolling updates (pure): when an instance's spec generation is not yet applied to its members,
the ``update`` plan restarts each member in place with the new launch, one at a time.

``Instance.observed_generation`` is the generation every member runs. The gateway's UpdateInstance
bumps ``generation`` (and moves ``observed_generation`` along itself for a change no member has to
be restarted for: labels, a member count); lifecycle sets it when an ``update`` plan made for a
generation is complete, and adopts the generation of an instance whose first deploy is done
(``observed_generation`` 0, every member ready).

Plan (master / replica), decided only while every member is ready and nothing else is planned:

- each replica, by ordinal: ``restart`` (its task killed and waited for; the volume stays, so the
  launch after it goes to the same agent) → ``launch`` (Config again: the new spec) →
  ``await-running`` → ``start-slave`` → ``slave-running`` → ``await-caught-up`` (a check after the
  restart finds it replicating and caught up);
- then the master, by the drains' switchover (``fence``: demoted, not killed; ``failover``:
  MasterLost among the ready replicas, by position), whose ``failover`` appends the new master's
  steps, the re-pointing of the others, and ``restart`` → bring-up → ``await-caught-up`` of the old
  master (``planner.after_failover(restart=True)``);
- a lone master (replicas=1) is restarted in place (an outage: nobody to switch over to).

Peers: one at a time, ``restart`` → ``launch`` → ``await-running`` → ``start`` → ``peer-running``.
"""

from __future__ import annotations

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.lifecycle import planner, plans
from mesos_stateful.lifecycle.planner import Condition, Snapshot
from mesos_stateful.lifecycle.plans import Action

T = types_pb2


def all_ready(s: Snapshot) -> bool:
    """Every member of the spec exists and is ready in its role."""
    return (
        bool(s.members)
        and len(s.members) == s.instance.spec.replicas
        and all(s.condition(m) == Condition.READY for m in s.members)
    )


def needs_update(s: Snapshot) -> bool:
    """A generation is waiting to be rolled out (0 < observed_generation < generation) and the
    instance can take it now (every member ready, the workload registered, not deleting)."""
    i = s.instance
    if i.phase in (T.INSTANCE_PHASE_DELETING, T.INSTANCE_PHASE_DELETED) or s.description is None:
        return False
    return 0 < i.observed_generation < i.generation and all_ready(s)


def update_plan(s: Snapshot) -> types_pb2.Plan:
    """The ``update`` plan for the instance's current generation (see the module docstring)."""
    generation = s.instance.generation
    steps: list[types_pb2.Step] = []
    members = sorted(s.members, key=lambda m: m.ordinal)
    if s.peers():
        for m in members:
            steps += [plans.step(Action.RESTART, m.id)]
            steps += planner._bring_up(m.id, Action.START, Action.PEER_RUNNING)
        order = ", ".join(m.id for m in members)
        reason = f"roll out generation {generation}: peers {order} restarted in place one at a time"
        return plans.new_plan(plans.UPDATE, reason, generation, steps)
    master = s.master()
    replicas = [m for m in members if master is None or m.id != master.id]
    for m in replicas:
        steps.append(plans.step(Action.RESTART, m.id))
        steps += planner._bring_up(m.id, Action.START_SLAVE, Action.SLAVE_RUNNING)
        steps.append(plans.step(Action.AWAIT_CAUGHT_UP, m.id))
    names = ", ".join(m.id for m in replicas)
    if master is None:
        reason = f"roll out generation {generation}: {names} restarted in place one at a time"
    elif replicas:
        steps += planner.switchover(master.id)
        reason = (
            f"roll out generation {generation}: replicas {names} restarted in place one at a time, "
            f"then master {master.id} switched over to an up-to-date replica and restarted"
        )
    else:
        steps.append(plans.step(Action.RESTART, master.id))
        steps += planner._bring_up(master.id, Action.START_MASTER, Action.MASTER_RUNNING)
        reason = (
            f"roll out generation {generation}: master {master.id} restarted in place "
            "(replicas=1: no replica to switch over to, writes pause meanwhile)"
        )
    return plans.new_plan(plans.UPDATE, reason, generation, steps)


def decide(s: Snapshot) -> tuple[types_pb2.Plan | None, bool]:
    """:func:`planner.decide`, then, with nothing else to do, the ``update`` plan of a generation
    not rolled out yet."""
    plan, new = planner.decide(s)
    if plan is None and needs_update(s):
        return update_plan(s), True
    return plan, new


def observed_generation(s: Snapshot, plan: types_pb2.Plan | None) -> int:
    """``Instance.observed_generation`` after persisting ``plan`` (the instance's plan, or None):
    an ``update`` plan complete applied its generation; an instance never observed (0) whose
    members are all ready with no plan left runs its current generation (its deploy is done)."""
    i = s.instance
    observed = i.observed_generation
    if plan is None or not plan.name:
        plan = None
    done = plan is None or not plans.is_active(plan)
    if plan is not None and plan.name == plans.UPDATE and done and plan.status == plans.COMPLETE:
        observed = max(observed, min(plan.generation, i.generation))
    if observed == 0 and done and all_ready(s):
        observed = i.generation
    return observed


def caught_up(member: types_pb2.Member, since: float) -> tuple[bool, str]:
    """Whether the member's last check, made after ``since`` (epoch seconds: the restart), found it
    replicating and caught up (its CAUGHT_UP / REPLICATING conditions ok); else what it waits for."""
    h = member.health
    if not h.HasField("checked_at") or plans.seconds(h.checked_at) < since:
        return False, f"waiting for a check of {member.id} after its restart"
    for kind in (T.CONDITION_TYPE_REPLICATING, T.CONDITION_TYPE_CAUGHT_UP):
        c = planner.failing(member, kind)
        if c is not None:
            lag = f" (lag {h.lag})" if h.lag >= 0 else ""
            return False, f"{member.id} not {planner.condition_name(kind)} yet: {c.reason}{lag}"
    return True, f"{member.id} caught up (position {h.position or '?'})"


def after_update_switchover(old_master: str) -> tuple[list[types_pb2.Step], list[types_pb2.Step]]:
    """The old master of an update's switchover, for ``planner.after_failover``: ``restart`` in
    place before its bring-up as a replica (the new launch, its own volume), and after it
    ``await-caught-up`` (the next step only once it holds the data again)."""
    return [plans.step(Action.RESTART, old_master)], [plans.step(Action.AWAIT_CAUGHT_UP, old_master)]
