"""Pure rules of plan control (lifecycle/control.py) and of the events a plan save makes true
(lifecycle/events.py)."""

from __future__ import annotations

from lifecycle.plan_helpers import member
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import control, events, plans
from mesos_stateful.lifecycle.planner import Snapshot
from mesos_stateful.lifecycle.plans import Action


def _plan(name: str, *steps: tuple[str, int], cause: int = T.PLAN_CAUSE_UNSPECIFIED) -> T.Plan:
    plan = plans.new_plan(name, f"{name} reason", 1, [], now=1_800_000_000.0)
    for step_name, status in steps:
        plan.steps.add(name=step_name, member_id=step_name.split(" ")[-1], status=status)
    plan.cause = cause  # type: ignore[assignment]
    plan.status = plans.plan_status(plan)
    return plan


def _snapshot() -> Snapshot:
    instance = T.Instance(spec=T.InstanceSpec(name="cache", workload="redis", replicas=3), paused=True)
    members = [member(0, T.ROLE_MASTER), member(1), member(2)]
    return Snapshot(instance=instance, members=members, tasks={}, description=None)


P, S, C, E = T.STEP_STATUS_PENDING, T.STEP_STATUS_STARTING, T.STEP_STATUS_COMPLETE, T.STEP_STATUS_ERROR


def test_paused_holds_planned_steps_but_never_a_started_one() -> None:
    scale = _plan("scale", ("create cache-3", C), ("launch cache-3", P))
    assert not control.runs_while_paused(_snapshot(), scale, 1)
    scale.steps[1].status = S
    assert control.runs_while_paused(_snapshot(), scale, 1), "a running step finishes"
    delete = _plan("delete", ("kill cache-0", P))
    assert control.runs_while_paused(_snapshot(), delete, 0)


def test_a_lost_masters_recovery_runs_while_paused_a_replicas_does_not() -> None:
    lost = _plan("recovery", ("fence cache-0", P), ("failover", P), cause=T.PLAN_CAUSE_LOST)
    assert control.runs_while_paused(_snapshot(), lost, 0)
    later = _plan(
        "recovery",
        ("fence cache-0", C),
        ("failover", C),
        ("start-master cache-1", C),
        ("master-running cache-1", C),
        ("launch cache-0", P),
        cause=T.PLAN_CAUSE_UNRESPONSIVE,
    )
    assert control.runs_while_paused(_snapshot(), later, 4), "the whole recovery of a lost master runs"
    replica = _plan("recovery", ("slave-lost cache-2", P), ("launch cache-2", P))
    assert not control.runs_while_paused(_snapshot(), replica, 0)


def test_a_switchover_that_fenced_the_master_finishes_its_handover_while_paused() -> None:
    drain = _plan(
        "drain",
        ("fence cache-0", C),
        ("failover", C),
        ("start-master cache-1", P),
        ("master-running cache-1", P),
        cause=T.PLAN_CAUSE_DRAIN,
    )
    assert control.runs_while_paused(_snapshot(), drain, 2)
    before = _plan("drain", ("drain cache-0", P), cause=T.PLAN_CAUSE_DRAIN)
    assert not control.runs_while_paused(_snapshot(), before, 0), "not begun: held"


def test_hold_and_release() -> None:
    plan = _plan("scale", ("launch cache-3", P))
    assert control.hold(plan, 0, "cache") and plan.steps[0].held
    assert "statefulctl resume cache" in plan.steps[0].message
    assert not control.hold(plan, 0, "cache"), "already held: nothing to write"
    control.release(plan.steps[0])
    assert not plan.steps[0].held and plan.steps[0].message == ""


def test_retry_resets_the_failed_step_keeping_attempts() -> None:
    plan = _plan("deploy", ("create cache-0", C), ("launch cache-0", E))
    plan.steps[1].attempts = 4
    plan.steps[1].message = "did not start"
    plan.steps[1].finished_at.FromSeconds(5)
    assert not control.apply_retry(plan), "none asked"
    plan.retries_requested = 1
    assert control.apply_retry(plan)
    step = plan.steps[1]
    assert step.status == P and step.attempts == 4 and step.attempts_before_retry == 4
    assert not step.HasField("finished_at") and "did not start" in step.message
    assert plan.retries_done == 1 and plan.status == P
    assert not control.apply_retry(plan), "carried out once"


def test_plan_events_new_replaced_fenced_promoted_failed_finished() -> None:
    old = _plan("deploy", ("create cache-0", C), ("launch cache-1", S))
    new = _plan("recovery", ("fence cache-0", P), ("failover", P), cause=T.PLAN_CAUSE_LOST)
    new.started_at.FromSeconds(1_800_000_100)
    made = events.plan_events("cache", old, new)
    assert [e.kind for e in made] == [T.EVENT_KIND_PLAN_REPLACED, T.EVENT_KIND_PLAN_STARTED]
    assert "replaced at step launch cache-1" in made[0].message

    fenced = T.Plan()
    fenced.CopyFrom(new)
    fenced.steps[0].status = C
    fenced.steps[0].fence.method = T.FENCE_METHOD_SELF_FENCED
    fenced.steps[1].status = C
    fenced.steps[1].decision.CopyFrom(
        T.PromotionDecision(
            promote_member_id="cache-2",
            candidate_ids=["cache-1", "cache-2"],
            positions={"cache-1": "10", "cache-2": "12"},
            reason="most advanced",
        )
    )
    fenced.steps.add(name="start-master cache-2", member_id="cache-2", status=E, message="refused")
    made = events.plan_events("cache", new, fenced)
    assert [e.kind for e in made] == [T.EVENT_KIND_FENCED, T.EVENT_KIND_PROMOTED, T.EVENT_KIND_STEP_FAILED]
    assert "self fenced" in made[0].message and made[0].fence.method == T.FENCE_METHOD_SELF_FENCED
    assert made[1].member_id == "cache-2" and "candidates cache-1=10 cache-2=12" in made[1].message
    assert made[2].step == "start-master cache-2" and "refused" in made[2].message
    assert events.plan_events("cache", fenced, fenced) == [], "a save that changes nothing says nothing"

    done = T.Plan()
    done.CopyFrom(fenced)
    done.steps[2].status = C
    assert [e.kind for e in events.plan_events("cache", fenced, done)] == [T.EVENT_KIND_PLAN_FINISHED]


def test_member_events_lost_or_failed_to_start() -> None:
    ready = member(0, T.ROLE_MASTER)
    gone = T.Member()
    gone.CopyFrom(ready)
    gone.state = T.MEMBER_STATE_FAILED
    gone.message = "FAILED: killed by signal 9"
    [lost] = events.member_events("cache", ready, gone)
    assert (
        lost.kind == T.EVENT_KIND_MEMBER_LOST
        and "cache-0 (MASTER" in lost.message
        and " lost: " in lost.message
    )
    starting = T.Member()
    starting.CopyFrom(ready)
    starting.state = T.MEMBER_STATE_STARTING
    [failed] = events.member_events("cache", starting, gone)
    assert "failed to start" in failed.message
    assert events.member_events("cache", gone, gone) == []


def test_member_watch_replaced_and_unresponsive() -> None:
    watch = events.MemberWatch()
    before = [member(0, T.ROLE_MASTER), member(1)]
    for m in before:
        m.volume.persistence_id = f"{m.id}.v1"
    assert watch.changes("cache", before) == [], "the first pass is the baseline"
    after = [T.Member(), T.Member()]
    for new, old in zip(after, before, strict=True):
        new.CopyFrom(old)
    after[1].volume.persistence_id = "cache-1.v2"
    after[0].health.unresponsive = True
    made = watch.changes("cache", after)
    assert sorted(e.kind for e in made) == [T.EVENT_KIND_MEMBER_LOST, T.EVENT_KIND_REPLACED]
    replaced = next(e for e in made if e.kind == T.EVENT_KIND_REPLACED)
    assert replaced.member_id == "cache-1" and "cache-1.v2 (was cache-1.v1)" in replaced.message
    assert Action.FENCE.value == "fence"
