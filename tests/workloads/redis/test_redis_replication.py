"""Real redis-server members launched from Config answers: replication, readiness, failover."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

import grpc
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis_helpers import MASTER, NAME, PASSWORD, SLAVE, Cluster

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import MemberRunner, serve_workload, wait_for
from mesos_stateful.workloads.redis.config import AUTH_FILE, PROBE_SCRIPT
from mesos_stateful.workloads.redis.servicer import RedisWorkload
from mesos_stateful.workloads.redis.settings import RedisSettings


async def in_sync(cluster: Cluster, ordinal: int, master: int) -> bool:
    m = cluster.members[master]
    info = await cluster.info(ordinal)
    return (
        info.get("role") == "slave"
        and info.get("master_port") == m.port("redis")
        and info.get("master_link_status") == "up"
        and info.get("master_sync_in_progress") == 0
    )


async def replicated(cluster: Cluster, ordinal: int, key: str, value: str) -> bool:
    async with cluster.client(ordinal) as c:
        return bool(await c.get(key) == value)


async def test_master_and_replicas_replicate(cluster: Cluster) -> None:
    info = await cluster.info(0)
    assert info["role"] == "master"
    await wait_for(lambda: _connected(cluster, 2), 30, what="2 replicas connected")
    async with cluster.client(0) as c:
        await c.set("k", "v")
    for ordinal in (1, 2):
        assert await in_sync(cluster, ordinal, 0)
        await wait_for(lambda o=ordinal: replicated(cluster, o, "k", "v"), 30, what=f"k on {ordinal}")  # type: ignore[misc]


async def _connected(cluster: Cluster, count: int) -> bool:
    return int((await cluster.info(0))["connected_slaves"]) == count


async def test_password_not_on_argv_and_file_is_private(cluster: Cluster) -> None:
    for member in cluster.members.values():
        assert member.process is not None
        cmdline = Path(f"/proc/{member.process.pid}/cmdline").read_bytes().decode()  # noqa: ASYNC240
        assert "w0rd" not in cmdline
        mode = stat.S_IMODE(os.stat(member.sandbox / AUTH_FILE).st_mode)
        assert mode == 0o600
    # And the server does require it.

    m = cluster.members[0]
    bare = aioredis.Redis(host=m.host, port=m.port("redis"), retry=Retry(NoBackoff(), 0))
    with pytest.raises((AuthenticationError, ResponseError)):
        await bare.set("x", "y")
    await bare.aclose()


@pytest.mark.parametrize("probe", ["python", "redis-cli"])
async def test_readiness_false_before_sync_true_after(
    settings: RedisSettings, member_runner: MemberRunner, probe: Literal["python", "redis-cli"]
) -> None:
    settings = settings.model_copy(update={"probe": probe})
    async with serve_workload(RedisWorkload(settings)) as workload:
        cluster = Cluster(workload, member_runner, PASSWORD)
        cluster.roles[1] = SLAVE
        master = await cluster.launch(0, MASTER)
        assert (probe == "redis-cli") == any(f.path == PROBE_SCRIPT for f in master.launch.files)
        health = master.launch.health
        assert await master.check(health)
        await master.stop()
        assert not await master.ready()
        assert not await master.check(health)
        # The replica starts while its master is down: it answers PING but is not ready (no link).
        replica = await cluster.launch(1, SLAVE, ready=False)
        await wait_for(lambda: _answers(cluster, 1), 30, what="replica answering")
        assert await replica.check(replica.launch.health)
        assert not await replica.ready()
        await master.start()
        await master.wait_ready()
        await replica.wait_ready()
        assert await in_sync(cluster, 1, 0)


async def _answers(cluster: Cluster, ordinal: int) -> bool:
    try:
        async with cluster.client(ordinal) as c:
            return bool(await c.ping())
    except Exception:
        return False


async def test_running_callbacks_report_status(cluster: Cluster) -> None:
    status = (
        await cluster.workload.stub.MasterRunning(pb.MasterRunningRequest(context=cluster.ctx(0)))
    ).status
    assert status["role"] == "master"
    assert int(status["master_repl_offset"]) >= 0
    status = (await cluster.workload.stub.SlaveRunning(pb.SlaveRunningRequest(context=cluster.ctx(1)))).status
    assert status["role"] == "slave"
    assert status["master_link_status"] == "up"
    assert "slave_repl_offset" in status


async def test_unavailable_when_member_down(cluster: Cluster) -> None:
    await cluster.members[1].kill()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.workload.stub.SlaveRunning(pb.SlaveRunningRequest(context=cluster.ctx(1)))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(1)))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # Master lost with every replica down: nothing to promote now, retry later.
    await cluster.members[2].kill()
    await cluster.members[0].kill()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.workload.stub.MasterLost(pb.MasterLostRequest(context=cluster.ctx(0)))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def lag(cluster: Cluster, ordinal: int) -> None:
    """Cut a replica off its master for good (wrong masterauth, link killed): it keeps its data
    and offset but misses every later write."""
    async with cluster.client(ordinal) as c:
        await c.config_set("masterauth", "wrong")
    async with cluster.client(0) as c:
        await c.execute_command("CLIENT", "KILL", "TYPE", "replica")
    await wait_for(lambda: _link_down(cluster, ordinal), 30, what=f"{ordinal} cut off")


async def _link_down(cluster: Cluster, ordinal: int) -> bool:
    return (await cluster.info(ordinal)).get("master_link_status") == "down"


async def offset(cluster: Cluster, ordinal: int) -> int:
    info = await cluster.info(ordinal)
    return int(info["slave_repl_offset"] if info["role"] == "slave" else info["master_repl_offset"])


async def test_failover_promotes_most_advanced_replica(cluster: Cluster) -> None:
    stub = cluster.workload.stub
    async with cluster.client(0) as c:
        await c.set("before", "1")
        assert await c.execute_command("WAIT", 2, 10000) == 2
    # Replica 1 falls behind; replica 2 (the higher ordinal, so not a tie-break win) gets more.
    await lag(cluster, 1)
    await wait_for(lambda: in_sync(cluster, 2, 0), 30, what="2 back in sync")
    async with cluster.client(0) as c:
        for i in range(50):
            await c.set(f"after-{i}", "x" * 100)
        assert await c.execute_command("WAIT", 1, 10000) >= 1
    await cluster.members[0].kill()  # SIGKILL
    cluster.states[0] = types_pb2.MEMBER_STATE_FAILED
    assert await offset(cluster, 2) > await offset(cluster, 1)

    lost = pb.MasterLostRequest(context=cluster.ctx(0))
    answer = await stub.MasterLost(lost)
    assert answer.promote_member_id == f"{NAME}-2"
    assert "offset" in answer.reason
    assert (await stub.MasterLost(lost)).promote_member_id == f"{NAME}-2"  # idempotent

    # Lifecycle records the new roles, then promotes and re-points.
    cluster.roles.update({0: SLAVE, 2: MASTER})
    cluster.states[0] = types_pb2.MEMBER_STATE_LOST
    promoted = await stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(2)))
    assert promoted.status["role"] == "master"
    again = await stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(2, attempt=2)))
    assert again.status["role"] == "master"
    # A retried MasterLost after the promotion still names the promoted member.
    cluster_roles_before = dict(cluster.roles)
    cluster.roles.update({0: MASTER, 2: SLAVE})
    assert (
        await stub.MasterLost(pb.MasterLostRequest(context=cluster.ctx(0)))
    ).promote_member_id == f"{NAME}-2"
    cluster.roles = cluster_roles_before

    async with cluster.client(1) as c:
        await c.config_set("masterauth", PASSWORD)  # undo the test's sabotage
    for attempt in (1, 2):
        status = (await stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(1, attempt)))).status
        assert status["role"] == "slave"
        assert status["master_port"] == str(cluster.members[2].port("redis"))
    await wait_for(lambda: in_sync(cluster, 1, 2), 30, what="1 following 2")

    # Everything acknowledged by WAIT before the crash survived, and reached the re-pointed replica.
    async with cluster.client(2) as c:
        assert await c.get("before") == "1"
        assert await c.get("after-49") == "x" * 100
        await c.set("new", "2")
        assert await c.execute_command("WAIT", 1, 10000) == 1
    async with cluster.client(1) as c:
        assert await c.get("after-49") == "x" * 100
        assert await c.get("new") == "2"


async def test_start_master_and_slave_idempotent_on_fresh_cluster(cluster: Cluster) -> None:
    stub = cluster.workload.stub
    for _ in range(2):
        assert (await stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(0)))).status[
            "role"
        ] == "master"
        for ordinal in (1, 2):
            status = (await stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(ordinal)))).status
            assert status["role"] == "slave"
    # Nothing was re-pointed: the links never dropped.
    for ordinal in (1, 2):
        assert await in_sync(cluster, ordinal, 0)
