"""Maintenance against the real local cluster and the real offers service (pymesos): a machine
scheduled for maintenance (Mesos docs/maintenance.md) reaches the task records on it as
``Task.maintenance``; new launches stay off it; the inverse offer is accepted once none of our
tasks is left there; a cancelled schedule clears it; a restart of the offers service keeps it.
The operator schedules maintenance through the master's operator API (``POST /api/v1``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from typing import Any

import pytest
from google.protobuf import json_format
from offers_helpers import RUNNING, in_state, launch, wait_task, web_spec
from test_offers_volumes import put_member, volume, volume_spec

from mesos_stateful.api.mesos.v1.master import master_pb2
from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.localcluster.agent import Agent
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.offers import OffersService

pytestmark = pytest.mark.slow

Json = dict[str, Any]
HOUR_NS = 3600 * 10**9
KILLED = types_pb2.TASK_STATE_KILLED


def has_maintenance(task: types_pb2.Task) -> bool:
    return task.HasField("maintenance")


def operator_call(cluster: RunningCluster, call: Json) -> Json:
    """``POST /api/v1`` (JSON); the response parsed strictly as ``mesos.v1.master.Response``
    when there is one ({} for the 200 OK without a body of the updates)."""
    request = urllib.request.Request(
        f"{cluster.master_url}/api/v1",
        data=json.dumps(call).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    if not body:
        return {}
    answer: Json = json.loads(body)
    json_format.ParseDict(answer, master_pb2.Response(), ignore_unknown_fields=False)
    return answer


def machine(agent: Agent) -> Json:
    return {"hostname": agent.hostname, "ip": agent.ip}


async def schedule(cluster: RunningCluster, agents: list[Agent], start_ns: int) -> None:
    """UPDATE_MAINTENANCE_SCHEDULE: one window of an hour from ``start_ns`` for the agents'
    machines (none: an empty schedule, which cancels every maintenance)."""
    windows: list[Json] = []
    if agents:
        windows.append(
            {
                "machine_ids": [machine(a) for a in agents],
                "unavailability": {"start": {"nanoseconds": start_ns}, "duration": {"nanoseconds": HOUR_NS}},
            }
        )
    call = {
        "type": "UPDATE_MAINTENANCE_SCHEDULE",
        "update_maintenance_schedule": {"schedule": {"windows": windows}},
    }
    await asyncio.to_thread(operator_call, cluster, call)


async def maintenance_status(cluster: RunningCluster) -> Json:
    """GET_MAINTENANCE_STATUS: ``mesos.v1.maintenance.ClusterStatus``."""
    answer = await asyncio.to_thread(operator_call, cluster, {"type": "GET_MAINTENANCE_STATUS"})
    status: Json = answer["get_maintenance_status"]["status"]
    return status


async def answers(cluster: RunningCluster, agent: Agent, framework_id: str) -> list[str]:
    """Our framework's answers (ACCEPT / DECLINE) to the inverse offers of the agent's machine."""
    for draining in (await maintenance_status(cluster)).get("draining_machines", []):
        if draining["id"] == machine(agent):
            return [
                s["status"]
                for s in draining.get("statuses", [])
                if s["framework_id"]["value"] == framework_id
            ]
    return []


async def wait_answer(
    cluster: RunningCluster, agent: Agent, framework_id: str, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while "ACCEPT" not in await answers(cluster, agent, framework_id):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"inverse offer not accepted in {timeout}s: {await maintenance_status(cluster)}"
            )
        await asyncio.sleep(0.1)


def agent_of(cluster: RunningCluster, agent_id: str) -> Agent:
    return next(a for a in cluster.agents if a.id == agent_id)


async def test_maintenance_reaches_the_tasks_keeps_launches_off_and_is_accepted_once_they_are_gone(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    framework_id = (await offers_service.wait_subscribed()).framework_id
    await launch(offers_service, web_spec("web", 0))
    running = await wait_task(state_client, "web-0.1", in_state(RUNNING))
    agent = agent_of(local_cluster, running.agent_id)
    start_ns = (int(time.time()) + 3600) * 10**9
    await schedule(local_cluster, [agent], start_ns)

    task = await wait_task(state_client, "web-0.1", has_maintenance, timeout=15)
    maintenance = task.maintenance
    assert maintenance.hostname == agent.hostname
    assert maintenance.start.ToNanoseconds() == start_ns
    assert maintenance.duration.ToNanoseconds() == HOUR_NS
    assert maintenance.inverse_offer_id and maintenance.announced_at.seconds > 0
    assert task.state == RUNNING

    # A new instance, one member per agent: two agents stay up, the draining one takes none.
    for ordinal in range(3):
        await launch(offers_service, web_spec("other", ordinal))
    # The two that fit are placed as offers come; the third stays queued, saying why.
    cluster = await offers_service.wait_cluster(
        lambda c: len(c.pending) == 1 and "scheduled for maintenance" in c.pending[0].reason,
        timeout=30,
    )
    (pending,) = cluster.pending
    assert f"agent {agent.hostname} is scheduled for maintenance" in pending.reason
    assert offers_service.stub is not None  # started
    placed = [t for t in (await offers_service.stub.ListTasks(api.ListTasksRequest(instance="other"))).tasks]
    others = [
        await wait_task(state_client, t.task_id, in_state(RUNNING))
        for t in placed
        if t.task_id != pending.task_id
    ]
    assert len(others) == 2 and all(t.agent_id != agent.id for t in others)
    assert not any(t.HasField("maintenance") for t in others)

    # The member still runs there: the inverse offer stays unanswered (never accepted).
    assert await answers(local_cluster, agent, framework_id) == []

    assert offers_service.stub is not None
    await offers_service.stub.Kill(api.KillRequest(task_id="web-0.1"))
    killed = await wait_task(state_client, "web-0.1", in_state(KILLED))
    assert killed.maintenance == maintenance  # kept: lifecycle places the member elsewhere
    await wait_answer(local_cluster, agent, framework_id)
    assert await answers(local_cluster, agent, framework_id) == ["ACCEPT"]
    # Still no placement there: the queued member waits, and once the draining agent's free
    # resources are offered (offers come agent by agent) it says that agent is in maintenance.
    await offers_service.wait_cluster(
        lambda c: [p.task_id for p in c.pending] == [pending.task_id]
        and "scheduled for maintenance" in c.pending[0].reason,
        timeout=30,
    )


async def test_maintenance_survives_schedule_updates_and_a_restart_and_a_cancel_clears_it(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    await offers_service.wait_subscribed()
    await launch(offers_service, web_spec("web", 0))
    running = await wait_task(state_client, "web-0.1", in_state(RUNNING))
    agent = agent_of(local_cluster, running.agent_id)
    other = next(a for a in local_cluster.agents if a.id != agent.id)

    # Every version of the record (a brief clear would be missed by polling).
    versions: list[types_pb2.Task] = []
    _, revision = await state_client.list(spb.KIND_TASK)

    async def collect() -> None:
        async for event in state_client.watch([spb.KIND_TASK], "", start_revision=revision + 1):
            if event.record.key.name == "web-0.1" and event.type != spb.EVENT_TYPE_DELETE:
                versions.append(event.record.task)

    def with_id_other_than(inverse_offer_id: str) -> Any:
        return lambda t: has_maintenance(t) and t.maintenance.inverse_offer_id != inverse_offer_id

    watcher = asyncio.create_task(collect())
    try:
        start_ns = (int(time.time()) + 7200) * 10**9
        await schedule(local_cluster, [agent], start_ns)
        first = (await wait_task(state_client, "web-0.1", has_maintenance, timeout=15)).maintenance
        since = len(versions) - 1

        # Another machine added: Mesos rescinds and re-sends the inverse offers of every machine
        # in the schedule (Master::updateUnavailability). The maintenance stays, with the new id.
        await schedule(local_cluster, [agent, other], start_ns)
        task = await wait_task(
            state_client, "web-0.1", with_id_other_than(first.inverse_offer_id), timeout=15
        )
        assert task.maintenance.announced_at == first.announced_at and task.maintenance.start == first.start
        await asyncio.sleep(2.0)  # longer than the rescind grace (1 s in tests): it never went away
        assert all(v.HasField("maintenance") for v in versions[since:]), versions[since:]

        # Cancelled while the member runs there: the rescind is not followed by a new inverse offer.
        await schedule(local_cluster, [], 0)
        cleared = await wait_task(state_client, "web-0.1", lambda t: not has_maintenance(t), timeout=15)
        assert cleared.state == RUNNING

        # Scheduled again, then the offers service restarts (framework failover): Mesos sends new
        # inverse offers; the maintenance stays on the record throughout.
        await schedule(local_cluster, [agent], start_ns)
        again = (await wait_task(state_client, "web-0.1", has_maintenance, timeout=15)).maintenance
        since = len(versions) - 1
        await offers_service.restart()
        framework_id = (await offers_service.wait_subscribed()).framework_id
        task = await wait_task(
            state_client, "web-0.1", with_id_other_than(again.inverse_offer_id), timeout=20
        )
        assert task.maintenance.announced_at == again.announced_at
        assert task.maintenance.hostname == agent.hostname and task.state == RUNNING
        assert all(v.HasField("maintenance") for v in versions[since:]), versions[since:]
        assert await answers(local_cluster, agent, framework_id) == []

        # The member leaves: the inverse offer of the new subscription is accepted.
        assert offers_service.stub is not None
        await offers_service.stub.Kill(api.KillRequest(task_id="web-0.1"))
        killed = await wait_task(state_client, "web-0.1", in_state(KILLED))
        assert killed.maintenance == task.maintenance
        await wait_answer(local_cluster, agent, framework_id)

        # Cancelled after we left: no inverse offer is outstanding, so nothing is rescinded; the
        # agent's next offer (revived by the periodic check) comes without unavailability.
        await schedule(local_cluster, [], 0)
        ended = await wait_task(state_client, "web-0.1", lambda t: not has_maintenance(t), timeout=20)
        assert ended.state == KILLED
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def test_a_machine_going_down_leaves_the_maintenance_on_its_lost_tasks(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    """START_MAINTENANCE removes the agent (``Master::_removeSlave``): its inverse offer is
    rescinded, its tasks are LOST. Not a cancellation: their records keep the maintenance."""
    await offers_service.wait_subscribed()
    await launch(offers_service, web_spec("web", 0))
    running = await wait_task(state_client, "web-0.1", in_state(RUNNING))
    agent = agent_of(local_cluster, running.agent_id)
    await schedule(local_cluster, [agent], int(time.time()) * 10**9)
    maintenance = (await wait_task(state_client, "web-0.1", has_maintenance, timeout=15)).maintenance

    call = {"type": "START_MAINTENANCE", "start_maintenance": {"machines": [machine(agent)]}}
    await asyncio.to_thread(operator_call, local_cluster, call)
    lost = await wait_task(state_client, "web-0.1", in_state(types_pb2.TASK_STATE_LOST), timeout=20)
    assert lost.maintenance == maintenance
    assert machine(agent) in (await maintenance_status(local_cluster))["down_machines"]
    await asyncio.sleep(2.0)  # longer than the rescind grace (1 s in tests)
    record = await state_client.get(spb.KIND_TASK, "web-0.1")
    assert record.task.maintenance == maintenance


async def test_a_restart_in_place_on_a_draining_agent_gets_the_maintenance_and_holds_the_accept(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    """A launch pinned to its volume may still go to a draining agent (lifecycle moves it): it is
    marked at launch, and while it runs there nothing is accepted. (That a launch queued for the
    agent holds the accept too is a unit test: here the volume is offered again at once.)"""
    framework_id = (await offers_service.wait_subscribed()).framework_id
    await put_member(state_client, "vol-0", volume("vol-0.v1"))
    await launch(offers_service, volume_spec("vol-0", 1, volume("vol-0.v1")))
    first = await wait_task(state_client, "vol-0.1", in_state(RUNNING))
    agent = agent_of(local_cluster, first.agent_id)
    pinned = volume("vol-0.v1", agent.id, agent.hostname)
    await put_member(state_client, "vol-0", pinned)
    await schedule(local_cluster, [agent], (int(time.time()) + 3600) * 10**9)
    maintenance = (await wait_task(state_client, "vol-0.1", has_maintenance, timeout=15)).maintenance

    # The restart in place is queued while its volume is still in use, then the task ends.
    await launch(offers_service, volume_spec("vol-0", 2, pinned))
    assert offers_service.stub is not None
    await offers_service.stub.Kill(api.KillRequest(task_id="vol-0.1"))
    await wait_task(state_client, "vol-0.1", in_state(KILLED))
    second = await wait_task(state_client, "vol-0.2", in_state(RUNNING))
    assert second.agent_id == agent.id and second.maintenance == maintenance
    assert await answers(local_cluster, agent, framework_id) == []

    await offers_service.stub.Kill(api.KillRequest(task_id="vol-0.2"))
    await wait_task(state_client, "vol-0.2", in_state(KILLED))
    await wait_answer(local_cluster, agent, framework_id)
