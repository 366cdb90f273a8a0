"""Status updates carry trace context, and a failover's root links to the first sign (issue 13).

The whole suite in-process (as test_plan_trace.py) with the gRPC trace-context wrappers of
``common.trace_context`` installed, so the lifecycle's Launch request carries its step's trace
context to the offers service. Real executors (processes started by the local cluster's agents)
get it as the TaskInfo label ``traceparent`` and put it on their TaskStatus updates; the offers
service handles each update in a span ``status <STATE>`` joined to the launch's trace. After a
kill -9 of the master's redis-server the failover's root span (its own trace) links to the span
of the TASK_FAILED update that was the first sign."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from tracing.test_otlp_export import OtlpReceiver, attributes_of, otlp_grpc  # noqa: F401

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.common import trace_context
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite, master_of

from .e2e_helpers import kill9, redis_pids
from .test_plan_trace import _lifecycle_spans, _roots, traced  # noqa: F401

pytestmark = pytest.mark.slow

Span = trace_pb2.Span


@pytest_asyncio.fixture
async def hops(
    traced: tuple[OtlpReceiver, TracerProvider],  # noqa: F811
) -> AsyncIterator[tuple[OtlpReceiver, TracerProvider]]:
    """``traced`` plus trace context on every gRPC hop of this process (servers and channels made
    after this fixture: request it before ``suite``)."""
    trace_context.install()
    try:
        yield traced
    finally:
        trace_context.uninstall()


def _ancestors(span: Span, spans: list[Span]) -> list[Span]:
    """``span``'s parents up to its trace's root, nearest first (as far as they were exported)."""
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    chain: list[Span] = []
    current = span
    while current.parent_span_id:
        parent = by_id.get((current.trace_id, current.parent_span_id))
        if parent is None:
            break
        chain.append(parent)
        current = parent
    return chain


async def test_status_updates_join_the_launch_trace_and_the_failover_links_to_the_first_sign(
    hops: tuple[OtlpReceiver, TracerProvider], suite: Suite
) -> None:
    receiver, provider = hops
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    deploy_trace = instance.plan.trace_parent.split("-")[1]
    old = master_of(instance)

    # The running master's updates carry its launch's context: handled in the deploy's trace.
    def running_update(spans: list[tuple[str, Span]]) -> list[Span]:
        return [
            s
            for _, s in spans
            if s.name == "status TASK_RUNNING" and attributes_of(s.attributes)["task"] == old.task_id
        ]

    [running, *_] = await receiver.wait_for(running_update, 30, "the master's TASK_RUNNING span")
    assert running.trace_id.hex() == deploy_trace, "the update joined the deploy plan's trace"
    await asyncio.to_thread(provider.force_flush)
    chain = [s.name for s in _ancestors(running, _lifecycle_spans(receiver))]
    # status <- offers' Launch (server) <- lifecycle's Launch (client) <- the step that launched it.
    assert chain[:2] == ["/stateful.v1.OfferService/Launch"] * 2, chain
    assert f"step launch {old.id}" in chain and chain[-1] == "plan deploy", chain

    kill9(redis_pids(suite, [old]))

    def recovered(i: T.Instance) -> bool:
        return (
            i.plan.name == plans.RECOVERY
            and i.plan.status == plans.COMPLETE
            and any(m.role == T.ROLE_MASTER and m.id != old.id for m in i.members)
        )

    instance = await suite.wait_instance("cache", recovered, 120, "a completed recovery")
    plan = instance.plan
    assert plan.detected_trace_parent, "the plan kept the first sign's trace context"
    [root] = await receiver.wait_for(
        lambda _: _roots(_lifecycle_spans(receiver), plans.RECOVERY, "cache"), 30, "recovery root span"
    )
    await asyncio.to_thread(provider.force_flush)
    spans = _lifecycle_spans(receiver)
    failed = [
        s
        for s in spans
        if s.name == "status TASK_FAILED" and attributes_of(s.attributes)["task"] == old.task_id
    ]
    assert len(failed) == 1, [s.name for s in spans if s.name.startswith("status ")]
    [sign] = failed
    # The update was handled in the launch's trace (the executor copied the TaskInfo's traceparent)...
    assert sign.trace_id.hex() == deploy_trace
    assert f"step launch {old.id}" in [s.name for s in _ancestors(sign, spans)]
    # ...and the failover, its own trace, links to that handling: the first sign.
    assert root.trace_id != sign.trace_id
    [link] = root.links
    assert (link.trace_id, link.span_id) == (sign.trace_id, sign.span_id)
    assert plan.detected_trace_parent.split("-")[1:3] == [sign.trace_id.hex(), sign.span_id.hex()]
    # The root starts at that update's time (Task.updated_at, the executor's timestamp).
    assert root.start_time_unix_nano == plan.detected_at.ToNanoseconds()
    assert sign.start_time_unix_nano >= root.start_time_unix_nano
