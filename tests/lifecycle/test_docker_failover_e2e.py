"""The Redis and MySQL failovers of test_e2e_failover.py / test_mysql_e2e.py (and the etcd peer
replacement of test_etcd_e2e.py) with the Docker runtime: members are containers of the suite's
images (``make images``) on the real engine, started by the executors of the local cluster. A
member's container is killed with the engine (``docker kill``, SIGKILL, found by its labels): for a
master, a replica holding every acknowledged write is promoted, exactly once, never two masters;
the killed member comes back as a new container.

The engine is shared: instances get names of their own, and containers are found by the
instance / member / task labels the executor sets (common.images)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

import docker
import pymysql
import pymysql.cursors
import pytest
import pytest_asyncio
from docker.models.containers import Container

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.common.images import (
    ETCD_IMAGE,
    LABEL_INSTANCE,
    LABEL_MEMBER,
    LABEL_TASK,
    MARIADB_IMAGE,
    REDIS_IMAGE,
)
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite, master_of, workload_in_suite
from mesos_stateful.testing.workloads import etcd_test_settings, mysql_test_settings, wait_for
from mesos_stateful.workloads.etcd import members as etcd_members
from mesos_stateful.workloads.etcd.servicer import EtcdWorkload
from mesos_stateful.workloads.mysql.servicer import MysqlWorkload

from .e2e_helpers import RoleWatch, missing_keys, password, replication_info, write_acknowledged

pytestmark = pytest.mark.slow

DOCKER = T.RUNTIME_DOCKER


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def containers(
    client: docker.DockerClient, instance: str, member: str = "", task: str = "", every: bool = False
) -> list[Container]:
    labels = [f"{LABEL_INSTANCE}={instance}"]
    labels += [f"{LABEL_MEMBER}={member}"] if member else []
    labels += [f"{LABEL_TASK}={task}"] if task else []
    found: list[Container] = client.containers.list(all=every, filters={"label": labels})
    return found


async def kill_container(client: docker.DockerClient, instance: str, member: T.Member) -> None:
    """``docker kill`` (SIGKILL through the engine) of the member's running container."""
    (container,) = await asyncio.to_thread(containers, client, instance, member.id, member.task_id)
    await asyncio.to_thread(container.kill)


async def running_containers(client: docker.DockerClient, instance: T.Instance, image: str) -> None:
    """Every member runs as exactly one running container of ``image``, its current task's."""
    name = instance.spec.name
    for m in instance.members:
        found = await asyncio.to_thread(containers, client, name, m.id)
        assert [c.labels[LABEL_TASK] for c in found] == [m.task_id], (m.id, [c.name for c in found])
        assert found[0].image is not None and found[0].image.tags == [image]


async def none_left(client: docker.DockerClient, name: str) -> bool:
    return not await asyncio.to_thread(containers, client, name, "", "", True)


def _member(instance: T.Instance, member_id: str) -> T.Member:
    return next(m for m in instance.members if m.id == member_id)


def failed_over(old_master: str, members: int = 3) -> Callable[[T.Instance], bool]:
    def done(i: T.Instance) -> bool:
        masters = [m for m in i.members if m.role == T.ROLE_MASTER]
        return (
            i.phase == T.INSTANCE_PHASE_RUNNING
            and len(i.members) == members
            and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
            and len(masters) == 1
            and masters[0].id != old_master
            and _member(i, old_master).incarnation >= 2
        )

    return done


async def test_redis_master_container_killed_fails_over_without_losing_acknowledged_writes(
    suite: Suite, docker_images: None, docker_client: docker.DockerClient
) -> None:
    name = unique("dcache")
    created = await suite.create(name, 3, runtime=DOCKER)
    assert created.spec.runtime == DOCKER
    instance = await suite.wait_running(name, 3, timeout=180)
    await running_containers(docker_client, instance, REDIS_IMAGE)
    secret = await password(suite, name)
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 500, replicas=1)  # WAIT 1
    roles = RoleWatch(suite.client, name)
    await roles.start()

    await kill_container(docker_client, name, old)

    instance = await suite.wait_instance(name, failed_over(old.id), 180, "failed over, 3 members running")
    await roles.stop()
    new_master = master_of(instance)
    assert new_master.incarnation == 1, "the promoted replica keeps its container"
    assert instance.plan.name == plans.RECOVERY and instance.plan.status == plans.COMPLETE
    assert f"master {old.id} lost" in instance.plan.reason
    assert roles.promotions == [new_master.id], "exactly one promotion"
    assert roles.max_masters == 1, "never two MASTER members"
    assert await missing_keys(new_master, secret, written) == [], "an acknowledged write was lost"
    info = await replication_info(new_master, secret)
    assert info["role"] == "master" and info["connected_slaves"] == 2
    relaunched = _member(instance, old.id)
    assert relaunched.role == T.ROLE_SLAVE
    assert await missing_keys(relaunched, secret, written) == []
    # The replacement is a new container of its new task; the killed one is gone.
    await running_containers(docker_client, instance, REDIS_IMAGE)
    await wait_for(
        lambda: _task_gone(docker_client, name, old.task_id), 30, what="the killed container removed"
    )

    await suite.api.DeleteInstance(api.DeleteInstanceRequest(name=name))
    await suite.wait_gone(name, 120)
    await wait_for(lambda: none_left(docker_client, name), 30, what="no member container left")


async def _task_gone(client: docker.DockerClient, name: str, task_id: str) -> bool:
    return not await asyncio.to_thread(containers, client, name, "", task_id, True)


# --- MySQL -------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def mysql_suite(suite: Suite) -> AsyncIterator[Suite]:
    """The suite plus the MySQL workload service (as tests/workloads/mysql/conftest.py has it)."""
    settings = mysql_test_settings(suite.state.endpoint)
    async with workload_in_suite(suite, MysqlWorkload(settings)) as running:
        yield running


def sql(member: T.Member, secret: str, statement: str, *args: object) -> list[dict[str, object]]:
    conn = pymysql.connect(
        host=member.host,
        port=member.ports["mysql"],
        user="admin",
        password=secret,
        connect_timeout=3,
        read_timeout=15,
        autocommit=True,
        cursorclass=pymysql.cursors.DictCursor,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, args or None)
            return list(cursor.fetchall())
    finally:
        conn.close()


async def rows(member: T.Member, secret: str) -> list[int]:
    try:
        result = await asyncio.to_thread(sql, member, secret, "SELECT i FROM app.t ORDER BY i")
    except (pymysql.err.ProgrammingError, pymysql.err.OperationalError):
        return []
    return [int(str(r["i"])) for r in result]


def mysql_running(i: T.Instance, members: int) -> bool:
    return (
        i.phase == T.INSTANCE_PHASE_RUNNING
        and len(i.members) == members
        and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
        and sum(m.role == T.ROLE_MASTER for m in i.members) == 1
    )


async def test_mysql_master_container_killed_fails_over_keeping_committed_rows(
    mysql_suite: Suite, docker_images: None, docker_client: docker.DockerClient
) -> None:
    suite = mysql_suite
    name = unique("dshop")
    await suite.create(name, 3, workload="mysql", runtime=DOCKER)
    instance = await suite.wait_instance(name, lambda i: mysql_running(i, 3), 240, "3 members running")
    await running_containers(docker_client, instance, MARIADB_IMAGE)
    secret = (await suite.get(name, secrets=True)).secrets["admin_password"]
    master = master_of(instance)

    await asyncio.to_thread(sql, master, secret, "CREATE DATABASE app")
    await asyncio.to_thread(sql, master, secret, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    # Each INSERT returns once committed: semi-sync, a replica has it in its relay log.
    for i in range(1, 51):
        await asyncio.to_thread(sql, master, secret, "INSERT INTO app.t VALUES (%s)", i)
    committed = list(range(1, 51))
    roles = RoleWatch(suite.client, name)
    await roles.start()

    await kill_container(docker_client, name, master)

    instance = await suite.wait_instance(name, failed_over(master.id), 240, "failed over")
    await roles.stop()
    new_master = master_of(instance)
    assert roles.promotions == [new_master.id], "exactly one promotion"
    assert roles.max_masters == 1, "never two MASTER members"
    assert await rows(new_master, secret) == committed, "a committed row was lost"
    await asyncio.to_thread(sql, new_master, secret, "INSERT INTO app.t VALUES (51)")
    committed.append(51)
    for m in instance.members:
        await wait_for(lambda m=m: _has(m, secret, committed), 60, what=f"rows on {m.id}")  # type: ignore[misc]
        read_only = (await asyncio.to_thread(sql, m, secret, "SELECT @@read_only AS r"))[0]["r"]
        assert read_only == (0 if m.id == new_master.id else 1)
    await running_containers(docker_client, instance, MARIADB_IMAGE)
    await wait_for(
        lambda: _task_gone(docker_client, name, master.task_id), 30, what="the killed container removed"
    )

    await suite.api.DeleteInstance(api.DeleteInstanceRequest(name=name))
    await suite.wait_gone(name, 120)
    await wait_for(lambda: none_left(docker_client, name), 30, what="no member container left")


async def _has(member: T.Member, secret: str, expected: list[int]) -> bool:
    return await rows(member, secret) == expected


# --- etcd --------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def etcd_suite(suite: Suite) -> AsyncIterator[Suite]:
    """The suite plus the etcd workload service (as tests/workloads/etcd/conftest.py has it)."""
    settings = etcd_test_settings(suite.state.endpoint)
    async with workload_in_suite(suite, EtcdWorkload(settings)) as running:
        yield running


def etcd_url(m: T.Member) -> str:
    return f"http://{m.host}:{m.ports['client']}"


async def test_etcd_peer_container_killed_is_replaced_keeping_the_data(
    etcd_suite: Suite, docker_images: None, docker_client: docker.DockerClient
) -> None:
    suite = etcd_suite
    name = unique("dkv")
    await suite.create(name, 3, workload="etcd", runtime=DOCKER)

    def peers_running(i: T.Instance) -> bool:
        return (
            i.phase == T.INSTANCE_PHASE_RUNNING
            and len(i.members) == 3
            and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
        )

    instance = await suite.wait_instance(name, peers_running, 180, "3 peers running")
    await running_containers(docker_client, instance, ETCD_IMAGE)
    async with etcd_members.Client(etcd_url(instance.members[0]), 5) as c:
        await c.put("k", "v1")  # returns once committed (a Raft quorum has it)

    victim = instance.members[1]
    await kill_container(docker_client, name, victim)

    def replaced(i: T.Instance) -> bool:
        return peers_running(i) and _member(i, victim.id).incarnation >= 2

    instance = await suite.wait_instance(name, replaced, 180, "peer replaced")
    async with etcd_members.Client(etcd_url(instance.members[0]), 5) as c:
        names = sorted(x.name for x in await c.members())
    assert names == sorted(f"{m.id}.{m.incarnation}" for m in instance.members)
    for m in instance.members:
        async with etcd_members.Client(etcd_url(m), 5) as c:
            assert await c.get("k") == "v1", f"the committed key through {m.id}"
    await running_containers(docker_client, instance, ETCD_IMAGE)

    await suite.api.DeleteInstance(api.DeleteInstanceRequest(name=name))
    await suite.wait_gone(name, 120)
    await wait_for(lambda: none_left(docker_client, name), 30, what="no member container left")
