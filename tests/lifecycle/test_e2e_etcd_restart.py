"""After etcd is killed and started again, a killed Redis replica is replaced as fast as before
(issue 10: it took 34-42 s instead of 1 s, because the state service's watch hub had died and
every watcher relied on the periodic resync)."""

from __future__ import annotations

import time

import pytest
from aetcd import rpc

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.state.store import Store
from mesos_stateful.testing.etcd import EtcdProcess, intercept_watches
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite, master_of
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import kill9, redis_pids

pytestmark = pytest.mark.slow


def _member(instance: T.Instance, member_id: str) -> T.Member:
    return next(m for m in instance.members if m.id == member_id)


async def _replace(suite: Suite, member_id: str) -> float:
    """kill -9 the member's redis-server; seconds until it runs again as a new incarnation."""
    instance = await suite.wait_running("cache", 3)
    member = _member(instance, member_id)
    assert member.role == T.ROLE_SLAVE
    pids = redis_pids(suite, [member])
    assert pids, f"no redis-server found for {member_id}"
    killed_at = time.monotonic()
    kill9(pids)

    def replaced(i: T.Instance) -> bool:
        return (
            i.phase == T.INSTANCE_PHASE_RUNNING
            and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
            and _member(i, member_id).incarnation == member.incarnation + 1
        )

    await suite.wait_instance("cache", replaced, 90, f"{member_id} replaced", interval=0.05)
    return time.monotonic() - killed_at


async def test_replica_is_replaced_as_fast_after_an_etcd_restart(suite: Suite, etcd: EtcdProcess) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    master = master_of(instance)
    before = await _replace(suite, "cache-2")

    # The state service's etcd watches go through an intercepted channel from here on, as in a
    # service with tracing on (the path where a watch to a dead etcd raised InvalidStateError).
    store: Store = suite.state.served.store
    channel = intercept_watches(store.kv, etcd.endpoint)
    try:
        await etcd.kill()
        failures = store.hub.failures

        async def hub_retrying() -> bool:
            return store.hub.failures >= failures + 3

        await wait_for(hub_retrying, 30, what="the state watch to retry while etcd is down")
        await etcd.restart()
        assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
        assert suite.lifecycle.service is not None
        await suite.lifecycle.service.wait_leading(30)
        after = await _replace(suite, "cache-1")
    finally:
        store.kv.watch_stub = rpc.WatchStub(store.kv.channel)
        await channel.close()
    print(f"replica replaced in {before:.2f} s before the etcd restart, {after:.2f} s after")
    # As fast as before (the issue: 34-42 s after an etcd restart, against 1 s before); the margin
    # is for a loaded machine, far below the lifecycle's 5 s resync that a dead watch falls back on.
    assert after < max(2 * before, before + 3.0), (before, after)
    assert master_of(await suite.wait_running("cache", 3)).task_id == master.task_id
