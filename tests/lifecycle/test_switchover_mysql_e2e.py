"""A planned switchover of a MariaDB instance to a named replica (issue 15, part 2) under
continuous semi-sync commits: the master is demoted (``read_only`` ON, its sessions killed; not
killed), the target catches up to its exact final GTID position and is promoted; every committed
row is on the new master; ``@@read_only`` of every member sampled throughout: never two writable.
"""

from __future__ import annotations

import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite, is_running, master_of
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import RoleWatch
from .test_drain_mysql_e2e import NAME, CommitWriter, WritableSampler, mysql_drain_suite, sql  # noqa: F401

pytestmark = pytest.mark.slow

DEADLINE = 240.0


async def test_a_mariadb_switchover_to_a_named_replica_loses_no_committed_row(
    mysql_drain_suite: Suite,  # noqa: F811
) -> None:
    suite = mysql_drain_suite
    await suite.create(NAME, 3, workload="mysql")
    instance = await suite.wait_running(NAME, 3, timeout=180)
    password = (await suite.get(NAME, secrets=True)).secrets["admin_password"]
    old = master_of(instance)
    target = max((m for m in instance.members if m.id != old.id), key=lambda m: m.ordinal)
    await sql(old, password, "CREATE DATABASE app")
    await sql(old, password, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    roles = RoleWatch(suite.client, NAME)
    await roles.start()
    sampler = WritableSampler(suite, password)
    sampler.start()
    writer = CommitWriter(old, password)
    writer.start()
    try:

        async def writing() -> bool:
            return len(writer.committed) >= 30

        await wait_for(writing, 60, what="30 rows committed on the master")
        response = await suite.api.SwitchoverInstance(
            ipb.SwitchoverInstanceRequest(name=NAME, target_member_id=target.id)
        )
        op = next(m for m in response.instance.members if m.id == old.id).operation
        after = await suite.wait_instance(
            NAME,
            lambda i: is_running(i, 3) and i.plan.operation.id == op.id and i.plan.status == plans.COMPLETE,
            DEADLINE,
            "the switchover done",
        )
        await writer.stop()
        new = master_of(after)
        assert new.id == target.id
        present = {int(r["i"]) for r in await sql(new, password, "SELECT i FROM app.t")}
        assert len(writer.committed) >= 30
        assert [v for v in writer.committed if v not in present] == []
        assert roles.promotions == [target.id] and roles.max_masters == 1
        assert sampler.samples >= 3 and sampler.with_one_writable >= 1
        assert sampler.two_writable == [], f"two writable members: {sampler.two_writable[:3]}"
        steps = {st.name: st for st in after.plan.steps}
        assert steps[f"fence {old.id}"].fence.method == T.FENCE_METHOD_DEMOTED
        catch_up = steps[f"catch-up {old.id}"].catch_up
        assert catch_up.member_id == target.id
        assert catch_up.positions[target.id] == catch_up.master_position != ""
        old_now = next(m for m in after.members if m.id == old.id)
        # Demoted in place and re-pointed: the same task and volume, a replica of the new master.
        assert old_now.role == T.ROLE_SLAVE and old_now.task_id == old.task_id
        assert old_now.volume.persistence_id == old.volume.persistence_id
        assert (await sql(old_now, password, "SELECT @@read_only AS ro"))[0]["ro"] == 1

        async def resynced() -> bool:
            got = {int(r["i"]) for r in await sql(old_now, password, "SELECT i FROM app.t")}
            return set(writer.committed) <= got

        await wait_for(resynced, 60, what=f"{old.id} to hold every committed row")
    finally:
        await writer.stop()
        await sampler.stop()
        await roles.stop()


@pytest.mark.agents(4)  # a free agent for the replacement
@pytest.mark.parametrize("kind", ["restart", "replace"])
async def test_restart_and_replace_of_the_mariadb_master_lose_no_committed_row(
    mysql_drain_suite: Suite,  # noqa: F811
    kind: str,
) -> None:
    """RestartMember / ReplaceMember of the master: switched over first (a replica holding its
    exact final position promoted), then restarted in place / rebuilt on another agent as a
    replica; every committed row on the new master and, once resynced, on the old one."""
    suite = mysql_drain_suite
    await suite.create(NAME, 3, workload="mysql")
    instance = await suite.wait_running(NAME, 3, timeout=180)
    password = (await suite.get(NAME, secrets=True)).secrets["admin_password"]
    old = master_of(instance)
    await sql(old, password, "CREATE DATABASE app")
    await sql(old, password, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    roles = RoleWatch(suite.client, NAME)
    await roles.start()
    sampler = WritableSampler(suite, password)
    sampler.start()
    writer = CommitWriter(old, password)
    writer.start()
    try:

        async def writing() -> bool:
            return len(writer.committed) >= 30

        await wait_for(writing, 60, what="30 rows committed on the master")
        if kind == "restart":
            restarted = await suite.api.RestartMember(
                ipb.RestartMemberRequest(instance=NAME, member_id=old.id)
            )
            stored = restarted.instance
        else:
            replaced = await suite.api.ReplaceMember(
                ipb.ReplaceMemberRequest(instance=NAME, member_id=old.id)
            )
            stored = replaced.instance
        op = next(m for m in stored.members if m.id == old.id).operation
        after = await suite.wait_instance(
            NAME,
            lambda i: is_running(i, 3) and i.plan.operation.id == op.id and i.plan.status == plans.COMPLETE,
            DEADLINE,
            f"the {kind} done",
        )
        await writer.stop()
        new = master_of(after)
        assert new.id != old.id
        present = {int(r["i"]) for r in await sql(new, password, "SELECT i FROM app.t")}
        assert [v for v in writer.committed if v not in present] == []
        assert roles.promotions == [new.id] and roles.max_masters == 1
        assert sampler.two_writable == [], f"two writable members: {sampler.two_writable[:3]}"
        old_now = next(m for m in after.members if m.id == old.id)
        assert old_now.role == T.ROLE_SLAVE and old_now.task_id != old.task_id
        if kind == "restart":
            assert old_now.volume.persistence_id == old.volume.persistence_id
            assert old_now.agent_id == old.agent_id
        else:
            assert old_now.volume.persistence_id != old.volume.persistence_id
            assert old_now.agent_id != old.agent_id

        async def resynced() -> bool:
            got = {int(r["i"]) for r in await sql(old_now, password, "SELECT i FROM app.t")}
            return set(writer.committed) <= got

        await wait_for(resynced, 60, what=f"{old.id} to hold every committed row")
    finally:
        await writer.stop()
        await sampler.stop()
        await roles.stop()
