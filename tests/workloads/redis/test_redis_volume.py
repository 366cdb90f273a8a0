"""Redis members on persistent volumes: data survives a crash and a relaunch in place; a cold start
(every member relaunched as a SLAVE with no master) and MasterLost with candidate_ids."""

from __future__ import annotations

import os
import signal
from typing import Literal

import grpc
import pytest
from redis.exceptions import ReadOnlyError
from redis_helpers import MASTER, NAME, PASSWORD, SLAVE, Cluster, build
from test_redis_replication import in_sync, lag, offset

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.common import errors
from mesos_stateful.testing.workloads import MemberRunner, serve_workload, wait_for
from mesos_stateful.workloads.redis.config import VOLUME_MARKER
from mesos_stateful.workloads.redis.replication import Position, choose_position
from mesos_stateful.workloads.redis.servicer import RedisWorkload
from mesos_stateful.workloads.redis.settings import RedisSettings

KEYS = {f"key-{i}": f"value-{i}" for i in range(20)}


async def write_acknowledged(cluster: Cluster, ordinal: int, keys: dict[str, str], replicas: int) -> None:
    async with cluster.client(ordinal) as c:
        for k, v in keys.items():
            await c.set(k, v)
        assert await c.execute_command("WAIT", replicas, 10000) == replicas


async def aof_written(cluster: Cluster, ordinal: int) -> bool:
    """Whether the member has written (write(2)) its whole AOF buffer. With appendfsync everysec
    Redis postpones that write while a background fsync runs (up to 2 s) and still replies, so a
    kill -9 right after a reply can lose it (measured here); tests kill once it is written."""
    async with cluster.client(ordinal) as c:
        info = await c.info("persistence")
    return int(info["aof_buffer_length"]) == 0 and int(info["aof_rewrite_in_progress"]) == 0


async def all_aof_written(cluster: Cluster) -> None:
    for ordinal in cluster.members:
        await wait_for(lambda o=ordinal: aof_written(cluster, o), 30, what=f"AOF of {ordinal} written")  # type: ignore[misc]


async def has_keys(cluster: Cluster, ordinal: int, keys: dict[str, str]) -> bool:
    async with cluster.client(ordinal) as c:
        return all([await c.get(k) == v for k, v in keys.items()])


async def test_data_lives_in_the_volume_and_survives_kill_9(cluster: Cluster) -> None:
    await write_acknowledged(cluster, 0, KEYS, 2)
    await all_aof_written(cluster)
    master = cluster.members[0]
    # The data is in the volume, the per-task files in the sandbox.
    volume = cluster.volume(0)
    assert (volume / "appendonlydir").is_dir() and (volume / VOLUME_MARKER).exists()
    assert not (master.sandbox / "appendonlydir").exists() or (master.sandbox / "data").is_symlink()
    await master.kill()  # SIGKILL: no shutdown save, only the AOF
    await master.start()  # the same task restarted, same directory
    await master.wait_ready()
    assert await has_keys(cluster, 0, KEYS)


@pytest.mark.parametrize("probe", ["python", "redis-cli"])
async def test_cold_start_relaunches_on_volumes_and_promotes(
    settings: RedisSettings, member_runner: MemberRunner, probe: Literal["python", "redis-cli"]
) -> None:
    async with serve_workload(RedisWorkload(settings.model_copy(update={"probe": probe}))) as workload:
        cluster = await build(workload, member_runner, PASSWORD)
        await write_acknowledged(cluster, 0, KEYS, 2)
        await all_aof_written(cluster)
        for m in cluster.members.values():
            await m.kill()
        # Every member relaunched in place (new task, new sandbox, same volume and ports) as a
        # SLAVE, with no master in the instance: each is ready without a master.
        for ordinal in range(3):
            cluster.roles[ordinal] = SLAVE
            cluster.states[ordinal] = types_pb2.MEMBER_STATE_STARTING
        for ordinal in range(3):
            member = cluster.prepare(ordinal, await cluster.config_for(ordinal, SLAVE))
            assert member.sandbox.name == f"{NAME}-{ordinal}.2"
            await member.start()
        for ordinal in range(3):
            await cluster.members[ordinal].wait_ready()
            cluster.states[ordinal] = types_pb2.MEMBER_STATE_RUNNING
            info = await cluster.info(ordinal)
            assert info["role"] == "slave" and info["master_link_status"] == "down"
            assert await has_keys(cluster, ordinal, KEYS)  # loaded from its volume
            async with cluster.client(ordinal) as c:
                with pytest.raises(ReadOnlyError):
                    await c.set("split", "brain")

        # MasterLost with the candidates: all three, the lost master (cache-0) among them. Their
        # AOFs do not keep the replication id, so the lost master, which acknowledged every write,
        # is chosen.
        lost = pb.MasterLostRequest(context=cluster.ctx(0), candidate_ids=[f"{NAME}-{o}" for o in range(3)])
        answer = await workload.stub.MasterLost(lost)
        assert answer.promote_member_id == f"{NAME}-0", answer.reason
        assert all(f"{NAME}-{o}=" in answer.reason for o in range(3))

        cluster.roles[0] = MASTER
        assert (await workload.stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(0)))).status[
            "role"
        ] == "master"
        assert (await workload.stub.MasterLost(lost)).promote_member_id == f"{NAME}-0"  # a retry
        for ordinal in (1, 2):
            await workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(ordinal)))
        for ordinal in (1, 2):
            await wait_for(lambda o=ordinal: in_sync(cluster, o, 0), 30, what=f"{ordinal} following 0")  # type: ignore[misc]
        await write_acknowledged(cluster, 0, {"after": "restart"}, 2)
        for ordinal in (1, 2):
            assert await has_keys(cluster, ordinal, {**KEYS, "after": "restart"})


async def test_master_lost_with_candidates_picks_the_most_advanced(cluster: Cluster) -> None:
    stub = cluster.workload.stub
    await write_acknowledged(cluster, 0, {"a": "1"}, 2)
    await lag(cluster, 1)  # 1 stops here
    await wait_for(lambda: in_sync(cluster, 2, 0), 30, what="2 in sync")
    await write_acknowledged(cluster, 0, {"b": "2"}, 1)  # 2 gets this
    await lag(cluster, 2)  # 2 stops here
    async with cluster.client(0) as c:
        # With both replicas cut off the master fences itself (min-replicas-to-write 1); turned
        # off here to get a write that only 0 holds.
        await c.config_set("min-replicas-to-write", 0)
        await c.set("c", "3")  # only on 0
        # The old master, now shown as a SLAVE that follows nobody (as after a cold start).
        await c.execute_command("REPLICAOF", "127.0.0.1", "0")
    cluster.roles[0] = SLAVE
    assert await offset(cluster, 0) > await offset(cluster, 2) > await offset(cluster, 1)

    everyone = pb.MasterLostRequest(context=cluster.ctx(0), candidate_ids=[f"{NAME}-{o}" for o in range(3)])
    answer = await stub.MasterLost(everyone)
    assert answer.promote_member_id == f"{NAME}-0", answer.reason  # the context member itself
    assert "holds every other candidate's data" in answer.reason
    without = pb.MasterLostRequest(context=cluster.ctx(0), candidate_ids=[f"{NAME}-1", f"{NAME}-2"])
    assert (await stub.MasterLost(without)).promote_member_id == f"{NAME}-2"

    # A candidate that does not answer is waited for (UNAVAILABLE), never skipped.
    stopped = cluster.members[2]
    assert stopped.process is not None
    os.killpg(stopped.process.pid, signal.SIGSTOP)
    try:
        for request in (everyone, without):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.MasterLost(request)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"{NAME}-2" in (caught.value.details() or "")
    finally:
        os.killpg(stopped.process.pid, signal.SIGCONT)
    assert (await stub.MasterLost(everyone)).promote_member_id == f"{NAME}-0"


def test_choose_position_orders_histories() -> None:
    a, b = "a" * 40, "b" * 40
    behind = Position("m-1", 1, "slave", a, 100)
    ahead = Position("m-2", 2, "slave", a, 150)
    assert choose_position([behind, ahead], "m-0")[0] is ahead
    # m-3 was promoted at offset 120 of history a, then took writes under history b.
    promoted = Position("m-3", 3, "slave", b, 40, replid2=a, second_offset=121)
    assert promoted.contains(behind) and not promoted.contains(ahead)
    assert choose_position([behind, promoted], "m-0")[0] is promoted
    # Neither contains the other (ahead went past the promotion point): nobody is safe.
    with pytest.raises(errors.FailedPrecondition):
        choose_position([ahead, promoted], "m-0")
    # Unrelated histories (restarted from disk): the lost master if it is a candidate.
    restarted = [Position(f"m-{o}", o, "slave", str(o) * 40, 0) for o in range(3)]
    assert choose_position(restarted, "m-1")[0].member_id == "m-1"
    with pytest.raises(errors.FailedPrecondition):
        choose_position(restarted[1:], "m-0")
    # ...unless a candidate is known to be ahead of it.
    lost = Position("m-0", 0, "slave", a, 90)
    with pytest.raises(errors.FailedPrecondition):
        choose_position([lost, ahead, restarted[1]], "m-0")
    # An earlier attempt already promoted one: it again.
    master = Position("m-2", 2, "master", b, 0)
    assert choose_position([behind, master], "m-0")[0] is master
