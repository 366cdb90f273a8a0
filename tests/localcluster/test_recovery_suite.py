"""The whole suite (etcd, state, offers, lifecycle, gateway, the Redis workload) on a local cluster
that runs as a process of its own: ``kill -9`` of that process and a start on the same work dir
(master and agents restart, as a Mesos master failover plus agent recovery) leaves a 3-member Redis
alone: the same members, pids and task ids, RUNNING, no TASK_LOST, and a key acknowledged by
``WAIT`` before the restart still there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import pytest_asyncio
from lifecycle.e2e_helpers import connect, missing_keys, password, redis_pids, write_acknowledged

from localcluster.cluster_process import ClusterProcess
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.gateway import gateway  # noqa: F401
from mesos_stateful.testing.lifecycle import (
    LifecycleRunner,
    RedisService,
    Suite,
    delete_everything,
    master_of,
)
from mesos_stateful.testing.offers import OffersService
from mesos_stateful.testing.state import etcd, state_service  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


@pytest_asyncio.fixture
async def stack(state_service: Any, gateway: Any, tmp_path: Path) -> AsyncIterator[Suite]:  # noqa: F811
    cluster = ClusterProcess(
        tmp_path,
        agents=3,
        executor_reregistration_timeout=3,
        heartbeat_interval=2,
        agent_ping_timeout=0.5,
        max_agent_ping_timeouts=4,
    )
    cluster.start()
    await asyncio.to_thread(cluster.wait_agents)
    # What the e2e helpers read of a cluster: its work dir (to find the members' processes).
    cluster.cluster = SimpleNamespace(settings=SimpleNamespace(work_dir=str(tmp_path / "cluster")))  # type: ignore[attr-defined]
    client = StateClient(state_service.endpoint)
    await client.wait_ready()
    offers = OffersService(state_service.endpoint, cluster.address)
    await offers.start()
    redis = RedisService(state_service.endpoint)
    await redis.start()
    await redis.running.registration.wait_registered()
    lifecycle = LifecycleRunner(state_service.endpoint, offers.endpoint)
    await lifecycle.start()
    await offers.wait_subscribed()
    channel = grpc.aio.insecure_channel(gateway.endpoint)
    running = Suite(
        state=state_service,
        cluster=cluster,
        offers=offers,
        lifecycle=lifecycle,
        gateway=gateway,
        redis=redis,
        client=client,
        channel=channel,
    )
    try:
        yield running
    finally:
        try:
            if cluster.proc is not None and cluster.proc.poll() is None:
                await delete_everything(running)
        finally:
            await channel.close()
            await lifecycle.stop()
            await offers.stop()
            await redis.stop()
            await client.close()
            cluster.stop()


def _framework_running(cluster: ClusterProcess, task_ids: set[str]) -> bool:
    try:
        state = cluster.state()
    except OSError:
        return False
    for fw in state["frameworks"]:
        tasks = {t["id"]: t["state"] for t in fw["tasks"]}
        if fw["connected"] and all(tasks.get(t) == "TASK_RUNNING" for t in task_ids):
            return True
    return False


async def test_kill9_of_the_cluster_leaves_redis_members_untouched(stack: Suite) -> None:
    await stack.create("cache", 3)
    instance = await stack.wait_running("cache", 3)
    secret = await password(stack, "cache")
    master = master_of(instance)
    written = await write_acknowledged(master, secret, 200, replicas=2)
    pids = sorted(redis_pids(stack, instance.members))
    assert len(pids) == 3
    task_ids = {m.task_id for m in instance.members}
    cluster: ClusterProcess = stack.cluster
    agents = sorted(a["id"] for a in cluster.state()["slaves"])

    cluster.kill9()
    await asyncio.sleep(1.0)  # the cluster is away for a while; the members keep serving
    async with connect(master, secret) as r:
        assert await r.get("key-0") == "value-0"
    cluster.start()
    await asyncio.to_thread(cluster.wait_agents)
    assert sorted(a["id"] for a in cluster.state()["slaves"]) == agents

    # The offers service re-subscribes with its framework id (pymesos backs off up to 15 s) and
    # the master knows its tasks again, RUNNING.
    deadline = time.monotonic() + 90
    while not _framework_running(cluster, task_ids):
        assert time.monotonic() < deadline, f"tasks not RUNNING again: {cluster.state()['frameworks']}"
        await asyncio.sleep(0.5)
    # It reconciled after re-subscribing: let the answers land, then nothing may have moved.
    await asyncio.sleep(5.0)
    after = await stack.instance("cache")
    assert after is not None and after.phase == T.INSTANCE_PHASE_RUNNING
    assert {m.task_id for m in after.members} == task_ids
    assert master_of(after).task_id == master.task_id
    tasks = await stack.tasks("cache")
    assert {t: tasks[t].state for t in task_ids} == {t: T.TASK_STATE_RUNNING for t in task_ids}
    assert not [t for t in tasks.values() if t.state == T.TASK_STATE_LOST]
    assert sorted(redis_pids(stack, after.members)) == pids
    for member in after.members:
        assert await missing_keys(member, secret, written) == []
