"""Issue 9's acceptance for MariaDB, end to end: the whole suite (etcd, state, the local cluster,
offers, lifecycle with its health monitor, the gateway) and real mariadbd members replicating
under semi-sync. Each test is one reproduction of the issue, asserting the right value:

- a failover on a partial view waits for the stopped replica that holds every committed row and
  promotes it (10 rows, not 7);
- stopped replicas are reported on their members within two check intervals and repaired, and a
  later failover loses nothing;
- a diverged member is flagged, rebuilt on a fresh volume, and never promoted.

Processes are found only by this test's own local cluster (its work dir) and member ids."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

import pymysql
import pytest
from mysql_helpers import query

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite, is_running, master_of
from mesos_stateful.testing.workloads import member_pids, wait_for
from mesos_stateful.workloads.mysql.gtid import GtidSet
from mesos_stateful.workloads.mysql.settings import MysqlSettings

pytestmark = pytest.mark.slow

NAME = "ledger"
OPERATOR = MysqlSettings(register_in_state=False).operator_user  # READ_ONLY ADMIN, no data privilege
REPLICATING, CONSISTENT = T.CONDITION_TYPE_REPLICATING, T.CONDITION_TYPE_CONSISTENT


def mid(ordinal: int) -> str:
    return plans.member_id(NAME, ordinal)


def timing(suite: Suite) -> LifecycleSettings:
    """The lifecycle's settings as the running service has them (the deadlines come from them)."""
    assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
    return suite.lifecycle.settings()


def mariadbd(suite: Suite, member_id: str) -> int:
    """The member's one live mariadbd, found in this test's own local cluster."""
    pids = member_pids("mariadbd", suite.cluster.cluster.settings.work_dir, NAME, member_id)
    assert len(pids) == 1, f"{member_id}: mariadbd pids {pids}"
    return pids[0]


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """kill -STOP the process; kill -CONT on the way out whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def member(instance: T.Instance, member_id: str) -> T.Member:
    return next(m for m in instance.members if m.id == member_id)


def condition(m: T.Member, kind: int) -> tuple[bool, str] | None:
    """(ok, reason) of the member's condition of that type in its last check, None if not checked."""
    return next(((c.ok, c.reason) for c in m.health.conditions if c.type == kind), None)


def all_ok(m: T.Member) -> bool:
    return bool(m.health.conditions) and all(c.ok for c in m.health.conditions) and not m.health.repair


def open_step(instance: T.Instance, action: plans.Action, member_id: str) -> T.Step | None:
    """The plan's step ``<action> <member_id>``, if the stored plan has one."""
    name = f"{action.value} {member_id}"
    return next((s for s in instance.plan.steps if s.name == name), None)


class Client:
    """SQL on the instance's members, as a person (admin) or as the suite's operator account."""

    def __init__(self, password: str) -> None:
        self.password = password

    async def sql(
        self, m: T.Member, statement: str, *args: object, user: str = "admin"
    ) -> list[dict[str, object]]:
        return await asyncio.to_thread(
            query, m.host, m.ports["mysql"], statement, *args, password=self.password, user=user
        )

    async def rows(self, m: T.Member) -> list[int]:
        try:
            result = await self.sql(m, "SELECT i FROM app.t ORDER BY i")
        except (pymysql.err.ProgrammingError, pymysql.err.OperationalError):
            return []
        return [int(str(r["i"])) for r in result]

    async def insert(self, m: T.Member, *values: int) -> None:
        for v in values:
            await self.sql(m, "INSERT INTO app.t VALUES (%s)", v)

    async def slave_status(self, m: T.Member) -> dict[str, object]:
        status = await self.sql(m, "SHOW SLAVE STATUS")
        return status[0] if status else {}

    async def follows(self, m: T.Member, master: T.Member) -> bool:
        """Replicating from ``master`` with both threads running and no error."""
        s = await self.slave_status(m)
        return (
            s.get("Master_Host") == master.host
            and s.get("Master_Port") == master.ports["mysql"]
            and s.get("Slave_IO_Running") == "Yes"
            and s.get("Slave_SQL_Running") == "Yes"
            and s.get("Last_IO_Errno") == 0
            and s.get("Last_SQL_Errno") == 0
        )

    def blocking_insert(self, m: T.Member, value: int, timeout: float) -> str:
        """INSERT with a client read timeout: "ok", or the error the client got."""
        try:
            query(
                m.host,
                m.ports["mysql"],
                "INSERT INTO app.t VALUES (%s)",
                value,
                password=self.password,
                read_timeout=timeout,
            )
            return "ok"
        except pymysql.err.MySQLError as error:
            return f"{type(error).__name__}: {error}"


async def deploy(suite: Suite, values: Iterable[int]) -> tuple[T.Instance, Client]:
    """3 members RUNNING (ledger-0 the master), a table with ``values`` on every member, and the
    master committing under semi-sync (a commit returns once a replica has it)."""
    await suite.create(NAME, 3, workload="mysql")
    instance = await suite.wait_running(NAME, 3, timeout=180)
    client = Client((await suite.get(NAME, secrets=True)).secrets["admin_password"])
    master = master_of(instance)
    assert master.id == mid(0)
    await client.sql(master, "CREATE DATABASE app")
    await client.sql(master, "CREATE TABLE app.t (i INT PRIMARY KEY)")
    expected = list(values)
    await client.insert(master, *expected)
    for m in instance.members:
        await wait_for(lambda m=m: has(client, m, expected), 60, what=f"rows on {m.id}")  # type: ignore[misc]
    semi = await client.sql(master, "SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_master_%'")
    variables = {str(r["Variable_name"]): str(r["Value"]) for r in semi}
    assert variables["rpl_semi_sync_master_enabled"] == "ON"
    assert variables["rpl_semi_sync_master_wait_point"] == "AFTER_SYNC"
    return instance, client


async def has(client: Client, m: T.Member, expected: list[int]) -> bool:
    return await client.rows(m) == expected


async def just_checked(suite: Suite, member_id: str, interval: float) -> None:
    """Return right after the health monitor stored a check of the member: its next check is
    about a whole interval away (so what a test does in the next few hundred ms is not repaired
    behind its back)."""
    now = await suite.instance(NAME)
    assert now is not None
    first = member(now, member_id).health.checked_at

    def fresh(i: T.Instance) -> bool:
        at = member(i, member_id).health.checked_at
        return at != first and time.time() - plans.seconds(at) < interval / 4

    await suite.wait_instance(NAME, fresh, 4 * interval, f"a fresh health check of {member_id}", 0.02)


@contextlib.asynccontextmanager
async def versions(suite: Suite) -> AsyncIterator[list[T.Instance]]:
    """Every stored version of the instance record while the block runs (a state watch: a phase
    that lasts a few hundred ms is not missed, as polling could)."""
    seen: list[T.Instance] = []
    _, revision = await suite.client.list(spb.KIND_INSTANCE, NAME)

    async def follow() -> None:
        async for event in suite.client.watch(
            kinds=[spb.KIND_INSTANCE], prefix=NAME, start_revision=revision + 1
        ):
            record = event.record
            if event.type != spb.EVENT_TYPE_DELETE and record.instance.spec.name == NAME:
                seen.append(record.instance)

    task = asyncio.create_task(follow())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def first_version(
    suite: Suite, member_id: str, condition: Callable[[T.Member], bool]
) -> asyncio.Task[T.Member]:
    """A task that ends with the first stored version of the member, from now on, for which
    ``condition`` holds (a state watch: a flag that a repair clears within a second is not missed)."""
    _, revision = await suite.client.list(spb.KIND_MEMBER, f"{NAME}/")

    async def find() -> T.Member:
        async for event in suite.client.watch(
            kinds=[spb.KIND_MEMBER], prefix=f"{NAME}/", start_revision=revision + 1
        ):
            m = event.record.member
            if event.type != spb.EVENT_TYPE_DELETE and m.id == member_id and condition(m):
                return m
        raise AssertionError("the watch ended")

    return asyncio.create_task(find())


async def watch(
    suite: Suite,
    until: Callable[[T.Instance], bool],
    timeout: float,
    what: str,
    seen: Callable[[T.Instance], None],
) -> T.Instance:
    """``wait_instance`` that also hands every state it read to ``seen`` (to assert on the way)."""

    def condition(i: T.Instance) -> bool:
        seen(i)
        return until(i)

    return await suite.wait_instance(NAME, condition, timeout, what, 0.1)


async def test_failover_waits_for_the_stopped_replica_with_every_committed_row(mysql_suite: Suite) -> None:
    """Reproduction 2: B stops receiving; 3 commits reach A only; A is frozen; the master is
    killed. The failover waits for A — it never promotes B, which lacks 3 committed rows — and
    promotes A once it answers: 10 rows, not 7; then every member follows A."""
    suite = mysql_suite
    lc = timing(suite)
    instance, client = await deploy(suite, range(1, 8))
    old, a, b = (member(instance, mid(o)) for o in (0, 1, 2))
    pid_a, pid_old = mariadbd(suite, a.id), mariadbd(suite, old.id)

    await just_checked(suite, b.id, lc.check_interval_seconds)
    began = time.monotonic()
    await client.sql(b, "STOP SLAVE IO_THREAD", user=OPERATOR)
    await client.insert(old, 8, 9, 10)  # committed under semi-sync: A acknowledged each
    with frozen(pid_a):
        os.kill(pid_old, signal.SIGKILL)
        quick = time.monotonic() - began
        assert quick < lc.check_interval_seconds / 2, f"the set-up took {quick:.2f}s"
        assert await client.rows(b) == list(range(1, 8))  # B really lacks the 3 rows

        # While A is stopped (the 12 s): the recovery waits for A, saying so; B is never
        # promoted, nobody is.
        waiting: list[T.Step] = []
        messages: set[str] = set()

        def no_promotion(i: T.Instance) -> None:
            masters = [m.id for m in i.members if m.role == T.ROLE_MASTER]
            assert masters in ([], [old.id]), f"promoted {masters} while {a.id} is stopped: {i.plan}"
            step = open_step(i, plans.Action.FAILOVER, old.id)
            if step is not None:
                messages.add(f"{plans.StepStatus.Name(step.status)}: {step.message}")
            if step is not None and step.status in (plans.DELAYED, plans.STARTING) and a.id in step.message:
                waiting.append(step)

        with contextlib.suppress(AssertionError):
            await watch(suite, lambda i: False, 12.0, "A stopped for 12 s", no_promotion)
        last = await suite.instance(NAME)
        assert last is not None
        no_promotion(last)
        assert waiting, f"the failover never said it waits for {a.id}: {messages} {last.plan}"
        fence = open_step(last, plans.Action.FENCE, old.id)
        assert fence is not None and fence.status == plans.COMPLETE
        assert fence.fence.method == T.FENCE_METHOD_PROCESS_GONE, fence.fence
        failover = open_step(last, plans.Action.FAILOVER, old.id)
        assert failover is not None and failover.status in (plans.DELAYED, plans.STARTING), failover
        assert not failover.decision.promote_member_id
        # Between attempts the step is DELAYED with MasterLost's reason: A did not answer.
        assert any(w.status == plans.DELAYED for w in waiting), messages
        reason = next(w.message for w in waiting if w.status == plans.DELAYED)
        assert f"not every candidate of {NAME} answered: {a.id}" in reason, reason

    # A answers again: it is promoted, and the decision records both candidates' positions. If
    # A's own health check killed the frozen process meanwhile (its executor's check gives up after
    # about as long as the freeze), A no longer runs: a failover may not skip it, so every member
    # restarts in place and the election picks A or the old master (restarted on its volume with
    # every committed row). Either way B, 3 rows behind, is never promoted.
    decisions: list[T.PromotionDecision] = []

    def decided(i: T.Instance) -> None:
        for step in i.plan.steps:
            if step.decision.promote_member_id and not decisions:
                decisions.append(step.decision)
        no_promotion_of_b(i)

    def no_promotion_of_b(i: T.Instance) -> None:
        assert all(m.role != T.ROLE_MASTER for m in i.members if m.id == b.id), f"{b.id} promoted: {i.plan}"

    def recovered(i: T.Instance) -> bool:
        return is_running(i, 3) and master_of(i).id in (a.id, old.id) and member(i, old.id).incarnation == 2

    after = await watch(
        suite, recovered, lc.launch_timeout_seconds + 60, "A (or the old master) leads", decided
    )
    assert decisions, "no promotion decision was recorded"
    decision = decisions[0]
    assert decision.promote_member_id in (a.id, old.id), decision
    assert a.id in decision.candidate_ids and a.id in decision.positions, decision
    if b.id in decision.positions:
        at_a, at_b = GtidSet.parse(decision.positions[a.id]), GtidSet.parse(decision.positions[b.id])
        assert at_a.contains(at_b) and at_b.behind(at_a) == 3, decision.positions

    new = master_of(after)
    expected = list(range(1, 11))
    assert await client.rows(new) == expected
    assert (await client.sql(new, "SELECT @@read_only AS r"))[0]["r"] == 0

    # Every member follows the new master without a replication error, and a new write reaches
    # all of them.
    await client.insert(new, 11)
    expected.append(11)
    for m in after.members:
        if m.id == new.id:
            continue
        await wait_for(lambda m=m: client.follows(m, new), 30, what=f"{m.id} follows {new.id}")  # type: ignore[misc]
        await wait_for(lambda m=m: has(client, m, expected), 30, what=f"rows on {m.id}")  # type: ignore[misc]
        assert (await client.sql(m, "SELECT @@read_only AS r"))[0]["r"] == 1

    def healthy(i: T.Instance) -> bool:
        replicas = [m for m in i.members if m.role == T.ROLE_SLAVE]
        return is_running(i, 3) and all(all_ok(m) for m in replicas)

    final = await suite.wait_instance(
        NAME, healthy, 3 * lc.check_interval_seconds + 5, "every replica healthy"
    )
    for m in final.members:
        if m.role == T.ROLE_SLAVE:
            assert m.health.following == f"{new.host}:{new.ports['mysql']}", m.health


async def test_stopped_replicas_are_reported_repaired_and_a_failover_loses_nothing(
    mysql_suite: Suite,
) -> None:
    """Reproduction 3: both replicas stop receiving. Each shows REPLICATING false
    (IoThreadStopped) within two check intervals, and is re-pointed; a commit made meanwhile waits
    (no replica has it) instead of being acknowledged; after 5 more commits, kill -9 of the
    master loses none of them."""
    suite = mysql_suite
    lc = timing(suite)
    interval = lc.check_interval_seconds
    instance, client = await deploy(suite, range(1, 4))
    master = master_of(instance)
    replicas = [m for m in instance.members if m.id != master.id]

    await just_checked(suite, replicas[0].id, interval)  # the next check is an interval away
    async with versions(suite) as seen:
        for m in replicas:
            await client.sql(m, "STOP SLAVE IO_THREAD", user=OPERATOR)
        stopped_at = time.monotonic()
        # Semi-sync: with no replica receiving, this commit waits for an acknowledgement, and nobody
        # (no replica, no other client) sees it meanwhile.
        pending = asyncio.create_task(
            asyncio.to_thread(client.blocking_insert, master, 4, 4 * interval + lc.callback_timeout_seconds)
        )

        async def waits_for_ack() -> bool:
            waiting = await client.sql(
                master,
                "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE STATE LIKE '%semi-sync%'",
            )
            return waiting[0]["n"] == 1

        await wait_for(waits_for_ack, interval / 2, what="the commit waiting for a replica's acknowledgement")
        assert not pending.done() and time.monotonic() - stopped_at < interval / 2
        for m in instance.members:
            assert await client.rows(m) == [1, 2, 3]

        # Reported on each member within two check intervals: REPLICATING false, IoThreadStopped.
        reported: dict[str, float] = {}

        def note(i: T.Instance) -> None:
            for m in replicas:
                current = member(i, m.id)
                if condition(current, REPLICATING) == (False, "IoThreadStopped"):
                    # REPOINT asked for (cleared by the StartSlave that re-points it, until the next check)
                    assert current.health.repair in (T.REPAIR_REPOINT, T.REPAIR_UNSPECIFIED), current.health
                    reported.setdefault(m.id, time.monotonic() - stopped_at)

        await watch(suite, lambda i: len(reported) == 2, 2 * interval + 1.0, "both reported", note)
        assert max(reported.values()) <= 2 * interval + 1.0, reported

        # Repaired: the IO threads run again, the conditions are ok, and the waiting commit returned.
        def repaired(i: T.Instance) -> bool:
            return i.phase == T.INSTANCE_PHASE_RUNNING and all(all_ok(member(i, m.id)) for m in replicas)

        after = await suite.wait_instance(
            NAME, repaired, 4 * interval + lc.callback_timeout_seconds, "repaired"
        )
    for m in replicas:
        status = await client.slave_status(m)
        assert status["Slave_IO_Running"] == "Yes" and status["Last_IO_Errno"] == 0, status
        assert member(after, m.id).health.following == f"{master.host}:{master.ports['mysql']}"
    assert await pending == "ok"
    # Meanwhile the instance was RECOVERING under a plan that says what it repairs and why.
    repairing = [i for i in seen if i.phase == T.INSTANCE_PHASE_RECOVERING]
    assert repairing, [(T.InstancePhase.Name(i.phase), i.plan.name) for i in seen]
    assert all(i.plan.name == plans.RECOVERY for i in repairing)
    reasons = {i.plan.reason for i in repairing}
    for m in replicas:
        why = f"re-point {m.id} to master {master.id} (replicating: IoThreadStopped)"
        assert any(why in r for r in reasons), reasons

    # 5 commits, then the master dies: every committed row is on the new master.
    await client.insert(master, 5, 6, 7, 8, 9)
    expected = list(range(1, 10))
    os.kill(mariadbd(suite, master.id), signal.SIGKILL)

    def failed_over(i: T.Instance) -> bool:
        return is_running(i, 3) and master_of(i).id != master.id and member(i, master.id).incarnation == 2

    final = await suite.wait_instance(NAME, failed_over, lc.launch_timeout_seconds + 30, "failed over")
    new = master_of(final)
    assert await client.rows(new) == expected  # 0 committed rows lost
    for m in final.members:
        if m.id != new.id:
            await wait_for(lambda m=m: client.follows(m, new), 30, what=f"{m.id} follows {new.id}")  # type: ignore[misc]
            await wait_for(lambda m=m: has(client, m, expected), 30, what=f"rows on {m.id}")  # type: ignore[misc]


async def diverge(client: Client, m: T.Member, value: int) -> None:
    """A person forces a write on a read-only replica: a transaction with the replica's own server
    id that its master never had (only the operator account may lift read_only)."""
    await client.sql(m, "SET GLOBAL read_only = OFF", user=OPERATOR)
    try:
        await client.sql(m, "INSERT INTO app.t VALUES (%s)", value)
    finally:
        await client.sql(m, "SET GLOBAL read_only = ON", user=OPERATOR)


def diverged(m: T.Member) -> bool:
    return condition(m, CONSISTENT) == (False, "Diverged") and m.health.repair == T.REPAIR_REBUILD


async def test_a_diverged_member_is_flagged_rebuilt_and_resynced(mysql_suite: Suite) -> None:
    """Reproduction 4: a replica with a transaction of its own is flagged CONSISTENT false
    (Diverged) within two check intervals, rebuilt on a fresh volume by a "rebuild" plan, and
    resyncs: its rows are the master's, the errant one is gone."""
    suite = mysql_suite
    lc = timing(suite)
    interval = lc.check_interval_seconds
    instance, client = await deploy(suite, range(1, 6))
    master, c = master_of(instance), member(instance, mid(2))
    volume = c.volume.persistence_id
    assert volume

    async with versions(suite) as seen:
        flagged = await first_version(suite, c.id, diverged)
        await diverge(client, c, 100)
        began = time.monotonic()
        first = await asyncio.wait_for(flagged, 2 * interval + 1.0)
        assert time.monotonic() - began <= 2 * interval + 1.0
        assert first.volume.persistence_id == volume
        assert first.health.repair == T.REPAIR_REBUILD

        def resynced(i: T.Instance) -> bool:
            assert master_of(i).id == master.id, "the master changed"
            current = member(i, c.id)
            return (
                is_running(i, 3)
                and current.volume.persistence_id != volume
                and condition(current, CONSISTENT) == (True, "")
                and all_ok(current)
            )

        after = await suite.wait_instance(
            NAME, resynced, lc.launch_timeout_seconds + 30, "rebuilt, consistent"
        )
    rebuilding = [i.plan for i in seen if open_step(i, plans.Action.REBUILD, c.id) is not None]
    assert rebuilding and rebuilding[0].name == plans.RECOVERY, [i.plan.name for i in seen]
    assert f"rebuild {c.id} from the master (consistent: Diverged)" in rebuilding[0].reason
    rebuilt = member(after, c.id)
    assert plans.volume_generation(rebuilt.volume.persistence_id) == plans.volume_generation(volume) + 1
    assert rebuilt.volume.has_data and rebuilt.incarnation == c.incarnation + 1
    expected = list(range(1, 6))
    assert await client.rows(rebuilt) == expected == await client.rows(master)
    await client.insert(master, 6)
    expected.append(6)
    for m in after.members:
        await wait_for(lambda m=m: has(client, m, expected), 30, what=f"rows on {m.id}")  # type: ignore[misc]
    assert await client.follows(rebuilt, master)


async def test_a_diverged_member_is_never_promoted(mysql_suite: Suite) -> None:
    """Reproduction 4, the failover: C holds a transaction of its own (a higher sequence number
    than B's); the master dies the moment C is flagged. B is promoted, never C; C is rebuilt and
    follows B with B's rows; the errant row is nowhere."""
    suite = mysql_suite
    lc = timing(suite)
    instance, client = await deploy(suite, range(1, 6))
    old, b, c = (member(instance, mid(o)) for o in (0, 1, 2))
    pid_old = mariadbd(suite, old.id)
    flagged = await first_version(suite, c.id, diverged)
    await diverge(client, c, 100)
    first = await asyncio.wait_for(flagged, 2 * lc.check_interval_seconds + 1.0)
    # Every stored version from here on (a state watch): the failover plan may be replaced by the
    # next one (C's rebuild, the old master's relaunch) faster than a poll would see it.
    recording = contextlib.AsyncExitStack()
    seen = await recording.enter_async_context(versions(suite))
    os.kill(pid_old, signal.SIGKILL)  # as soon as the flag is stored (the rebuild may start too)
    # C's newest transaction is its own (server id (2 + 1) * 100000 + 1): a higher sequence number
    # than anything the master wrote, the member a comparison by numbers would promote.
    assert GtidSet.parse(first.health.position).last(0)[1] == 300001, first.health.position

    def note(i: T.Instance) -> None:
        assert member(i, c.id).role != T.ROLE_MASTER, f"{c.id} promoted: {i.plan}"

    def settled(i: T.Instance) -> bool:
        current = member(i, c.id)
        return (
            is_running(i, 3)
            and master_of(i).id == b.id
            and member(i, old.id).incarnation >= 2
            and current.volume.persistence_id != c.volume.persistence_id
            and all_ok(current)
        )

    async with recording:
        after = await watch(suite, settled, 2 * lc.launch_timeout_seconds, "B promoted, C rebuilt", note)
    # (The stored instance records carry the plan; members are their own records.)
    decisions = [
        step.decision
        for i in seen
        if (step := open_step(i, plans.Action.FAILOVER, old.id)) is not None
        and step.decision.promote_member_id
    ]
    assert decisions, "no failover decision was recorded"
    assert decisions[0].promote_member_id == b.id, decisions[0]
    assert c.id not in decisions[0].candidate_ids, decisions[0]
    new = master_of(after)
    expected = list(range(1, 6))
    assert await client.rows(new) == expected  # the errant row is nowhere
    for m in after.members:
        if m.id != new.id:
            await wait_for(lambda m=m: client.follows(m, new), 30, what=f"{m.id} follows {new.id}")  # type: ignore[misc]
            await wait_for(lambda m=m: has(client, m, expected), 30, what=f"rows on {m.id}")  # type: ignore[misc]
