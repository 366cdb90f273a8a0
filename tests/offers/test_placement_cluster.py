"""The placement rule and the reason a launch waits, against the real local cluster and the real
offers service (pymesos): a member whose task is down still holds the agent of its volume (no
other member of its instance is placed there; its own pinned restart is), and a queued task's
record says why no offer fits."""

from __future__ import annotations

import asyncio
import time

import pytest
from offers_helpers import RUNNING, in_state, launch, wait_task, web_spec
from test_inverse_offers_cluster import agent_of, schedule
from test_offers_volumes import put_member, volume, volume_spec

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.offers import OffersService

pytestmark = pytest.mark.slow

KILLED = types_pb2.TASK_STATE_KILLED
QUEUED = types_pb2.TASK_STATE_QUEUED


async def test_a_down_member_keeps_its_agent_from_the_other_members_and_restarts_there(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    await offers_service.wait_subscribed()
    assert offers_service.stub is not None
    # cache-0 runs on its volume on agent A, then its task goes down (the volume stays on A,
    # as after a LOST while lifecycle restarts it in place).
    await put_member(state_client, "cache-0", volume("cache-0.v1"))
    await launch(offers_service, volume_spec("cache-0", 1, volume("cache-0.v1")))
    first = await wait_task(state_client, "cache-0.1", in_state(RUNNING))
    home = first.agent_id
    await put_member(state_client, "cache-0", volume("cache-0.v1", home, first.host))
    await offers_service.stub.Kill(api.KillRequest(task_id="cache-0.1"))
    await wait_task(state_client, "cache-0.1", in_state(KILLED))

    # Three more members, unpinned (fresh volumes), one per agent: only the two other agents
    # take one; the third waits instead of going next to cache-0's volume.
    for ordinal in (1, 2, 3):
        member = f"cache-{ordinal}"
        await put_member(state_client, member, volume(f"{member}.v1"))
        await launch(offers_service, volume_spec(member, 1, volume(f"{member}.v1")))
    waiting = await offers_service.wait_cluster(
        lambda c: (
            len(c.pending) == 1
            and sum(1 for t in c.agents for _ in t.task_ids) == 2
            and "already run 1 task(s) of cache" in c.pending[0].reason
        ),
        timeout=30,
    )
    (pending,) = waiting.pending
    placed = {
        task_id: agent.agent_id
        for agent in waiting.agents
        for task_id in agent.task_ids
        if task_id != pending.task_id
    }
    assert len(placed) == 2 and home not in placed.values() and len(set(placed.values())) == 2
    for task_id in placed:
        await wait_task(state_client, task_id, in_state(RUNNING))
    queued = await wait_task(
        state_client,
        pending.task_id,
        lambda t: t.message == "no offer fits: 3 agents hold another member of cache",
        timeout=20,
    )
    assert queued.state == QUEUED and not queued.agent_id

    # cache-0 restarts in place (pinned to its volume): its own place, allowed.
    await launch(offers_service, volume_spec("cache-0", 2, volume("cache-0.v1", home, first.host)))
    second = await wait_task(state_client, "cache-0.2", in_state(RUNNING))
    assert second.agent_id == home
    tasks = [t for t in offers_service_tasks(await state_client.list(spb.KIND_TASK)) if t.state == RUNNING]
    assert len({t.agent_id for t in tasks}) == len(tasks) == 3
    still = await state_client.find(spb.KIND_TASK, pending.task_id)
    assert still is not None and still.task.state == QUEUED


def offers_service_tasks(listed: tuple[list[spb.Record], int]) -> list[types_pb2.Task]:
    records, _ = listed
    return [r.task for r in records]


async def test_a_launch_that_cannot_be_placed_says_why_in_its_record_and_writes_it_once(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    await offers_service.wait_subscribed()
    up, *draining = local_cluster.agents
    await schedule(local_cluster, draining, (int(time.time()) + 3600) * 10**9)
    await launch(offers_service, web_spec("extra", 0))
    first = await wait_task(state_client, "extra-0.1", in_state(RUNNING))
    assert agent_of(local_cluster, first.agent_id) is up

    await launch(offers_service, web_spec("extra", 1))
    expected = "no offer fits: 2 agents scheduled for maintenance, 1 holds another member of extra"
    queued = await wait_task(state_client, "extra-1.1", lambda t: t.message == expected, timeout=20)
    assert queued.state == QUEUED
    assert offers_service.stub is not None
    cluster = await offers_service.stub.GetCluster(api.GetClusterRequest())
    assert [p.task_id for p in cluster.pending] == ["extra-1.1"]

    # Bounded writes: offers keep coming (refused for 1 s each) with the same answer; the record
    # is not written again.
    record = await state_client.find(spb.KIND_TASK, "extra-1.1")
    assert record is not None
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        again = await state_client.find(spb.KIND_TASK, "extra-1.1")
        assert again is not None and again.mod_revision == record.mod_revision, again
        await asyncio.sleep(0.2)
