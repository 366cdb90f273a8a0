"""End to end through the public API: real etcd peers on the local cluster, created, written to,
a peer killed and replaced, scaled 3 -> 5 -> 3 and deleted."""

from __future__ import annotations

import os

import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.testing.lifecycle import Suite
from mesos_stateful.testing.workloads import member_pids, wait_for
from mesos_stateful.workloads.etcd import members

pytestmark = pytest.mark.slow

NAME = "kv"


def etcd_pids(suite: Suite, instance: str, member_id: str | None = None) -> list[int]:
    return member_pids("etcd", suite.cluster.cluster.settings.work_dir, instance, member_id)


def running(i: T.Instance, peers: int) -> bool:
    return (
        i.phase == T.INSTANCE_PHASE_RUNNING
        and len(i.members) == peers
        and all(m.state == T.MEMBER_STATE_RUNNING and m.role == T.ROLE_PEER for m in i.members)
    )


def url(m: T.Member) -> str:
    return f"http://{m.host}:{m.ports['client']}"


async def cluster_names(m: T.Member) -> list[str]:
    async with members.Client(url(m), 5) as c:
        return sorted(x.name for x in await c.members())


async def read_write_everywhere(instance: T.Instance, key: str, value: str) -> None:
    async with members.Client(url(instance.members[0]), 5) as c:
        await c.put(key, value)
    for m in instance.members:
        async with members.Client(url(m), 5) as c:
            assert await c.get(key) == value, f"{key} through {m.id}"


async def test_etcd_create_replace_scale_delete(etcd_suite: Suite) -> None:
    suite = etcd_suite
    # Five peers on three agents: allow two per agent.
    await suite.create(NAME, 3, workload="etcd", placement=T.Placement(max_members_per_agent=2))
    instance = await suite.wait_instance(NAME, lambda i: running(i, 3), 180, "3 peers running")
    assert await cluster_names(instance.members[0]) == [f"{NAME}-{o}.1" for o in range(3)]
    await read_write_everywhere(instance, "k", "v1")

    # kill -9 a peer: it is removed from the cluster and replaced; data is kept.
    victim = instance.members[1]
    pids = etcd_pids(suite, NAME, victim.id)
    assert len(pids) == 1
    os.kill(pids[0], 9)

    def replaced(i: T.Instance) -> bool:
        m = next(x for x in i.members if x.id == victim.id)
        return running(i, 3) and m.incarnation == 2

    instance = await suite.wait_instance(NAME, replaced, 180, "peer replaced")
    assert await cluster_names(instance.members[0]) == [f"{NAME}-0.1", f"{NAME}-1.2", f"{NAME}-2.1"]
    async with members.Client(url(instance.members[1]), 5) as c:
        assert await c.get("k") == "v1"
    await read_write_everywhere(instance, "k", "v2")

    # Scale 3 -> 5 -> 3.
    await suite.api.ScaleInstance(api.ScaleInstanceRequest(name=NAME, replicas=5))
    instance = await suite.wait_instance(NAME, lambda i: running(i, 5), 180, "5 peers running")
    assert len(await cluster_names(instance.members[4])) == 5
    await read_write_everywhere(instance, "k", "v3")
    await suite.api.ScaleInstance(api.ScaleInstanceRequest(name=NAME, replicas=3))
    instance = await suite.wait_instance(NAME, lambda i: running(i, 3), 180, "3 peers again")
    names = await cluster_names(instance.members[0])
    assert len(names) == 3 and names == sorted(f"{m.id}.{m.incarnation}" for m in instance.members)
    await read_write_everywhere(instance, "k", "v4")
    await wait_for(lambda: _count(suite, NAME, 3), 30, what="removed peers stopped")

    await suite.api.DeleteInstance(api.DeleteInstanceRequest(name=NAME))
    await suite.wait_gone(NAME, 120)
    await wait_for(lambda: _count(suite, NAME, 0), 30, what="no etcd left")


async def _count(suite: Suite, instance: str, expected: int) -> bool:
    return len(etcd_pids(suite, instance)) == expected


async def member_ids(m: T.Member) -> list[str]:
    async with members.Client(url(m), 5) as c:
        return sorted(str(x.id) for x in await c.members())


async def test_etcd_every_peer_killed_restarts_in_place_with_its_ids_and_data(etcd_suite: Suite) -> None:
    """kill -9 of every etcd peer at once (noticed one by one) → all three restart together on
    their volumes with their member ids, and every key is there."""
    suite = etcd_suite
    await suite.create(NAME, 3, workload="etcd")
    instance = await suite.wait_instance(NAME, lambda i: running(i, 3), 180, "3 peers running")
    ids = await member_ids(instance.members[0])
    await read_write_everywhere(instance, "k", "kept")
    before = {m.id: m.incarnation for m in instance.members}

    pids = etcd_pids(suite, NAME)
    assert len(pids) == 3
    for pid in pids:
        os.kill(pid, 9)

    def restarted(i: T.Instance) -> bool:
        return running(i, 3) and all(m.incarnation > before[m.id] for m in i.members)

    after = await suite.wait_instance(NAME, restarted, 240, "every peer restarted and ready")
    assert {m.id: m.volume.persistence_id for m in after.members} == {
        m.id: m.volume.persistence_id for m in instance.members
    }
    for m in after.members:
        assert await member_ids(m) == ids, "a peer was removed and re-added"
        async with members.Client(url(m), 5) as c:
            assert await c.get("k") == "kept", f"the key written before, through {m.id}"
