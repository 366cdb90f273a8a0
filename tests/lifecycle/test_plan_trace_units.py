"""The plan-trace bookkeeping of ``lifecycle.spans`` on planner snapshots (no processes): the first
sign of a lost master (status update or first missed probe) and its cause, when a plan's root span
is emitted (writable, complete, error, replaced; once), step spans parented on the stored context
also after a restart, and tracing off (no trace context, metrics still counted)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from lifecycle.plan_helpers import running_instance, snap
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.common import tracing
from mesos_stateful.lifecycle import planner, plans, spans
from mesos_stateful.testing.tracing import global_provider


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """The global tracer provider, built by ``common.tracing``, into memory; restored afterwards."""
    exporter = InMemorySpanExporter()
    provider = tracing.build_provider("lifecycle")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with global_provider(provider):
        yield exporter


def _lost_master_snapshot(unresponsive: bool) -> planner.Snapshot:
    inst, members, tasks = running_instance(3)
    master = members[0]
    task = tasks[master.task_id]
    task.updated_at.CopyFrom(plans.timestamp(1000.0))
    if unresponsive:
        master.health.unresponsive = True
        master.health.conditions.add(
            type=T.CONDITION_TYPE_REACHABLE, ok=False, reason="Unreachable", since=plans.timestamp(990.0)
        )
    else:
        task.state = T.TASK_STATE_FAILED
    inst.plan.CopyFrom(_deploy_done())
    return snap(inst, members, tasks)


def _deploy_done() -> T.Plan:
    plan = plans.new_plan(
        plans.DEPLOY, "create 3 members", 1, [plans.step(plans.Action.CREATE, "cache-0")], 900.0
    )
    plan.steps[0].status = plans.COMPLETE
    plan.status = plans.COMPLETE
    return plan


def _recovery(s: planner.Snapshot) -> T.Plan:
    plan, new = planner.decide(s)
    assert plan is not None and new and plan.name == plans.RECOVERY
    return plan


def _roots(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("plan ")]


def _count(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("unresponsive", "sign", "cause"), [(False, 1000.0, "lost"), (True, 990.0, "unresponsive")]
)
def test_a_lost_masters_first_sign_and_cause(
    exported: InMemorySpanExporter, unresponsive: bool, sign: float, cause: str
) -> None:
    s = _lost_master_snapshot(unresponsive)
    plan = _recovery(s)
    detections = _count("stateful_failure_detection_seconds_count", {"workload": "redis", "cause": cause})
    lost = spans.begin_plan(s, plan, 1001.5)
    assert lost is not None and lost.member_id == "cache-0" and lost.cause == cause and lost.stored
    assert spans.cause_of(plan) == cause, "stored typed in Plan.cause"
    assert plans.seconds(plan.detected_at) == sign
    assert plan.trace_parent.startswith("00-") and plan.trace_parent.endswith("-01")
    assert (
        _count("stateful_failure_detection_seconds_count", {"workload": "redis", "cause": cause})
        == detections + 1
    )


def test_the_root_is_emitted_once_when_the_new_master_is_writable(exported: InMemorySpanExporter) -> None:
    s = _lost_master_snapshot(False)
    plan = _recovery(s)
    spans.begin_plan(s, plan, 1001.0)
    _, trace_hex, span_hex, _ = plan.trace_parent.split("-")

    # A step run by this process, and one by a lifecycle restarted since: both under the stored root.
    with spans.step_span("cache", "redis", plan, plan.steps[0]) as run:
        spans.step_result(run, plan.steps[0], plans.COMPLETE, 1, "")
    [fence] = exported.get_finished_spans()
    assert fence.parent is not None and f"{fence.parent.span_id:016x}" == span_hex
    assert fence.context is not None and f"{fence.context.trace_id:032x}" == trace_hex

    before = T.Plan()
    before.CopyFrom(plan)
    failover = plan.steps[1]
    failover.status = plans.COMPLETE
    failover.decision.promote_member_id = "cache-1"
    failover.decision.candidate_ids.extend(["cache-1", "cache-2"])
    plan.steps.extend(
        [plans.step(plans.Action.START_MASTER, "cache-1"), plans.step(plans.Action.MASTER_RUNNING, "cache-1")]
    )
    plan.steps.append(plans.step(plans.Action.LAUNCH, "cache-0"))
    for step in plan.steps[2:4]:
        step.status = plans.COMPLETE
    plan.status = plans.plan_status(plan)
    failovers = _count("stateful_failover_duration_seconds_count", {"workload": "redis", "cause": "lost"})
    spans.plan_saved("cache", "redis", before, plan, 1002.0)
    [root] = _roots(exported)
    assert root.context is not None and f"{root.context.span_id:016x}" == span_hex
    assert root.parent is None and root.start_time == 1000 * 10**9 and root.end_time == 1002 * 10**9
    assert root.attributes is not None
    assert dict(root.attributes) | {"reason": "", "started_at": ""} == {
        "instance": "cache",
        "workload": "redis",
        "plan": "recovery",
        "reason": "",
        "started_at": "",
        "detected_at": "1970-01-01T00:16:40+00:00",
        "outcome": "writable",
        "old_master": "cache-0",
        "new_master": "cache-1",
        "cause": "lost",
    }
    # The cause after a restart: the plan's stored, typed cause (made by another process).
    assert (
        _count("stateful_failover_duration_seconds_count", {"workload": "redis", "cause": "lost"})
        == failovers + 1
    )

    # Completing later: no second root.
    done = T.Plan()
    done.CopyFrom(plan)
    for step in done.steps:
        step.status = plans.COMPLETE
    done.status = plans.COMPLETE
    spans.plan_saved("cache", "redis", plan, done, 1010.0)
    assert len(_roots(exported)) == 1


def test_a_replaced_plan_and_a_failed_plan_end_their_roots(exported: InMemorySpanExporter) -> None:
    inst, members, tasks = running_instance(3)
    s = snap(inst, members, tasks)
    deploy = plans.new_plan(plans.DEPLOY, "create", 1, [plans.step(plans.Action.LAUNCH, "cache-0")], 900.0)
    spans.begin_plan(s, deploy, 900.0)
    scale = plans.new_plan(plans.SCALE, "scale up", 2, [plans.step(plans.Action.LAUNCH, "cache-3")], 950.0)
    spans.begin_plan(s, scale, 950.0)
    spans.plan_saved("cache", "redis", deploy, scale, 950.0)
    [replaced] = _roots(exported)
    assert replaced.attributes is not None and replaced.attributes["outcome"] == "replaced"
    assert replaced.start_time == 900 * 10**9 and replaced.end_time == 950 * 10**9

    failed = T.Plan()
    failed.CopyFrom(scale)
    failed.steps[0].status = plans.ERROR
    failed.steps[0].message = "no agent"
    failed.status = plans.ERROR
    spans.plan_saved("cache", "redis", scale, failed, 960.0)
    spans.plan_saved("cache", "redis", failed, failed, 970.0)  # saved again while stopped: no new root
    roots = _roots(exported)
    assert len(roots) == 2 and roots[1].attributes is not None and roots[1].attributes["outcome"] == "error"
    assert roots[1].status.status_code == trace.StatusCode.ERROR


def test_tracing_off_no_trace_context_but_metrics() -> None:
    s = _lost_master_snapshot(False)
    plan = _recovery(s)
    made = _count("stateful_plans_total", {"workload": "redis", "plan": "recovery"})
    spans.begin_plan(s, plan, 1001.0)
    assert plan.trace_parent == "" and plans.seconds(plan.detected_at) == 1000.0
    assert _count("stateful_plans_total", {"workload": "redis", "plan": "recovery"}) == made + 1
    with spans.step_span("cache", "redis", plan, plan.steps[0]) as run:
        spans.step_result(run, plan.steps[0], plans.COMPLETE, 1, "")
    spans.plan_saved("cache", "redis", T.Plan(), plan, 1002.0)


def test_a_cold_start_is_not_counted_as_a_failover_to_a_running_replica(
    exported: InMemorySpanExporter,
) -> None:
    """No replica ran (e.g. the whole suite restarted): the recovery elects the most advanced of
    the restarted members. Its duration is observed with cause cold-start, apart from failovers."""
    s = _lost_master_snapshot(False)
    plan = _recovery(s)
    spans.begin_plan(s, plan, 1001.0)
    before = T.Plan()
    before.CopyFrom(plan)
    elect = plans.step(plans.Action.ELECT, "cache-0")
    elect.status = plans.COMPLETE
    elect.decision.promote_member_id = "cache-2"
    plan.steps.extend(
        [
            elect,
            plans.step(plans.Action.START_MASTER, "cache-2"),
            plans.step(plans.Action.MASTER_RUNNING, "cache-2"),
        ]
    )
    for step in plan.steps:
        step.status = plans.COMPLETE
    plan.status = plans.plan_status(plan)
    lost = _count("stateful_failover_duration_seconds_count", {"workload": "redis", "cause": "lost"})
    cold = _count("stateful_failover_duration_seconds_count", {"workload": "redis", "cause": "cold-start"})
    spans.plan_saved("cache", "redis", before, plan, 1009.0)
    assert _count("stateful_failover_duration_seconds_count", {"workload": "redis", "cause": "lost"}) == lost
    assert (
        _count("stateful_failover_duration_seconds_count", {"workload": "redis", "cause": "cold-start"})
        == cold + 1
    )
    [root] = _roots(exported)
    assert root.attributes is not None and root.attributes["cause"] == "cold-start"


def test_the_typed_cause_not_the_reason_text_decides(exported: InMemorySpanExporter) -> None:
    """A plan stored by another lifecycle process: its cause comes from ``Plan.cause``; a reason
    that reads like another cause does not change it."""
    s = _lost_master_snapshot(True)
    plan = _recovery(s)
    spans.begin_plan(s, plan, 1001.0)
    assert plan.cause == T.PLAN_CAUSE_UNRESPONSIVE
    stored = T.Plan.FromString(plan.SerializeToString())  # read back by a restarted lifecycle
    stored.reason = "master cache-0 lost: TASK_FAILED"
    assert spans.cause_of(stored) == spans.Cause.UNRESPONSIVE
    cold = _lost_master_snapshot(False)
    elect = T.Plan()
    elect.CopyFrom(_recovery(cold))
    elect.steps.append(plans.step(plans.Action.ELECT, "cache-0"))
    spans.begin_plan(cold, elect, 1001.0)
    assert elect.cause == T.PLAN_CAUSE_COLD_START
    deploy = _deploy_done()
    spans.begin_plan(cold, deploy, 1001.0)
    assert deploy.cause == T.PLAN_CAUSE_UNSPECIFIED and spans.cause_of(deploy) is None


def test_detection_is_first_sign_to_plan_made(exported: InMemorySpanExporter) -> None:
    """One definition of time to detect (``metrics.detection_seconds``): detected_at -> the
    recovery plan's started_at; the histogram observes exactly that."""
    s = _lost_master_snapshot(False)
    plan = _recovery(s)
    plan.started_at.CopyFrom(plans.timestamp(1003.25))
    total = _count("stateful_failure_detection_seconds_sum", {"workload": "redis", "cause": "lost"})
    spans.begin_plan(s, plan, 1009.0)
    assert spans.detection_seconds(plan) == 3.25
    after = _count("stateful_failure_detection_seconds_sum", {"workload": "redis", "cause": "lost"})
    assert after - total == pytest.approx(3.25)


def _store(stored: T.Plan, new: T.Plan, now: float) -> T.Plan:
    """What the reconciler's write does: stamp inside the write, then emit after it."""
    before = T.Plan()
    before.CopyFrom(stored)
    written = T.Plan()
    written.CopyFrom(new)
    spans.stamp_root_end(before, written, now)
    spans.plan_saved("cache", "redis", before, written, now)
    return written


def test_a_plan_retried_after_error_emits_its_root_once_across_a_restart(
    exported: InMemorySpanExporter,
) -> None:
    """A scale stops in ERROR (its root is emitted), the lifecycle restarts (nothing in memory), the
    launch is retried and the plan completes: still one root span, the one ended at the ERROR."""
    inst, members, tasks = running_instance(3)
    s = snap(inst, members, tasks)
    scale = plans.new_plan(plans.SCALE, "scale up", 2, [plans.step(plans.Action.LAUNCH, "cache-3")], 950.0)
    spans.begin_plan(s, scale, 950.0)
    stored = _store(T.Plan(), scale, 950.0)
    assert not stored.HasField("root_ended_at")

    failed = T.Plan()
    failed.CopyFrom(stored)
    failed.steps[0].status = plans.ERROR
    failed.status = plans.ERROR
    stored = _store(stored, failed, 960.0)
    assert plans.seconds(stored.root_ended_at) == 960.0
    assert len(_roots(exported)) == 1

    # A restarted lifecycle reads the stored plan back and retries the launch (DELAYED), from its
    # in-memory copy of the plan, which has no stamp: the write keeps the stored one.
    stored = T.Plan.FromString(stored.SerializeToString())
    retried = T.Plan()
    retried.CopyFrom(failed)
    retried.ClearField("root_ended_at")
    retried.steps[0].status = plans.DELAYED
    retried.status = plans.plan_status(retried)
    stored = _store(stored, retried, 970.0)
    assert plans.seconds(stored.root_ended_at) == 960.0
    done = T.Plan()
    done.CopyFrom(retried)
    done.steps[0].status = plans.COMPLETE
    done.status = plans.COMPLETE
    stored = _store(stored, done, 980.0)
    roots = _roots(exported)
    assert len(roots) == 1, [r.attributes for r in roots]
    assert roots[0].end_time == 960 * 10**9
