"""Watch: every change exactly once, in revision order, resumable, across etcd and service restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aetcd import rpc
from google.protobuf.message import Message
from state_helpers import eventually, instance, member, task

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.state.etcdkv import EtcdKV
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.state import StateService


class Collector:
    """Runs a client watch in the background and keeps what it delivered."""

    def __init__(self, stream: AsyncIterator[pb.WatchResponse]) -> None:
        self.events: list[pb.WatchResponse] = []
        self.error: BaseException | None = None
        self.stream = stream
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self.stream:
                self.events.append(event)
        except Exception as error:  # kept for the test to assert on
            self.error = error

    async def wait_for(self, count: int, timeout: float = 60.0) -> None:
        async def enough() -> bool:
            if self.error is not None:
                raise self.error
            return len(self.events) >= count

        await eventually(enough, timeout, f"{count} watch events (have {len(self.events)})")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def names(self) -> list[str]:
        return [e.record.key.name for e in self.events]


def assert_in_order(events: list[pb.WatchResponse]) -> None:
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions)), revisions


class Writer:
    """Create-only puts retried until etcd answers: each applied exactly once (AlreadyExists = done)."""

    def __init__(self, client: StateClient) -> None:
        self.client = client
        self.failures = 0

    async def put(self, value: Message) -> None:
        while True:
            try:
                await self.client.put(value, expected_revision=0)
                return
            except errors.AlreadyExists:
                return
            except errors.Unavailable:
                self.failures += 1
                await asyncio.sleep(0.1)

    async def tasks(self, start: int, stop: int) -> None:
        for i in range(start, stop):
            await self.put(task(f"w-{i}.1"))


async def current_revision(client: StateClient) -> int:
    _, revision = await client.list(pb.KIND_FRAMEWORK)
    return revision


async def test_watch_delivers_every_change_once_in_order(state_client: StateClient) -> None:
    collector = Collector(state_client.watch(start_revision=await current_revision(state_client) + 1))
    try:
        first = await state_client.put(instance("a"))
        await state_client.put(instance("a", 2), expected_revision=first.mod_revision)
        await state_client.put(member("a", 0))
        await state_client.delete(pb.KIND_INSTANCE, "a")
        await collector.wait_for(4)
        events = collector.events
        assert [e.type for e in events] == [
            pb.EVENT_TYPE_PUT,
            pb.EVENT_TYPE_PUT,
            pb.EVENT_TYPE_PUT,
            pb.EVENT_TYPE_DELETE,
        ]
        assert_in_order(events)
        assert events[1].record.instance.generation == 2
        assert events[1].record.instance.revision == events[1].revision
        # A delete carries the last value, with the delete's revision.
        assert events[3].record.instance.generation == 2
        assert events[3].record.mod_revision == events[3].revision
        assert all(e.record.mod_revision == e.revision for e in events)
    finally:
        await collector.stop()


async def test_watch_filters_kinds_and_prefix(state_client: StateClient) -> None:
    start = await current_revision(state_client) + 1
    members = Collector(state_client.watch([pb.KIND_MEMBER], prefix="cache/", start_revision=start))
    try:
        await state_client.put(instance("cache"))
        await state_client.put(member("db", 0))
        await state_client.put(member("cache", 0))
        await state_client.put(task("cache-0.1"))
        await state_client.put(member("cache", 1))
        # A later marker: anything filtered wrongly would have arrived before it.
        await state_client.put(member("cache", 2))
        await members.wait_for(3)
        assert members.names() == ["cache/cache-0", "cache/cache-1", "cache/cache-2"]
    finally:
        await members.stop()


async def test_watch_from_now_sees_later_changes(state_client: StateClient) -> None:
    collector = Collector(state_client.watch([pb.KIND_TASK]))
    try:
        # The watch is established once the client has read "now"; keep writing until it sees one.
        await state_client.put(task("t-0.1"))
        marker = 1

        async def seen() -> bool:
            nonlocal marker
            if collector.events:
                return True
            marker += 1
            await state_client.put(task(f"t-{marker}.1"))
            return False

        await eventually(seen, 30, "a watch event")
        assert_in_order(collector.events)
    finally:
        await collector.stop()


async def test_watch_resumes_from_an_old_revision(state_client: StateClient) -> None:
    written = [await state_client.put(task(f"t-{i}.1")) for i in range(6)]
    start = written[2].mod_revision
    collector = Collector(state_client.watch([pb.KIND_TASK], start_revision=start))
    try:
        await collector.wait_for(4)
        await state_client.put(task("t-6.1"))
        await collector.wait_for(5)
        assert collector.names() == [f"t-{i}.1" for i in range(2, 7)]
        assert collector.events[0].revision == start
        assert_in_order(collector.events)
    finally:
        await collector.stop()


async def test_watch_survives_etcd_kill_and_restart(state_client: StateClient, etcd: EtcdProcess) -> None:
    collector = Collector(
        state_client.watch([pb.KIND_TASK], start_revision=await current_revision(state_client) + 1)
    )
    replay: Collector | None = None
    try:
        written = [await state_client.put(task(f"w-{i}.1"), expected_revision=0) for i in range(10)]
        # A second watcher from an old revision: served by a dedicated etcd watch, not the hub.
        replay = Collector(state_client.watch([pb.KIND_TASK], start_revision=written[0].mod_revision))
        await replay.wait_for(10)
        await etcd.kill()
        # A writer that keeps trying while etcd is down, and goes on once it is back.
        writer = Writer(state_client)
        writing = asyncio.create_task(writer.tasks(10, 30))

        async def outage_seen() -> bool:
            return writer.failures > 0

        await eventually(outage_seen, 30, "the writer to see etcd down")
        await etcd.restart()
        await writing
        # A last marker: a duplicate or a gap before it would show in the names.
        await writer.put(task("w-30.1"))
        for watcher in (collector, replay):
            await watcher.wait_for(31)
            assert watcher.names() == [f"w-{i}.1" for i in range(31)]
            assert_in_order(watcher.events)
    finally:
        await collector.stop()
        if replay is not None:
            await replay.stop()


async def test_watch_survives_state_service_restart(
    state_client: StateClient, state_service: StateService
) -> None:
    collector = Collector(
        state_client.watch([pb.KIND_MEMBER], start_revision=await current_revision(state_client) + 1)
    )
    try:
        for i in range(5):
            await state_client.put(member("a", i))
        await collector.wait_for(5)
        await state_service.stop()
        # Written while the service is down (straight to etcd through a second service).
        other = StateService(state_service.etcd_endpoint, key_root=state_service.keys.root)
        await other.start()
        writer = StateClient(other.endpoint)
        try:
            for i in range(5, 10):
                await writer.put(member("a", i))
        finally:
            await writer.close()
            await other.stop()
        await state_service.start()
        for i in range(10, 15):
            await state_client.put(member("a", i))
        await collector.wait_for(15)
        assert collector.names() == [f"a/a-{i}" for i in range(15)]
        assert_in_order(collector.events)
    finally:
        await collector.stop()


async def test_watch_from_a_compacted_revision_fails_clearly(
    state_client: StateClient, etcd: EtcdProcess
) -> None:
    for i in range(5):
        await state_client.put(task(f"c-{i}.1"))
    revision = await current_revision(state_client)
    kv = EtcdKV([etcd.endpoint])
    try:
        await kv.kv.Compact(rpc.CompactionRequest(revision=revision, physical=True), timeout=10)
    finally:
        await kv.close()
    with pytest.raises(errors.FailedPrecondition, match="compacted"):
        async for _ in state_client.watch(start_revision=2):
            pass
