"""Framework-side conformance: every call the offers service sends (through the real pymesos driver)
would be accepted by a real Mesos master.

The offers service runs against the local cluster through a recording proxy (``call_recorder``) and
goes through a cycle that makes it send every call type it uses: SUBSCRIBE, ACCEPT with LAUNCH
(plain, with ports, on a volume), RESERVE, CREATE, DESTROY and UNRESERVE, DECLINE, KILL,
ACKNOWLEDGE, RECONCILE (explicit and implicit), SUPPRESS, REVIVE and ACCEPT_INVERSE_OFFERS (an agent
scheduled for maintenance through the operator API). Each recorded body is then decoded as the
master decodes it (``encoding.decode``: strict against the project's ``mesos.v1`` protos, unknown
fields refused) and run through the rules of ``src/master/validation.cpp`` (``validation.py``):
the call itself, the FrameworkInfo of SUBSCRIBE, and every operation of every ACCEPT against the
offer it accepts (its agent and allocation role, taken from the OFFERS events the proxy relayed)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from conformance.call_recorder import CallRecorder, RecordedCall, RecordIOReader
from mesos_stateful.api.mesos.v1.scheduler import scheduler_pb2
from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.localcluster import encoding, validation
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.offers import OffersService
from mesos_stateful.testing.poll import eventually

Json = dict[str, Any]
RUNNING = types_pb2.TASK_STATE_RUNNING
KILLED = types_pb2.TASK_STATE_KILLED
HOUR_NS = 3600 * 10**9

CALL_TYPES = {
    "SUBSCRIBE",
    "ACCEPT",
    "DECLINE",
    "KILL",
    "ACKNOWLEDGE",
    "RECONCILE",
    "SUPPRESS",
    "REVIVE",
    "ACCEPT_INVERSE_OFFERS",
}
OPERATION_TYPES = {"LAUNCH", "RESERVE", "CREATE", "DESTROY", "UNRESERVE"}


def web_spec(
    instance: str, ordinal: int, volume: types_pb2.Volume | None = None, ports: int = 1
) -> types_pb2.LaunchSpec:
    """A member serving HTTP on ${PORT_WEB} (and holding ``ports`` - 1 more ports)."""
    member = f"{instance}-{ordinal}"
    spec = types_pb2.LaunchSpec(
        instance=instance,
        member_id=member,
        task_id=f"{member}.1",
        workload="test",
        role=types_pb2.ROLE_PEER,
        resources=types_pb2.Resources(cpus=0.25, mem_mb=64),
        port_names=["web", *(f"extra{i}" for i in range(1, ports))],
        argv=[sys.executable, "-m", "http.server", "${PORT_WEB}", "--bind", "${HOST}"],
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="web"), interval_ms=100),
        kill_grace_seconds=2,
    )
    if volume is not None:
        spec.volume.CopyFrom(volume)
    return spec


async def wait_task(
    state: StateClient, task_id: str, condition: Callable[[types_pb2.Task], bool], timeout: float = 60.0
) -> types_pb2.Task:
    deadline = time.monotonic() + timeout
    last: types_pb2.Task | None = None
    while True:
        record = await state.find(spb.KIND_TASK, task_id)
        if record is not None:
            last = record.task
            if condition(last):
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id}: condition not met in {timeout}s; last record: {last}")
        await asyncio.sleep(0.1)


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    await eventually(condition, what, timeout)


def operator_call(cluster: RunningCluster, call: Json) -> None:
    request = urllib.request.Request(
        f"{cluster.master_url}/api/v1",
        data=json.dumps(call).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def sent(recorder: CallRecorder, kind: str, pred: Callable[[Json], bool] = lambda _c: True) -> bool:
    return any(c.type == kind and pred(c.json) for c in recorder.recorded())


def operations(call: Json) -> list[Json]:
    return list((call.get("accept") or {}).get("operations", []))


async def run_cycle(
    offers: OffersService, state: StateClient, cluster: RunningCluster, recorder: CallRecorder
) -> None:
    """Drive the offers service through every call it makes."""
    assert offers.stub is not None
    await offers.wait_subscribed()

    # A plain member with two ports: LAUNCH on unreserved resources.
    await offers.stub.Launch(api.LaunchRequest(launch=web_spec("plain", 0, ports=2)))
    plain = await wait_task(state, "plain-0.1", lambda t: t.state == RUNNING)

    # A member with a volume: RESERVE + CREATE + LAUNCH on the reservation.
    volume = types_pb2.Volume(persistence_id="vol-0.v1", container_path="data", size_mb=32)
    await state.put(types_pb2.Member(id="vol-0", instance="vol", volume=volume), expected_revision=0)
    await offers.stub.Launch(api.LaunchRequest(launch=web_spec("vol", 0, volume)))
    await wait_task(state, "vol-0.1", lambda t: t.state == RUNNING)
    # Explicit reconciliation of the running tasks (every second here).
    await wait_until(
        lambda: sent(recorder, "RECONCILE", lambda c: bool(c["reconcile"].get("tasks"))),
        "an explicit RECONCILE",
    )

    # Maintenance of the plain member's machine: an inverse offer, accepted once no task is left.
    agent = next(a for a in cluster.agents if a.id == plain.agent_id)
    window = {
        "machine_ids": [{"hostname": agent.hostname, "ip": agent.ip}],
        "unavailability": {
            "start": {"nanoseconds": time.time_ns() + HOUR_NS},
            "duration": {"nanoseconds": HOUR_NS},
        },
    }
    schedule = {
        "type": "UPDATE_MAINTENANCE_SCHEDULE",
        "update_maintenance_schedule": {"schedule": {"windows": [window]}},
    }
    await asyncio.to_thread(operator_call, cluster, schedule)
    await wait_task(state, "plain-0.1", lambda t: t.HasField("maintenance"))

    # KILL both; then the inverse offer is accepted.
    for task_id in ("plain-0.1", "vol-0.1"):
        await offers.stub.Kill(api.KillRequest(task_id=task_id))
        await wait_task(state, task_id, lambda t: t.state == KILLED)
    await wait_until(lambda: sent(recorder, "ACCEPT_INVERSE_OFFERS"), "ACCEPT_INVERSE_OFFERS")

    # The member record deleted: DESTROY + UNRESERVE when its reservation is offered again.
    await state.delete(spb.KIND_MEMBER, "vol/vol-0")
    await wait_until(
        lambda: sent(
            recorder, "ACCEPT", lambda c: {"DESTROY", "UNRESERVE"} <= {o["type"] for o in operations(c)}
        ),
        "DESTROY + UNRESERVE",
    )
    # A restart (failover): SUBSCRIBE again with the framework id.
    await offers.restart()
    await offers.wait_subscribed()
    await wait_until(lambda: sent(recorder, "SUBSCRIBE", lambda c: "framework_id" in c), "a re-SUBSCRIBE")


def check_call(call: RecordedCall, framework: Json, offers: dict[str, Json]) -> list[str]:
    """What a real master would refuse in this call (empty: nothing)."""
    problems: list[str] = []
    try:
        decoded = encoding.decode(call.body, call.content_type, scheduler_pb2.Call)
    except encoding.DecodeError as failed:
        return [f"{call.type}: {failed.status} {failed.message}"]
    error = validation.validate_call(decoded)
    if error is not None:
        return [f"{call.type}: Failed to validate scheduler::Call: {error}"]
    if call.type == "SUBSCRIBE":
        error = validation.validate_framework(decoded["subscribe"]["framework_info"])
        if error is not None:
            problems.append(f"SUBSCRIBE: {error}")
    if call.type == "ACCEPT":
        for offer_id in decoded["accept"].get("offer_ids", []):
            offer = offers.get(offer_id["value"])
            if offer is None:
                problems.append(f"ACCEPT of offer {offer_id['value']} never offered")
                continue
            role = (offer.get("allocation_info") or {}).get("role")
            for operation in operations(decoded):
                error = validation.validate_operation(operation, framework, allocation_role=role)
                if error is not None:
                    problems.append(f"ACCEPT {operation['type']}: {error}")
                for task in (operation.get("launch") or {}).get("task_infos", []):
                    error = validation.validate_task(
                        task, framework, offer["agent_id"]["value"], allocation_role=role
                    )
                    if error is not None:
                        problems.append(f"LAUNCH of {task['task_id']['value']}: {error}")
    if not 200 <= call.status < 300:
        problems.append(f"{call.type}: answered {call.status} by the local cluster")
    return problems


@pytest.mark.slow
async def test_every_call_the_offers_service_sends_is_valid_for_a_real_master(
    recorded_offers_service: OffersService,
    state_client: StateClient,
    local_cluster: RunningCluster,
    recorder: CallRecorder,
) -> None:
    await run_cycle(recorded_offers_service, state_client, local_cluster, recorder)
    calls = recorder.recorded()
    events = recorder.recorded_events()

    # Every type of call and operation was exercised (else this test proves nothing about it).
    kinds = {c.type for c in calls}
    assert kinds >= CALL_TYPES, f"not sent: {CALL_TYPES - kinds}"
    ops = {o["type"] for c in calls if c.type == "ACCEPT" for o in operations(c.json)}
    assert ops >= OPERATION_TYPES, f"operations not sent: {OPERATION_TYPES - ops}"
    # Inverse offers are accepted once the agent is free, never declined (docs/maintenance.md).
    assert "DECLINE_INVERSE_OFFERS" not in kinds
    assert sum(1 for c in calls if c.type == "SUBSCRIBE") >= 2
    assert all(c.content_type == encoding.JSON for c in calls)

    # The events relayed to it parse strictly too (what pymesos worked on).
    for event in events:
        encoding.to_message(event, scheduler_pb2.Event)
    framework_id = next(e for e in events if e["type"] == "SUBSCRIBED")["subscribed"]["framework_id"]
    offers = {o["id"]["value"]: o for e in events if e["type"] == "OFFERS" for o in e["offers"]["offers"]}
    subscribe = next(c for c in calls if c.type == "SUBSCRIBE").json
    framework = {**subscribe["subscribe"]["framework_info"], "id": framework_id}

    problems = [p for c in calls for p in check_call(c, framework, offers)]
    assert not problems, "\n".join(problems)


# --- the checker itself refuses what a real master refuses ---------------------------------------------

FRAMEWORK: Json = {
    "user": "u",
    "name": "n",
    "id": {"value": "fw"},
    "roles": ["stateful"],
    "capabilities": [{"type": "MULTI_ROLE"}, {"type": "RESERVATION_REFINEMENT"}],
}
OFFER: Json = {"id": {"value": "o1"}, "agent_id": {"value": "a1"}, "allocation_info": {"role": "stateful"}}


def recorded(call: Json, status: int = 202, content_type: str | None = encoding.JSON) -> RecordedCall:
    return RecordedCall(content_type, json.dumps(call).encode(), status)


def launch_call(task: Json) -> Json:
    return {
        "type": "ACCEPT",
        "framework_id": {"value": "fw"},
        "accept": {
            "offer_ids": [{"value": "o1"}],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
        },
    }


def good_task(**changes: Any) -> Json:
    return {
        "name": "t",
        "task_id": {"value": "t1"},
        "agent_id": {"value": "a1"},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}],
        "command": {"value": "true"},
        **changes,
    }


def test_checker_accepts_a_valid_launch() -> None:
    assert check_call(recorded(launch_call(good_task())), FRAMEWORK, {"o1": OFFER}) == []


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        ({**launch_call(good_task()), "bogus": 1}, "ACCEPT: 400 Failed to convert JSON into Call protobuf: "),
        ({"type": "ACCEPT", "framework_id": {"value": "fw"}}, "Expecting 'accept' to be present"),
        (
            launch_call(good_task(agent_id={"value": "a2"})),
            "Task uses invalid agent a2 while agent a1 is expected",
        ),
        (launch_call(good_task(resources=[])), "Task uses no resources"),
        ({**launch_call(good_task()), "accept": {"offer_ids": [{"value": "o9"}]}}, "never offered"),
        (
            {"type": "SUBSCRIBE", "subscribe": {"framework_info": {**FRAMEWORK, "id": None, "role": "r"}}},
            "'FrameworkInfo.role' must not be set when the framework is MULTI_ROLE capable",
        ),
    ],
)
def test_checker_refuses(call: Json, problem: str) -> None:
    problems = check_call(recorded(call), FRAMEWORK, {"o1": OFFER})
    assert any(problem in p for p in problems), problems


def test_checker_refuses_other_media_types_and_refused_calls() -> None:
    call = launch_call(good_task())
    assert check_call(recorded(call, content_type="text/json"), FRAMEWORK, {"o1": OFFER}) == [
        "ACCEPT: 415 Expecting 'Content-Type' of application/json or application/x-protobuf"
    ]
    assert check_call(recorded(call, status=400), FRAMEWORK, {"o1": OFFER}) == [
        "ACCEPT: answered 400 by the local cluster"
    ]


def test_recordio_reader_splits_records_across_chunks() -> None:
    reader = RecordIOReader()
    data = b'12\n{"type":"A"}15\n{"type":"HEAR"}'
    assert reader.feed(data[:5]) == []
    assert reader.feed(data[5:20]) == [b'{"type":"A"}']
    assert reader.feed(data[20:]) == [b'{"type":"HEAR"}']
