"""WatchInstances: snapshot then changes, in order, exactly once, across an etcd restart, resumable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.etcd import EtcdProcess

ADDED = api.INSTANCE_EVENT_TYPE_ADDED
MODIFIED = api.INSTANCE_EVENT_TYPE_MODIFIED
DELETED = api.INSTANCE_EVENT_TYPE_DELETED
TIMEOUT = 30.0


class Watcher:
    def __init__(self, call: grpc.aio.UnaryStreamCall[api.WatchInstancesRequest, api.WatchInstancesResponse]):
        self.call = call

    async def next(self, timeout: float = TIMEOUT, events: bool = False) -> api.WatchInstancesResponse:
        """The next instance change (history entries, ``WatchInstancesResponse.event``, are
        skipped unless ``events``)."""
        while True:
            event = await asyncio.wait_for(self.call.read(), timeout)
            assert isinstance(event, api.WatchInstancesResponse), event
            if events or not event.HasField("event"):
                return event

    async def take(self, count: int) -> list[api.WatchInstancesResponse]:
        return [await self.next() for _ in range(count)]


@asynccontextmanager
async def watching(stub: api_grpc.InstanceServiceAsyncStub, **request: object) -> AsyncIterator[Watcher]:
    call = stub.WatchInstances(api.WatchInstancesRequest(**request))  # type: ignore[arg-type]
    try:
        yield Watcher(call)
    finally:
        call.cancel()


async def create(stub: api_grpc.InstanceServiceAsyncStub, name: str, replicas: int = 1) -> types_pb2.Instance:
    spec = types_pb2.InstanceSpec(name=name, workload="redis", replicas=replicas)
    return (await stub.CreateInstance(api.CreateInstanceRequest(spec=spec))).instance


def member(instance: str, ordinal: int, state: int = types_pb2.MEMBER_STATE_PENDING) -> types_pb2.Member:
    return types_pb2.Member(id=f"{instance}-{ordinal}", instance=instance, ordinal=ordinal, state=state)  # type: ignore[arg-type]


def summary(event: api.WatchInstancesResponse) -> tuple[int, str, int, list[str]]:
    i = event.instance
    return (event.type, i.spec.name, i.spec.replicas, [m.id for m in i.members])


async def test_snapshot_then_changes_in_order_exactly_once(
    stub: api_grpc.InstanceServiceAsyncStub, state_client: StateClient
) -> None:
    await create(stub, "alpha")
    await state_client.put(member("alpha", 0))
    await create(stub, "beta")

    async with watching(stub) as watcher:
        first = await watcher.take(2)
        assert [summary(e) for e in first] == [
            (ADDED, "alpha", 1, ["alpha-0"]),
            (ADDED, "beta", 1, []),
        ]
        snapshot_revision = first[0].revision
        assert first[1].revision == snapshot_revision

        await create(stub, "gamma")
        await state_client.put(member("beta", 1))
        await state_client.put(member("beta", 0))
        await stub.ScaleInstance(api.ScaleInstanceRequest(name="alpha", replicas=3))
        await state_client.delete(st.KIND_MEMBER, "alpha/alpha-0")
        await state_client.delete(st.KIND_INSTANCE, "gamma")
        await stub.DeleteInstance(api.DeleteInstanceRequest(name="beta"))
        changes = await watcher.take(7)
        assert [summary(e) for e in changes] == [
            (ADDED, "gamma", 1, []),
            (MODIFIED, "beta", 1, ["beta-1"]),
            (MODIFIED, "beta", 1, ["beta-0", "beta-1"]),
            (MODIFIED, "alpha", 3, ["alpha-0"]),
            (MODIFIED, "alpha", 3, []),
            (DELETED, "gamma", 1, []),
            (MODIFIED, "beta", 1, ["beta-0", "beta-1"]),
        ]
        assert changes[-1].instance.phase == types_pb2.INSTANCE_PHASE_DELETING
        revisions = [e.revision for e in changes]
        assert revisions == sorted(set(revisions))
        assert revisions[0] > snapshot_revision
        # Nothing extra was delivered: the next event is the next change.
        await create(stub, "marker")
        assert summary(await watcher.next()) == (ADDED, "marker", 1, [])


async def test_resume_from_revision(
    stub: api_grpc.InstanceServiceAsyncStub, state_client: StateClient
) -> None:
    async with watching(stub) as watcher:
        await create(stub, "one")
        await create(stub, "two")
        await state_client.put(member("two", 0))
        await stub.ScaleInstance(api.ScaleInstanceRequest(name="one", replicas=2))
        seen = await watcher.take(4)
    resume_at = seen[1].revision + 1
    async with watching(stub, start_revision=resume_at) as resumed:
        replay = await resumed.take(2)
        assert [(e.type, e.instance.spec.name, e.revision) for e in replay] == [
            (e.type, e.instance.spec.name, e.revision) for e in seen[2:]
        ]
        await create(stub, "three")
        assert summary(await resumed.next()) == (ADDED, "three", 1, [])


async def test_filters_by_name_and_workload(
    stub: api_grpc.InstanceServiceAsyncStub, state_client: StateClient
) -> None:
    async with watching(stub, name="db") as by_name, watching(stub, workload="etcd") as by_workload:
        await create(stub, "db2")  # shares the prefix, must not show up
        await state_client.put(member("db2", 0))
        await create(stub, "db")
        await state_client.put(member("db", 0))
        event = await by_name.next()
        assert summary(event) == (ADDED, "db", 1, [])
        assert summary(await by_name.next()) == (MODIFIED, "db", 1, ["db-0"])
        with_timeout = asyncio.ensure_future(by_workload.next(timeout=0.5))
        try:
            await with_timeout
            raise AssertionError("a redis instance reached a watch of etcd instances")
        except TimeoutError:
            pass


async def test_changes_across_an_etcd_restart(
    stub: api_grpc.InstanceServiceAsyncStub, state_client: StateClient, etcd: EtcdProcess
) -> None:
    async with watching(stub) as watcher:
        await create(stub, "before")
        assert summary(await watcher.next()) == (ADDED, "before", 1, [])
        await etcd.kill()
        await etcd.restart()

        deadline = time.monotonic() + TIMEOUT
        while True:  # writes fail (UNAVAILABLE) until the store is back
            try:
                await create(stub, "after")
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        await state_client.put(member("after", 0))
        await stub.ScaleInstance(api.ScaleInstanceRequest(name="before", replicas=2))
        events = await watcher.take(3)
        assert [summary(e) for e in events] == [
            (ADDED, "after", 1, []),
            (MODIFIED, "after", 1, ["after-0"]),
            (MODIFIED, "before", 2, []),
        ]
        revisions = [e.revision for e in events]
        assert revisions == sorted(set(revisions))
        await create(stub, "marker")
        assert summary(await watcher.next()) == (ADDED, "marker", 1, [])
