"""Real mariadbd members launched from Config answers: replication, readiness, failover."""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pymysql
import pytest
from google.protobuf.message import Message
from mysql_helpers import MASTER, NAME, SECRETS, SLAVE, Cluster, build, query

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import MemberRunner, WorkloadServer, wait_for
from mesos_stateful.workloads.mysql import gtid
from mesos_stateful.workloads.mysql.member_file import CATCHUP_FILE, FILE_NAME


async def rows(cluster: Cluster, ordinal: int) -> list[int]:
    try:
        result = await cluster.query(ordinal, "SELECT i FROM app.t ORDER BY i")
    except pymysql.err.ProgrammingError:  # no table yet
        return []
    return [r["i"] for r in result]


async def has_rows(cluster: Cluster, ordinal: int, expected: list[int]) -> bool:
    return await rows(cluster, ordinal) == expected


async def insert(cluster: Cluster, ordinal: int, *values: int) -> None:
    for v in values:
        await cluster.query(ordinal, "INSERT INTO app.t VALUES (%s)", v)


async def test_deploy_replicate_fail_over(workload: WorkloadServer, member_runner: MemberRunner) -> None:
    stub = workload.stub
    cluster = await build(workload, member_runner)

    # The master is writable, the replicas are read-only replicas of it.
    await cluster.query(0, "CREATE DATABASE app")
    await cluster.query(0, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    await insert(cluster, 0, 1, 2, 3)
    for ordinal in (1, 2):
        await wait_for(lambda o=ordinal: has_rows(cluster, o, [1, 2, 3]), 30, what=f"rows on {ordinal}")  # type: ignore[misc]
        status = (await stub.SlaveRunning(pb.SlaveRunningRequest(context=cluster.ctx(ordinal)))).status
        assert status["read_only"] == "ON"
        assert status["io_running"] == status["sql_running"] == "Yes"
        assert status["master"] == "{}:{}".format(*cluster.address(0))
    master_status = (await stub.MasterRunning(pb.MasterRunningRequest(context=cluster.ctx(0)))).status
    assert master_status["read_only"] == "OFF"
    assert gtid.parse(master_status["gtid_binlog_pos"])

    # Callbacks are idempotent: repeating them changes nothing.
    for attempt in (2, 3):
        await stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(0, attempt)))
        await stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(1, attempt)))
    await insert(cluster, 0, 4)
    await wait_for(lambda: has_rows(cluster, 1, [1, 2, 3, 4]), 30, what="row 4 on 1")

    # Replica 1 stops replicating: replica 2 is now the most advanced.
    await cluster.query(1, "STOP SLAVE")
    await insert(cluster, 0, 5, 6)
    await wait_for(lambda: has_rows(cluster, 2, [1, 2, 3, 4, 5, 6]), 30, what="rows 5, 6 on 2")
    assert await rows(cluster, 1) == [1, 2, 3, 4]

    # kill -9 the master.
    await cluster.members[0].kill()
    cluster.states[0] = types_pb2.MEMBER_STATE_LOST
    lost = await stub.MasterLost(pb.MasterLostRequest(context=cluster.ctx(0)))
    assert lost.promote_member_id == f"{NAME}-2", lost.reason

    # Lifecycle updates the roles, then StartMaster(new) and StartSlave(each other).
    cluster.roles[0], cluster.roles[2] = SLAVE, MASTER
    for attempt in (1, 2):
        status = (await stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(2, attempt)))).status
        assert status["read_only"] == "OFF"
    # A retried MasterLost answers the member already promoted.
    again = await stub.MasterLost(pb.MasterLostRequest(context=cluster.ctx(0, 2)))
    assert again.promote_member_id == f"{NAME}-2"
    for attempt in (1, 2):
        status = (await stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(1, attempt)))).status
        assert status["master"] == "{}:{}".format(*cluster.address(2))
    await insert(cluster, 2, 7)
    # Everything committed and replicated before the kill is on the new master and reaches the
    # re-pointed replica, with what the new master took since.
    await wait_for(lambda: has_rows(cluster, 1, [1, 2, 3, 4, 5, 6, 7]), 30, what="rows on re-pointed 1")
    assert await rows(cluster, 2) == [1, 2, 3, 4, 5, 6, 7]

    # The lost member comes back as a replica of the new master (a new task, empty sandbox).
    await cluster.launch(0, SLAVE)
    await stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(0)))
    assert await rows(cluster, 0) == [1, 2, 3, 4, 5, 6, 7]  # ready = caught up
    await insert(cluster, 2, 8)
    await wait_for(lambda: has_rows(cluster, 0, list(range(1, 9))), 30, what="row 8 on relaunched 0")
    server_ids = {(await cluster.query(o, "SELECT @@server_id AS s"))[0]["s"] for o in (0, 1, 2)}
    assert len(server_ids) == 3


async def test_replica_ready_only_when_caught_up(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner, replicas=1)
    replica = cluster.members[1]
    await cluster.query(0, "CREATE DATABASE app")
    await cluster.query(0, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    master_pos = gtid.parse((await cluster.query(0, "SELECT @@gtid_binlog_pos AS p"))[0]["p"])
    # Pretend the master was two transactions further when the replica started.
    ((domain, seq),) = master_pos.items()
    (replica.sandbox / CATCHUP_FILE).write_text(f"{domain}-1-{seq + 2}\n")
    await wait_for(lambda: has_rows(cluster, 1, []), 30, what="table on the replica")
    assert not await replica.ready()
    await insert(cluster, 0, 1)
    assert not await replica.ready()
    await insert(cluster, 0, 2)
    await wait_for(replica.ready, 30, what="replica ready once caught up")
    # Stopped replication threads: not ready.
    await cluster.query(1, "STOP SLAVE")
    assert not await replica.ready()
    await cluster.query(1, "START SLAVE")
    await wait_for(replica.ready, 30, what="replica ready again")


async def test_replica_waits_for_the_master_position_at_start(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner, replicas=0)
    await cluster.query(0, "CREATE DATABASE app")
    await cluster.query(0, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    await insert(cluster, 0, *range(1, 201))
    position = (await cluster.query(0, "SELECT @@gtid_binlog_pos AS p"))[0]["p"]
    cluster.roles[1] = SLAVE
    replica = await cluster.launch(1, SLAVE)
    assert (replica.sandbox / CATCHUP_FILE).read_text().strip() == position
    # Ready means caught up: every row is there at once.
    assert len(await rows(cluster, 1)) == 200


async def test_secrets_private_and_required(workload: WorkloadServer, member_runner: MemberRunner) -> None:
    cluster = await build(workload, member_runner, replicas=1)
    for member in cluster.members.values():
        assert member.process is not None
        cmdline = Path(f"/proc/{member.process.pid}/cmdline").read_bytes().decode()  # noqa: ASYNC240
        assert "pw" not in cmdline and "re'pl" not in cmdline
        for name in ("my.cnf", FILE_NAME, "init.sql"):
            assert stat.S_IMODE(os.stat(member.sandbox / name).st_mode) == 0o600
        assert SECRETS["admin_password"] not in (member.sandbox / "my.cnf").read_text()
    host, port = cluster.address(0)
    # No password-less account is left (the installer's root accounts are gone or protected).
    for user in ("root", ""):
        with pytest.raises(pymysql.err.OperationalError):
            pymysql.connect(host=host, port=port, user=user, password="", connect_timeout=3)
    # The replication account may replicate, not read data.
    conn = pymysql.connect(
        host=host, port=port, user="replicator", password=SECRETS["replication_password"], connect_timeout=3
    )
    with conn.cursor() as cursor, pytest.raises(pymysql.err.OperationalError):
        cursor.execute("SELECT * FROM mysql.user")
    conn.close()
    # Replicas refuse writes from users without the read-only override.
    await cluster.query(0, "CREATE USER app@'%' IDENTIFIED BY 'x'")
    await cluster.query(0, "GRANT ALL ON appdb.* TO app@'%'")
    await cluster.query(0, "CREATE DATABASE appdb")
    await cluster.query(0, "CREATE TABLE appdb.t (i INT)")
    await wait_for(lambda: _has_table(host, cluster.address(1)[1]), 30, what="appdb.t on the replica")
    replica = pymysql.connect(
        host=host, port=cluster.address(1)[1], user="app", password="x", autocommit=True
    )
    with replica.cursor() as cursor, pytest.raises(pymysql.err.OperationalError, match="read-only"):
        cursor.execute("INSERT INTO appdb.t VALUES (1)")
    replica.close()
    # Even the admin account cannot write to a replica by mistake.
    with pytest.raises(pymysql.err.OperationalError, match="read-only"):
        await cluster.query(1, "INSERT INTO appdb.t VALUES (2)")
    await cluster.query(0, "INSERT INTO appdb.t VALUES (3)")


async def _has_table(host: str, port: int) -> bool:
    try:
        query(host, port, "SELECT * FROM appdb.t")
        return True
    except pymysql.err.ProgrammingError:
        return False


async def test_unreachable_members_are_unavailable(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner, replicas=1)
    await cluster.members[1].kill()
    # The replica is still shown RUNNING (lifecycle has not noticed): MasterLost cannot reach it.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await workload.stub.MasterLost(pb.MasterLostRequest(context=cluster.ctx(0)))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(1)))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    await cluster.members[0].kill()
    # Two RPCs with their requests (of different types: Any is the one parameter type they share).
    calls: tuple[tuple[Callable[[Any], Awaitable[object]], Message], ...] = (
        (workload.stub.StartMaster, pb.StartMasterRequest(context=cluster.ctx(0))),
        (workload.stub.MasterRunning, pb.MasterRunningRequest(context=cluster.ctx(0))),
    )
    for call, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(request)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    # A replica's Config while the master has no address yet: retry later.
    cluster.members.pop(0)
    cluster.roles[1] = SLAVE
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await workload.stub.Config(pb.ConfigRequest(context=cluster.ctx(1)))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_master_lost_without_running_replicas_names_none(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner, replicas=0)
    lost = await workload.stub.MasterLost(pb.MasterLostRequest(context=cluster.ctx(0)))
    assert lost.promote_member_id == ""
    described = (await workload.stub.Describe(pb.DescribeRequest())).description
    assert described.name == "mysql" and described.topology == types_pb2.TOPOLOGY_MASTER_REPLICA
