"""MariaDB members on persistent volumes: the datadir is reused on a relaunch in place (never
initialised again); a cold start (every member relaunched as a SLAVE with no master) and
MasterLost with candidate_ids."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest
from mysql_helpers import MASTER, NAME, SLAVE, Cluster, build, query
from test_mysql_replication import has_rows, insert, rows

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import MemberRunner, WorkloadServer, wait_for
from mesos_stateful.workloads.mysql.member_file import DATADIR
from mesos_stateful.workloads.mysql.settings import MysqlSettings


async def as_operator(cluster: Cluster, ordinal: int, statement: str) -> None:
    """A statement as the suite's own account (READ_ONLY ADMIN, no data privilege)."""
    host, port = cluster.address(ordinal)
    user = MysqlSettings(register_in_state=False).operator_user
    await asyncio.to_thread(query, host, port, statement, user=user)


async def errant_write(cluster: Cluster, ordinal: int, statement: str) -> None:
    """A write on a read-only replica, as a person would force it: read_only OFF (only the
    operator account may change it), the write as admin, read_only ON again. No account can
    write to a read-only server (see sql.OPERATOR_PRIVILEGES)."""
    await as_operator(cluster, ordinal, "SET GLOBAL read_only = OFF")
    try:
        await cluster.query(ordinal, statement)
    finally:
        await as_operator(cluster, ordinal, "SET GLOBAL read_only = ON")


async def setup_table(cluster: Cluster, *values: int) -> None:
    await cluster.query(0, "CREATE DATABASE app")
    await cluster.query(0, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    await insert(cluster, 0, *values)


async def test_datadir_reused_on_relaunch(workload: WorkloadServer, member_runner: MemberRunner) -> None:
    cluster = await build(workload, member_runner, replicas=1)
    await setup_table(cluster, 1, 2, 3)
    await wait_for(lambda: has_rows(cluster, 1, [1, 2, 3]), 30, what="rows on 1")
    datadir = cluster.volume(0) / DATADIR
    inode = datadir.stat().st_ino
    assert (datadir / "mysql").is_dir() and list(datadir.glob("mysql-bin.0*"))
    await cluster.members[0].kill()  # kill -9

    # Relaunched in place: a new task (new sandbox, new server id), the same volume and ports.
    master = await cluster.launch(0, MASTER)
    assert master.sandbox.name == f"{NAME}-0.2"
    assert "exists: restarting on it" in master.log_tail(200)
    assert "initialised" not in (master.sandbox / "stderr").read_text()
    assert datadir.stat().st_ino == inode
    await workload.stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(0)))
    assert await rows(cluster, 0) == [1, 2, 3]
    await insert(cluster, 0, 4)

    # The replica relaunched in place resumes from where it stopped (relay log and replication
    # state in its volume), without a new copy of the data.
    await cluster.members[1].kill()
    replica = await cluster.launch(1, SLAVE)
    assert "exists: restarting on it" in replica.log_tail(200)
    await workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(1)))
    await wait_for(lambda: has_rows(cluster, 1, [1, 2, 3, 4]), 30, what="row 4 on relaunched 1")


async def test_cold_start_and_master_lost_with_candidates(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    stub = workload.stub
    cluster = await build(workload, member_runner)
    await setup_table(cluster, 1, 2)
    for ordinal in (1, 2):
        await wait_for(lambda o=ordinal: has_rows(cluster, o, [1, 2]), 30, what=f"rows on {ordinal}")  # type: ignore[misc]
    await cluster.query(1, "STOP SLAVE")  # 1 stops at row 2
    await insert(cluster, 0, 3)
    await wait_for(lambda: has_rows(cluster, 2, [1, 2, 3]), 30, what="row 3 on 2")
    await cluster.query(2, "STOP SLAVE")  # 2 stops at row 3
    await insert(cluster, 0, 4)  # only on 0

    # Every member dies; each is relaunched in place as a SLAVE with no master in the instance.
    for m in cluster.members.values():
        await m.kill()
    for ordinal in range(3):
        cluster.roles[ordinal] = SLAVE
        cluster.states[ordinal] = types_pb2.MEMBER_STATE_STARTING
    for ordinal in range(3):
        member = await cluster.launch(ordinal, SLAVE, ready=False)
        assert member.launch.readiness.command.argv[-1] == "--standby"
    for ordinal in range(3):
        await cluster.members[ordinal].wait_ready(60)  # no master needed
        cluster.states[ordinal] = types_pb2.MEMBER_STATE_RUNNING
        state = (await cluster.query(ordinal, "SELECT @@read_only AS ro"))[0]
        assert state["ro"] == 1
        status = await cluster.query(ordinal, "SHOW SLAVE STATUS")
        assert not status or status[0]["Slave_IO_Running"] == "No"  # follows nobody
    assert [await rows(cluster, o) for o in range(3)] == [[1, 2, 3, 4], [1, 2], [1, 2, 3]]

    candidates = [f"{NAME}-{o}" for o in range(3)]
    lost = pb.MasterLostRequest(context=cluster.ctx(0), candidate_ids=candidates)
    answer = await stub.MasterLost(lost)
    assert answer.promote_member_id == f"{NAME}-0", answer.reason  # the context member itself
    assert all(f"{c}=" in answer.reason for c in candidates)
    without = pb.MasterLostRequest(context=cluster.ctx(0), candidate_ids=candidates[1:])
    assert (await stub.MasterLost(without)).promote_member_id == f"{NAME}-2"

    # A candidate that does not answer is waited for (UNAVAILABLE), never skipped.
    stopped = cluster.members[0].process
    assert stopped is not None
    os.killpg(stopped.pid, signal.SIGSTOP)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.MasterLost(lost)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"{NAME}-0" in (caught.value.details() or "")
    finally:
        os.killpg(stopped.pid, signal.SIGCONT)

    # Lifecycle promotes the chosen one and re-points the others.
    cluster.roles[0] = MASTER
    await stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(0)))
    assert (await stub.MasterLost(lost)).promote_member_id == f"{NAME}-0"  # a retry
    for ordinal in (1, 2):
        await stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(ordinal)))
    await insert(cluster, 0, 5)
    for ordinal in (1, 2):
        await wait_for(lambda o=ordinal: has_rows(cluster, o, [1, 2, 3, 4, 5]), 30, what=f"rows on {ordinal}")  # type: ignore[misc]


async def test_diverged_candidates_are_not_promoted(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner, replicas=1)
    await setup_table(cluster, 1)
    await wait_for(lambda: has_rows(cluster, 1, [1]), 30, what="row 1 on 1")
    await cluster.query(1, "STOP SLAVE")
    await insert(cluster, 0, 2)  # only on 0
    # An errant transaction on the replica (written by an account allowed to write to a read-only
    # server): its history forks from the master's.
    await errant_write(cluster, 1, "INSERT INTO app.t VALUES (3)")
    await as_operator(cluster, 0, "SET GLOBAL read_only = ON")
    cluster.roles[0] = SLAVE
    request = pb.MasterLostRequest(context=cluster.ctx(0), candidate_ids=[f"{NAME}-0", f"{NAME}-1"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await workload.stub.MasterLost(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "diverged" in (caught.value.details() or "")
