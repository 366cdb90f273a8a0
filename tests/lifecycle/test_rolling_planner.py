"""Rolling updates (issue 15, part 1), decided by the pure planner (lifecycle/rolling.py).

The rules: a generation not rolled out yet (0 < observed_generation < generation) gets an
``update`` plan only while every member is ready and nothing else is planned; replicas first,
one at a time, each restarted in place and waited for until caught up; then the master by
switchover (fence + failover), whose failover appends the old master's restart in place; a lost
member is recovered first; ``observed_generation`` follows a complete update plan.
"""

from __future__ import annotations

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import planner, plans, rolling

from .plan_helpers import complete_all, names, running_instance, snap, task


def pending(replicas: int = 3, observed: int = 1, generation: int = 2, peers: bool = False):  # type: ignore[no-untyped-def]
    inst, members, tasks = running_instance(replicas, peers=peers)
    inst.generation = generation
    inst.observed_generation = observed
    inst.has_data = True
    for m in members:
        m.volume.persistence_id = f"{m.id}.abc.v1"
        m.volume.agent_id = f"a{m.ordinal}"
        m.volume.has_data = True
    return inst, members, tasks


def test_replicas_first_one_at_a_time_then_the_master_by_switchover() -> None:
    inst, members, tasks = pending()
    plan, new = rolling.decide(snap(inst, members, tasks))
    assert new and plan is not None
    assert plan.name == plans.UPDATE and plan.generation == 2
    assert names(plan) == [
        "restart cache-1",
        "launch cache-1",
        "await-running cache-1",
        "start-slave cache-1",
        "slave-running cache-1",
        "await-caught-up cache-1",
        "restart cache-2",
        "launch cache-2",
        "await-running cache-2",
        "start-slave cache-2",
        "slave-running cache-2",
        "await-caught-up cache-2",
        "fence cache-0",
        "failover cache-0",
    ]
    assert "switched over" in plan.reason


def test_the_failover_of_an_update_restarts_the_old_master_in_place() -> None:
    inst, members, tasks = pending()
    s = snap(inst, members, tasks)
    before, closing = rolling.after_update_switchover("cache-0")
    appended = planner.after_failover(s, "cache-0", "cache-1", before_bring_up=before, closing=closing)
    assert [st.name for st in appended] == [
        "start-master cache-1",
        "master-running cache-1",
        "start-slave cache-2",
        "restart cache-0",
        "launch cache-0",
        "await-running cache-0",
        "start-slave cache-0",
        "slave-running cache-0",
        "await-caught-up cache-0",
    ]
    # A drain's switchover is unchanged.
    assert "restart cache-0" not in [
        st.name for st in planner.after_failover(s, "cache-0", "cache-1", drain=True)
    ]


def test_a_lone_master_is_restarted_in_place() -> None:
    inst, members, tasks = pending(replicas=1)
    plan, _ = rolling.decide(snap(inst, members, tasks))
    assert plan is not None
    assert names(plan) == [
        "restart cache-0",
        "launch cache-0",
        "await-running cache-0",
        "start-master cache-0",
        "master-running cache-0",
    ]
    assert "replicas=1" in plan.reason


def test_peers_one_at_a_time() -> None:
    inst, members, tasks = pending(peers=True)
    plan, _ = rolling.decide(snap(inst, members, tasks, peers=True))
    assert plan is not None
    assert names(plan)[:5] == [
        "restart cache-0",
        "launch cache-0",
        "await-running cache-0",
        "start cache-0",
        "peer-running cache-0",
    ]
    assert len(plan.steps) == 15


def test_nothing_to_roll_out() -> None:
    for observed, generation in ((2, 2), (0, 2)):  # applied; never observed (deploy not done)
        inst, members, tasks = pending(observed=observed, generation=generation)
        assert rolling.decide(snap(inst, members, tasks)) == (None, False)


def test_not_while_a_member_is_not_ready_a_recovery_comes_first() -> None:
    inst, members, tasks = pending()
    tasks[members[2].task_id].state = T.TASK_STATE_FAILED
    plan, _ = rolling.decide(snap(inst, members, tasks))
    assert plan is not None and plan.name == plans.RECOVERY


def test_a_member_lost_before_its_turn_replaces_the_update_with_a_recovery() -> None:
    inst, members, tasks = pending()
    plan, _ = rolling.decide(snap(inst, members, tasks))
    assert plan is not None
    complete_all(plan, upto=3)  # cache-1 restarting
    plan.steps[3].status = plans.STARTING
    inst.plan.CopyFrom(plan)
    tasks[members[2].task_id].state = T.TASK_STATE_FAILED  # cache-2 crashes before its turn
    new_plan, new = rolling.decide(snap(inst, members, tasks))
    assert new and new_plan is not None and new_plan.name == plans.RECOVERY


def test_our_own_restart_is_not_a_loss() -> None:
    inst, members, tasks = pending()
    plan, _ = rolling.decide(snap(inst, members, tasks))
    assert plan is not None
    complete_all(plan, upto=1)
    plan.steps[1].status = plans.STARTING
    inst.plan.CopyFrom(plan)
    t = tasks[members[1].task_id]
    t.state, t.kill_requested = T.TASK_STATE_KILLED, True
    members[1].state = T.MEMBER_STATE_STOPPED
    kept, new = rolling.decide(snap(inst, members, tasks))
    assert not new and kept is not None and kept.name == plans.UPDATE


def test_a_newer_generation_replaces_the_update_plan() -> None:
    inst, members, tasks = pending()
    plan, _ = rolling.decide(snap(inst, members, tasks))
    assert plan is not None
    inst.plan.CopyFrom(plan)
    inst.generation = 3
    replaced, new = rolling.decide(snap(inst, members, tasks))
    assert new and replaced is not None and replaced.generation == 3


def test_observed_generation() -> None:
    inst, members, tasks = pending()
    plan = rolling.update_plan(snap(inst, members, tasks))
    s = snap(inst, members, tasks)
    assert rolling.observed_generation(s, plan) == 1  # in progress
    complete_all(plan)
    assert rolling.observed_generation(s, plan) == 2
    # Never observed: adopted once every member is ready and no plan is left (deploy done).
    inst.observed_generation = 0
    deploy = plans.new_plan(plans.DEPLOY, "create", 2, [plans.step(plans.Action.SECRETS)])
    assert rolling.observed_generation(snap(inst, members, tasks), deploy) == 0
    complete_all(deploy)
    assert rolling.observed_generation(snap(inst, members, tasks), deploy) == 2


def test_caught_up_needs_a_check_after_the_restart() -> None:
    m = T.Member(id="cache-1")
    assert not rolling.caught_up(m, 100.0)[0]
    m.health.checked_at.FromSeconds(99)
    assert not rolling.caught_up(m, 100.0)[0]
    m.health.checked_at.FromSeconds(101)
    m.health.conditions.add(type=T.CONDITION_TYPE_CAUGHT_UP, ok=False, reason="Lagging")
    ok, why = rolling.caught_up(m, 100.0)
    assert not ok and "Lagging" in why
    m.health.conditions[0].ok = True
    assert rolling.caught_up(m, 100.0)[0]


def test_a_master_lost_while_an_update_restarts_a_replica_is_failed_over_at_once() -> None:
    """The update's own fence / failover of the master come after the replicas' restarts, which
    cannot finish without a master: the loss is a recovery now (found by a new user: no failover
    for minutes, writes stopped)."""
    inst, members, tasks = pending()
    plan, _ = rolling.decide(snap(inst, members, tasks))
    assert plan is not None
    complete_all(plan, upto=2)  # restart cache-1, launch cache-1 done: it is starting
    inst.plan.CopyFrom(plan)
    tasks[members[0].task_id] = task(members[0], T.TASK_STATE_FAILED)
    recovery, new = rolling.decide(snap(inst, members, tasks))
    assert new and recovery is not None and recovery.name == plans.RECOVERY
    assert names(recovery)[:2] == ["fence cache-0", "failover cache-0"]
