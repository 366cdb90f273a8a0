"""Rolling updates of a 3-member MariaDB (issue 15, part 1): a config change (max_connections)
and a version change (config ``version``: a second mariadbd build, a copy of the binary) roll
through the members under continuous semi-sync commits (a commit returns once a replica has it):
every committed row is on the new master, one switchover, replicas first, ``@@read_only`` of every
member sampled throughout (never two writable), observed_generation reaches generation."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite, is_running, master_of, workload_in_suite
from mesos_stateful.testing.procs import belongs_to
from mesos_stateful.testing.workloads import mysql_test_settings, wait_for
from mesos_stateful.workloads.mysql.servicer import MysqlWorkload

from .e2e_helpers import RoleWatch
from .test_drain_mysql_e2e import NAME, CommitWriter, WritableSampler, sql
from .test_update_e2e import assert_rolled_in_order, update

pytestmark = pytest.mark.slow

DEADLINE = 300.0
MARIADBD = "/usr/sbin/mariadbd"


@pytest.fixture
def next_build(tmp_path: Path) -> Path:
    """A second mariadbd build: a copy of the binary, a file of its own."""
    build = tmp_path / "mariadb-next" / "mariadbd"
    build.parent.mkdir()
    shutil.copy2(MARIADBD, build)
    return build


@pytest_asyncio.fixture
async def mysql_suite(suite: Suite, next_build: Path) -> AsyncIterator[Suite]:
    """The whole suite plus the MySQL workload service, knowing the ``next`` build."""
    settings = mysql_test_settings(suite.state.endpoint).model_copy(
        update={"mariadbd_versions": {"next": str(next_build)}}
    )
    async with workload_in_suite(suite, MysqlWorkload(settings)) as running:
        yield running


def applied(generation: int) -> Callable[[T.Instance], bool]:
    return lambda i: i.observed_generation >= generation and is_running(i, 3) and not plans.is_active(i.plan)


async def roll(
    suite: Suite, paths: list[str], check: Callable[[T.Instance, str], Awaitable[None]], **spec: Any
) -> None:
    await suite.create(NAME, 3, workload="mysql")
    before = await suite.wait_instance(NAME, applied(1), 180, "deployed, generation 1 observed")
    password = (await suite.get(NAME, secrets=True)).secrets["admin_password"]
    old = master_of(before)
    await sql(old, password, "CREATE DATABASE app")
    await sql(old, password, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    roles = RoleWatch(suite.client, NAME)
    await roles.start()
    sampler = WritableSampler(suite, password)
    sampler.start()
    writer = CommitWriter(old, password)
    writer.start()
    follower: CommitWriter | None = None
    try:

        async def writing() -> bool:
            return len(writer.committed) >= 30

        await wait_for(writing, 60, what="30 rows committed on the master")
        updated = await update(suite, paths, name=NAME, **spec)
        assert updated.generation == 2 and updated.observed_generation == 1

        async def promoted() -> bool:
            return bool(roles.promotions)

        await wait_for(promoted, DEADLINE, what="the switchover of the master")
        now = await suite.instance(NAME)
        assert now is not None
        follower = CommitWriter(master_of(now), password, start=1_000_000)
        follower.start()
        after = await suite.wait_instance(NAME, applied(2), DEADLINE, "generation 2 rolled out")

        async def following() -> bool:
            return follower is not None and len(follower.committed) >= 30

        await wait_for(following, 60, what="30 rows committed on the new master")
        await writer.stop()
        await follower.stop()
        new = master_of(after)
        present = {int(r["i"]) for r in await sql(new, password, "SELECT i FROM app.t")}
        lost = [v for v in writer.committed + follower.committed if v not in present]
        assert lost == [], f"{len(lost)} committed rows lost"
        assert roles.promotions == [new.id] and new.id != old.id and roles.max_masters == 1
        assert sampler.samples >= 3 and sampler.with_one_writable >= 1
        assert sampler.two_writable == [], f"two writable members: {sampler.two_writable[:3]}"
        assert_rolled_in_order(before, after)
        assert after.observed_generation == after.generation == 2
        await check(after, password)
    finally:
        await writer.stop()
        if follower is not None:
            await follower.stop()
        await sampler.stop()
        await roles.stop()


def mariadbd_exes(work_dir: Path) -> dict[int, str]:
    """pid -> executable of the live mariadbd processes of the cluster under ``work_dir``."""
    exes: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "mariadbd":
                continue
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        if belongs_to(int(entry.name), [work_dir]):
            exes[int(entry.name)] = exe
    return exes


async def test_a_config_change_rolls_through_a_mariadb_losing_no_committed_row(mysql_suite: Suite) -> None:
    async def check(after: T.Instance, password: str) -> None:
        for m in after.members:
            rows = await sql(m, password, "SELECT @@max_connections AS n")
            assert int(rows[0]["n"]) == 200, m.id

    await roll(mysql_suite, ["config.max_connections"], check, config={"max_connections": "200"})


async def test_a_version_change_runs_every_mariadb_member_on_the_other_build(
    mysql_suite: Suite, next_build: Path
) -> None:
    async def check(after: T.Instance, password: str) -> None:
        exes = mariadbd_exes(Path(mysql_suite.cluster.cluster.settings.work_dir))
        assert sorted(exes.values()) == [str(next_build)] * 3, exes

    await roll(mysql_suite, ["config.version"], check, config={"version": "next"})
