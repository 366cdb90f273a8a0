"""A plan that stopped in ERROR and is retried later, across a lifecycle restart, emits its root
span once: the whole suite runs (lifecycle in-process, exporting over OTLP to a real receiver); a
create whose every launch fails (every port of every agent taken) stops in ERROR (its root span,
outcome error, is emitted then); the lifecycle restarts (a new process would know nothing of what
the old one emitted); the ports are freed, the launch is retried by itself and the plan completes.
The receiver holds exactly one root span of that deploy plan: the stored ``Plan.root_ended_at``,
not the process's memory, decides."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from tracing.test_otlp_export import OtlpReceiver, attributes_of, otlp_grpc  # noqa: F401

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite

from .test_placement_learns import every_launch_failing, local_cluster  # noqa: F401 (small port ranges)
from .test_plan_trace import _lifecycle_spans, _roots, traced  # noqa: F401

pytestmark = pytest.mark.slow


async def test_a_plan_retried_after_error_across_a_restart_has_one_root(
    traced: tuple[OtlpReceiver, TracerProvider],  # noqa: F811
    suite: Suite,
) -> None:
    receiver, provider = traced
    async with every_launch_failing(suite):
        await suite.create("cache", 1)
        failed = await suite.wait_instance(
            "cache", lambda i: i.plan.status == plans.ERROR, 90, "the deploy plan in ERROR"
        )
        assert failed.plan.name == plans.DEPLOY and failed.plan.HasField("root_ended_at")
        [root] = await receiver.wait_for(
            lambda _: _roots(_lifecycle_spans(receiver), plans.DEPLOY, "cache"), 30, "the root at the ERROR"
        )
        assert attributes_of(root.attributes)["outcome"] == "error"
        await suite.lifecycle.stop()
    # Ports free; a new lifecycle process retries the failed launch by itself and completes the plan.
    await suite.lifecycle.start()
    done = await suite.wait_instance(
        "cache",
        lambda i: i.plan.status == plans.COMPLETE and i.phase == T.INSTANCE_PHASE_RUNNING,
        90,
        "the deploy plan COMPLETE after the retry",
    )
    assert done.plan.trace_parent == failed.plan.trace_parent, "the same plan, the same trace"
    assert done.plan.root_ended_at == failed.plan.root_ended_at, "the stamp is kept by later writes"
    await asyncio.to_thread(provider.force_flush)
    roots = _roots(_lifecycle_spans(receiver), plans.DEPLOY, "cache")
    assert len(roots) == 1, [attributes_of(r.attributes) for r in roots]
    steps = [
        s for s in _lifecycle_spans(receiver) if s.name.startswith("step ") and s.trace_id == root.trace_id
    ]
    assert any(attributes_of(s.attributes).get("status") == "COMPLETE" for s in steps), (
        "steps after the retry"
    )
