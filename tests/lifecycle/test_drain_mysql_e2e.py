"""Maintenance of the agent of a MariaDB master (issue 11, item 8): the master is moved off it by
switchover (fenced: ``read_only`` ON and its sessions killed, then the most advanced replica on
another agent promoted), the old master rebuilt elsewhere as a replica. Every row the master
committed (semi-sync AFTER_SYNC: a commit returns once a replica has it) is on the new master;
``@@read_only`` of every member is sampled throughout: never two writable members.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pymysql
import pytest
import pytest_asyncio

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import (
    LifecycleRunner,
    Suite,
    is_running,
    master_of,
    schedule_maintenance,
    workload_in_suite,
)
from mesos_stateful.testing.workloads import mysql_test_settings, wait_for
from mesos_stateful.workloads.mysql.servicer import MysqlWorkload

from .e2e_helpers import RoleWatch

pytestmark = pytest.mark.slow

NAME = "ledger"
DEADLINE = 240.0


@pytest_asyncio.fixture
async def mysql_drain_suite(suite: Suite) -> AsyncIterator[Suite]:
    """The whole suite plus the MySQL workload service, registered in its state service."""
    settings = mysql_test_settings(suite.state.endpoint)
    async with workload_in_suite(suite, MysqlWorkload(settings)) as running:
        yield running


def _query(host: str, port: int, password: str, statement: str, *args: Any) -> list[dict[str, Any]]:
    conn = pymysql.connect(
        host=host,
        port=port,
        user="admin",
        password=password,
        connect_timeout=2,
        read_timeout=5,
        write_timeout=5,
        autocommit=True,
        cursorclass=pymysql.cursors.DictCursor,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, args or None)
            return list(cursor.fetchall())
    finally:
        conn.close()


async def sql(m: T.Member, password: str, statement: str, *args: Any) -> list[dict[str, Any]]:
    return await asyncio.to_thread(_query, m.host, m.ports["mysql"], password, statement, *args)


class CommitWriter:
    """INSERTs increasing values into the master known at start, one connection per row; keeps
    the values whose INSERT returned OK (committed under semi-sync). Errors are counted."""

    def __init__(self, master: T.Member, password: str, start: int = 1000) -> None:
        self.master = master
        self.password = password
        self.start_value = start  # values after it (a second writer's rows are its own)
        self.committed: list[int] = []
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        value = self.start_value
        while True:
            value += 1
            try:
                await sql(self.master, self.password, "INSERT INTO app.t VALUES (%s)", value)
            except Exception:  # read_only once fenced, gone once killed
                self.errors += 1
                await asyncio.sleep(0.05)
                continue
            self.committed.append(value)
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class WritableSampler:
    """Samples ``@@read_only`` of every member address ever stored; keeps the samples where more
    than one member was writable (read_only OFF)."""

    def __init__(self, suite: Suite, password: str) -> None:
        self.suite = suite
        self.password = password
        self.addresses: set[tuple[str, int]] = set()
        self.samples = 0
        self.with_one_writable = 0  # samples that saw the master writable (the sampler works)
        self.two_writable: list[list[str]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _writable(self, host: str, port: int) -> bool:
        try:
            rows = await asyncio.to_thread(
                _query, host, port, self.password, "SELECT @@global.read_only AS ro"
            )
        except Exception:
            return False
        return int(rows[0]["ro"]) == 0

    async def _run(self) -> None:
        while True:
            instance = await self.suite.instance(NAME)
            for m in instance.members if instance is not None else []:
                if m.host and "mysql" in m.ports:
                    self.addresses.add((m.host, m.ports["mysql"]))
            addresses = sorted(self.addresses)
            writable = await asyncio.gather(*(self._writable(h, p) for h, p in addresses))
            self.samples += 1
            both = [f"{h}:{p}" for (h, p), w in zip(addresses, writable, strict=True) if w]
            self.with_one_writable += len(both) == 1
            if len(both) > 1:
                self.two_writable.append(both)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def promoted(plan: T.Plan, old: str) -> bool:
    """The drain plan's failover of ``old`` is COMPLETE (the new master promoted)."""
    return plan.name == plans.DRAIN and any(
        st.name == f"failover {old}" and st.status == plans.COMPLETE for st in plan.steps
    )


@pytest.mark.agents(4)  # one member per agent (the default placement): a free agent to move to
async def test_a_mariadb_master_is_switched_over_off_its_agent_losing_no_committed_row(
    mysql_drain_suite: Suite,
) -> None:
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
        assert isinstance(suite.lifecycle, LifecycleRunner)
        paused, release = suite.lifecycle.pause_after_save(lambda p: promoted(p, old.id))
        schedule_maintenance(suite, [old.agent_id], time.time() + 3600)
        # At the promotion: the old master was demoted (read_only ON), not killed.
        await asyncio.wait_for(paused.wait(), DEADLINE)
        try:
            at = await suite.instance(NAME)
            assert at is not None
            fence = next(st for st in reversed(at.plan.steps) if st.name == f"fence {old.id}")
            assert fence.fence.method == T.FENCE_METHOD_DEMOTED, fence.message
            assert fence.message.startswith("fenced (demoted)")
            task = (await suite.tasks(NAME))[old.task_id]
            assert task.state == T.TASK_STATE_RUNNING and not task.kill_requested
            assert (await sql(old, password, "SELECT @@read_only AS ro"))[0]["ro"] == 1
        finally:
            release.set()
        drained = await suite.wait_instance(
            NAME,
            lambda i: (
                is_running(i, 3)
                and master_of(i).id != old.id
                and all(m.agent_id != old.agent_id for m in i.members)
            ),
            DEADLINE,
            f"every member off {old.agent_id}",
        )
        await writer.stop()
        new = master_of(drained)
        rows = await sql(new, password, "SELECT i FROM app.t")
        present = {int(r["i"]) for r in rows}
        assert [v for v in writer.committed if v not in present] == []
        assert roles.promotions == [new.id] and roles.max_masters == 1
        assert sampler.samples >= 3 and sampler.with_one_writable >= 1
        assert sampler.two_writable == [], f"two writable members: {sampler.two_writable[:3]}"
        old_now = next(m for m in drained.members if m.id == old.id)
        assert old_now.role == T.ROLE_SLAVE and old_now.volume.persistence_id != old.volume.persistence_id

        # The old master, rebuilt elsewhere, resynced every committed row from the new master.
        async def resynced() -> bool:
            try:
                got = {int(r["i"]) for r in await sql(old_now, password, "SELECT i FROM app.t")}
            except pymysql.err.MySQLError:
                return False
            return set(writer.committed) <= got

        await wait_for(resynced, 60, what=f"{old.id} to hold every committed row")
    finally:
        await writer.stop()
        await sampler.stop()
        await roles.stop()
