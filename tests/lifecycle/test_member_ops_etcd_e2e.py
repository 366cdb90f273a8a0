"""Operator actions on etcd peers (issue 15, part 3): RestartMember (same volume, same agent: it
rejoins with its data) and ReplaceMember (RemoveMember, a fresh volume on another agent, it joins
as a new peer), while a writer keeps getting puts committed (a quorum stays); every committed put
is readable through every peer after. A switchover is refused: peers have no master."""

from __future__ import annotations

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite
from mesos_stateful.testing.workloads import wait_for
from mesos_stateful.workloads.etcd import members

from .test_drain_etcd_e2e import NAME, QuorumWriter, _running, _url, etcd_drain_suite  # noqa: F401

pytestmark = pytest.mark.slow

DEADLINE = 240.0


@pytest.mark.agents(4)  # a free agent for the replacement
async def test_restart_and_replace_of_an_etcd_peer_keep_the_quorum_and_the_data(
    etcd_drain_suite: Suite,  # noqa: F811
) -> None:
    suite = etcd_drain_suite
    await suite.create(NAME, 3, workload="etcd")
    instance = await suite.wait_instance(NAME, lambda i: _running(i, 3), 180, "3 peers running")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await suite.api.SwitchoverInstance(ipb.SwitchoverInstanceRequest(name=NAME))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has peers, no master" in (refused.value.details() or "")

    peer = instance.members[1]
    writer = QuorumWriter(suite)
    writer.start()
    try:

        async def writing() -> bool:
            return len(writer.committed) >= 20

        await wait_for(writing, 30, what="20 puts committed")
        for kind in ("restart", "replace"):
            if kind == "restart":
                asked = await suite.api.RestartMember(
                    ipb.RestartMemberRequest(instance=NAME, member_id=peer.id)
                )
                stored = asked.instance
            else:
                again = await suite.api.ReplaceMember(
                    ipb.ReplaceMemberRequest(instance=NAME, member_id=peer.id)
                )
                stored = again.instance
            op = next(m for m in stored.members if m.id == peer.id).operation

            def finished(i: T.Instance, op_id: str = op.id) -> bool:
                return _running(i, 3) and i.plan.operation.id == op_id and i.plan.status == plans.COMPLETE

            after = await suite.wait_instance(NAME, finished, DEADLINE, f"the {kind} of {peer.id} done")
            now = next(m for m in after.members if m.id == peer.id)
            assert now.task_id != peer.task_id
            if kind == "restart":
                assert (
                    now.volume.persistence_id == peer.volume.persistence_id and now.agent_id == peer.agent_id
                )
            else:
                assert now.volume.persistence_id != peer.volume.persistence_id
                assert now.agent_id not in ("", peer.agent_id)
            committed_then = len(writer.committed)

            async def still_committing(then: int = committed_then) -> bool:
                return len(writer.committed) >= then + 10

            await wait_for(still_committing, 30, what=f"puts committed after the {kind}")
            peer = now
        await writer.stop()
        for m in after.members:
            async with members.Client(_url(m), 5) as c:
                for key in list(writer.committed)[:: max(1, len(writer.committed) // 20)]:
                    assert await c.get(key) == writer.committed[key], f"{key} through {m.id}"
        async with members.Client(_url(after.members[0]), 5) as c:
            assert len(await c.members()) == 3
    finally:
        await writer.stop()
