"""The offers service against the real local cluster, with the real executor running real
processes, and a real state service on etcd."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from offers_helpers import (
    RUNNING,
    field_violations,
    in_state,
    launch,
    port_open,
    wait_task,
    wait_until,
    web_spec,
)

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.offers import OffersService

pytestmark = pytest.mark.slow


async def test_subscribes_and_stores_the_framework_id(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    cluster = await offers_service.wait_subscribed()
    assert cluster.framework_id
    record = await state_client.get(spb.KIND_FRAMEWORK, "")
    assert record.framework.framework_id == cluster.framework_id
    assert record.framework.failover_timeout_seconds == 604800
    framework = next(f for f in local_cluster.state()["frameworks"] if f["id"] == cluster.framework_id)
    assert framework["failover_timeout"] == 604800 and framework["checkpoint"] is True
    # Agents are learnt from offers.
    cluster = await offers_service.wait_cluster(lambda c: len(c.agents) == 3)
    assert {a.hostname for a in cluster.agents} == {a.hostname for a in local_cluster.agents}


async def test_launch_runs_a_real_process_seen_running_in_state(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    """The issue's "Done": a launch through the gRPC OfferService runs a real process on a
    simulated agent, and the state service shows it RUNNING."""
    queued = await launch(offers_service, web_spec("web", 0))
    assert queued.state == types_pb2.TASK_STATE_QUEUED
    task = await wait_task(state_client, "web-0.1", in_state(RUNNING))
    agent = next(a for a in local_cluster.agents if a.id == task.agent_id)
    assert task.host == agent.hostname
    port = task.ports["web"]

    def get() -> int:
        with urllib.request.urlopen(f"http://{task.host}:{port}/", timeout=5) as response:
            return int(response.status)

    assert await asyncio.to_thread(get) == 200
    # Launch is idempotent on the task id.
    again = await launch(offers_service, web_spec("web", 0))
    assert again.state == RUNNING and again.ports["web"] == port

    # Idle: offers are suppressed. New work revives them (a suppressed framework gets none).
    framework_id = (await offers_service.wait_subscribed()).framework_id

    def suppressed() -> bool:
        async def read() -> bool:
            return bool(local_cluster.cluster.master.frameworks[framework_id].suppressed)

        return local_cluster.run(read())

    await wait_until(suppressed, what="offers suppressed while idle")
    await launch(offers_service, web_spec("web", 1))
    await wait_task(state_client, "web-1.1", in_state(RUNNING))
    await wait_until(suppressed, what="offers suppressed again")

    # Kill: the task is KILLED in state and the process is gone.
    assert offers_service.stub is not None
    killed = await offers_service.stub.Kill(api.KillRequest(task_id="web-0.1"))
    assert killed.task.kill_requested
    task = await wait_task(state_client, "web-0.1", in_state(types_pb2.TASK_STATE_KILLED))
    assert task.kill_requested
    await wait_until(lambda: not port_open(task.host, port), what="port closed")
    # Killing an ended task is a no-op; an unknown one is NOT_FOUND.
    again_killed = await offers_service.stub.Kill(api.KillRequest(task_id="web-0.1"))
    assert again_killed.task.state == types_pb2.TASK_STATE_KILLED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await offers_service.stub.Kill(api.KillRequest(task_id="nope-0.1"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND

    # Lifecycle deletes ended task records; the offers service forgets them.
    await state_client.delete(spb.KIND_TASK, "web-0.1")

    async def listed() -> list[str]:
        assert offers_service.stub is not None
        response = await offers_service.stub.ListTasks(api.ListTasksRequest(instance="web"))
        return [t.task_id for t in response.tasks]

    deadline = asyncio.get_running_loop().time() + 30
    while await listed() != ["web-1.1"]:
        assert asyncio.get_running_loop().time() < deadline, await listed()
        await asyncio.sleep(0.1)


async def test_malformed_and_unsatisfiable_launches_are_refused(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    assert offers_service.stub is not None
    await offers_service.wait_cluster(lambda c: len(c.agents) == 3)

    bad = web_spec("bad", 0)
    bad.task_id = "bad-0"
    bad.resources.cpus = 0
    del bad.argv[:]
    bad.port_names.append("web")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await offers_service.stub.Launch(api.LaunchRequest(launch=bad))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = field_violations(raised.value)
    assert set(fields) == {
        "launch.task_id",
        "launch.resources.cpus",
        "launch.argv",
        "launch.port_names[1]",
    }, fields

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await offers_service.stub.Launch(api.LaunchRequest(launch=types_pb2.LaunchSpec()))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"launch.instance", "launch.member_id", "launch.task_id"} <= set(field_violations(raised.value))

    huge = web_spec("huge", 0, cpus=1000)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await offers_service.stub.Launch(api.LaunchRequest(launch=huge))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "1000.0 cpus" in (raised.value.details() or "")

    nowhere = web_spec("nowhere", 0, zone="mars")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await offers_service.stub.Launch(api.LaunchRequest(launch=nowhere))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "zone=mars" in (raised.value.details() or "")

    # Nothing was stored or launched.
    records, _ = await state_client.list(spb.KIND_TASK)
    assert records == []
    listed = await offers_service.stub.ListTasks(api.ListTasksRequest())
    assert list(listed.tasks) == []
    assert all(not f["tasks"] for f in local_cluster.state()["frameworks"])


async def test_a_launch_that_does_not_fit_now_waits_with_a_reason_and_can_be_dropped(
    offers_service: OffersService, state_client: StateClient
) -> None:
    assert offers_service.stub is not None
    # 4 members of one instance, at most 1 per agent, 3 agents: the 4th waits.
    for ordinal in range(4):
        await launch(offers_service, web_spec("quad", ordinal))
    cluster = await offers_service.wait_cluster(
        lambda c: [p.task_id for p in c.pending] == ["quad-3.1"] and "already run 1" in c.pending[0].reason
    )
    assert cluster.pending[0].reason.startswith("waiting")
    for ordinal in range(3):
        await wait_task(state_client, f"quad-{ordinal}.1", in_state(RUNNING))
    killed = await offers_service.stub.Kill(api.KillRequest(task_id="quad-3.1"))
    assert killed.task.state == types_pb2.TASK_STATE_KILLED
    assert killed.task.message == "killed before launch"
    await offers_service.wait_cluster(lambda c: not c.pending)
    record = await state_client.get(spb.KIND_TASK, "quad-3.1")
    assert record.task.state == types_pb2.TASK_STATE_KILLED and not record.task.agent_id
