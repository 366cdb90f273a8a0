"""The MySQL WorkloadService: thin callbacks over config.py and sql.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.sdk import Context, WorkloadBase, callback, pb
from mesos_stateful.workloads.mysql import gtid, sql
from mesos_stateful.workloads.mysql.config import build_launch, replicas_expected, server_id
from mesos_stateful.workloads.mysql.description import ADMIN_PASSWORD, PORT, REPLICATION_PASSWORD, description
from mesos_stateful.workloads.mysql.settings import MysqlSettings

log = logging.getLogger(__name__)

_T = TypeVar("_T")


async def _blocking(fn: Callable[..., _T], *args: object) -> _T:
    # PyMySQL blocks; every call has connect/read timeouts, so a thread is never stuck for long.
    return await asyncio.to_thread(fn, *args)


@dataclass(frozen=True)
class Candidate:
    """A reachable member that may be promoted, and its replication state."""

    member_id: str
    ordinal: int
    state: sql.State


def decide(
    candidates: list[Candidate],
    master_position: str = "",
    maximum_lag: int = 0,
    master_server_id: int | None = None,
) -> tuple[Candidate, str]:
    """The MasterLost decision among every candidate's state (all answered). Pure.

    1. One already promoted (a retried MasterLost) is answered again.
    2. With the lost master's last known position (``master_position``, a GTID set), a candidate
       holding a transaction that is not in that history is DIVERGED and never promoted —
       except transactions of the lost master's own server id (``master_server_id``), which it
       wrote after it was last observed. Diverged candidates are left out (they are rebuilt).
    3. Among the others, the winner's GTID set contains every other candidate's (ties: more
       applied, lowest ordinal). If none does, their histories diverged: FailedPrecondition (a
       person decides).
    4. ``maximum_lag`` > 0 (patroni's maximum_lag_on_failover, in transactions): a winner further
       behind ``master_position`` than that is not promoted: Unavailable (the failover waits).
    """
    listed = ", ".join(f"{c.member_id}={c.state.gtid_set or 'empty'}" for c in candidates)
    promoted = sorted((c for c in candidates if c.state.is_master), key=lambda c: c.ordinal)
    if promoted:
        return promoted[0], f"{promoted[0].member_id} was already promoted (positions: {listed})"
    reference = gtid.GtidSet.parse(master_position) if master_position else None
    eligible = list(candidates)
    excluded: list[str] = []
    if reference is not None:
        eligible = []
        for c in candidates:
            missing = c.state.gtid_set.missing_from(reference, master_server_id)
            if missing:
                excluded.append(
                    f"{c.member_id} diverged (has {gtid.describe(missing)}, not in the master's history)"
                )
            else:
                eligible.append(c)
    if not eligible:
        raise sdk.FailedPrecondition(
            f"every candidate diverged from the lost master's history {master_position}: "
            f"{'; '.join(excluded)}; a person must decide"
        )
    sets = {c.member_id: c.state.gtid_set for c in eligible}
    winners = [c for c in eligible if all(sets[c.member_id].contains(sets[o.member_id]) for o in eligible)]
    if not winners:
        raise sdk.FailedPrecondition(
            f"no candidate holds every other candidate's transactions (diverged GTID sets: {listed}); "
            "a person must decide"
        )
    best = min(winners, key=lambda c: (-gtid.total(c.state.applied), c.ordinal))
    lag = best.state.gtid_set.behind(reference) if reference is not None else 0
    if maximum_lag > 0 and lag > maximum_lag:
        raise sdk.Unavailable(
            f"the most advanced candidate {best.member_id} is {lag} transaction(s) behind the lost "
            f"master's {master_position}, more than maximum_lag_on_failover {maximum_lag} "
            f"(positions: {listed})"
        )
    reason = f"{best.member_id} holds every other candidate's transactions (positions: {listed})"
    if reference is not None:
        reason += f"; {lag} transaction(s) behind the master's last known {master_position}"
    if excluded:
        reason += f"; not promoted: {'; '.join(excluded)}"
    return best, reason


# Member states whose task has provably ended (Mesos reported it): such a member runs no IO thread
# that could acknowledge the old master's writes. Every other member with an address must be
# detached by a self-fence.
_GONE = (types_pb2.MEMBER_STATE_PENDING, types_pb2.MEMBER_STATE_FAILED, types_pb2.MEMBER_STATE_STOPPED)
_ER_MASTER_FATAL_READING_BINLOG = 1236  # the master refuses the replica's GTID position (diverged)


def address(m: types_pb2.Member) -> str:
    return f"{m.host}:{m.ports.get(PORT, 0)}"


def replica_health(
    ctx: pb.CallbackContext,
    state: sql.State,
    master_state: sql.State | None,
    max_lag: int,
) -> types_pb2.MemberHealth:
    """CheckMember of a replica (pure): REPLICATING, CAUGHT_UP, CONSISTENT and the repair.

    ``master_state`` was read *after* ``state`` (a master's history only grows, so whatever the
    replica had is in it unless they diverged); None if the master could not be read in time
    (then CAUGHT_UP and CONSISTENT are not checked, unless the replica itself shows error 1236)."""
    master = sdk.master(ctx) if sdk.has_master(ctx) else None
    r = state.replica
    following = f"{r.get('Master_Host', '')}:{r.get('Master_Port', '')}" if r else ""
    conditions = [sdk.condition(types_pb2.CONDITION_TYPE_REACHABLE, True)]
    repair = types_pb2.REPAIR_UNSPECIFIED
    observed = types_pb2.ROLE_MASTER if state.is_master else types_pb2.ROLE_SLAVE
    lag_seconds = -1.0
    if r is not None and r.get("Seconds_Behind_Master") is not None:
        lag_seconds = float(r["Seconds_Behind_Master"])
    if master is None:
        # A cold start: no master yet, replicating from nobody is expected.
        return sdk.health(
            *conditions, observed_role=observed, following=following, position=str(state.applied_set)
        )
    io_errno = int(r.get("Last_IO_Errno") or 0) if r else 0
    sql_errno = int(r.get("Last_SQL_Errno") or 0) if r else 0
    replicating = sdk.condition(types_pb2.CONDITION_TYPE_REPLICATING, True, message=f"following {following}")
    peers = {address(m): m.id for m in sdk.others(ctx) if m.host}
    if r is None:
        replicating = sdk.condition(
            types_pb2.CONDITION_TYPE_REPLICATING, False, "IoThreadStopped", "replicates from nobody"
        )
        repair = types_pb2.REPAIR_REPOINT
    elif following != address(master):
        chained = peers.get(following)
        replicating = sdk.condition(
            types_pb2.CONDITION_TYPE_REPLICATING,
            False,
            "Chained" if chained else "WrongMaster",
            f"follows {chained or following}, not the master {master.id} ({address(master)})",
        )
        repair = types_pb2.REPAIR_REPOINT
    elif sql_errno or io_errno == _ER_MASTER_FATAL_READING_BINLOG:
        # An applier error (the data no longer matches the master's stream) or the master refusing
        # its position: re-pointing repeats the same error; its data must be rebuilt.
        detail = f"SQL error {sql_errno}: {r.get('Last_SQL_Error')}" if sql_errno else ""
        if io_errno:
            detail = f"IO error {io_errno}: {r.get('Last_IO_Error')}" + (f"; {detail}" if detail else "")
        replicating = sdk.condition(types_pb2.CONDITION_TYPE_REPLICATING, False, "ReplicationError", detail)
        repair = types_pb2.REPAIR_REBUILD
    elif r.get("Slave_IO_Running") == "No":
        detail = (
            f"IO thread stopped; last IO error {io_errno}: {r.get('Last_IO_Error')}"
            if io_errno
            else "IO thread stopped"
        )
        replicating = sdk.condition(types_pb2.CONDITION_TYPE_REPLICATING, False, "IoThreadStopped", detail)
        repair = types_pb2.REPAIR_REPOINT
    elif r.get("Slave_SQL_Running") != "Yes":
        replicating = sdk.condition(
            types_pb2.CONDITION_TYPE_REPLICATING, False, "SqlThreadStopped", "SQL thread stopped"
        )
        repair = types_pb2.REPAIR_REPOINT
    elif io_errno or r.get("Slave_IO_Running") != "Yes":
        # Connecting: the IO thread retries every MASTER_CONNECT_RETRY (1 s) by itself.
        replicating = sdk.condition(
            types_pb2.CONDITION_TYPE_REPLICATING,
            False,
            "ReplicationError",
            f"IO thread {r.get('Slave_IO_Running')}; IO error {io_errno}: {r.get('Last_IO_Error')}",
        )
    conditions.append(replicating)
    lag = -1
    if master_state is not None:
        history = master_state.gtid_set
        lag = state.applied_set.behind(history)
        caught_up = lag <= max_lag
        conditions.append(
            sdk.condition(
                types_pb2.CONDITION_TYPE_CAUGHT_UP,
                caught_up,
                "" if caught_up else "Lagging",
                f"{lag} transaction(s) behind (at most {max_lag}), {lag_seconds:g}s behind",
            )
        )
        missing = state.gtid_set.missing_from(history)
    else:
        missing = []
    if missing or io_errno == _ER_MASTER_FATAL_READING_BINLOG:
        why = (
            f"holds {gtid.describe(missing)}, not in the master's history {history}"
            if missing
            else f"the master refuses its position: {r.get('Last_IO_Error') if r else ''}"
        )
        conditions.append(sdk.condition(types_pb2.CONDITION_TYPE_CONSISTENT, False, "Diverged", why))
        repair = types_pb2.REPAIR_REBUILD
    elif master_state is not None:
        conditions.append(sdk.condition(types_pb2.CONDITION_TYPE_CONSISTENT, True))
    return sdk.health(
        *conditions,
        observed_role=observed,
        following=following,
        lag_seconds=lag_seconds,
        lag=lag,
        position=str(state.applied_set),
        repair=repair,
    )


def master_health(state: sql.State) -> types_pb2.MemberHealth:
    """CheckMember of the instance's master (pure): it takes writes as master iff read_only is off
    and it replicates from nobody."""
    reasons = []
    if state.read_only:
        reasons.append(("ReadOnly", "read_only is ON"))
    if state.replica is not None:
        r = state.replica
        reasons.append(("Replicating", f"replicates from {r.get('Master_Host')}:{r.get('Master_Port')}"))
    semi = (
        f"semi-sync on, {state.semi_sync_clients} replica(s) attached"
        if state.semi_sync_master
        else "semi-sync off"
    )
    replicating = sdk.condition(
        types_pb2.CONDITION_TYPE_REPLICATING,
        not reasons,
        reasons[0][0] if reasons else "",
        "; ".join([r[1] for r in reasons] + [semi]),
    )
    return sdk.health(
        sdk.condition(types_pb2.CONDITION_TYPE_REACHABLE, True),
        replicating,
        observed_role=types_pb2.ROLE_SLAVE if reasons else types_pb2.ROLE_MASTER,
        position=str(state.gtid_set),
    )


class MysqlWorkload(WorkloadBase):
    def __init__(self, settings: MysqlSettings) -> None:
        super().__init__(description(settings.default_image, list(settings.mariadbd_versions)), settings)
        self.mysql_settings = settings

    def server(
        self, context: pb.CallbackContext, m: types_pb2.Member, timeout: float | None = None
    ) -> sql.Server:
        host, port = sdk.endpoint(m, PORT)
        password = context.secrets.get(ADMIN_PASSWORD, "")
        if not password:
            raise sdk.InvalidArgument(
                f"secret {ADMIN_PASSWORD!r} is missing", {f"context.secrets.{ADMIN_PASSWORD}": "required"}
            )
        return sql.Server(
            host,
            port,
            self.mysql_settings.operator_user,
            password,
            timeout or self.settings.connect_timeout_seconds,
        )

    @callback
    async def Config(self, request: pb.ConfigRequest, context: Context) -> pb.ConfigResponse:
        return pb.ConfigResponse(launch=build_launch(request.context, self.mysql_settings))

    @callback
    async def StartMaster(self, request: pb.StartMasterRequest, context: Context) -> pb.StartMasterResponse:
        """Promote (or confirm) the master. Semi-sync is turned on when the instance has replicas
        holding data or running (a promotion, a restart): from then on its commits wait for a
        replica; on a new instance it is turned on by SlaveRunning of the first replica."""
        ctx = request.context
        server = self.server(ctx, sdk.member(ctx))
        semi_sync = replicas_expected(ctx)
        state = await _blocking(sql.promote, server, self.mysql_settings.promote_timeout_seconds, semi_sync)
        return pb.StartMasterResponse(status=state.status())

    @callback
    async def StartSlave(self, request: pb.StartSlaveRequest, context: Context) -> pb.StartSlaveResponse:
        ctx = request.context
        me, master = sdk.member(ctx), sdk.master(ctx)
        if me.id == master.id:
            raise sdk.FailedPrecondition(f"{me.id} is the master; it cannot follow itself")
        host, port = sdk.endpoint(master, PORT)
        password = ctx.secrets.get(REPLICATION_PASSWORD, "")
        if not password:
            raise sdk.InvalidArgument(
                f"secret {REPLICATION_PASSWORD!r} is missing",
                {f"context.secrets.{REPLICATION_PASSWORD}": "required"},
            )
        state = await _blocking(
            sql.follow,
            self.server(ctx, me),
            host,
            port,
            self.mysql_settings.replication_user,
            password,
            self.mysql_settings.fence_lock_wait_seconds,
        )
        return pb.StartSlaveResponse(status=state.status())

    @callback
    async def MasterRunning(
        self, request: pb.MasterRunningRequest, context: Context
    ) -> pb.MasterRunningResponse:
        state = await _blocking(sql.state, self.server(request.context, sdk.member(request.context)))
        return pb.MasterRunningResponse(status=state.status())

    @callback
    async def SlaveRunning(
        self, request: pb.SlaveRunningRequest, context: Context
    ) -> pb.SlaveRunningResponse:
        """A replica is ready: the master's semi-sync is turned on (idempotent), so from now on
        every commit on the master waits until a replica has it."""
        ctx = request.context
        state = await _blocking(sql.state, self.server(ctx, sdk.member(ctx)))
        if sdk.has_master(ctx):
            await _blocking(sql.set_semi_sync_master, self.server(ctx, sdk.master(ctx)), True)
        return pb.SlaveRunningResponse(status=state.status())

    @callback
    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Context
    ) -> pb.RemoveMemberResponse:
        """A replica leaves for good (scale down): when no other replica is left, the master's
        semi-sync is turned off, else its writes would wait forever for a replica that will never
        come (a single-member instance is asynchronous by nature)."""
        ctx = request.context
        me = sdk.member(ctx)
        if me.role == types_pb2.ROLE_SLAVE and sdk.has_master(ctx):
            master = sdk.master(ctx)
            left = [m for m in sdk.others(ctx) if m.role == types_pb2.ROLE_SLAVE]
            if not left and master.host and master.ports.get(PORT):
                await _blocking(sql.set_semi_sync_master, self.server(ctx, master), False)
        return pb.RemoveMemberResponse()

    @callback
    async def CheckMember(  # type: ignore[override]
        self, request: pb.CheckMemberRequest, context: Context
    ) -> pb.CheckMemberResponse:
        """One health check (the master's is its failure probe, called often): a connection kept
        between checks (``sql.probe_state``), two queries, answered within ``timeout_seconds`` or
        UNAVAILABLE. A replica's check then reads the master (with what is left of the timeout)
        for the lag in transactions and the containment of its history; if the master does not
        answer in time, those two conditions are left out."""
        ctx = request.context
        me = sdk.member(ctx)
        timeout = (
            request.timeout_seconds if request.timeout_seconds > 0 else self.settings.connect_timeout_seconds
        )
        deadline = time.monotonic() + timeout
        state = await self._read(self.server(ctx, me, timeout), timeout, me.id)
        if sdk.has_master(ctx) and sdk.master(ctx).id == me.id:
            return pb.CheckMemberResponse(health=master_health(state))
        master_state = None
        left = deadline - time.monotonic()
        if sdk.has_master(ctx) and left > 0.05:
            master = sdk.master(ctx)
            try:
                master_state = await self._read(self.server(ctx, master, left), left, master.id, kept=False)
            except sdk.StatefulError:
                master_state = None
        health = replica_health(ctx, state, master_state, self.mysql_settings.max_lag_transactions)
        return pb.CheckMemberResponse(health=health)

    async def _read(self, server: sql.Server, timeout: float, member_id: str, kept: bool = True) -> sql.State:
        try:
            async with asyncio.timeout(timeout):
                return await _blocking(sql.probe_state if kept else sql.state, server)
        except TimeoutError:
            raise sdk.Unavailable(f"{member_id} ({server}) did not answer within {timeout:g}s") from None

    @callback
    async def Fence(  # type: ignore[override]
        self, request: pb.FenceRequest, context: Context
    ) -> pb.FenceResponse:
        """Stop the old master (``context.member_id``) taking writes before a promotion. Idempotent.

        Reachable within ``fence_timeout_seconds``: DEMOTED. ``read_only`` ON and every client
        session killed (sql.demote). In MariaDB 10.11 only READ_ONLY ADMIN bypasses read_only
        (no longer part of SUPER; MariaDB docs "read_only", "GRANT"); the workload's accounts are
        made so that the one account holding it (the suite's operator) cannot change data, and
        the fence checks that on the server itself (sql.write_bypass). If some account could
        still write (someone granted it), the server is shut down instead.

        Unreachable: SELF_FENCED. Every member that could replicate from it (``replica_ids`` and
        any other member whose task has not provably ended) is detached (``STOP SLAVE
        IO_THREAD``, positions kept); one that does not answer: UNAVAILABLE naming it (never
        skipped). ``self_fence_seconds`` is 0: the old master runs semi-sync with wait point
        AFTER_SYNC, wait_no_slave ON and a timeout that never expires, so a commit returns OK to
        its client only after a replica has written it to its relay log. Once every replica's IO
        thread has stopped (STOP SLAVE returns after it did), no further acknowledgement can
        come; an acknowledgement still in flight is for a transaction already in that replica's
        relay log, which MasterLost counts (Gtid_IO_Pos) and StartMaster applies. So from the
        moment this answers, nothing the old master commits is acknowledged; no time has to
        pass. (Assumes its semi-sync is on: the workload keeps it on whenever the instance has a
        replica; see the README.)
        """
        ctx = request.context
        old = sdk.member(ctx)
        replicas = [m for m in sdk.candidates(ctx, request.replica_ids) if m.id != old.id]
        s = self.mysql_settings
        try:
            server = self.server(ctx, old, s.fence_timeout_seconds)
            async with asyncio.timeout(s.fence_timeout_seconds + s.fence_lock_wait_seconds * 6):
                state, killed, bypass = await _blocking(
                    sql.demote, server, s.fence_lock_wait_seconds, s.fence_lock_wait_seconds * 5
                )
        except (sdk.Unavailable, sdk.FailedPrecondition, TimeoutError) as error:
            why = error.message if isinstance(error, sdk.StatefulError) else "no answer in time"
            return await self._self_fence(ctx, old, replicas, why)
        detail = (
            f"{old.id}: read_only ON, {len(killed)} client session(s) killed, at {state.gtid_set or 'empty'}"
        )
        if bypass:
            await _blocking(sql.shutdown, server)
            detail += f"; accounts that could still write ({'; '.join(bypass)}): server shut down"
        log.info("fenced %s: %s", old.id, detail)
        return pb.FenceResponse(method=types_pb2.FENCE_METHOD_DEMOTED, detail=detail)

    async def _self_fence(
        self, ctx: pb.CallbackContext, old: types_pb2.Member, replicas: list[types_pb2.Member], why: str
    ) -> pb.FenceResponse:
        listed = {m.id for m in replicas}
        others = [
            m
            for m in sdk.others(ctx)
            if m.id not in listed and m.state not in _GONE and m.host and m.ports.get(PORT)
        ]
        members = replicas + others

        async def detach(m: types_pb2.Member) -> sql.State:
            return await _blocking(sql.detach, self.server(ctx, m))

        answers, problems = await sdk.ask_members(members, PORT, detach)
        done = [f"{m.id} at {answer.gtid_set or 'empty'}" for m, answer in answers]
        if problems:
            raise sdk.Unavailable(
                f"old master {old.id} unreachable ({why}) and not every replica could be detached from "
                f"it: {'; '.join(problems)}"
            )
        detail = (
            f"{old.id} unreachable ({why}); detached {', '.join(done) or 'no replica'}: under semi-sync "
            "(AFTER_SYNC, no timeout) it gets no acknowledgement, so it acknowledges no write"
        )
        log.info("self-fenced %s: %s", old.id, detail)
        return pb.FenceResponse(
            method=types_pb2.FENCE_METHOD_SELF_FENCED, detail=detail, self_fence_seconds=0.0
        )

    @callback
    async def MasterLost(self, request: pb.MasterLostRequest, context: Context) -> pb.MasterLostResponse:
        """Choose the replica to promote (see :func:`decide`). Every candidate must answer: one
        that does not is waited for (UNAVAILABLE, lifecycle retries), never skipped.

        Without ``candidate_ids`` (callers before that field) the candidates are every RUNNING
        member other than the lost master (a replica, or one promoted by an earlier attempt), and
        the same rule holds: an unreachable one makes the answer UNAVAILABLE (before, it was left
        out, which could promote a replica missing acknowledged writes)."""
        ctx = request.context
        if request.candidate_ids:
            members = sdk.candidates(ctx, request.candidate_ids)
        else:
            members = [
                m
                for m in sdk.others(ctx)
                if m.role in (types_pb2.ROLE_SLAVE, types_pb2.ROLE_MASTER)
                and m.state == types_pb2.MEMBER_STATE_RUNNING
            ]
            if not members:
                # Nothing to promote (a single-member instance, or replicas still starting):
                # lifecycle asks again later.
                return pb.MasterLostResponse(reason="no running replica")
        candidates, problems = await self._states(ctx, members)
        if problems:
            answered = ", ".join(f"{c.member_id}={c.state.gtid_set or 'empty'}" for c in candidates) or "none"
            raise sdk.Unavailable(
                f"not every candidate of {ctx.instance.spec.name} answered: {'; '.join(problems)} "
                f"(answered: {answered})"
            )
        lost = sdk.member(ctx)
        candidate, reason = decide(
            candidates,
            request.master_position,
            int(request.maximum_lag_on_failover),
            server_id(lost.ordinal, lost.incarnation) if lost.incarnation else None,
        )
        log.info("master %s of %s lost: promote %s", ctx.member_id, ctx.instance.spec.name, reason)
        return pb.MasterLostResponse(
            promote_member_id=candidate.member_id,
            reason=reason,
            positions={c.member_id: str(c.state.gtid_set) for c in candidates},
        )

    async def _states(
        self, ctx: pb.CallbackContext, members: list[types_pb2.Member]
    ) -> tuple[list[Candidate], list[str]]:
        """Ask every member for its replication state at once: (answers, "<id>: <why>" of the
        members that could not be asked or did not answer)."""

        async def ask(m: types_pb2.Member) -> sql.State:
            return await _blocking(sql.state, self.server(ctx, m))

        answers, problems = await sdk.ask_members(members, PORT, ask)
        return [Candidate(m.id, m.ordinal, state) for m, state in answers], problems
