"""RetryPlan, PauseInstance, ResumeInstance and ListEvents through the real gateway over the real
state service and etcd (no lifecycle: the plan states are written straight into the store), the
bounded history (clients/events.py) and events in WatchInstances."""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import grpc
import pytest
from gateway.test_gateway_watch import create, watching

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.events import EventLog, new_event
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.grpc_errors import field_violations

Stub: TypeAlias = "api_grpc.InstanceServiceAsyncStub"


async def _status(call: object) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = caught.value
    return error.code(), error.details() or "", field_violations(error)


async def _set_plan(state: StateClient, name: str, *statuses: int, message: str = "boom") -> None:
    def mutate(current: object) -> T.Instance:
        assert isinstance(current, T.Instance)
        current.plan.CopyFrom(T.Plan(name="deploy", reason="create 1 members"))
        current.plan.started_at.GetCurrentTime()
        for i, status in enumerate(statuses):
            current.plan.steps.add(name=f"launch {name}-{i}", status=status, message=message, attempts=3)
        return current

    await state.update(st.KIND_INSTANCE, name, mutate)


async def test_retry_is_refused_with_what_to_do_and_counted_when_failed(
    stub: Stub, state_client: StateClient
) -> None:
    await create(stub, "cache")
    retry = api.RetryPlanRequest(name="cache")
    code, detail, _ = await _status(stub.RetryPlan(retry))
    assert (
        code == grpc.StatusCode.FAILED_PRECONDITION
        and detail == "instance cache has no plan yet: nothing to retry"
    )

    await _set_plan(state_client, "cache", T.STEP_STATUS_COMPLETE)
    code, detail, _ = await _status(stub.RetryPlan(retry))
    assert (code, detail) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "plan deploy is COMPLETE: nothing to retry",
    )

    await _set_plan(state_client, "cache", T.STEP_STATUS_COMPLETE, T.STEP_STATUS_DELAYED)
    code, detail, _ = await _status(stub.RetryPlan(retry))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "DELAYED and tried again by itself" in detail and "launch cache-1" in detail

    await _set_plan(state_client, "cache", T.STEP_STATUS_COMPLETE, T.STEP_STATUS_STARTING)
    code, detail, _ = await _status(stub.RetryPlan(retry))
    assert detail == "plan deploy is in progress at step launch cache-1 (STARTING): nothing to retry"

    await _set_plan(state_client, "cache", T.STEP_STATUS_COMPLETE, T.STEP_STATUS_ERROR, message="port taken")
    instance = (await stub.RetryPlan(retry)).instance
    assert instance.plan.retries_requested == 1 and instance.plan.retries_done == 0
    code, detail, _ = await _status(stub.RetryPlan(retry))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already asked for" in detail

    events = (await stub.ListEvents(api.ListEventsRequest(name="cache"))).events
    retry_event = events[-1]
    assert retry_event.kind == T.EVENT_KIND_OPERATOR_ACTION and retry_event.action == "retry"
    assert retry_event.message == "retry of plan deploy from launch cache-1: port taken"
    assert retry_event.actor.startswith("anonymous@ipv4:127.0.0.1:")


async def test_pause_resume_and_their_refusals(stub: Stub) -> None:
    await create(stub, "cache")
    code, detail, _ = await _status(stub.ResumeInstance(api.ResumeInstanceRequest(name="cache")))
    assert (
        code == grpc.StatusCode.FAILED_PRECONDITION
        and "not paused" in detail
        and "statefulctl pause cache" in detail
    )
    assert (await stub.PauseInstance(api.PauseInstanceRequest(name="cache"))).instance.paused
    got = (await stub.GetInstance(api.GetInstanceRequest(name="cache"))).instance
    assert got.paused
    code, detail, _ = await _status(stub.PauseInstance(api.PauseInstanceRequest(name="cache")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already paused" in detail
    assert not (await stub.ResumeInstance(api.ResumeInstanceRequest(name="cache"))).instance.paused

    await stub.DeleteInstance(api.DeleteInstanceRequest(name="cache"))
    code, detail, _ = await _status(stub.PauseInstance(api.PauseInstanceRequest(name="cache")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and detail.startswith("instance cache is DELETING")
    code, detail, _ = await _status(stub.RetryPlan(api.RetryPlanRequest(name="cache")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "DELETING" in detail
    actions = [e.action for e in (await stub.ListEvents(api.ListEventsRequest(name="cache"))).events]
    assert actions == ["create", "pause", "resume", "delete"]


@pytest.mark.parametrize(
    "call",
    ["RetryPlan", "PauseInstance", "ResumeInstance", "ListEvents"],
)
async def test_every_new_rpc_validates_its_name(stub: Stub, call: str) -> None:
    request = {
        "RetryPlan": api.RetryPlanRequest,
        "PauseInstance": api.PauseInstanceRequest,
        "ResumeInstance": api.ResumeInstanceRequest,
        "ListEvents": api.ListEventsRequest,
    }[call]
    method = getattr(stub, call)
    code, _, fields = await _status(method(request(name="")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "name" in fields
    code, _, fields = await _status(method(request(name="Bad Name!")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "name" in fields
    code, detail, _ = await _status(method(request(name="nosuch")))
    assert code == grpc.StatusCode.NOT_FOUND and "nosuch" in detail


async def test_list_events_page_size(stub: Stub) -> None:
    await create(stub, "cache")
    code, _, fields = await _status(stub.ListEvents(api.ListEventsRequest(name="cache", page_size=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in fields
    await stub.PauseInstance(api.PauseInstanceRequest(name="cache"))
    await stub.ResumeInstance(api.ResumeInstanceRequest(name="cache"))
    last = (await stub.ListEvents(api.ListEventsRequest(name="cache", page_size=2))).events
    assert [e.action for e in last] == ["pause", "resume"]


async def test_history_is_bounded_oldest_dropped_per_instance(state_client: StateClient) -> None:
    log = EventLog(state_client, history=5)
    other = await log.record(new_event("cache2", T.EVENT_KIND_PLAN_STARTED, "other instance"))
    assert other is not None
    recorded = []
    for i in range(12):
        # Two events at the same nanosecond get distinct ids, in order.
        event = await log.record(
            new_event("cache", T.EVENT_KIND_PLAN_STARTED, f"event {i}", at=1_800_000_000.0 + i // 2)
        )
        assert event is not None
        recorded.append(event.id)
    assert len(set(recorded)) == 12 and recorded == sorted(recorded)
    kept = await log.list("cache")
    assert [e.message for e in kept] == [f"event {i}" for i in range(7, 12)]
    assert [e.message for e in await log.list("cache2")] == ["other instance"]
    assert [e.message for e in await log.list("cache", limit=2)] == ["event 10", "event 11"]
    assert await log.forget("cache") == 5 and await log.list("cache") == []


async def test_events_are_delivered_by_watch(stub: Stub) -> None:
    await create(stub, "cache")
    async with watching(stub, name="cache") as watch:
        first = await watch.next()
        assert first.type == api.INSTANCE_EVENT_TYPE_ADDED
        await stub.PauseInstance(api.PauseInstanceRequest(name="cache"))
        # The instance change and the event, in revision order.
        seen = [await watch.next(events=True), await watch.next(events=True)]
        events = [r for r in seen if r.HasField("event")]
        changes = [r for r in seen if not r.HasField("event")]
        assert len(events) == 1 and len(changes) == 1, seen
        assert events[0].event.action == "pause" and not events[0].HasField("instance")
        assert events[0].type == api.INSTANCE_EVENT_TYPE_UNSPECIFIED and events[0].revision > 0
        assert changes[0].instance.paused
        assert [r.revision for r in seen] == sorted(r.revision for r in seen)
        # Nothing else: an event's trim or another instance's events are not delivered.
        await create(stub, "cache2")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(watch.call.read(), 1.0)
