"""End to end (real local cluster, real redis-server, real etcd): RetryPlan continues a plan
stopped in ERROR from its failed step once the cause is fixed.

The cause: every port of every agent is held by another program (a listener on the agent's
address), so each launch of the deploy fails (PORT_IN_USE) and, after ``max_launch_attempts``, the
launch step is ERROR and the instance FAILED. The lifecycle's own retry of failed launches is set
an hour away, so only the operator's retry gets it out. The listeners are closed (the port freed),
RetryPlan is called: the same plan goes on from that step (attempts kept, a fresh attempt budget)
and the instance runs. The history has the failure, the retry with who asked, and the plan's end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.testing.cluster import RunningCluster, start_local_cluster
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite

from .test_placement_learns import AGENTS, PORTS_PER_AGENT, agent_ports, listeners

pytestmark = pytest.mark.slow


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    """The suite's cluster with 2 agents of 3 ports each, so every port can be taken."""
    running = start_local_cluster(tmp_path / "cluster", agents=AGENTS, agent_ports_count=PORTS_PER_AGENT)
    try:
        yield running
    finally:
        running.stop()
    left = running.leftovers()
    assert not left, f"processes left behind by executor sessions: {left}"


async def _refusal(suite: Suite, name: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.api.RetryPlan(api.RetryPlanRequest(name=name))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value
    return caught.value.details() or ""


async def test_retry_continues_a_failed_plan_once_the_port_is_free(suite: Suite) -> None:
    assert isinstance(suite.lifecycle, LifecycleRunner)
    suite.lifecycle.overrides.update({"max_launch_attempts": 2, "launch_failure_retry_seconds": 3600.0})
    await suite.lifecycle.restart()
    every_port = sorted((ip, port) for ip, ports in agent_ports(suite).items() for port in ports)
    with listeners(every_port):
        await suite.create("cache", 1)
        failed = await suite.wait_instance(
            "cache", lambda i: i.phase == T.INSTANCE_PHASE_FAILED, 90, "FAILED after its launches failed"
        )
        step = next(s for s in failed.plan.steps if s.status == T.STEP_STATUS_ERROR)
        assert step.name.startswith(("launch", "await-running")), step
        attempts = step.attempts
        assert attempts >= 2, step
        plan_started = failed.plan.started_at
    # The cause is fixed: the ports are free. Nothing happens by itself (the retry is an hour away).
    asked = time.monotonic()
    instance = (await suite.api.RetryPlan(api.RetryPlanRequest(name="cache"))).instance
    assert instance.plan.retries_requested == 1
    instance = await suite.wait_running("cache", 1, timeout=90)
    print(f"RUNNING {time.monotonic() - asked:.1f}s after RetryPlan ({attempts} attempts before it)")
    assert instance.plan.name == "deploy" and instance.plan.started_at == plan_started, "the same plan"
    assert instance.plan.retries_done == 1 and instance.last_error == ""
    retried = next(s for s in instance.plan.steps if s.name == step.name)
    assert retried.status == T.STEP_STATUS_COMPLETE
    assert retried.attempts > attempts and retried.attempts_before_retry == attempts, retried

    # Nothing left to retry: refused, saying why.
    assert await _refusal(suite, "cache") == "plan deploy is COMPLETE: nothing to retry"

    events = (await suite.api.ListEvents(api.ListEventsRequest(name="cache"))).events
    kinds = [e.kind for e in events]
    failure = next(e for e in events if e.kind == T.EVENT_KIND_STEP_FAILED)
    assert failure.step == step.name and "did not start" in failure.message, failure
    retry = next(e for e in events if e.kind == T.EVENT_KIND_OPERATOR_ACTION and e.action == "retry")
    assert retry.actor.startswith("anonymous@ipv4:127.0.0.1:") and step.name in retry.message, retry
    assert kinds.index(T.EVENT_KIND_STEP_FAILED) < list(events).index(retry)
    finished = [e for e in events if e.kind == T.EVENT_KIND_PLAN_FINISHED]
    assert finished and finished[-1].id > retry.id
    lost = [e for e in events if e.kind == T.EVENT_KIND_MEMBER_LOST]
    assert lost and all("failed to start" in e.message for e in lost), lost
