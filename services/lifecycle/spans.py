"""Trace spans of the lifecycle: one per plan step run, one per workload callback attempt, so a
deploy or a failover reads as a timeline (``python -m mesos_stateful.common.tracing show``).
No-ops unless tracing is on (see :mod:`mesos_stateful.common.tracing`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors

tracer = trace.get_tracer("mesos_stateful.lifecycle")


@contextmanager
def step_span(instance: str, plan: types_pb2.Plan, step: types_pb2.Step) -> Iterator[trace.Span]:
    """Span of one run of ``step``; call :func:`step_result` with the outcome before leaving."""
    attributes = {"instance": instance, "plan": plan.name, "step": step.name, "member": step.member_id}
    with tracer.start_as_current_span(f"step {step.name}", attributes=attributes) as span:
        yield span


def step_result(span: trace.Span, status: int, attempts: int, message: str) -> None:
    span.set_attribute("status", types_pb2.StepStatus.Name(status).removeprefix("STEP_STATUS_"))
    span.set_attribute("attempts", attempts)
    if message:
        span.set_attribute("message", message)
    if status == types_pb2.STEP_STATUS_ERROR:
        span.set_status(trace.StatusCode.ERROR, message)


@contextmanager
def callback_span(workload: str, method: str, member: str, attempt: int) -> Iterator[trace.Span]:
    """Span of one callback attempt; ``outcome`` is OK, RETRY (retryable) or ERROR."""
    attributes: dict[str, str | int] = {
        "callback": method,
        "workload": workload,
        "member": member,
        "attempt": attempt,
    }
    with tracer.start_as_current_span(f"callback {method}", attributes=attributes) as span:
        try:
            yield span
        except errors.StatefulError as error:
            span.set_attribute("outcome", "RETRY" if error.retryable else "ERROR")
            raise
        span.set_attribute("outcome", "OK")
