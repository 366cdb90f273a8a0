"""One trace per plan, received over OTLP: the whole suite runs (lifecycle in-process, with a tracer
provider of ``common.tracing`` exporting over OTLP/gRPC to a real receiver in the test); a kill -9
of the Redis master is ONE trace whose root span starts at the first sign of the loss (the task
status update's time, stored as ``Plan.detected_at``) and ends when the new master accepts
writes, with children for the fence, the promotion decision (candidates and positions), the new
master's start-master / master-running and the old master's relaunch. The create's deploy plan is
another trace. The failover metrics are observed from the same points."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import REGISTRY
from tracing.test_otlp_export import OtlpReceiver, attributes_of, otlp_grpc  # noqa: F401

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.common import tracing
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite, is_running, master_of
from mesos_stateful.testing.tracing import global_provider

from .e2e_helpers import connect, kill9, password, redis_pids, write_acknowledged

pytestmark = pytest.mark.slow

Span = trace_pb2.Span


@pytest_asyncio.fixture
async def traced(otlp_grpc: tuple[OtlpReceiver, str]) -> AsyncIterator[tuple[OtlpReceiver, TracerProvider]]:  # noqa: F811
    """This process's global tracer provider, exporting to the test's OTLP receiver; the one
    before it is put back afterwards (``global_provider``)."""
    receiver, endpoint = otlp_grpc
    provider = tracing.build_provider("lifecycle")
    # A batch processor: it exports from its own thread (the receiver serves on this event loop).
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True), schedule_delay_millis=100)
    )
    with global_provider(provider, shutdown=False):
        try:
            yield receiver, provider
        finally:
            await asyncio.to_thread(provider.shutdown)


@pytest_asyncio.fixture
async def cache(traced: tuple[OtlpReceiver, TracerProvider], suite: Suite) -> T.Instance:
    """The instance ``cache`` of 3 Redis members, created with tracing on, running."""
    await suite.create("cache", 3)
    return await suite.wait_running("cache", 3)


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _lifecycle_spans(receiver: OtlpReceiver) -> list[Span]:
    return [span for service, span in receiver.snapshot() if service == "lifecycle"]


def _roots(spans: list[Span], plan: str, instance: str) -> list[Span]:
    return [
        s
        for s in spans
        if s.name == f"plan {plan}"
        and not s.parent_span_id
        and attributes_of(s.attributes)["instance"] == instance
    ]


def _child(children: list[Span], name: str) -> Span:
    found = [s for s in children if s.name == f"step {name}"]
    assert found, f"no step span {name!r} under the root: {[s.name for s in children]}"
    return found[-1]


async def test_a_master_failover_is_one_trace_from_detection_to_writable(
    traced: tuple[OtlpReceiver, TracerProvider], suite: Suite, cache: T.Instance
) -> None:
    receiver, provider = traced
    instance = cache
    deploy_parent = instance.plan.trace_parent
    assert instance.plan.name == plans.DEPLOY and deploy_parent, "the deploy plan has a trace"
    secret = await password(suite, "cache")
    old = master_of(instance)
    await write_acknowledged(old, secret, 50, replicas=1)
    failovers = {"workload": "redis", "cause": "lost"}
    failovers_before = _metric("stateful_failover_duration_seconds_count", failovers)
    detections_before = _metric("stateful_failure_detection_seconds_count", failovers)

    killed_at = time.time()
    kill9(redis_pids(suite, [old]))

    # The new master accepts writes: poll it with a write.
    def promoted_one(i: T.Instance) -> bool:
        return any(m.role == T.ROLE_MASTER and m.id != old.id for m in i.members)

    promoted = await suite.wait_instance("cache", promoted_one, 60, "a promotion")
    new_master = master_of(promoted)
    deadline = time.monotonic() + 60
    while True:
        try:
            async with connect(new_master, secret) as r:
                await r.set("after-failover", "1")
            break
        except Exception:  # read-only until StartMaster, refused until then
            assert time.monotonic() < deadline, "the new master never accepted a write"
            await asyncio.sleep(0.05)
    writable_at = time.time()

    def relaunched(i: T.Instance) -> bool:
        return (
            i.phase == T.INSTANCE_PHASE_RUNNING
            and i.plan.name == plans.RECOVERY
            and i.plan.status == plans.COMPLETE
            and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
        )

    instance = await suite.wait_instance("cache", relaunched, 120, "recovered, old master relaunched")
    plan = instance.plan
    assert plan.trace_parent and plan.trace_parent != deploy_parent
    detected_at = plans.seconds(plan.detected_at)
    assert killed_at <= detected_at <= plans.seconds(plan.started_at) + 0.001

    # Exactly one recovery root for the instance (emitted when its new master became writable).
    [root] = await receiver.wait_for(
        lambda _: _roots(_lifecycle_spans(receiver), plans.RECOVERY, "cache"), 30, "recovery root span"
    )
    await asyncio.to_thread(provider.force_flush)
    spans = _lifecycle_spans(receiver)
    assert len(_roots(spans, plans.RECOVERY, "cache")) == 1
    trace_hex = root.trace_id.hex()
    assert plan.trace_parent.split("-")[1:3] == [trace_hex, root.span_id.hex()]

    # From the first sign (the status update of the dead task) to the new master's writability.
    assert root.start_time_unix_nano == plan.detected_at.ToNanoseconds()
    assert killed_at * 1e9 <= root.start_time_unix_nano <= (killed_at + 10) * 1e9
    attributes = attributes_of(root.attributes)
    assert attributes["old_master"] == old.id and attributes["new_master"] == new_master.id
    assert attributes["plan"] == "recovery" and attributes["workload"] == "redis"
    assert attributes["fence_method"] in ("process_gone", "demoted", "self_fenced")
    assert attributes["cause"] == "lost" and attributes["reason"] == plan.reason

    # Its children: one trace for everything the recovery did.
    children = [s for s in spans if s.trace_id == root.trace_id and s.parent_span_id == root.span_id]
    fence = _child(children, f"fence {old.id}")
    assert attributes_of(fence.attributes)["fence_method"] == attributes["fence_method"]
    failover = attributes_of(_child(children, f"failover {old.id}").attributes)
    assert new_master.id in failover["candidates"] and failover["promoted"] == new_master.id
    assert any(p.startswith(f"{new_master.id}=") for p in failover["positions"])
    _child(children, f"start-master {new_master.id}")
    running = _child(children, f"master-running {new_master.id}")
    _child(children, f"launch {old.id}")
    # The root ends when master-running is done and stored: the new master accepts writes.
    assert running.end_time_unix_nano <= root.end_time_unix_nano <= running.end_time_unix_nano + 2e9
    assert root.end_time_unix_nano <= writable_at * 1e9 + 2e9
    # Callbacks hang under their steps, in the same trace.
    callbacks = [s for s in spans if s.trace_id == root.trace_id and s.name == "callback MasterLost"]
    assert callbacks and all(c.parent_span_id != root.span_id for c in callbacks)

    # The create's deploy plan: its own trace, with its own root.
    [deploy] = _roots(spans, plans.DEPLOY, "cache")
    assert deploy.trace_id != root.trace_id
    assert deploy_parent.split("-")[1] == deploy.trace_id.hex()
    assert any(s.parent_span_id == deploy.span_id and s.name.startswith("step launch") for s in spans)

    # The same points feed the metrics.
    assert _metric("stateful_failover_duration_seconds_count", failovers) == failovers_before + 1
    assert _metric("stateful_failure_detection_seconds_count", failovers) == detections_before + 1
    elapsed = (root.end_time_unix_nano - root.start_time_unix_nano) / 1e9
    assert elapsed > 0
    step_runs: dict[str, Any] = {"workload": "redis", "action": "fence", "outcome": "complete"}
    assert _metric("stateful_plan_step_duration_seconds_count", step_runs) >= 1


async def test_a_lifecycle_restart_mid_failover_continues_the_same_trace(
    traced: tuple[OtlpReceiver, TracerProvider], suite: Suite, cache: T.Instance
) -> None:
    receiver, provider = traced
    instance = cache
    old = master_of(instance)
    # No workload service: the failover waits (DELAYED) after the fence; the lifecycle restarts there.
    await suite.redis.stop(deregister=False)
    kill9(redis_pids(suite, [old]))

    def waiting(i: T.Instance) -> bool:
        return any(s.name == f"failover {old.id}" and s.status == plans.DELAYED for s in i.plan.steps)

    stuck = await suite.wait_instance("cache", waiting, 60, "a delayed failover")
    await suite.lifecycle.stop()
    # The restarted lifecycle knows the plan only from state: its typed cause, its stored root stamp.
    await suite.redis.start()
    await suite.lifecycle.start()

    def recovered(i: T.Instance) -> bool:
        return i.phase == T.INSTANCE_PHASE_RUNNING and i.plan.status == plans.COMPLETE and is_running(i, 3)

    instance = await suite.wait_instance("cache", recovered, 120, "recovered after the restart")
    assert instance.plan.trace_parent == stuck.plan.trace_parent, "the stored trace context is kept"
    [root] = await receiver.wait_for(
        lambda _: _roots(_lifecycle_spans(receiver), plans.RECOVERY, "cache"), 30, "recovery root span"
    )
    await asyncio.to_thread(provider.force_flush)
    spans = _lifecycle_spans(receiver)
    assert len(_roots(spans, plans.RECOVERY, "cache")) == 1
    steps = [
        s
        for s in spans
        if s.name.startswith("step ") and attributes_of(s.attributes).get("plan") == plans.RECOVERY
    ]
    # Before the restart (the fence, the failed failover attempts) and after it: one trace, one parent.
    assert {s.trace_id for s in steps} == {root.trace_id}
    assert {s.parent_span_id for s in steps} == {root.span_id}
    names = [s.name for s in steps]
    assert f"step fence {old.id}" in names and names.count(f"step failover {old.id}") >= 2
    assert attributes_of(root.attributes)["cause"] == "lost", "the stored Plan.cause after the restart"
    assert root.start_time_unix_nano == stuck.plan.detected_at.ToNanoseconds()
