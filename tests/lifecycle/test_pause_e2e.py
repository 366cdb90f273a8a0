"""End to end (real local cluster, real redis-server, real etcd): pause / resume of an instance's
plans (lifecycle/control.py), and its history (lifecycle/events.py) as `statefulctl describe`
shows it after a failover.

- A pause holds planned work: a scale asked while paused makes its plan, whose first step is held
  (``Step.held``) and no member is created, until resume; then it runs to RUNNING.
- A master lost while paused is still failed over (the documented choice): no acknowledged
  write lost, exactly one promotion; the history says who was lost, how it was fenced, who was
  promoted and every candidate's position, and who paused and resumed.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.cli.cmd_plans import event_line
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite, master_of
from mesos_stateful.testing.poll import eventually

from .e2e_helpers import AcknowledgedWriter, RoleWatch, kill9, missing_keys, password, redis_pids

pytestmark = pytest.mark.slow


async def _events(suite: Suite, name: str) -> list[T.Event]:
    response = await suite.api.ListEvents(api.ListEventsRequest(name=name))
    return list(response.events)


def _kinds(events: list[T.Event]) -> list[str]:
    return [T.EventKind.Name(e.kind).removeprefix("EVENT_KIND_") for e in events]


async def _refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value
    return caught.value.details() or ""


async def test_pause_holds_a_scale_and_resume_runs_it(suite: Suite) -> None:
    await suite.create("cache", 1)
    await suite.wait_running("cache", 1)
    paused = (await suite.api.PauseInstance(api.PauseInstanceRequest(name="cache"))).instance
    assert paused.paused
    detail = await _refused(
        suite.api.PauseInstance(api.PauseInstanceRequest(name="cache")), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "already paused" in detail and "statefulctl resume cache" in detail

    await suite.api.ScaleInstance(api.ScaleInstanceRequest(name="cache", replicas=2))
    held = await suite.wait_instance(
        "cache", lambda i: any(s.held for s in i.plan.steps), 30, "the scale's first step held"
    )
    assert held.plan.name == "scale"
    first = next(s for s in held.plan.steps if s.status != T.STEP_STATUS_COMPLETE)
    assert first.held and first.status == T.STEP_STATUS_PENDING and "paused" in first.message
    # Held, not merely slow: for 3 s nothing of the plan starts and no member is added.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        now = await suite.instance("cache")
        assert now is not None and len(now.members) == 1, now
        assert all(s.status in (T.STEP_STATUS_PENDING, T.STEP_STATUS_COMPLETE) for s in now.plan.steps)
        await asyncio.sleep(0.2)
    # A lifecycle restarted meanwhile rebuilds the hold from the store: still held.
    assert isinstance(suite.lifecycle, LifecycleRunner)
    await suite.lifecycle.restart()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        now = await suite.instance("cache")
        assert now is not None and len(now.members) == 1 and any(s.held for s in now.plan.steps), now
        await asyncio.sleep(0.2)
    detail = await _refused(
        suite.api.RetryPlan(api.RetryPlanRequest(name="cache")), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "in progress" in detail and "statefulctl resume cache" in detail

    resumed = (await suite.api.ResumeInstance(api.ResumeInstanceRequest(name="cache"))).instance
    assert not resumed.paused
    instance = await suite.wait_running("cache", 2, timeout=90)
    assert not any(s.held for s in instance.plan.steps)
    detail = await _refused(
        suite.api.ResumeInstance(api.ResumeInstanceRequest(name="cache")), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "not paused" in detail

    events = await _events(suite, "cache")
    kinds = _kinds(events)
    actions = [e.action for e in events if e.kind == T.EVENT_KIND_OPERATOR_ACTION]
    assert actions == ["create", "pause", "scale", "resume"], actions
    assert "STEP_HELD" in kinds and kinds.index("STEP_HELD") < len(kinds) - 1
    operator = next(e for e in events if e.action == "pause")
    assert operator.actor.startswith("anonymous@ipv4:127.0.0.1:"), operator.actor
    finished = [e for e in events if e.kind == T.EVENT_KIND_PLAN_FINISHED and e.plan == "scale"]
    assert finished and finished[-1].id > next(e.id for e in events if e.action == "resume")

    # A delete is not held by a pause; the history goes with the instance.
    await suite.api.PauseInstance(api.PauseInstanceRequest(name="cache"))
    await suite.api.DeleteInstance(api.DeleteInstanceRequest(name="cache"))
    await suite.wait_gone("cache", timeout=60)
    left, _ = await suite.client.list(spb.KIND_EVENT, "cache/")
    assert left == [], [r.event for r in left]


async def test_master_lost_while_paused_is_failed_over_and_described(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    writer = AcknowledgedWriter(old, secret, "k")
    writer.start()
    await suite.api.PauseInstance(api.PauseInstanceRequest(name="cache"))
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    await eventually(lambda: len(writer.acknowledged) >= 200 or None, "200 acknowledged writes", 30)
    kill9(redis_pids(suite, [old]))

    # Paused, yet the lost master is replaced (lifecycle/control.py: availability first).
    def failed_over(i: T.Instance) -> bool:
        masters = [m for m in i.members if m.role == T.ROLE_MASTER]
        return (
            i.phase == T.INSTANCE_PHASE_RUNNING
            and len(masters) == 1
            and masters[0].id != old.id
            and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
        )

    instance = await suite.wait_instance("cache", failed_over, 120, "failed over while paused")
    await writer.stop()
    await roles.stop()
    assert instance.paused
    new = master_of(instance)
    assert roles.promotions == [new.id] and roles.max_masters == 1
    assert await missing_keys(new, secret, writer.acknowledged) == []

    events = await _events(suite, "cache")
    kinds = _kinds(events)
    for kind in ("MEMBER_LOST", "FENCED", "PROMOTED", "PLAN_STARTED"):
        assert kind in kinds, kinds
    lost = next(e for e in events if e.kind == T.EVENT_KIND_MEMBER_LOST)
    assert lost.member_id == old.id and "lost" in lost.message
    fenced = next(e for e in events if e.kind == T.EVENT_KIND_FENCED)
    assert fenced.member_id == old.id and fenced.fence.method != T.FENCE_METHOD_UNSPECIFIED
    promoted = next(e for e in events if e.kind == T.EVENT_KIND_PROMOTED)
    assert promoted.member_id == new.id and promoted.decision.promote_member_id == new.id
    candidates = set(promoted.decision.candidate_ids)
    assert new.id in candidates and set(promoted.decision.positions) >= candidates
    for member in candidates:
        assert f"{member}={promoted.decision.positions[member]}" in promoted.message, promoted.message
    assert kinds.index("MEMBER_LOST") < kinds.index("FENCED") < kinds.index("PROMOTED")

    # `statefulctl describe` (the same renderers) names the promoted member with the positions.
    lines = [event_line(e) for e in events]
    promoted_line = next(line for line in lines if "PROMOTED" in line)
    assert new.id in promoted_line and "candidates" in promoted_line
    print("\n".join(lines))
    took = (promoted.time.ToNanoseconds() - lost.time.ToNanoseconds()) / 1e6
    kept = len(writer.acknowledged)
    print(f"paused; master lost -> promoted in {took:.0f} ms (event times), {kept} acknowledged writes kept")

    await suite.api.ResumeInstance(api.ResumeInstanceRequest(name="cache"))
    await suite.wait_running("cache", 3)
