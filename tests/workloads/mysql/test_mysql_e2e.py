"""End to end through the public API: real mariadbd members on the local cluster, created,
written to, failed over, scaled and deleted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pymysql
import pytest
from mysql_helpers import query

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.testing.lifecycle import Suite, master_of
from mesos_stateful.testing.workloads import member_pids, wait_for

pytestmark = pytest.mark.slow

NAME = "shop"


def mariadbd_pids(suite: Suite, instance: str, member_id: str | None = None) -> list[int]:
    return member_pids("mariadbd", suite.cluster.cluster.settings.work_dir, instance, member_id)


def sql(member: T.Member, password: str, statement: str, *args: object) -> list[dict[str, object]]:
    return query(member.host, member.ports["mysql"], statement, *args, password=password)


async def rows(member: T.Member, password: str) -> list[int]:
    try:
        result = await asyncio.to_thread(sql, member, password, "SELECT i FROM app.t ORDER BY i")
    except (pymysql.err.ProgrammingError, pymysql.err.OperationalError):
        return []
    return [int(str(r["i"])) for r in result]


def running(i: T.Instance, members: int) -> bool:
    return (
        i.phase == T.INSTANCE_PHASE_RUNNING
        and len(i.members) == members
        and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
        and sum(m.role == T.ROLE_MASTER for m in i.members) == 1
    )


async def test_mysql_create_fail_over_scale_delete(mysql_suite: Suite) -> None:
    suite = mysql_suite
    await suite.create(NAME, 3, workload="mysql", config={"max_connections": "50"})
    instance = await suite.wait_instance(NAME, lambda i: running(i, 3), 180, "3 members running")
    password = (await suite.get(NAME, secrets=True)).secrets["admin_password"]
    master = master_of(instance)
    assert master.ordinal == 0

    await asyncio.to_thread(sql, master, password, "CREATE DATABASE app")
    await asyncio.to_thread(sql, master, password, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    for i in range(1, 51):
        await asyncio.to_thread(sql, master, password, "INSERT INTO app.t VALUES (%s)", i)
    expected = list(range(1, 51))
    for m in instance.members[1:]:
        await wait_for(lambda m=m: _has(m, password, expected), 60, what=f"rows on {m.id}")  # type: ignore[misc]

    # kill -9 the master: the most advanced replica is promoted, the old master comes back as a
    # replica of it, and nothing acknowledged is lost.
    pids = mariadbd_pids(suite, NAME, master.id)
    assert len(pids) == 1
    os.kill(pids[0], 9)

    def failed_over(i: T.Instance) -> bool:
        old = next(m for m in i.members if m.id == master.id)
        return running(i, 3) and master_of(i).id != master.id and old.incarnation == 2

    instance = await suite.wait_instance(NAME, failed_over, 180, "failed over")
    new_master = master_of(instance)
    assert await rows(new_master, password) == expected
    await asyncio.to_thread(sql, new_master, password, "INSERT INTO app.t VALUES (51)")
    expected.append(51)
    for m in instance.members:
        await wait_for(lambda m=m: _has(m, password, expected), 60, what=f"rows on {m.id}")  # type: ignore[misc]
        read_only = (await asyncio.to_thread(sql, m, password, "SELECT @@read_only AS r"))[0]["r"]
        assert read_only == (0 if m.id == new_master.id else 1)

    # Scale down to the master alone, then delete: nothing is left running.
    await suite.api.ScaleInstance(api.ScaleInstanceRequest(name=NAME, replicas=1))
    instance = await suite.wait_instance(NAME, lambda i: running(i, 1), 120, "scaled to 1")
    assert [m.id for m in instance.members] == [new_master.id]
    assert await rows(new_master, password) == expected
    await suite.api.DeleteInstance(api.DeleteInstanceRequest(name=NAME))
    await suite.wait_gone(NAME, 120)
    await wait_for(lambda: _none_left(suite, NAME), 30, what="no mariadbd left")


async def _has(member: T.Member, password: str, expected: list[int]) -> bool:
    return await rows(member, password) == expected


async def _none_left(suite: Suite, instance: str) -> bool:
    return not mariadbd_pids(suite, instance)


async def test_mysql_every_member_killed_restarts_in_place_with_its_rows(mysql_suite: Suite) -> None:
    """kill -9 of every mariadbd at once → each restarts on its volume (same volume, same agent),
    the member with the most advanced GTID position leads, every committed row is there."""
    suite = mysql_suite
    await suite.create(NAME, 3, workload="mysql")
    instance = await suite.wait_instance(NAME, lambda i: running(i, 3), 180, "3 members running")
    password = (await suite.get(NAME, secrets=True)).secrets["admin_password"]
    master = master_of(instance)
    await asyncio.to_thread(sql, master, password, "CREATE DATABASE app")
    await asyncio.to_thread(sql, master, password, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    expected = list(range(1, 31))
    for i in expected:
        await asyncio.to_thread(sql, master, password, "INSERT INTO app.t VALUES (%s)", i)
    for m in instance.members[1:]:
        await wait_for(lambda m=m: _has(m, password, expected), 60, what=f"rows on {m.id}")  # type: ignore[misc]
    volumes = {m.id: (m.volume.persistence_id, m.volume.agent_id) for m in instance.members}
    before = {m.id: m.incarnation for m in instance.members}

    pids = mariadbd_pids(suite, NAME)
    assert len(pids) == 3
    for pid in pids:
        os.kill(pid, 9)

    def restarted(i: T.Instance) -> bool:
        return running(i, 3) and all(m.incarnation > before[m.id] for m in i.members)

    after = await suite.wait_instance(NAME, restarted, 240, "every member restarted and ready")
    assert {m.id: (m.volume.persistence_id, m.volume.agent_id) for m in after.members} == volumes
    new_master = master_of(after)
    assert await rows(new_master, password) == expected
    await asyncio.to_thread(sql, new_master, password, "INSERT INTO app.t VALUES (31)")
    expected.append(31)
    for m in after.members:
        await wait_for(lambda m=m: _has(m, password, expected), 60, what=f"rows on {m.id}")  # type: ignore[misc]


async def test_mysql_stopped_replicas_then_master_killed_restart_in_place(mysql_suite: Suite) -> None:
    """kill -STOP both replicas, kill -9 the master: the failover waits for the stopped replicas
    (never skips them); their health checks (a login) kill them; every member restarts in place and
    the most advanced leads, with every committed row."""
    suite = mysql_suite
    await suite.create(NAME, 3, workload="mysql")
    instance = await suite.wait_instance(NAME, lambda i: running(i, 3), 180, "3 members running")
    password = (await suite.get(NAME, secrets=True)).secrets["admin_password"]
    master = master_of(instance)
    await asyncio.to_thread(sql, master, password, "CREATE DATABASE app")
    await asyncio.to_thread(sql, master, password, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    expected = list(range(1, 21))
    for i in expected:
        await asyncio.to_thread(sql, master, password, "INSERT INTO app.t VALUES (%s)", i)
    for m in instance.members[1:]:
        await wait_for(lambda m=m: _has(m, password, expected), 60, what=f"rows on {m.id}")  # type: ignore[misc]
    before = {m.id: m.incarnation for m in instance.members}

    stopped = [pid for m in instance.members if m.id != master.id for pid in mariadbd_pids(suite, NAME, m.id)]
    assert len(stopped) == 2
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        (victim,) = mariadbd_pids(suite, NAME, master.id)
        os.kill(victim, 9)

        def restarted(i: T.Instance) -> bool:
            return running(i, 3) and all(m.incarnation > before[m.id] for m in i.members)

        after = await suite.wait_instance(NAME, restarted, 240, "every member restarted and ready")
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    new_master = master_of(after)
    assert await rows(new_master, password) == expected
    for m in after.members:
        await wait_for(lambda m=m: _has(m, password, expected), 60, what=f"rows on {m.id}")  # type: ignore[misc]
        read_only = (await asyncio.to_thread(sql, m, password, "SELECT @@read_only AS r"))[0]["r"]
        assert read_only == (0 if m.id == new_master.id else 1)
