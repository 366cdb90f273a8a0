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
from opentelemetry.util._once import Once
from prometheus_client import REGISTRY

from lifecycle.plan_helpers import running_instance, snap
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.common import tracing
from mesos_stateful.lifecycle import planner, plans, spans


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """The global tracer provider, built by ``common.tracing``, into memory; restored afterwards."""
    exporter = InMemorySpanExporter()
    provider = tracing.build_provider("lifecycle")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


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
    spans._emitted.clear()
    spans._causes.clear()
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
    assert dict(root.attributes) | {"reason": ""} == {
        "instance": "cache",
        "workload": "redis",
        "plan": "recovery",
        "reason": "",
        "outcome": "writable",
        "old_master": "cache-0",
        "new_master": "cache-1",
        "cause": "lost",
    }
    # The cause after a restart: from the plan itself (made by another process).
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
