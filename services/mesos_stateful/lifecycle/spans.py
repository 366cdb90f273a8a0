"""Traces and metrics of the lifecycle's plans: one trace per plan, one span per plan step run,
one per workload callback attempt, so a deploy or a failover reads as a timeline
(``python -m mesos_stateful.common.tracing show``, or any OTLP backend).

**One trace per plan.** When the lifecycle makes a plan (:func:`begin_plan`) it chooses the
plan's root span context and stores it in ``Plan.trace_parent`` (a W3C ``traceparent``). Every
step span is a child of that stored context (:func:`step_span`), and the state calls made for the
plan as well (:func:`in_plan`), so a lifecycle that takes over after a restart continues the same
trace. The root span itself is emitted once (:func:`stamp_root_end` stores ``Plan.root_ended_at``
in the write that ends it), with the stored ids (``tracing.preset_ids``), when
the plan is over (:func:`plan_saved`): completed, stopped in ERROR, or replaced by another plan;
a recovery or drain that promoted a new master ends its root span earlier, when that master's
``master-running`` step completes (the new master accepts writes), and its later steps (re-pointing,
relaunching the old master) stay children of it. The root starts at ``Plan.detected_at`` (a lost
master's first sign) or else at ``Plan.started_at``.

**Metrics** (``mesos_stateful.common.metrics``): PLANS_TOTAL per plan made, PLAN_STEP_SECONDS per
step run, CALLBACK_SECONDS per callback attempt, and for a recovery of a lost master
DETECTION_SECONDS (first sign -> plan made: :func:`detection_seconds`) and FAILOVER_SECONDS (first
sign -> new master's ``master-running`` COMPLETE; a drain's switchover: plan start -> same), both
labelled with the plan's typed ``Plan.cause`` (:func:`cause_of`).

Spans are no-ops unless tracing is on (:mod:`mesos_stateful.common.tracing`); ``trace_parent`` then
stays empty. Metrics are observed either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors, metrics, trace_context, tracing
from mesos_stateful.lifecycle import planner, plans
from mesos_stateful.lifecycle.plans import Action

log = logging.getLogger(__name__)
T = types_pb2

SCOPE = "mesos_stateful.lifecycle"
_PROPAGATOR = TraceContextTextMapPropagator()


class Cause(StrEnum):
    """Why a master was replaced (the ``cause`` label of the failover metrics)."""

    LOST = "lost"  # Mesos reported its task ended or unreachable
    UNRESPONSIVE = "unresponsive"  # the health probe found it silent (task still running)
    DRAIN = "drain"  # a switchover off an agent going down for maintenance
    SWITCHOVER = "switchover"  # asked by an operator (also a restart / replace of the master)
    # Every member restarted in place and the most advanced elected (no replica ran: e.g. after a
    # restart of the whole suite): a recovery, not a failover to a running replica.
    COLD_START = "cold-start"


@dataclass(frozen=True)
class LostMaster:
    """The master a recovery plan replaces, why, and when its loss first showed."""

    member_id: str
    cause: Cause
    detected_at: float  # seconds since the epoch
    # False: nothing stored tells the first sign; ``detected_at`` is when the lifecycle saw it.
    stored: bool


# The stored Plan.cause of each Cause, and back.
_PLAN_CAUSES: dict[Cause, types_pb2.PlanCause] = {
    Cause.LOST: T.PLAN_CAUSE_LOST,
    Cause.UNRESPONSIVE: T.PLAN_CAUSE_UNRESPONSIVE,
    Cause.DRAIN: T.PLAN_CAUSE_DRAIN,
    Cause.SWITCHOVER: T.PLAN_CAUSE_SWITCHOVER,
    Cause.COLD_START: T.PLAN_CAUSE_COLD_START,
}
_CAUSES: dict[int, Cause] = {stored: cause for cause, stored in _PLAN_CAUSES.items()}


def cause_of(plan: types_pb2.Plan) -> Cause | None:
    """The plan's typed cause (``Plan.cause``, set when the plan was made), None for a plan that
    replaces no master. A promotion by election (no replica ran) is a cold start whatever the
    stored cause (a plan stored before elections set it)."""
    cause = _CAUSES.get(plan.cause)
    if cause in (Cause.LOST, Cause.UNRESPONSIVE):
        promotion = _promotion(plan)
        if promotion is not None and plans.action_of(promotion[0]) == Action.ELECT:
            return Cause.COLD_START
    return cause


def _tracer() -> trace.Tracer:
    # Looked up each time: a test may install (and remove) a provider after this module is imported.
    return trace.get_tracer(SCOPE)


def _provider() -> TracerProvider | None:
    """The SDK provider, if tracing is on with ids this module can preset."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider) and isinstance(provider.id_generator, tracing.PresetIdGenerator):
        return provider
    return None


def plan_context(plan: types_pb2.Plan) -> otel_context.Context | None:
    """The context whose current span is the plan's (not yet emitted) root, or None."""
    if not plan.trace_parent:
        return None
    ctx = _PROPAGATOR.extract({"traceparent": plan.trace_parent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def _root_ids(plan: types_pb2.Plan) -> tuple[int, int] | None:
    ctx = plan_context(plan)
    if ctx is None:
        return None
    span_context = trace.get_current_span(ctx).get_span_context()
    return span_context.trace_id, span_context.span_id


@contextmanager
def in_plan(plan: types_pb2.Plan) -> Iterator[None]:
    """Spans started inside (state calls, callbacks) are children of the plan's root."""
    ctx = plan_context(plan)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def _same_plan(a: types_pb2.Plan, b: types_pb2.Plan) -> bool:
    return a.name == b.name and a.started_at == b.started_at


# --- plans made --------------------------------------------------------------------------------------


def lost_master(s: planner.Snapshot, plan: types_pb2.Plan) -> LostMaster | None:
    """The lost master ``plan`` (a recovery) handles, with the first sign of its loss: for a master
    the probe declared silent, the first probe it missed (its REACHABLE condition's ``since``);
    else the time of its task's last status update (``Task.updated_at``, the Mesos status time)."""
    if plan.name != plans.RECOVERY or s.peers():
        return None
    master = s.master()
    if master is None or s.condition(master) != planner.Condition.LOST:
        return None
    if not any(step.member_id == master.id for step in plan.steps):
        return None
    task = s.task_of(master)
    ended = task is None or task.state in planner.ENDED
    if master.health.unresponsive and not ended:
        cause = Cause.UNRESPONSIVE
        condition = planner.failing(master, T.CONDITION_TYPE_REACHABLE)
        sign = condition.since if condition is not None and condition.HasField("since") else None
    else:
        cause = Cause.LOST
        sign = task.updated_at if task is not None and task.HasField("updated_at") else None
    if sign is None:
        return LostMaster(master.id, cause, time.time(), stored=False)
    return LostMaster(master.id, cause, plans.seconds(sign), stored=True)


def new_trace_parent(name: str) -> str:
    """A fresh root span context for a plan named ``name`` as a W3C traceparent ("" when tracing
    is off). Sampled as the provider's sampler would sample that root (``OTEL_TRACES_SAMPLER``)."""
    provider = _provider()
    if provider is None:
        return ""
    trace_id = provider.id_generator.generate_trace_id()
    span_id = provider.id_generator.generate_span_id()
    decision = provider.sampler.should_sample(None, trace_id, f"plan {name}").decision
    sampled = decision == Decision.RECORD_AND_SAMPLE
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def begin_plan(s: planner.Snapshot, plan: types_pb2.Plan, now: float) -> LostMaster | None:
    """A new plan is about to be stored: choose its trace, stamp ``detected_at`` for a lost master
    and the plan's typed ``cause`` (drain; lost, unresponsive, or cold-start when the plan elects
    among restarted members), count it. Returns the lost master it handles, if any."""
    workload = s.instance.spec.workload
    metrics.PLANS_TOTAL.labels(workload, plan.name).inc()
    plan.trace_parent = new_trace_parent(plan.name)
    if plan.name == plans.DRAIN:
        plan.cause = _PLAN_CAUSES[Cause.DRAIN]
    elif (plan.operation.id or plan.name == plans.UPDATE) and any(
        plans.action_of(step) == Action.FENCE for step in plan.steps
    ):
        # An operator's switchover, restart or replace of the master, or an update's switchover.
        plan.cause = _PLAN_CAUSES[Cause.SWITCHOVER]
    lost = lost_master(s, plan)
    if lost is None:
        return None
    plan.detected_at.CopyFrom(plans.timestamp(lost.detected_at))
    elects = any(plans.action_of(step) == Action.ELECT for step in plan.steps)
    cause = Cause.COLD_START if elects else lost.cause
    plan.cause = _PLAN_CAUSES[cause]
    master = s.master()
    task = s.task_of(master) if master is not None and lost.cause == Cause.LOST else None
    if task is not None:
        plan.detected_trace_parent = task.status_trace_parent  # the root links to it (emit_root)
    metrics.DETECTION_SECONDS.labels(workload, cause.value).observe(detection_seconds(plan))
    if not lost.stored:
        log.info("%s: no stored first sign of %s's loss: detected_at is now", s.name, lost.member_id)
    return lost


# --- plans saved ---------------------------------------------------------------------------------------


def _promotion(plan: types_pb2.Plan) -> tuple[types_pb2.Step, bool] | None:
    """The step that decided a promotion (failover / elect) and whether the promoted member's
    ``master-running`` after it is COMPLETE (it accepts writes)."""
    for index, step in enumerate(plan.steps):
        if plans.action_of(step) in (Action.FAILOVER, Action.ELECT) and step.decision.promote_member_id:
            chosen = step.decision.promote_member_id
            writable = any(
                later.member_id == chosen
                and plans.action_of(later) == Action.MASTER_RUNNING
                and later.status == plans.COMPLETE
                for later in plan.steps[index + 1 :]
            )
            return step, writable
    return None


def _writable(plan: types_pb2.Plan) -> bool:
    promotion = _promotion(plan)
    return promotion is not None and promotion[1]


def _over(plan: types_pb2.Plan) -> bool:
    """The root span's end is reached: the plan is done or stopped, or its new master is writable."""
    return plan.status in (plans.COMPLETE, plans.ERROR) or _writable(plan)


def detection_seconds(plan: types_pb2.Plan) -> float:
    """The plan's time to detect (:func:`metrics.detection_seconds`: ``detected_at`` ->
    ``started_at``), seconds."""
    return metrics.detection_seconds(plans.seconds(plan.detected_at), plans.seconds(plan.started_at))


def _start(plan: types_pb2.Plan) -> float:
    return plans.seconds(plan.detected_at if plan.HasField("detected_at") else plan.started_at)


def stamp_root_end(before: types_pb2.Plan, after: types_pb2.Plan, now: float) -> None:
    """About to store ``after`` over ``before`` (inside the write): keep ``root_ended_at`` of the
    same plan, or set it (``now``, seconds) when ``after`` is over. The stored stamp is what keeps
    a root span from being emitted twice: a plan that stopped in ERROR (its root emitted then) and
    is retried and completes later, also by a restarted lifecycle, has it already."""
    if _same_plan(before, after) and before.HasField("root_ended_at"):
        after.root_ended_at.CopyFrom(before.root_ended_at)
    elif _over(after) and not after.HasField("root_ended_at"):
        after.root_ended_at.CopyFrom(plans.timestamp(now))


def _root_done(before: types_pb2.Plan, after: types_pb2.Plan) -> bool:
    """The root span of ``after`` was emitted by an earlier write of the same plan."""
    return _same_plan(before, after) and (_over(before) or before.HasField("root_ended_at"))


def plan_saved(
    instance: str, workload: str, before: types_pb2.Plan, after: types_pb2.Plan, now: float
) -> None:
    """The stored plan went from ``before`` to ``after`` (at ``now``, seconds): emit the root span
    of a plan that is over or replaced, observe a failover that just made its master writable."""
    same = _same_plan(before, after)
    if (
        not same
        and before.name
        and plans.is_active(before)
        and not _over(before)
        and not (before.HasField("root_ended_at"))
    ):
        emit_root(instance, workload, before, now, "replaced")
    if _writable(after) and not (same and _writable(before)):
        cause = cause_of(after)
        if cause is not None:
            metrics.FAILOVER_SECONDS.labels(workload, cause.value).observe(max(0.0, now - _start(after)))
    if _over(after) and not _root_done(before, after):
        if after.status == plans.ERROR:
            outcome = "error"
        elif after.status == plans.COMPLETE:
            outcome = "complete"
        else:
            outcome = "writable"
        end = plans.seconds(after.root_ended_at) if after.HasField("root_ended_at") else now
        emit_root(instance, workload, after, end, outcome)


def root_attributes(instance: str, workload: str, plan: types_pb2.Plan, outcome: str) -> dict[str, str]:
    """What the root span of ``plan`` says: instance, workload, plan, reason, outcome, and for a
    promotion the old and new master, the fence method and the cause."""
    attributes = {
        "instance": instance,
        "workload": workload,
        "plan": plan.name,
        "reason": plan.reason,
        "outcome": outcome,
        "started_at": _rfc3339(plan.started_at),
    }
    if plan.HasField("detected_at"):
        attributes["detected_at"] = _rfc3339(plan.detected_at)
    promotion = _promotion(plan)
    if promotion is not None:
        decided = promotion[0]
        attributes["old_master"] = decided.member_id
        attributes["new_master"] = decided.decision.promote_member_id
        cause = cause_of(plan)
        if cause is not None:
            attributes["cause"] = cause.value
    for step in plan.steps:
        if plans.action_of(step) == Action.FENCE and step.fence.method:
            attributes["fence_method"] = fence_method_name(step.fence.method)
            attributes.setdefault("old_master", step.member_id)
    return attributes


def _rfc3339(stamp: Timestamp) -> str:
    return datetime.fromtimestamp(plans.seconds(stamp), UTC).isoformat()


def fence_method_name(method: int) -> str:
    """``FENCE_METHOD_SELF_FENCED`` -> ``self_fenced``."""
    return T.FenceMethod.Name(method).removeprefix("FENCE_METHOD_").lower()


def emit_root(instance: str, workload: str, plan: types_pb2.Plan, end: float, outcome: str) -> None:
    """Emit the plan's root span with the ids stored in ``trace_parent`` (the caller emits it once:
    see :func:`stamp_root_end`)."""
    ids = _root_ids(plan)
    if ids is None or _provider() is None:
        return
    start_ns = int(_start(plan) * 1e9)
    end_ns = max(start_ns, int(end * 1e9))
    # A link to the first sign's trace: the handling of the status update that revealed the loss.
    sign = trace_context.context_of(plan.detected_trace_parent)
    links = [trace.Link(trace.get_current_span(sign).get_span_context())] if sign is not None else []
    with tracing.preset_ids(*ids):
        span = _tracer().start_span(
            f"plan {plan.name}",
            context=otel_context.Context(),  # a root: no parent
            start_time=start_ns,
            attributes=root_attributes(instance, workload, plan, outcome),
            links=links,
        )
    if plan.status == plans.ERROR:
        index = plans.first_open(plan)
        message = plan.steps[index].message if index is not None else ""
        span.set_status(trace.StatusCode.ERROR, message)
    span.end(end_time=end_ns)


# --- steps and callbacks ---------------------------------------------------------------------------------


@dataclass
class StepRun:
    """One run of a step: its span, and its outcome once :func:`step_result` has seen it."""

    span: trace.Span
    status: int = plans.STARTING


@contextmanager
def step_span(instance: str, workload: str, plan: types_pb2.Plan, step: types_pb2.Step) -> Iterator[StepRun]:
    """Span of one run of ``step``, a child of the plan's root; call :func:`step_result` with the
    outcome before leaving. Observes PLAN_STEP_SECONDS (by action and resulting status)."""
    action = plans.action_of(step).value
    attributes = {
        "instance": instance,
        "plan": plan.name,
        "step": step.name,
        "action": action,
        "member": step.member_id,
    }
    started = time.monotonic()
    with _tracer().start_as_current_span(
        f"step {step.name}", context=plan_context(plan), attributes=attributes
    ) as span:
        run = StepRun(span)
        try:
            yield run
        finally:
            outcome = types_pb2.StepStatus.Name(run.status).removeprefix("STEP_STATUS_").lower()
            metrics.PLAN_STEP_SECONDS.labels(workload, action, outcome).observe(time.monotonic() - started)


def step_result(run: StepRun, step: types_pb2.Step, status: int, attempts: int, message: str) -> None:
    """Record the outcome of a step run, with what the step stored: a fence's method, a
    promotion's candidates and their positions (``member=position``)."""
    run.status = status
    span = run.span
    span.set_attribute("status", types_pb2.StepStatus.Name(status).removeprefix("STEP_STATUS_"))
    span.set_attribute("attempts", attempts)
    if message:
        span.set_attribute("message", message)
    if step.fence.method:
        span.set_attribute("fence_method", fence_method_name(step.fence.method))
    decision = step.decision
    if decision.promote_member_id:
        span.set_attribute("promoted", decision.promote_member_id)
        span.set_attribute("candidates", list(decision.candidate_ids))
        span.set_attribute("positions", [f"{m}={p}" for m, p in sorted(decision.positions.items())])
        if decision.reason:
            span.set_attribute("decision", decision.reason)
    if status == types_pb2.STEP_STATUS_ERROR:
        span.set_status(trace.StatusCode.ERROR, message)


@contextmanager
def callback_span(workload: str, method: str, member: str, attempt: int) -> Iterator[trace.Span]:
    """Span of one callback attempt; ``outcome`` is OK, RETRY (retryable) or ERROR. Observes
    CALLBACK_SECONDS (outcome ok / retry / error)."""
    attributes: dict[str, str | int] = {
        "callback": method,
        "workload": workload,
        "member": member,
        "attempt": attempt,
    }
    started = time.monotonic()

    def observe(outcome: str) -> None:
        metrics.CALLBACK_SECONDS.labels(workload, method, outcome).observe(time.monotonic() - started)

    with _tracer().start_as_current_span(f"callback {method}", attributes=attributes) as span:
        try:
            yield span
        except errors.StatefulError as error:
            outcome = "retry" if error.retryable else "error"
            span.set_attribute("outcome", outcome.upper())
            observe(outcome)
            raise
        except Exception:
            observe("error")
            raise
        span.set_attribute("outcome", "OK")
        observe("ok")
