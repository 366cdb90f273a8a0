"""The watch hub: never dies on a broken etcd stream, resumes without loss or repeat, and a slow
watcher gets a resync instead of unbounded memory (issue 10, item 3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
from state_helpers import eventually, instance, task
from test_watch import Collector, Writer, assert_in_order, current_revision

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.clients.records import make_record
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.state.etcdkv import EtcdKV
from mesos_stateful.state.server import build_state_server
from mesos_stateful.state.store import Store
from mesos_stateful.state.watchhub import WatchLimits, matches
from mesos_stateful.testing.etcd import EtcdProcess, intercept_watches


async def test_watch_on_a_dead_etcd_is_unavailable_not_invalid_state(etcd: EtcdProcess) -> None:
    kv = EtcdKV([etcd.endpoint], timeout=1.0)
    channel = intercept_watches(kv, etcd.endpoint)
    try:
        await kv.status()
        await etcd.kill()
        for _ in range(20):
            with pytest.raises(errors.Unavailable, match="watch"):
                async for _ in kv.watch(b"/stateful/v1/", 0):
                    pass
            await asyncio.sleep(0.05)
    finally:
        await channel.close()
        await kv.close()


async def test_hub_outlives_an_etcd_outage_and_resumes_exactly(etcd: EtcdProcess) -> None:
    """etcd down for a few seconds while the hub (through an intercepted channel) keeps trying:
    its task is alive afterwards and a watch opened before goes on, every change once."""
    store = Store([etcd.endpoint], timeout=2.0, watch_limits=WatchLimits(retry_max_seconds=0.5))
    channel = intercept_watches(store.kv, etcd.endpoint)
    served = await build_state_server(store, health_interval=0.3)
    client = StateClient(f"127.0.0.1:{served.port}")
    collector: Collector | None = None
    try:
        await client.wait_ready(30)
        collector = Collector(client.watch([pb.KIND_TASK], start_revision=await current_revision(client) + 1))
        writer = Writer(client)
        await writer.tasks(0, 5)
        await collector.wait_for(5)
        await etcd.kill()

        async def hub_disconnected() -> bool:
            return not store.hub.connected

        await eventually(hub_disconnected, 10, "the hub to see etcd down")
        failures = store.hub.failures

        async def retried() -> bool:
            return store.hub.failures >= failures + 3

        # Several reconnect attempts fail while etcd is down (such a failure killed the hub before).
        await eventually(retried, 10, "the hub to retry while etcd is down")
        assert store.hub._task is not None and not store.hub._task.done()
        await etcd.restart()
        await writer.tasks(5, 10)
        await collector.wait_for(10)
        assert collector.names() == [f"w-{i}.1" for i in range(10)]
        assert_in_order(collector.events)
        assert store.hub.reconnects >= 1
    finally:
        if collector is not None:
            await collector.stop()
        await client.close()
        await served.stop(grace_seconds=0)
        await store.close()
        await channel.close()


async def test_slow_subscriber_is_told_to_resync_not_buffered(etcd: EtcdProcess) -> None:
    """A subscriber that reads nothing holds at most queue_size events; the next one ends it with
    a resync; a subscriber that keeps up is not disturbed."""
    limit = 5
    store = Store([etcd.endpoint], timeout=3.0, watch_limits=WatchLimits(queue_size=limit))
    await store.start()
    fast_seen: list[str] = []
    fast: asyncio.Task[None] | None = None
    try:

        async def loaded() -> bool:
            return store.hub.synced

        await eventually(loaded, 30, "the hub to load")
        start = store.hub.revision + 1
        slow = store.hub.subscribe(matches([pb.KIND_TASK], ""), start)

        async def read_fast() -> None:
            async for response in store.watch([pb.KIND_TASK], "", start):
                fast_seen.append(response.record.key.name)

        fast = asyncio.create_task(read_fast())
        for i in range(limit):
            await store.put(make_record(task(f"s-{i}.1")), unconditional=True)

        async def queued() -> bool:
            return slow.queue.qsize() == limit

        await eventually(queued, 10, f"{limit} events queued for the slow subscriber")
        await store.put(make_record(task(f"s-{limit}.1")), unconditional=True)
        for i in range(limit + 1, limit + 20):
            await store.put(make_record(task(f"s-{i}.1")), unconditional=True)

        async def fast_done() -> bool:
            return len(fast_seen) == limit + 20

        await eventually(fast_done, 10, "the fast subscriber to see every change")
        assert fast_seen == [f"s-{i}.1" for i in range(limit + 20)]
        # The slow one holds only the resync, not the events it could not take.
        assert slow.queue.qsize() == 1
        assert slow not in store.hub.subscribers
        with pytest.raises(errors.FailedPrecondition, match=r"resync: .*fell 5 events behind"):
            async for _ in store.hub.events(slow):
                pass
    finally:
        if fast is not None:
            fast.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fast
        await store.close()


async def _drain(stream: AsyncIterator[pb.WatchResponse], into: list[pb.WatchResponse]) -> None:
    async for response in stream:
        into.append(response)


async def test_slow_grpc_watcher_gets_a_resync_and_lists_again(etcd: EtcdProcess) -> None:
    """Through gRPC: a watcher that stops reading while large records are written falls behind
    (the stream's flow-control window fills, then the hub's queue); it is ended with
    FAILED_PRECONDITION, lists again and watches from the list's revision with nothing missed."""
    limit = 4
    store = Store([etcd.endpoint], timeout=3.0, watch_limits=WatchLimits(queue_size=limit))
    served = await build_state_server(store, health_interval=0.3)
    served.owns_store = True
    client = StateClient(f"127.0.0.1:{served.port}")
    try:
        await client.wait_ready(30)
        marked = await client.put(instance("mark"))
        start = await current_revision(client) + 1
        stream = client.watch([pb.KIND_INSTANCE], start_revision=start)
        waiting = asyncio.ensure_future(anext(stream))

        async def subscribed() -> bool:
            return len(store.hub.subscribers) == 1

        # The watch is on the hub (its start is not older than the hub) before anything is written.
        await eventually(subscribed, 10, "the watch to subscribe to the hub")
        await client.put(instance("big-0"))
        first = await asyncio.wait_for(waiting, 10)
        assert first.record.key.name == "big-0"
        # Read nothing more while 256 KiB records are written until the gRPC flow-control windows
        # and then the hub's queue are full (about 30 writes; 200 = 50 MiB at most).
        blob = "x" * (256 * 1024)
        written = 1
        while store.hub.resyncs == 0 and written < 200:
            value = instance(f"big-{written}")
            value.spec.config["blob"] = blob
            await client.put(value)
            written += 1

        async def resynced() -> bool:
            return store.hub.resyncs >= 1

        await eventually(resynced, 30, "the hub to drop the slow watcher")
        received: list[pb.WatchResponse] = []
        with pytest.raises(errors.FailedPrecondition, match="resync"):
            await _drain(stream, received)
        # Whatever arrived before the resync is in order and without gaps from the start.
        names = [r.record.key.name for r in received]
        assert names == [f"big-{i}" for i in range(1, len(names) + 1)]
        # The resync: list, then watch from the list's revision + 1 (a small prefix here: a List
        # answer is bounded by gRPC's 4 MiB message limit).
        listed, revision = await client.list(pb.KIND_INSTANCE, "mark")
        assert listed == [marked]
        await client.put(instance("mark-after"))
        again = client.watch([pb.KIND_INSTANCE], prefix="mark", start_revision=revision + 1)
        nxt = await asyncio.wait_for(anext(again), 10)
        assert nxt.record.key.name == "mark-after"
        assert isinstance(again, AsyncGenerator)  # StateClient.watch is an async generator
        await again.aclose()
    finally:
        await client.close()
        await served.stop(grace_seconds=0)
