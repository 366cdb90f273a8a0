"""Real mariadbd members: CheckMember, semi-sync (what "acknowledged" means), Fence (demote or
self-fence) and the issue 9 reproduction (a stopped candidate is waited for, never skipped)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pymysql
import pytest
from google.protobuf.message import Message
from mysql_helpers import MASTER, NAME, SECRETS, SLAVE, Cluster, build, query
from test_mysql_replication import has_rows, insert, rows
from test_mysql_volume import as_operator, errant_write, setup_table

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import MemberRunner, WorkloadServer, wait_for
from mesos_stateful.workloads.mysql.member_file import DATADIR
from mesos_stateful.workloads.mysql.settings import MysqlSettings


def mid(ordinal: int) -> str:
    return f"{NAME}-{ordinal}"


def pid_of(cluster: Cluster, ordinal: int) -> int:
    """The member's mariadbd, found by the pid we started and checked against its own sandbox."""
    process = cluster.members[ordinal].process
    assert process is not None and process.returncode is None
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
    assert str(cluster.members[ordinal].sandbox) in cmdline, cmdline
    return process.pid


@contextlib.contextmanager
def stopped(cluster: Cluster, *ordinals: int) -> Iterator[None]:
    """SIGSTOP the members' mariadbd (by pid); SIGCONT on the way out."""
    pids = [pid_of(cluster, o) for o in ordinals]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def check(
    workload: WorkloadServer, cluster: Cluster, ordinal: int, timeout: float = 1.0
) -> T.MemberHealth:
    request = pb.CheckMemberRequest(context=cluster.ctx(ordinal), timeout_seconds=timeout)
    return (await workload.stub.CheckMember(request)).health


def kinds(health: T.MemberHealth) -> dict[str, tuple[bool, str]]:
    return {
        T.ConditionType.Name(c.type).removeprefix("CONDITION_TYPE_"): (c.ok, c.reason)
        for c in health.conditions
    }


async def healthy(workload: WorkloadServer, cluster: Cluster, ordinal: int) -> bool:
    health = await check(workload, cluster, ordinal)
    return all(ok for ok, _ in kinds(health).values()) and health.repair == T.REPAIR_UNSPECIFIED


async def semi_sync(workload: WorkloadServer, cluster: Cluster, *replicas: int) -> None:
    """SlaveRunning of each replica, as lifecycle calls it once ready: the master turns semi-sync on."""
    for ordinal in replicas:
        await workload.stub.SlaveRunning(pb.SlaveRunningRequest(context=cluster.ctx(ordinal)))
    status = (await workload.stub.MasterRunning(pb.MasterRunningRequest(context=cluster.ctx(0)))).status
    assert status["semi_sync_master"] == "ON"


def blocking_insert(cluster: Cluster, ordinal: int, value: int, timeout: float, user: str = "admin") -> str:
    """INSERT with a client read timeout: "ok", or the error the client got."""
    host, port = cluster.address(ordinal)
    try:
        query(host, port, "INSERT INTO app.t VALUES (%s)", value, user=user, read_timeout=timeout)
        return "ok"
    except pymysql.err.MySQLError as error:
        return f"{type(error).__name__}: {error}"


async def test_check_member_sees_stopped_and_chained_replicas_and_start_slave_repairs(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    cluster = await build(workload, member_runner)
    await setup_table(cluster, 1, 2)
    master = await check(workload, cluster, 0)
    assert kinds(master) == {"REACHABLE": (True, ""), "REPLICATING": (True, "")}
    assert master.observed_role == T.ROLE_MASTER and master.position
    for ordinal in (1, 2):
        await wait_for(lambda o=ordinal: healthy(workload, cluster, o), 30, what=f"{ordinal} healthy")  # type: ignore[misc]
    replica = await check(workload, cluster, 1)
    assert replica.following == "{}:{}".format(*cluster.address(0)) and replica.lag == 0
    assert replica.observed_role == T.ROLE_SLAVE and replica.position == master.position

    # A stopped IO thread: REPOINT, and StartSlave repairs it.
    await as_operator(cluster, 1, "STOP SLAVE IO_THREAD")
    stopped_io = await check(workload, cluster, 1)
    assert kinds(stopped_io)["REPLICATING"] == (False, "IoThreadStopped")
    assert stopped_io.repair == T.REPAIR_REPOINT
    await insert(cluster, 0, 3)
    await workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(1)))
    await wait_for(lambda: healthy(workload, cluster, 1), 30, what="1 repaired")
    assert await rows(cluster, 1) == [1, 2, 3]

    # A chained replica (2 follows 1): REPOINT; StartSlave points it at the master again.
    host, port = cluster.address(1)
    await as_operator(cluster, 2, "STOP SLAVE")
    await as_operator(cluster, 2, f"CHANGE MASTER TO MASTER_HOST='{host}', MASTER_PORT={port}")
    await as_operator(cluster, 2, "START SLAVE")
    chained = await check(workload, cluster, 2)
    assert kinds(chained)["REPLICATING"] == (False, "Chained") and chained.repair == T.REPAIR_REPOINT
    assert chained.following == f"{host}:{port}"
    await workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(2)))
    await wait_for(lambda: healthy(workload, cluster, 2), 30, what="2 re-pointed")
    assert (await check(workload, cluster, 2)).following == "{}:{}".format(*cluster.address(0))

    # A master that does not answer within the timeout: UNAVAILABLE, within about that time.
    with stopped(cluster, 0):
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(workload, cluster, 0, timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 2.0
        # A replica's own check still answers; what needs the master is left out.
        replica = await check(workload, cluster, 1, timeout=0.5)
        assert set(kinds(replica)) == {"REACHABLE", "REPLICATING"}


async def test_the_master_probe_keeps_its_connection_and_reconnects_when_it_is_killed(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    # The master's failure probe runs several times a second: a fresh connection each time (with
    # its handshake) made probes of a healthy MariaDB miss their deadline on a loaded machine.
    cluster = await build(workload, member_runner, replicas=0)

    async def connections() -> int:
        row = (await cluster.query(0, "SHOW GLOBAL STATUS LIKE 'Connections'"))[0]
        return int(row["Value"])

    await check(workload, cluster, 0)
    before = await connections()
    for _ in range(20):
        assert (await check(workload, cluster, 0)).observed_role == T.ROLE_MASTER
    # The probes opened no connection; only the counter's own read did.
    assert await connections() - before <= 1

    # Its session killed (as Fence kills every client session): the next probe reconnects.
    sessions = await cluster.query(
        0, "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND command <> 'Daemon'"
    )
    assert sessions, "the probe's kept session"
    for row in sessions:
        with contextlib.suppress(pymysql.err.MySQLError):
            await cluster.query(0, f"KILL {int(row['id'])}")
    assert (await check(workload, cluster, 0)).observed_role == T.ROLE_MASTER


async def test_diverged_replica_is_found_rebuilt_and_never_promoted(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    stub = workload.stub
    cluster = await build(workload, member_runner)
    await setup_table(cluster, 1)
    for ordinal in (1, 2):
        await wait_for(lambda o=ordinal: has_rows(cluster, o, [1]), 30, what=f"row 1 on {ordinal}")  # type: ignore[misc]
    # 2 stops, and a person forces a write on it: a transaction its master never had.
    await as_operator(cluster, 2, "STOP SLAVE")
    await errant_write(cluster, 2, "INSERT INTO app.t VALUES (100)")
    await insert(cluster, 0, 2)
    await wait_for(lambda: has_rows(cluster, 1, [1, 2]), 30, what="row 2 on 1")
    diverged = await check(workload, cluster, 2)
    assert kinds(diverged)["CONSISTENT"] == (False, "Diverged")
    assert diverged.repair == T.REPAIR_REBUILD
    assert kinds(await check(workload, cluster, 1))["CONSISTENT"] == (True, "")

    # MariaDB agrees: re-pointed, the master refuses its position (error 1236).
    await stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(2)))

    async def refused() -> bool:
        health = await check(workload, cluster, 2)
        return (
            kinds(health)["REPLICATING"] == (False, "ReplicationError") and health.repair == T.REPAIR_REBUILD
        )

    await wait_for(refused, 30, what="error 1236 on 2")
    status = await cluster.query(2, "SHOW SLAVE STATUS")
    assert status[0]["Last_IO_Errno"] == 1236, status[0]["Last_IO_Error"]

    # The master is lost: 2 has the highest sequence number, yet it is never promoted.
    position = (await check(workload, cluster, 0)).position
    await cluster.members[0].kill()
    cluster.states[0] = T.MEMBER_STATE_LOST
    request = pb.MasterLostRequest(
        context=cluster.ctx(0), candidate_ids=[mid(1), mid(2)], master_position=position
    )
    answer = await stub.MasterLost(request)
    assert answer.promote_member_id == mid(1), answer.reason
    assert f"{mid(2)} diverged" in answer.reason
    assert set(answer.positions) == {mid(1), mid(2)}
    assert answer.positions[mid(1)] == position
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.MasterLost(
            pb.MasterLostRequest(context=cluster.ctx(0), candidate_ids=[mid(2)], master_position=position)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_semi_sync_a_write_returns_only_once_a_replica_has_it(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    stub = workload.stub
    cluster = await build(workload, member_runner)
    await setup_table(cluster)  # before any replica is ready: semi-sync is off, nothing waits
    await semi_sync(workload, cluster, 1, 2)
    await insert(cluster, 0, 1)
    for ordinal in (1, 2):
        await wait_for(lambda o=ordinal: has_rows(cluster, o, [1]), 30, what=f"row 1 on {ordinal}")  # type: ignore[misc]
        await as_operator(cluster, ordinal, "STOP SLAVE IO_THREAD")

    # No replica attached: the commit does not return, and no replica (nor any reader) has it.
    outcome = await asyncio.to_thread(blocking_insert, cluster, 0, 2, 3.0)
    assert "timed out" in outcome, outcome
    for ordinal in (0, 1, 2):
        assert await rows(cluster, ordinal) == [1]
    # A replica attaches: the waiting commit completes, and new writes return at once.
    await as_operator(cluster, 1, "START SLAVE IO_THREAD")
    await wait_for(lambda: has_rows(cluster, 1, [1, 2]), 30, what="row 2 on 1")
    started = time.monotonic()
    assert await asyncio.to_thread(blocking_insert, cluster, 0, 3, 10.0) == "ok"
    assert time.monotonic() - started < 3
    assert 3 in await rows(cluster, 1)

    # Scaled down: while a replica is left the master stays semi-sync; with none, it stops waiting.
    await stub.RemoveMember(pb.RemoveMemberRequest(context=cluster.ctx(2)))
    status = (await stub.MasterRunning(pb.MasterRunningRequest(context=cluster.ctx(0)))).status
    assert status["semi_sync_master"] == "ON"
    await cluster.members[2].stop()
    for mapping in (cluster.roles, cluster.members, cluster.incarnations):
        mapping.pop(2)
    await stub.RemoveMember(pb.RemoveMemberRequest(context=cluster.ctx(1)))
    await as_operator(cluster, 1, "STOP SLAVE IO_THREAD")
    assert await asyncio.to_thread(blocking_insert, cluster, 0, 4, 5.0) == "ok"


async def test_fence_demotes_a_reachable_master_and_no_account_can_write(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    stub = workload.stub
    cluster = await build(workload, member_runner, replicas=1)
    await setup_table(cluster, 1)
    await semi_sync(workload, cluster, 1)
    # One client waits for an acknowledgement that will not come (the replica detached), which
    # blocks SET GLOBAL read_only; another just has a session open.
    await as_operator(cluster, 1, "STOP SLAVE IO_THREAD")
    waiting = asyncio.create_task(asyncio.to_thread(blocking_insert, cluster, 0, 2, 30.0))
    host, port = cluster.address(0)
    idle = pymysql.connect(host=host, port=port, user="admin", password=SECRETS["admin_password"])

    async def waits() -> bool:
        rows = await cluster.query(
            0, "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE STATE LIKE '%semi-sync%'"
        )
        one_waits: bool = rows[0]["n"] == 1
        return one_waits

    await wait_for(waits, 10, what="a commit waiting for its acknowledgement")

    request = pb.FenceRequest(context=cluster.ctx(0), replica_ids=[mid(1)])
    for _ in range(2):  # idempotent
        fenced = await stub.Fence(request)
        assert fenced.method == T.FENCE_METHOD_DEMOTED, fenced.detail
        assert "read_only ON" in fenced.detail
    outcome = await waiting
    assert outcome != "ok" and "timed out" not in outcome  # killed: the client got no OK
    with pytest.raises(pymysql.err.OperationalError):
        idle.ping(reconnect=False)
    assert (await cluster.query(0, "SELECT @@read_only AS r"))[0]["r"] == 1

    # Nobody writes to it now: people's admin, root on the socket, the suite's own account.
    with pytest.raises(pymysql.err.OperationalError, match="read-only"):
        await cluster.query(0, "INSERT INTO app.t VALUES (3)")
    sock = cluster.volume(0) / DATADIR / "mysqld.sock"
    root = pymysql.connect(
        unix_socket=str(sock), user="root", password=SECRETS["admin_password"], autocommit=True
    )
    with root.cursor() as cursor, pytest.raises(pymysql.err.OperationalError, match="read-only"):
        cursor.execute("INSERT INTO app.t VALUES (4)")
    root.close()
    operator = MysqlSettings(register_in_state=False).operator_user
    assert "denied" in await asyncio.to_thread(blocking_insert, cluster, 0, 5, 5.0, operator)
    grants = await asyncio.to_thread(query, host, port, "SHOW GRANTS", user=operator)
    assert "INSERT" not in str(grants) and "READ_ONLY ADMIN" in str(grants)


async def test_fence_self_fences_an_unreachable_master(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    stub = workload.stub
    cluster = await build(workload, member_runner)
    await setup_table(cluster, 1)
    await semi_sync(workload, cluster, 1, 2)
    await wait_for(lambda: has_rows(cluster, 2, [1]), 30, what="row 1 on 2")
    request = pb.FenceRequest(context=cluster.ctx(0), replica_ids=[mid(1), mid(2)])
    with stopped(cluster, 0):
        # A replica that does not answer is never skipped.
        with stopped(cluster, 2), pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Fence(request)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert mid(2) in (caught.value.details() or "") and mid(1) not in (caught.value.details() or "")
        for _ in range(2):  # idempotent
            fenced = await stub.Fence(request)
            assert fenced.method == T.FENCE_METHOD_SELF_FENCED, fenced.detail
            assert fenced.self_fence_seconds == 0.0
        for ordinal in (1, 2):
            status = (await cluster.query(ordinal, "SHOW SLAVE STATUS"))[0]
            assert status["Slave_IO_Running"] == "No" and status["Slave_SQL_Running"] == "Yes"
    # The old master wakes up: whatever it takes now is acknowledged to nobody, held by nobody.
    outcome = await asyncio.to_thread(blocking_insert, cluster, 0, 2, 3.0)
    assert "timed out" in outcome, outcome
    for ordinal in (0, 1, 2):
        assert await rows(cluster, ordinal) == [1]
    # Reachable again, the same Fence demotes it (killing the commit still waiting).
    assert (await stub.Fence(request)).method == T.FENCE_METHOD_DEMOTED


async def test_issue_9_a_stopped_candidate_is_waited_for_and_promoted(
    workload: WorkloadServer, member_runner: MemberRunner
) -> None:
    """M, A, B replicate; B stops receiving; 3 writes reach A only; A is frozen; M is killed.
    The failover waits for A (never promotes B, which lacks 3 acknowledged writes), then A."""
    stub = workload.stub
    cluster = await build(workload, member_runner)  # M = 0, A = 1, B = 2
    await setup_table(cluster, *range(1, 8))
    await semi_sync(workload, cluster, 1, 2)
    for ordinal in (1, 2):
        await wait_for(
            functools.partial(has_rows, cluster, ordinal, list(range(1, 8))), 30, what=f"7 rows on {ordinal}"
        )
    await as_operator(cluster, 2, "STOP SLAVE IO_THREAD")
    await insert(cluster, 0, 8, 9, 10)  # acknowledged: A has each before M answers
    await wait_for(lambda: has_rows(cluster, 1, list(range(1, 11))), 30, what="10 rows on A")
    assert await rows(cluster, 2) == list(range(1, 8))
    position = (await check(workload, cluster, 0)).position  # the health monitor's last probe

    candidates = [mid(1), mid(2)]
    lost = pb.MasterLostRequest(
        context=cluster.ctx(0), candidate_ids=candidates, master_position=position, maximum_lag_on_failover=1
    )
    fence = pb.FenceRequest(context=cluster.ctx(0), replica_ids=candidates)
    with stopped(cluster, 1):
        await cluster.members[0].kill()  # kill -9 M
        cluster.states[0] = T.MEMBER_STATE_LOST
        # Two RPCs with their requests (of different types: Any is the one parameter type they share).
        calls: tuple[tuple[Callable[[Any], Awaitable[object]], Message], ...] = (
            (stub.MasterLost, lost),
            (stub.Fence, fence),
        )
        for call, req in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(req)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert mid(1) in (caught.value.details() or "")
        # B alone is 3 transactions behind the master: not promoted either.
        only_b = pb.MasterLostRequest(
            context=cluster.ctx(0),
            candidate_ids=[mid(2)],
            master_position=position,
            maximum_lag_on_failover=1,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.MasterLost(only_b)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and "3 transaction" in (
            caught.value.details() or ""
        )

    assert (await stub.Fence(fence)).method == T.FENCE_METHOD_SELF_FENCED
    answer = await stub.MasterLost(lost)
    assert answer.promote_member_id == mid(1), answer.reason
    assert set(answer.positions) == set(candidates) and answer.positions[mid(1)] == position

    # Lifecycle promotes A and re-points B: every row is there, and new writes replicate.
    cluster.roles[0], cluster.roles[1] = SLAVE, MASTER
    await stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(1)))
    assert await rows(cluster, 1) == list(range(1, 11))
    await stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(2)))
    await insert(cluster, 1, 11)  # semi-sync: returns once B has it
    await wait_for(lambda: has_rows(cluster, 2, list(range(1, 12))), 30, what="11 rows on B")
