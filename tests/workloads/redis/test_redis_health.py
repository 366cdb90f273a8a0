"""CheckMember on real redis-server members: the master probe, a healthy replica, a chained one
repaired by StartSlave, a lagging one, one turned master by hand, an unreachable one."""

from __future__ import annotations

import os
import signal

import grpc
import pytest
from redis_helpers import NAME, Cluster
from test_redis_replication import in_sync, lag

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import wait_for
from mesos_stateful.workloads.redis.health import replica_health

T = types_pb2
TIMEOUT = 2.0


async def check(cluster: Cluster, ordinal: int, timeout: float = TIMEOUT) -> types_pb2.MemberHealth:
    request = pb.CheckMemberRequest(context=cluster.ctx(ordinal), timeout_seconds=timeout)
    return (await cluster.workload.stub.CheckMember(request)).health


def conditions(health: types_pb2.MemberHealth) -> dict[str, tuple[bool, str]]:
    """ConditionType name (without prefix) -> (ok, reason)."""
    return {
        T.ConditionType.Name(c.type).removeprefix("CONDITION_TYPE_"): (c.ok, c.reason)
        for c in health.conditions
    }


def address(cluster: Cluster, ordinal: int) -> str:
    m = cluster.members[ordinal]
    return f"{m.host}:{m.port('redis')}"


async def all_ok(cluster: Cluster, ordinal: int) -> bool:
    health = await check(cluster, ordinal)
    return all(c.ok for c in health.conditions) and len(health.conditions) == 4


async def test_master_probe(cluster: Cluster) -> None:
    health = await check(cluster, 0)
    info = await cluster.info(0)
    assert health.observed_role == T.ROLE_MASTER
    assert health.position == f"{info['master_replid']}:{info['master_repl_offset']}"
    assert conditions(health) == {"REACHABLE": (True, "Answered"), "REPLICATING": (True, "Master")}
    assert health.repair == T.REPAIR_UNSPECIFIED and health.following == ""
    # timeout_seconds 0: the service's connect timeout.
    assert (await check(cluster, 0, timeout=0)).observed_role == T.ROLE_MASTER


async def test_healthy_replica(cluster: Cluster) -> None:
    async with cluster.client(0) as c:
        await c.set("k", "v")
        assert await c.execute_command("WAIT", 2, 10000) == 2
    await wait_for(lambda: all_ok(cluster, 1), 30, what="replica 1 all conditions ok")
    health = await check(cluster, 1)
    assert health.observed_role == T.ROLE_SLAVE
    assert health.following == address(cluster, 0)
    assert set(conditions(health)) == {"REACHABLE", "REPLICATING", "CAUGHT_UP", "CONSISTENT"}
    assert 0 <= health.lag <= 1024 * 1024 and health.lag_seconds >= 0
    replid = (await cluster.info(0))["master_replid"]
    assert health.position.startswith(f"{replid}:")
    assert health.repair == T.REPAIR_UNSPECIFIED


async def test_chained_replica_is_repointed_by_start_slave(cluster: Cluster) -> None:
    one = cluster.members[1]
    async with cluster.client(2) as c:
        await c.execute_command("REPLICAOF", one.host, one.port("redis"))
    health = await check(cluster, 2)
    assert health.following == address(cluster, 1)
    assert conditions(health)["REPLICATING"] == (False, "Chained")
    assert health.repair == T.REPAIR_REPOINT
    again = await check(cluster, 2)  # read-only: a second check sees the same
    assert (conditions(again), again.repair, again.following) == (
        conditions(health),
        health.repair,
        health.following,
    )

    await cluster.workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(2)))
    await wait_for(lambda: all_ok(cluster, 2), 30, what="replica 2 following the master again")
    assert (await check(cluster, 2)).following == address(cluster, 0)


async def test_lagging_replica(cluster: Cluster) -> None:
    await lag(cluster, 1)  # cut off for good: it keeps its offset
    await wait_for(lambda: in_sync(cluster, 2, 0), 30, what="2 back in sync")
    async with cluster.client(0) as c:
        await c.set("big", "x" * (1024 * 1024 + 1000))  # replica 2 acknowledges: the master writes
    health = await check(cluster, 1)
    found = conditions(health)
    assert found["REPLICATING"] == (False, "LinkDown")
    assert found["CAUGHT_UP"] == (False, "Lagging")
    assert found["CONSISTENT"] == (True, "Prefix")  # behind, on the same history
    assert health.lag > 1024 * 1024
    assert health.repair == T.REPAIR_UNSPECIFIED  # it is connecting; nothing to re-point


async def test_replica_turned_master_by_hand(cluster: Cluster) -> None:
    async with cluster.client(1) as c:
        await c.execute_command("REPLICAOF", "NO", "ONE")
    health = await check(cluster, 1)
    assert health.observed_role == T.ROLE_MASTER
    assert conditions(health)["REPLICATING"] == (False, "NotReplica")
    assert health.repair == T.REPAIR_REPOINT
    # Made a replica of nobody again: its history is its own now (a new replication id), which
    # Redis cannot continue from the master's by PSYNC.
    async with cluster.client(1) as c:
        await c.execute_command("REPLICAOF", "127.0.0.1", "0")
    health = await check(cluster, 1)
    found = conditions(health)
    assert found["REPLICATING"] == (False, "WrongMaster")
    assert found["CONSISTENT"] == (False, "Diverged")
    assert health.repair == T.REPAIR_REPOINT
    await cluster.workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(1)))
    await wait_for(lambda: all_ok(cluster, 1), 30, what="replica 1 resynced from the master")


async def test_unreachable_member_is_unavailable(cluster: Cluster) -> None:
    frozen = cluster.members[1]
    assert frozen.process is not None
    os.kill(frozen.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(cluster, 1, timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"{NAME}-1" in (caught.value.details() or "")
        # A replica whose master does not answer: judged without CAUGHT_UP and CONSISTENT.
        os.kill(frozen.process.pid, signal.SIGCONT)
        master = cluster.members[0]
        assert master.process is not None
        os.kill(master.process.pid, signal.SIGSTOP)
        try:
            health = await check(cluster, 2, timeout=0.5)
            assert set(conditions(health)) == {"REACHABLE", "REPLICATING"}
            assert health.lag == -1
        finally:
            os.kill(master.process.pid, signal.SIGCONT)
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)


def test_replica_health_without_a_master_or_while_syncing() -> None:
    replid = "a" * 40
    standby = {"role": "slave", "master_host": "127.0.0.1", "master_port": 0, "master_link_status": "down"}
    standby |= {"master_sync_in_progress": 0, "master_replid": replid, "master_repl_offset": 10}
    health = replica_health(standby, None, master=None, members={}, max_lag_bytes=100)
    assert conditions(health) == {"REACHABLE": (True, "Answered"), "REPLICATING": (False, "NoMaster")}
    assert health.repair == T.REPAIR_UNSPECIFIED and health.following == "127.0.0.1:0"
    assert health.position == f"{replid}:10"
    syncing = standby | {"master_host": "10.0.0.1", "master_port": 6379, "master_sync_in_progress": 1}
    master_info = {"role": "master", "master_replid": "b" * 40, "master_repl_offset": 500}
    health = replica_health(
        syncing,
        master_info,
        master=("m-0", "10.0.0.1:6379"),
        members={"10.0.0.1:6379": "m-0"},
        max_lag_bytes=100,
    )
    found = conditions(health)
    assert found["REPLICATING"] == (False, "SyncInProgress")
    assert found["CAUGHT_UP"] == (False, "SyncInProgress") and "CONSISTENT" not in found
    assert health.repair == T.REPAIR_UNSPECIFIED and health.lag == -1


def test_a_link_down_for_long_asks_to_be_repointed() -> None:
    replid = "a" * 40
    info = {"role": "slave", "master_host": "10.0.0.1", "master_port": 6379, "master_link_status": "down"}
    info |= {"master_sync_in_progress": 0, "master_replid": replid, "master_repl_offset": 10}
    where = {"master": ("m-0", "10.0.0.1:6379"), "members": {"10.0.0.1:6379": "m-0"}, "max_lag_bytes": 100}
    reconnecting = replica_health(info | {"master_link_down_since_seconds": 3}, None, **where)  # type: ignore[arg-type]
    assert conditions(reconnecting)["REPLICATING"] == (False, "LinkDown")
    assert reconnecting.repair == T.REPAIR_UNSPECIFIED
    stuck = replica_health(info | {"master_link_down_since_seconds": 11}, None, **where)  # type: ignore[arg-type]
    assert conditions(stuck)["REPLICATING"] == (False, "LinkDown")
    assert stuck.repair == T.REPAIR_REPOINT


async def test_start_slave_sets_the_credentials_of_a_replica_whose_link_stays_down(cluster: Cluster) -> None:
    async with cluster.client(2) as c:
        await c.config_set("masterauth", "wrong")
        await c.execute_command("CLIENT", "KILL", "TYPE", "master")

    async def link_down() -> bool:
        return conditions(await check(cluster, 2))["REPLICATING"] == (False, "LinkDown")

    await wait_for(link_down, 30, what="replica 2's link down (wrong masterauth)")
    await cluster.workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(2)))
    await wait_for(lambda: all_ok(cluster, 2), 30, what="replica 2 streaming from the master again")
