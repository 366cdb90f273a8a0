"""Fenced writes (PutRequest.fence / DeleteRequest.fence) against a real etcd and state service:
applied while the role's leader lease is in the fence's term, refused with ABORTED once another term
began, checked atomically with the takeover's compare-and-swap; leader records keep their terms."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import state_service_pb2_grpc as pb_grpc
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients import records
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.testing.state import StateService

ROLE = "lifecycle"


def lease(holder: str, term: int) -> types_pb2.LeaderLease:
    return types_pb2.LeaderLease(holder=holder, address="127.0.0.1:1", term=term, lease_duration_seconds=1.5)


def workload(name: str) -> types_pb2.Workload:
    return types_pb2.Workload(name=name, endpoint="127.0.0.1:7401")


async def write_lease(client: StateClient, value: types_pb2.LeaderLease, expected: int) -> pb.Record:
    return await client.put(value, expected, name=ROLE, fenced=False)


async def test_fenced_writes_follow_the_term(state_client: StateClient) -> None:
    first = await write_lease(state_client, lease("a", 1), 0)
    lost: list[str] = []
    state_client.fence = pb.LeaderFence(role=ROLE, term=1)
    state_client.on_fence_lost = lambda: lost.append("lost")

    # Accepted in the current term, including after renewals (same term, new revisions).
    await state_client.put(workload("redis"))
    renewed = await write_lease(state_client, lease("a", 1), first.mod_revision)
    await state_client.put(workload("mysql"))
    assert await state_client.delete(pb.KIND_WORKLOAD, "mysql")
    assert lost == []

    # b takes over (term 2): a's writes are refused, nothing they touch changes.
    await write_lease(state_client, lease("b", 2), renewed.mod_revision)
    before = await state_client.get(pb.KIND_WORKLOAD, "redis")
    with pytest.raises(errors.NotLeader, match=r"term 1 of lifecycle is over \(the leader is now term 2\)"):
        await state_client.put(workload("redis"))
    with pytest.raises(errors.NotLeader, match="term 1 of lifecycle is over"):
        await state_client.delete(pb.KIND_WORKLOAD, "redis")
    with pytest.raises(errors.NotLeader):
        await state_client.put(workload("etcd"), expected_revision=0)
    assert lost == ["lost"] * 3
    assert await state_client.get(pb.KIND_WORKLOAD, "redis") == before
    assert await state_client.find(pb.KIND_WORKLOAD, "etcd") is None

    # The new term writes; unfenced writes keep working as before.
    state_client.fence = pb.LeaderFence(role=ROLE, term=2)
    await state_client.put(workload("etcd"), expected_revision=0)
    state_client.fence = None
    await state_client.put(workload("mysql"))


async def test_refused_with_aborted_on_the_wire(
    state_client: StateClient, state_service: StateService
) -> None:
    await write_lease(state_client, lease("a", 3), 0)
    async with grpc.aio.insecure_channel(state_service.endpoint) as channel:
        stub = pb_grpc.StateServiceStub(channel)
        request = pb.PutRequest(
            record=records.make_record(workload("redis")),
            unconditional=True,
            fence=pb.LeaderFence(role=ROLE, term=2),
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Put(request)
        assert refused.value.code() == grpc.StatusCode.ABORTED
        assert "term 2 of lifecycle is over (the leader is now term 3)" in (refused.value.details() or "")
        delete = pb.DeleteRequest(
            key=records.record_key(pb.KIND_WORKLOAD, "redis"), fence=pb.LeaderFence(role=ROLE, term=4)
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Delete(delete)
        assert refused.value.code() == grpc.StatusCode.ABORTED

        # A bad fence is the caller's mistake: INVALID_ARGUMENT naming the field.
        for fence, field in (
            (pb.LeaderFence(role="", term=3), "fence.role"),
            (pb.LeaderFence(role=ROLE, term=0), "fence.term"),
            (pb.LeaderFence(role=ROLE, term=-1), "fence.term"),
            (pb.LeaderFence(role="no/such", term=3), "fence.role"),
        ):
            request.fence.CopyFrom(fence)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.Put(request)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fence
            assert field in str(bad.value.trailing_metadata()), fence
            delete.fence.CopyFrom(fence)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.Delete(delete)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fence


async def test_no_lease_and_released_lease_refuse(state_client: StateClient) -> None:
    state_client.fence = pb.LeaderFence(role="offers", term=1)
    with pytest.raises(errors.NotLeader, match="no leader lease of offers exists"):
        await state_client.put(workload("redis"))
    state_client.fence = None

    held = await write_lease(state_client, lease("a", 1), 0)
    state_client.fence = pb.LeaderFence(role=ROLE, term=1)
    await state_client.put(workload("redis"))
    # The holder releases (holder "", same term): its term is over at once.
    released = await write_lease(state_client, lease("", 1), held.mod_revision)
    with pytest.raises(errors.NotLeader, match="released in term 1"):
        await state_client.put(workload("redis"))
    # The next holder (even the same one) takes a new term.
    with pytest.raises(errors.Conflict, match="must be above term 1"):
        await write_lease(state_client, lease("a", 1), released.mod_revision)
    await write_lease(state_client, lease("a", 2), released.mod_revision)
    state_client.fence = pb.LeaderFence(role=ROLE, term=2)
    await state_client.put(workload("redis"))


async def test_terms_never_go_back(state_client: StateClient) -> None:
    first = await write_lease(state_client, lease("a", 5), 0)
    with pytest.raises(errors.Conflict, match="must be above term 5"):
        await write_lease(state_client, lease("b", 5), first.mod_revision)
    with pytest.raises(errors.Conflict, match="older than the current term 5"):
        await write_lease(state_client, lease("b", 4), first.mod_revision)
    with pytest.raises(errors.Conflict, match="a release keeps the term 5"):
        await write_lease(state_client, lease("", 6), first.mod_revision)
    with pytest.raises(errors.InvalidArgument):
        await write_lease(state_client, lease("b", 0), first.mod_revision)
    with pytest.raises(errors.InvalidArgument, match="compare-and-swap only"):
        await state_client.put(lease("b", 6), None, name=ROLE, fenced=False)
    # A stale compare-and-swap loses as for any record.
    second = await write_lease(state_client, lease("b", 6), first.mod_revision)
    with pytest.raises(errors.Conflict):
        await write_lease(state_client, lease("c", 7), first.mod_revision)
    # Deleting the record ends the term and keeps it: a new record starts above it.
    state_client.fence = pb.LeaderFence(role=ROLE, term=6)
    await state_client.put(workload("redis"))
    state_client.fence = None
    assert await state_client.delete(pb.KIND_LEADER, ROLE, second.mod_revision)
    state_client.fence = pb.LeaderFence(role=ROLE, term=6)
    with pytest.raises(errors.NotLeader, match="released in term 6"):
        await state_client.put(workload("redis"))
    state_client.fence = None
    with pytest.raises(errors.Conflict, match="term 1 is older than the current term 6"):
        await write_lease(state_client, lease("a", 1), 0)
    with pytest.raises(errors.Conflict, match="must be above term 6"):
        await write_lease(state_client, lease("a", 6), 0)
    created = await write_lease(state_client, lease("a", 7), 0)
    assert created.leader.term == 7
    assert (await state_client.get(pb.KIND_LEADER, ROLE)).leader == lease("a", 7)


async def test_fence_is_atomic_with_the_takeover(
    state_client: StateClient, state_service: StateService
) -> None:
    """Writers in term 1 race a takeover: every acknowledged write is ordered before the takeover's
    revision, every refused one left nothing behind, and none is applied after the takeover."""
    held = await write_lease(state_client, lease("a", 1), 0)
    writers = [StateClient(state_service.endpoint) for _ in range(4)]
    for writer in writers:
        writer.fence = pb.LeaderFence(role=ROLE, term=1)
    acked: dict[str, int] = {}
    refused: list[str] = []
    started = asyncio.Event()

    async def write(writer: StateClient, index: int) -> None:
        for n in range(10_000):
            name = f"w{index}-{n}"
            try:
                stored = await writer.put(workload(name), expected_revision=0)
            except errors.NotLeader:
                refused.append(name)
                return
            acked[name] = stored.mod_revision
            if len(acked) >= 20:
                started.set()

    try:
        tasks = [asyncio.create_task(write(w, i)) for i, w in enumerate(writers)]
        await asyncio.wait_for(started.wait(), 30)
        takeover = await write_lease(state_client, lease("b", 2), held.mod_revision)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        for writer in writers:
            await writer.close()
    assert len(refused) == len(writers)
    assert acked and max(acked.values()) < takeover.mod_revision
    stored, _ = await state_client.list(pb.KIND_WORKLOAD)
    assert {r.key.name: r.mod_revision for r in stored} == acked
