"""etcd peers on persistent volumes: a peer relaunched in place restarts as the same etcd member
(not removed and re-added); every peer relaunched at once (a restart of the whole suite) forms the
same cluster again with its data; a removed member relaunched on its old volume joins anew."""

from __future__ import annotations

import asyncio
import time

import grpc
from etcd_helpers import NAME, Cluster, build
from test_etcd_cluster import cmdline, read_write_everywhere

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import MemberRunner, WorkloadServer


async def ids_by_member(cluster: Cluster, ordinal: int) -> dict[str, int]:
    """etcd member id by the suite's member id (the etcd name without its incarnation)."""
    return {m.name.rpartition(".")[0]: m.id for m in await cluster.member_list(ordinal) if m.started}


async def test_peer_relaunched_in_place_keeps_its_member_id(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner, peers=3)
    await read_write_everywhere(cluster, "k", "v1")
    before = await ids_by_member(cluster, 0)
    assert (cluster.volume(1) / "member" / "wal").is_dir()  # etcd's data is in the volume

    await cluster.members[1].kill()  # kill -9
    cluster.states[1] = types_pb2.MEMBER_STATE_FAILED
    member = await cluster.launch(1)  # next incarnation, same volume and ports
    assert member.sandbox.name == f"{NAME}-1.2"
    # A plain restart: no --initial-cluster, no member add.
    assert "--initial-cluster=" not in cmdline(cluster, 1)
    assert "restarting" in member.log_tail(200)
    after = await ids_by_member(cluster, 0)
    assert after == before and len(await cluster.member_list(0)) == 3
    names = {m.name for m in await cluster.member_list(0)}
    assert f"{NAME}-1.2" in names  # it published its new name
    status = (await workload.stub.PeerRunning(pb.PeerRunningRequest(context=cluster.ctx(1)))).status
    assert int(status["etcd_member_id"], 16) == before[f"{NAME}-1"]
    async with cluster.client(1) as c:
        assert await c.get("k") == "v1"
    await read_write_everywhere(cluster, "k", "v2")


async def test_every_peer_relaunched_together(workload: WorkloadServer, member_runner: MemberRunner) -> None:
    cluster = await build(workload, member_runner, peers=3)
    await read_write_everywhere(cluster, "k", "v1")
    before = await ids_by_member(cluster, 0)
    for ordinal in range(3):
        await cluster.members[ordinal].kill()
        cluster.states[ordinal] = types_pb2.MEMBER_STATE_LOST
    # Relaunched together, none RUNNING at Config time: each restarts on its data (it does not
    # start a new cluster), and each is ready once a quorum of them runs.
    await cluster.start_all([0, 1, 2])
    for ordinal in range(3):
        assert "--initial-cluster=" not in cmdline(cluster, ordinal)
    assert await ids_by_member(cluster, 2) == before
    async with cluster.client(2) as c:
        assert await c.get("k") == "v1"
    await read_write_everywhere(cluster, "k", "v2")


async def test_removed_member_on_its_old_volume_joins_anew(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner, peers=3)
    old_id = (await ids_by_member(cluster, 0))[f"{NAME}-2"]
    await cluster.members[2].kill()
    cluster.states[2] = types_pb2.MEMBER_STATE_LOST
    # etcd refuses a reconfiguration while it counts a member as not recently active ("unhealthy
    # cluster", --strict-reconfig-check): the workload answers UNAVAILABLE and lifecycle retries
    # it, as here (attempt numbers as lifecycle sends them).
    deadline = time.monotonic() + 30.0
    attempt = 1
    while True:
        try:
            await workload.stub.RemoveMember(pb.RemoveMemberRequest(context=cluster.ctx(2, attempt)))
            break
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            attempt += 1
            await asyncio.sleep(0.5)  # lifecycle's first retry delay
    member = await cluster.launch(2)  # same volume: its data says it is a member that was removed
    assert "--initial-cluster-state=existing" in cmdline(cluster, 2)
    assert list(cluster.volume(2).glob("member.removed-*"))
    new_id = (await ids_by_member(cluster, 0))[f"{NAME}-2"]
    assert new_id != old_id and member.running
    assert len(await cluster.member_list(0)) == 3
    await read_write_everywhere(cluster, "k", "v")
