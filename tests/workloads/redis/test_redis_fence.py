"""Fencing on real redis-server members: Fence with a reachable old master (DEMOTED) and an
unreachable one (SELF_FENCED: replicas detached), the self-fence itself (min-replicas-to-write),
the setting kept in step with the spec, and MasterLost's positions and maximum_lag_on_failover."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError
from redis_helpers import NAME, PASSWORD, Cluster

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import wait_for
from mesos_stateful.workloads.redis.replication import self_fence_seconds
from mesos_stateful.workloads.redis.settings import RedisSettings

T = types_pb2
ALL = [f"{NAME}-1", f"{NAME}-2"]


@contextmanager
def frozen(cluster: Cluster, *ordinals: int) -> Iterator[None]:
    """SIGSTOP the members' redis-server processes (by the pids this test started), SIGCONT after."""
    pids = []
    for ordinal in ordinals:
        process = cluster.members[ordinal].process
        assert process is not None and process.returncode is None
        pids.append(process.pid)
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def fence(cluster: Cluster, replica_ids: list[str]) -> pb.FenceResponse:
    request = pb.FenceRequest(context=cluster.ctx(0), replica_ids=replica_ids)
    return await cluster.workload.stub.Fence(request)


async def follows_nobody(cluster: Cluster, ordinal: int) -> bool:
    info = await cluster.info(ordinal)
    return info["role"] == "slave" and (info["master_host"], info["master_port"]) == ("127.0.0.1", 0)


async def write_refused(cluster: Cluster, ordinal: int, error: str) -> bool:
    async with cluster.client(ordinal) as c:
        try:
            await c.set("probe", "x")
        except ResponseError as refused:
            assert str(refused).startswith(error), refused
            return True
        return False


async def test_fence_demotes_a_reachable_master(cluster: Cluster) -> None:
    async with cluster.client(0) as c:
        await c.set("before", "1")
        assert await c.execute_command("WAIT", 2, 10000) == 2
    m = cluster.members[0]
    # A client in the middle of a transaction on the old master.
    inflight = aioredis.Redis(
        host=m.host,
        port=m.port("redis"),
        password=PASSWORD,
        single_connection_client=True,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        await inflight.execute_command("MULTI")
        await inflight.execute_command("SET", "in-multi", "1")  # QUEUED
        for attempt in (1, 2):  # idempotent: a retry answers the same
            answer = await fence(cluster, ALL)
            assert answer.method == T.FENCE_METHOD_DEMOTED, answer.detail
            assert answer.self_fence_seconds == 0
            assert await follows_nobody(cluster, 0), attempt
        with pytest.raises((ConnectionError, ResponseError)):
            await inflight.execute_command("EXEC")
    finally:
        await inflight.aclose()
    async with cluster.client(0) as c:
        with pytest.raises(ReadOnlyError):
            await c.set("after", "2")
        assert await c.get("before") == "1"  # its data is kept
        assert await c.get("in-multi") is None
    # The replicas were not touched.
    for ordinal in (1, 2):
        assert (await cluster.info(ordinal))["master_port"] == m.port("redis")


async def test_fence_detaches_replicas_of_an_unreachable_master(
    cluster: Cluster, settings: RedisSettings
) -> None:
    async with cluster.client(0) as c:
        await c.set("before", "1")
        assert await c.execute_command("WAIT", 2, 10000) == 2
    bound = self_fence_seconds(settings.min_replicas_max_lag)
    assert bound == settings.min_replicas_max_lag + 2
    with frozen(cluster, 0):
        for _ in (1, 2):  # idempotent
            answer = await fence(cluster, ALL)
            assert answer.method == T.FENCE_METHOD_SELF_FENCED, answer.detail
            assert answer.self_fence_seconds == bound
            for ordinal in (1, 2):
                assert await follows_nobody(cluster, ordinal)
                async with cluster.client(ordinal) as c:
                    assert await c.get("before") == "1"  # data and position kept
                    with pytest.raises(ReadOnlyError):
                        await c.set("x", "y")
        # A member that does not answer is never skipped, listed or not: it might still follow
        # the old master and acknowledge its writes.
        with frozen(cluster, 2):
            for listed in (ALL, [f"{NAME}-1"]):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await fence(cluster, listed)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert f"{NAME}-2" in (caught.value.details() or "")
        # A spec of one member: the master runs without the self-fence; it cannot be fenced so.
        cluster.replicas = 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fence(cluster, ALL)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        cluster.replicas = None
    # Resumed, the old master finds no replica: it refuses writes by its own rule.
    await wait_for(
        lambda: write_refused(cluster, 0, "NOREPLICAS"), bound + 1, what="the old master refusing writes"
    )


async def test_master_refuses_writes_once_replicas_stop_acknowledging(
    cluster: Cluster, settings: RedisSettings
) -> None:
    async with cluster.client(0) as c:
        config = await c.config_get("min-replicas-*")
        assert config == {
            "min-replicas-to-write": "1",
            "min-replicas-max-lag": str(settings.min_replicas_max_lag),
        }
        await c.set("k", "v")
    bound = self_fence_seconds(settings.min_replicas_max_lag)
    with frozen(cluster, 1, 2):
        await wait_for(
            lambda: write_refused(cluster, 0, "NOREPLICAS"), bound + 1, what="NOREPLICAS within the bound"
        )
    await wait_for(lambda: _writable(cluster, 0), 30, what="writes again once a replica acknowledges")


async def _writable(cluster: Cluster, ordinal: int) -> bool:
    return not await write_refused(cluster, ordinal, "NOREPLICAS")


async def _min_replicas(cluster: Cluster, ordinal: int) -> str:
    async with cluster.client(ordinal) as c:
        return str((await c.config_get("min-replicas-to-write"))["min-replicas-to-write"])


async def test_self_fence_follows_the_spec(cluster: Cluster) -> None:
    stub = cluster.workload.stub
    # Scale down to 2: the master keeps it (one replica left).
    cluster.replicas = 2
    await stub.RemoveMember(pb.RemoveMemberRequest(context=cluster.ctx(2)))
    assert await _min_replicas(cluster, 0) == "1"
    # Scale down to 1: turned off before the last replica goes.
    cluster.replicas = 1
    await stub.RemoveMember(pb.RemoveMemberRequest(context=cluster.ctx(1)))
    assert await _min_replicas(cluster, 0) == "0"
    launch = await cluster.config_for(0, T.ROLE_MASTER)
    assert launch.argv[list(launch.argv).index("--min-replicas-to-write") + 1] == "0"
    # Scale up again: on once a replica is running and in sync; StartMaster sets it too.
    cluster.replicas = 3
    await stub.SlaveRunning(pb.SlaveRunningRequest(context=cluster.ctx(1)))
    assert await _min_replicas(cluster, 0) == "1"
    async with cluster.client(0) as c:
        await c.config_set("min-replicas-to-write", 0)
    await stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(0)))
    assert await _min_replicas(cluster, 0) == "1"
    launch = await cluster.config_for(1, T.ROLE_SLAVE)  # a replica may be promoted: set too
    assert launch.argv[list(launch.argv).index("--min-replicas-to-write") + 1] == "1"


def test_min_replicas_max_lag_is_checked_at_start_up() -> None:
    # A healthy replica acknowledges once per second and Redis counts whole seconds: below 2 a
    # master would refuse writes with every replica in sync.
    with pytest.raises(ValidationError):
        RedisSettings(min_replicas_max_lag=1)
    assert RedisSettings(min_replicas_max_lag=5).self_fence_seconds == 7


async def test_master_lost_positions_and_maximum_lag(cluster: Cluster) -> None:
    stub = cluster.workload.stub
    async with cluster.client(0) as c:
        await c.set("k", "v" * 1000)
        assert await c.execute_command("WAIT", 2, 10000) == 2
    probe = await stub.CheckMember(pb.CheckMemberRequest(context=cluster.ctx(0), timeout_seconds=2))
    last_seen = probe.health.position
    replid, _, seen_offset = last_seen.rpartition(":")
    await cluster.members[0].kill()
    cluster.states[0] = T.MEMBER_STATE_FAILED

    def lost(position: str, maximum: int) -> pb.MasterLostRequest:
        return pb.MasterLostRequest(
            context=cluster.ctx(0),
            candidate_ids=ALL,
            master_position=position,
            maximum_lag_on_failover=maximum,
        )

    answer = await stub.MasterLost(lost(last_seen, 1))
    assert answer.promote_member_id in ALL
    assert set(answer.positions) == set(ALL)
    for ordinal in (1, 2):
        info = await cluster.info(ordinal)
        assert (
            answer.positions[f"{NAME}-{ordinal}"] == f"{info['master_replid']}:{info['master_repl_offset']}"
        )
        assert info["master_replid"] == replid and info["master_repl_offset"] >= int(seen_offset)

    # The lost master was last seen 5000 bytes further than any candidate got: with a limit of
    # 1000 bytes nobody is promoted now (the failover waits); with 10000 it goes on.
    best = max(int(p.rpartition(":")[2]) for p in answer.positions.values())
    ahead = f"{replid}:{best + 5000}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.MasterLost(lost(ahead, 1000))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    details = caught.value.details() or ""
    assert "5000 bytes behind" in details and "maximum_lag_on_failover 1000" in details
    assert all(m in details for m in ALL)  # the positions
    assert (await stub.MasterLost(lost(ahead, 10000))).promote_member_id == answer.promote_member_id
    assert (
        await stub.MasterLost(lost(ahead, 0))
    ).promote_member_id == answer.promote_member_id  # 0: no limit
    # Another history cannot be compared: not refused.
    assert (await stub.MasterLost(lost(f"{'f' * 40}:{best + 5000}", 1000))).promote_member_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.MasterLost(lost("garbage", 1000))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Without candidate_ids every running replica is a candidate and must answer.
    with frozen(cluster, 2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.MasterLost(pb.MasterLostRequest(context=cluster.ctx(0)))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"{NAME}-2" in (caught.value.details() or "")
    assert (await stub.MasterLost(pb.MasterLostRequest(context=cluster.ctx(0)))).positions.keys() == set(ALL)
