"""A state service on a 3-member etcd: killing the etcd leader (each member in turn) stops nothing:
reads, writes and open watches go on, every change delivered exactly once (issue 10, item 3)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from state_helpers import eventually, task
from test_watch import Collector, Writer, assert_in_order, current_revision

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.clients.state import StateClient
from mesos_stateful.state.server import build_state_server
from mesos_stateful.state.store import Store
from mesos_stateful.state.watchhub import WatchLimits
from mesos_stateful.testing.etcd import EtcdCluster


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EtcdCluster]:
    etcd = EtcdCluster(tmp_path / "etcd", size=3)
    await etcd.start()
    try:
        yield etcd
    finally:
        await etcd.kill()


async def test_leader_kills_stop_no_read_write_or_watch(cluster: EtcdCluster) -> None:
    store = Store(cluster.endpoints, timeout=3.0, watch_limits=WatchLimits(retry_max_seconds=0.5))
    served = await build_state_server(store, health_interval=0.3)
    served.owns_store = True
    client = StateClient(f"127.0.0.1:{served.port}")
    live: Collector | None = None
    replay: Collector | None = None
    try:
        await client.wait_ready(30)
        writer = Writer(client)
        first = await client.put(task("w-0.1"), expected_revision=0)
        # A watch on the hub (from now) and one from an old revision (a dedicated etcd watch).
        live = Collector(client.watch([pb.KIND_TASK], start_revision=await current_revision(client) + 1))
        await writer.tasks(1, 3)
        replay = Collector(client.watch([pb.KIND_TASK], start_revision=first.mod_revision))
        written = 3
        # Each member in turn is made leader and killed: whichever member a watch stream is on,
        # it breaks at least once and must be resumed on another.
        for member in cluster.members:
            await cluster.move_leader(member)
            writing = asyncio.create_task(writer.tasks(written, written + 10))
            await asyncio.sleep(0)  # the writes are under way when the leader dies
            await member.kill()
            killed_at = time.monotonic()
            # Reads go on (retried by the client while the election runs).
            assert (await client.get(pb.KIND_TASK, "w-0.1")).mod_revision == first.mod_revision
            new_leader = await cluster.leader()
            assert new_leader is not member
            await writing
            written += 10
            assert time.monotonic() - killed_at < 20.0
            await member.restart()
        await writer.put(task(f"w-{written}.1"))  # a last marker: a gap or a repeat before it shows
        for watcher, start in ((live, 1), (replay, 0)):
            await watcher.wait_for(written + 1 - start)
            assert watcher.names() == [f"w-{i}.1" for i in range(start, written + 1)]
            assert_in_order(watcher.events)
        assert store.hub.reconnects >= 1  # the hub's own stream was broken and resumed

        async def serving() -> bool:
            return await store.healthy()

        await eventually(serving, 10, "the store healthy")
    finally:
        for started in (live, replay):
            if started is not None:
                await started.stop()
        await client.close()
        await served.stop(grace_seconds=0)
