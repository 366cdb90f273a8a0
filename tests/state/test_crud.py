"""Records through the state service against a real etcd: CRUD, compare-and-swap, validation."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.message import Message
from state_helpers import instance, member, task

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import state_service_pb2_grpc as pb_grpc
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.testing.state import StateService


async def test_put_get_find_delete(state_client: StateClient) -> None:
    assert await state_client.find(pb.KIND_INSTANCE, "cache") is None
    with pytest.raises(errors.NotFound):
        await state_client.get(pb.KIND_INSTANCE, "cache")

    created = await state_client.put(instance("cache"), expected_revision=0)
    assert created.mod_revision > 0 and created.create_revision == created.mod_revision
    assert created.instance.revision == created.mod_revision

    got = await state_client.get(pb.KIND_INSTANCE, "cache")
    assert got == created

    updated = await state_client.put(instance("cache", generation=2), expected_revision=created.mod_revision)
    assert updated.mod_revision > created.mod_revision
    assert updated.create_revision == created.create_revision
    assert (await state_client.get(pb.KIND_INSTANCE, "cache")).instance.generation == 2

    assert await state_client.delete(pb.KIND_INSTANCE, "cache") is True
    assert await state_client.delete(pb.KIND_INSTANCE, "cache") is False
    assert await state_client.find(pb.KIND_INSTANCE, "cache") is None


async def test_every_kind_round_trips(state_client: StateClient) -> None:
    values: list[Message] = [
        instance("db"),
        member("db", 0),
        task("db-0.1"),
        types_pb2.Framework(framework_id="fw-1", failover_timeout_seconds=604800),
        types_pb2.Workload(name="redis", endpoint="127.0.0.1:7401"),
        types_pb2.InstanceSecrets(instance="db", values={"password": "s3cret"}),
    ]
    for value in values:
        stored = await state_client.put(value)
        read = await state_client.get(stored.key.kind, stored.key.name)
        assert read.WhichOneof("value") == stored.WhichOneof("value")
        assert read.mod_revision == stored.mod_revision
    framework = await state_client.get(pb.KIND_FRAMEWORK, "")
    assert framework.framework.framework_id == "fw-1"


async def test_compare_and_swap(state_client: StateClient) -> None:
    first = await state_client.put(instance("a"), expected_revision=0)
    with pytest.raises(errors.AlreadyExists):
        await state_client.put(instance("a"), expected_revision=0)
    second = await state_client.put(instance("a", 1), expected_revision=first.mod_revision)
    with pytest.raises(errors.Conflict):
        await state_client.put(instance("a", 2), expected_revision=first.mod_revision)
    with pytest.raises(errors.Conflict):
        await state_client.put(instance("never"), expected_revision=second.mod_revision)
    # Unconditional writes whatever is stored.
    third = await state_client.put(instance("a", 3))
    assert third.instance.generation == 3

    with pytest.raises(errors.Conflict):
        await state_client.delete(pb.KIND_INSTANCE, "a", expected_revision=second.mod_revision)
    assert await state_client.delete(pb.KIND_INSTANCE, "a", expected_revision=third.mod_revision)


async def test_two_concurrent_creates_exactly_one_wins(state_client: StateClient) -> None:
    for round_ in range(5):
        name = f"race-{round_}"
        results = await asyncio.gather(
            *(state_client.put(instance(name, generation=i), expected_revision=0) for i in range(2)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, pb.Record)]
        losers = [r for r in results if isinstance(r, errors.AlreadyExists)]
        assert len(winners) == 1 and len(losers) == 1, results
        stored = await state_client.get(pb.KIND_INSTANCE, name)
        assert stored.instance.generation == winners[0].instance.generation


async def test_update_loses_no_increment(state_service: StateService) -> None:
    clients = [StateClient(state_service.endpoint) for _ in range(4)]

    def bump(value: Message | None) -> Message:
        new = value if isinstance(value, types_pb2.Instance) else instance("counter")
        new.generation += 1
        return new

    async def worker(client: StateClient) -> None:
        for _ in range(10):
            await client.update(pb.KIND_INSTANCE, "counter", bump)

    try:
        await asyncio.gather(*(worker(c) for c in clients))
        final = await clients[0].get(pb.KIND_INSTANCE, "counter")
        assert final.instance.generation == 40
        # mutate returning None writes nothing and returns the current record.
        same = await clients[0].update(pb.KIND_INSTANCE, "counter", lambda v: None)
        assert same == final
        assert await clients[0].update(pb.KIND_INSTANCE, "absent", lambda v: None) is None
    finally:
        for client in clients:
            await client.close()


async def test_update_mutates_a_copy(state_client: StateClient) -> None:
    await state_client.put(instance("x", 1))
    seen: list[Message | None] = []

    def keep(value: Message | None) -> Message | None:
        seen.append(value)
        assert isinstance(value, types_pb2.Instance)
        value.generation = 99
        return None

    before = await state_client.get(pb.KIND_INSTANCE, "x")
    after = await state_client.update(pb.KIND_INSTANCE, "x", keep)
    assert after is not None and after.instance.generation == 1 == before.instance.generation


async def test_list_with_prefix(state_client: StateClient) -> None:
    for inst in ("cache", "cachex", "db"):
        for ordinal in range(3):
            await state_client.put(member(inst, ordinal))
    await state_client.put(instance("cache"))

    members, revision = await state_client.list(pb.KIND_MEMBER, "cache/")
    assert [r.key.name for r in members] == ["cache/cache-0", "cache/cache-1", "cache/cache-2"]
    assert all(r.WhichOneof("value") == "member" for r in members)
    assert revision >= max(r.mod_revision for r in members)

    everything, _ = await state_client.list(pb.KIND_MEMBER)
    assert len(everything) == 9
    instances, _ = await state_client.list(pb.KIND_INSTANCE)
    assert [r.key.name for r in instances] == ["cache"]
    none, _ = await state_client.list(pb.KIND_MEMBER, "nope/")
    assert none == []


async def test_list_revision_is_consistent(state_client: StateClient) -> None:
    # Watching from the list's revision + 1 sees exactly the changes after the list.
    await state_client.put(task("t-0.1"))
    listed, revision = await state_client.list(pb.KIND_TASK)
    assert [r.key.name for r in listed] == ["t-0.1"]
    later = await state_client.put(task("t-1.1"))
    stream = state_client.watch([pb.KIND_TASK], start_revision=revision + 1)
    first = await asyncio.wait_for(anext(stream), 30)
    assert first.record.key.name == "t-1.1" and first.revision == later.mod_revision
    await stream.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "request_",
    [
        pb.PutRequest(
            record=pb.Record(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name="a"), member=member("a", 0))
        ),
        pb.PutRequest(
            record=pb.Record(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name="b"), instance=instance("a"))
        ),
        pb.PutRequest(
            record=pb.Record(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name="a/b"), instance=instance("a/b"))
        ),
        pb.PutRequest(record=pb.Record(key=pb.RecordKey(name="a"), instance=instance("a"))),
        pb.PutRequest(record=pb.Record(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name="a"))),
        pb.PutRequest(
            record=pb.Record(key=pb.RecordKey(kind=pb.KIND_MEMBER, name="a-0"), member=member("a", 0))
        ),
    ],
)
async def test_bad_put_is_invalid_argument(state_service: StateService, request_: pb.PutRequest) -> None:
    async with grpc.aio.insecure_channel(state_service.endpoint) as channel:
        stub = pb_grpc.StateServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Put(request_, timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_keys_are_invalid_argument(state_client: StateClient) -> None:
    with pytest.raises(errors.InvalidArgument):
        await state_client.get(pb.KIND_UNSPECIFIED, "a")
    with pytest.raises(errors.InvalidArgument):
        await state_client.get(pb.KIND_INSTANCE, "")
    with pytest.raises(errors.InvalidArgument):
        await state_client.get(pb.KIND_FRAMEWORK, "x")
    with pytest.raises(errors.InvalidArgument):
        await state_client.delete(pb.KIND_MEMBER, "no-slash")
    with pytest.raises(errors.InvalidArgument):
        await state_client.list(pb.KIND_UNSPECIFIED)
    with pytest.raises(errors.InvalidArgument):
        await state_client.grant_lease(0)
    with pytest.raises(errors.InvalidArgument):
        async for _ in state_client.watch([99], start_revision=1):
            pass


async def test_update_refuses_to_rename(state_client: StateClient) -> None:
    await state_client.put(instance("one"))
    with pytest.raises(errors.InvalidArgument):
        await state_client.update(pb.KIND_INSTANCE, "one", lambda v: instance("two"))
    assert await state_client.find(pb.KIND_INSTANCE, "two") is None
