"""Operator actions on a member (issue 15, parts 2 and 3), decided by the pure planner
(``lifecycle/operations.py``): which plan a pending ``Member.operation`` gets, when it waits, when
it is closed without acting, and the rules (never the last copy; a master switched over first;
the catch-up compares exact positions)."""

from __future__ import annotations

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import operations, planner, plans
from mesos_stateful.lifecycle.planner import decide

from .plan_helpers import names, running_instance, snap
from .test_drain_planner import redis


def ask(m: T.Member, kind: int, target: str = "", op_id: str = "op-1") -> None:
    m.operation.CopyFrom(T.MemberOperation(kind=kind, id=op_id, member_id=m.id, target_member_id=target))  # type: ignore[arg-type]


def test_no_operation_no_plan() -> None:
    inst, members, tasks = redis()
    assert decide(snap(inst, members, tasks)) == (None, False)


def test_switchover_of_the_master_to_a_named_replica() -> None:
    inst, members, tasks = redis()
    ask(members[0], T.OPERATION_KIND_SWITCHOVER, "cache-2")
    plan, new = decide(snap(inst, members, tasks))
    assert new and plan is not None
    assert plan.name == plans.SWITCHOVER
    assert names(plan) == ["fence cache-0", "catch-up cache-0", "failover cache-0"]
    assert plan.operation.id == "op-1" and plan.operation.target_member_id == "cache-2"
    assert "to cache-2" in plan.reason


def test_a_done_operation_is_not_planned_again() -> None:
    inst, members, tasks = redis()
    ask(members[0], T.OPERATION_KIND_SWITCHOVER)
    members[0].operation_done = "op-1"
    assert decide(snap(inst, members, tasks)) == (None, False)


def test_an_operation_waits_while_a_member_is_not_ready() -> None:
    inst, members, tasks = redis()
    ask(members[1], T.OPERATION_KIND_RESTART)
    members[2].state = T.MEMBER_STATE_STARTING
    s = snap(inst, members, tasks)
    assert operations.operation_plan(s) is None
    plan, _ = decide(s)
    assert plan is not None and plan.name != plans.RESTART  # the member is brought up first


def test_switchover_to_a_replica_not_ready_is_closed_with_the_reason() -> None:
    inst, members, tasks = redis()
    ask(members[0], T.OPERATION_KIND_SWITCHOVER, "cache-2")
    members[2].volume.has_data = False  # a fresh volume: not a candidate
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan) == ["done cache-0"]
    assert "cache-2 is not a ready replica" in plan.reason and "cache-1" in plan.reason


def test_switchover_of_a_member_no_longer_master_is_closed() -> None:
    inst, members, tasks = redis()
    ask(members[1], T.OPERATION_KIND_SWITCHOVER)
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan) == ["done cache-1"]
    assert "not the master any more" in plan.reason


def test_restart_of_a_replica_in_place() -> None:
    inst, members, tasks = redis()
    ask(members[1], T.OPERATION_KIND_RESTART)
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and plan.name == plans.RESTART
    assert names(plan) == [
        "kill cache-1",
        "launch cache-1",
        "await-running cache-1",
        "start-slave cache-1",
        "slave-running cache-1",
        "done cache-1",
    ]


def test_replace_of_a_replica() -> None:
    inst, members, tasks = redis()
    ask(members[2], T.OPERATION_KIND_REPLACE)
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and plan.name == plans.REPLACE
    assert names(plan)[0] == "replace cache-2" and names(plan)[-1] == "done cache-2"


def test_restart_and_replace_of_the_master_switch_over_first() -> None:
    for kind, then in ((T.OPERATION_KIND_RESTART, "kill"), (T.OPERATION_KIND_REPLACE, "replace")):
        inst, members, tasks = redis()
        ask(members[0], kind)
        s = snap(inst, members, tasks)
        plan, _ = decide(s)
        assert plan is not None
        assert names(plan) == ["fence cache-0", "catch-up cache-0", "failover cache-0"]
        # What the failover appends once it promoted cache-1.
        after = planner.after_failover(
            s,
            "cache-0",
            "cache-1",
            before_bring_up=operations.after_switchover(plan, "cache-0"),
            closing=operations.done_steps(plan),
        )
        got = [st.name for st in after]
        assert got[:3] == ["start-master cache-1", "master-running cache-1", "start-slave cache-2"]
        assert got[3:] == [
            f"{then} cache-0",
            "launch cache-0",
            "await-running cache-0",
            "start-slave cache-0",
            "slave-running cache-0",
            "done cache-0",
        ]


def test_a_switchover_keeps_the_old_master_s_task() -> None:
    inst, members, tasks = redis()
    ask(members[0], T.OPERATION_KIND_SWITCHOVER)
    s = snap(inst, members, tasks)
    plan, _ = decide(s)
    assert plan is not None
    assert operations.after_switchover(plan, "cache-0") == []  # no kill, no replace


def test_master_without_a_ready_replica_is_not_switched_over() -> None:
    inst, members, tasks = redis(replicas=1)
    ask(members[0], T.OPERATION_KIND_RESTART)
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan) == ["done cache-0"]
    assert "no ready replica" in plan.reason


def test_last_copy_is_never_replaced() -> None:
    inst, members, tasks = redis()
    s = snap(inst, members, tasks)
    assert operations.last_copy(s, members[1]) == ""
    for m in (members[0], members[2]):
        m.volume.has_data = False  # fresh volumes: cache-1 holds the only copy
    s = snap(inst, members, tasks)
    why = operations.last_copy(s, members[1])
    assert "only up-to-date copy" in why
    # An old master's branch waiting to rejoin is not a copy either.
    members[0].volume.has_data = True
    members[0].volume.rejoin_pending = True
    assert operations.last_copy(snap(inst, members, tasks), members[1]) != ""


def test_peers_restart_and_replace_but_no_switchover() -> None:
    inst, members, tasks = running_instance(3, peers=True)
    ask(members[1], T.OPERATION_KIND_SWITCHOVER)
    plan, _ = decide(snap(inst, members, tasks, peers=True))
    assert plan is not None and names(plan) == ["done cache-1"] and "peers" in plan.reason
    members[1].operation_done = "op-1"
    ask(members[1], T.OPERATION_KIND_REPLACE, op_id="op-2")
    plan, _ = decide(snap(inst, members, tasks, peers=True))
    assert plan is not None
    assert names(plan)[:3] == ["remove-member cache-1", "replace cache-1", "launch cache-1"]
    assert names(plan)[-3:] == ["start cache-1", "peer-running cache-1", "done cache-1"]


def test_oldest_request_first() -> None:
    inst, members, tasks = redis()
    ask(members[2], T.OPERATION_KIND_RESTART, op_id="late")
    members[2].operation.requested_at.FromSeconds(200)
    ask(members[1], T.OPERATION_KIND_RESTART, op_id="early")
    members[1].operation.requested_at.FromSeconds(100)
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and plan.operation.id == "early"


def test_caught_up_is_an_exact_position() -> None:
    positions = {"cache-1": "r:100", "cache-2": "r:99"}
    assert operations.caught_up("r:100", positions, ["cache-1", "cache-2"]) == "cache-1"
    assert operations.caught_up("r:100", positions, ["cache-2"]) == ""
    assert operations.caught_up("r:101", positions, ["cache-1", "cache-2"]) == ""
    assert operations.caught_up("", {"cache-1": ""}, ["cache-1"]) == ""


def test_a_started_switchover_is_not_replaced() -> None:
    """Once its fence ran, the plan owns the master (planner.handing_over): a spec change does
    not replace it before the new master is started."""
    inst, members, tasks = redis()
    ask(members[0], T.OPERATION_KIND_SWITCHOVER)
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    plan.steps[0].status = plans.COMPLETE
    plan.status = plans.plan_status(plan)
    inst.plan.CopyFrom(plan)
    inst.generation += 1  # a scale meanwhile
    again, new = decide(snap(inst, members, tasks))
    assert not new and again is not None and again.operation.id == "op-1"


def test_a_replica_that_is_down_can_be_restarted_or_replaced() -> None:
    """The member itself may be down: the operator's restart / replace is planned instead of the
    recovery that keeps restarting it in place."""
    for kind, first in (
        (T.OPERATION_KIND_RESTART, "kill cache-2"),
        (T.OPERATION_KIND_REPLACE, "replace cache-2"),
    ):
        inst, members, tasks = redis()
        tasks[members[2].task_id].state = T.TASK_STATE_FAILED
        ask(members[2], kind)
        plan, new = decide(snap(inst, members, tasks))
        assert new and plan is not None and plan.operation.id == "op-1"
        assert names(plan)[0] == first


def test_an_operator_replace_rescues_a_plan_stuck_in_error() -> None:
    inst, members, tasks = redis()
    tasks[members[2].task_id].state = T.TASK_STATE_FAILED
    stuck, _ = decide(snap(inst, members, tasks))
    assert stuck is not None and stuck.name == plans.RECOVERY
    for st in stuck.steps:
        if plans.action_of(st) == plans.Action.LAUNCH:
            st.status = plans.ERROR  # e.g. its agent refuses every launch
            break
        st.status = plans.COMPLETE
    stuck.status = plans.plan_status(stuck)
    assert stuck.status == plans.ERROR
    inst.plan.CopyFrom(stuck)
    assert decide(snap(inst, members, tasks)) == (stuck, False)  # kept, FAILED, until someone acts
    ask(members[2], T.OPERATION_KIND_REPLACE)
    plan, new = decide(snap(inst, members, tasks))
    assert new and plan is not None and plan.name == plans.REPLACE and names(plan)[0] == "replace cache-2"
    # Its own plan failing is not replaced by itself again.
    inst.plan.CopyFrom(plan)
    inst.plan.steps[0].status = plans.ERROR
    inst.plan.status = plans.ERROR
    again, new = decide(snap(inst, members, tasks))
    assert not new and again is not None and again.operation.id == "op-1"


def test_a_master_operation_waits_for_every_member() -> None:
    inst, members, tasks = redis()
    tasks[members[2].task_id].state = T.TASK_STATE_FAILED
    ask(members[0], T.OPERATION_KIND_RESTART)
    assert operations.operation_plan(snap(inst, members, tasks)) is None
