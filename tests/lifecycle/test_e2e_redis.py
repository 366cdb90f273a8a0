"""End to end through the public API: real redis-server members on the local cluster."""

from __future__ import annotations

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite, master_of

from .e2e_helpers import connect, password

pytestmark = pytest.mark.slow


async def test_create_three_member_redis_replicates(suite: Suite) -> None:
    created = await suite.create("cache", 3)
    assert created.phase == T.INSTANCE_PHASE_PENDING
    instance = await suite.wait_running("cache", 3)
    assert instance.plan.name == plans.DEPLOY and instance.plan.status == plans.COMPLETE
    master = master_of(instance)
    assert master.ordinal == 0
    assert [m.role for m in instance.members] == [T.ROLE_MASTER, T.ROLE_SLAVE, T.ROLE_SLAVE]
    assert all(m.task_id == f"{m.id}.1" and m.host and m.ports["redis"] for m in instance.members)
    assert len({m.agent_id for m in instance.members}) == 3  # one member per agent
    secret = await password(suite, "cache")
    assert secret
    async with connect(master, secret) as r:
        info = await r.info("replication")
        assert info["role"] == "master" and info["connected_slaves"] == 2
        await r.set("k", "v")
        assert await r.wait(2, 5000) == 2
    for replica in instance.members[1:]:
        async with connect(replica, secret) as r:
            assert await r.get("k") == "v"
    # The public API shows the same.
    got = (await suite.get("cache")).instance
    assert got.phase == T.INSTANCE_PHASE_RUNNING and len(got.members) == 3
