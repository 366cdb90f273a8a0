"""Real etcd peers launched from Config answers: forming, replacing a lost peer, scaling."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from etcd_helpers import NAME, Cluster, build

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.common import errors
from mesos_stateful.testing.workloads import LocalMember, MemberRunner, WorkloadServer, wait_for
from mesos_stateful.workloads.etcd import members


def cmdline(cluster: Cluster, ordinal: int) -> str:
    process = cluster.members[ordinal].process
    assert process is not None
    return Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().replace("\0", " ")


async def read_write_everywhere(cluster: Cluster, key: str, value: str) -> None:
    """A write through one live peer is read back (linearizably) through every live peer."""
    live = cluster.live()
    async with cluster.client(live[0]) as c:
        await c.put(key, value)
    for ordinal in live:
        async with cluster.client(ordinal) as c:
            assert await c.get(key) == value, f"{key} through {NAME}-{ordinal}"


async def started_members(cluster: Cluster, ordinal: int) -> int:
    return sum(1 for m in await cluster.member_list(ordinal) if m.started)


async def test_form_replace_and_scale(workload: WorkloadServer, member_runner: MemberRunner) -> None:
    stub = workload.stub
    cluster = await build(workload, member_runner, peers=3)
    # Formed one at a time: the first started a new cluster, the others joined it.
    assert "--initial-cluster-state=new" in cmdline(cluster, 0)
    for ordinal in (1, 2):
        assert "--initial-cluster-state=existing" in cmdline(cluster, ordinal)
    listed = await cluster.member_list(0)
    assert sorted(m.name for m in listed) == [f"{NAME}-0.1", f"{NAME}-1.1", f"{NAME}-2.1"]
    status = (await stub.PeerRunning(pb.PeerRunningRequest(context=cluster.ctx(2)))).status
    assert status["cluster_members"] == "3" and status["etcd_name"] == f"{NAME}-2.1"
    start = (await stub.Start(pb.StartRequest(context=cluster.ctx(2, attempt=2)))).status
    assert start["etcd_member_id"] == status["etcd_member_id"]
    await read_write_everywhere(cluster, "k", "v1")

    # kill -9 a peer: the other two keep quorum; reads and writes keep working.
    await cluster.members[1].kill()
    cluster.states[1] = types_pb2.MEMBER_STATE_LOST
    await read_write_everywhere(cluster, "k", "v2")
    assert (await stub.PeerLost(pb.PeerLostRequest(context=cluster.ctx(1)))).replace
    for attempt in (1, 2):  # idempotent
        await stub.RemoveMember(pb.RemoveMemberRequest(context=cluster.ctx(1, attempt)))
    assert sorted(m.name for m in await cluster.member_list(0)) == [f"{NAME}-0.1", f"{NAME}-2.1"]
    await read_write_everywhere(cluster, "k", "v3")
    # The replacement (same member id, next incarnation) joins the running cluster.
    await cluster.launch(1)
    assert "--initial-cluster-state=existing" in cmdline(cluster, 1)
    assert f"--name={NAME}-1.2" in cmdline(cluster, 1)
    async with cluster.client(1) as c:
        assert await c.get("k") == "v3"  # data kept
    assert await started_members(cluster, 1) == 3
    await read_write_everywhere(cluster, "k", "v4")

    # Scale 3 -> 5, one at a time, reads and writes working after each step.
    for ordinal in (3, 4):
        cluster.incarnations[ordinal] = 0
        await cluster.launch(ordinal)
        await read_write_everywhere(cluster, f"scale-{ordinal}", "up")
    assert await started_members(cluster, 0) == 5

    # Scale 5 -> 3: RemoveMember, then kill, highest ordinal first.
    for ordinal in (4, 3):
        await cluster.remove(ordinal)
        await read_write_everywhere(cluster, f"scale-{ordinal}", "down")
    listed = await cluster.member_list(0)
    assert sorted(m.name for m in listed) == [f"{NAME}-0.1", f"{NAME}-1.2", f"{NAME}-2.1"]
    async with cluster.client(2) as c:
        assert await c.get("k") == "v4"


async def test_join_is_idempotent_and_clears_failed_joins(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner, peers=3)
    # A retried bootstrap finds itself already added: it joins as that member, not a second one.
    cluster.incarnations[3] = 0
    member = member_runner.prepare(await cluster.config_for(3))
    added = await add_when_allowed(cluster, f"http://{member.host}:{member.port('peer')}")
    cluster.members[3] = member
    await member.start()
    await member.wait_ready(60)
    listed = await cluster.member_list(0)
    assert len(listed) == 4 and all(m.started for m in listed)
    assert [m.id for m in listed if m.name == f"{NAME}-3.1"] == [added.id]
    # A failed join left a member that was added but never started: it counts against the quorum
    # (and etcd refuses any further member while it is there). The next peer removes it first.
    stale = await add_when_allowed(cluster, "http://127.0.0.1:9")
    cluster.incarnations[4] = 0
    await cluster.launch(4)
    listed = await cluster.member_list(0)
    assert len(listed) == 5 and all(m.started for m in listed)
    assert stale.id not in {m.id for m in listed}
    await read_write_everywhere(cluster, "k", "v")


async def add_when_allowed(cluster: Cluster, peer_url: str) -> members.Member:
    """etcd refuses a new voting member until the started ones have been connected a few seconds."""
    added: list[members.Member] = []

    async def add() -> bool:
        async with cluster.client(0) as c:
            try:
                added.append((await c.add(peer_url))[0])
                return True
            except errors.Unavailable:
                return False

    await wait_for(add, 30, 0.5, what=f"adding {peer_url}")
    return added[0]


async def test_remove_member_edge_cases(workload: WorkloadServer, member_runner: MemberRunner) -> None:
    described = (await workload.stub.Describe(pb.DescribeRequest())).description
    assert described.name == "etcd" and described.topology == types_pb2.TOPOLOGY_PEERS
    cluster = await build(workload, member_runner, peers=1)
    # The only peer: nothing to remove it from.
    await workload.stub.RemoveMember(pb.RemoveMemberRequest(context=cluster.ctx(0)))
    assert len(await cluster.member_list(0)) == 1
    # Unreachable peers: UNAVAILABLE (retried by lifecycle).
    cluster.incarnations[1] = 0
    await cluster.launch(1)
    for ordinal in (0, 1):
        await cluster.members[ordinal].kill()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await workload.stub.RemoveMember(pb.RemoveMemberRequest(context=cluster.ctx(1)))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await workload.stub.PeerRunning(pb.PeerRunningRequest(context=cluster.ctx(0)))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_readiness_needs_a_healthy_started_member(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner, peers=2)
    member = cluster.members[1]
    assert await member.ready()
    # Without its partner, a 2-member cluster has no quorum: not ready.
    await cluster.members[0].kill()
    await wait_for(lambda: _not_ready(member), 30, what="not ready without quorum")


async def _not_ready(member: LocalMember) -> bool:
    return not await member.ready()
