"""The MySQL WorkloadService: thin callbacks over config.py and sql.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.workloads import base
from mesos_stateful.workloads.base import Context, WorkloadBase, callback, pb
from mesos_stateful.workloads.mysql import gtid, sql
from mesos_stateful.workloads.mysql.config import build_launch
from mesos_stateful.workloads.mysql.description import ADMIN_PASSWORD, PORT, REPLICATION_PASSWORD, description
from mesos_stateful.workloads.mysql.settings import MysqlSettings

log = logging.getLogger(__name__)

_T = TypeVar("_T")


async def _blocking(fn: Callable[..., _T], *args: object) -> _T:
    # PyMySQL blocks; every call has connect/read timeouts, so a thread is never stuck for long.
    return await asyncio.to_thread(fn, *args)


@dataclass(frozen=True)
class Candidate:
    """A reachable replica and its replication state."""

    member_id: str
    ordinal: int
    state: sql.State


def choose(candidates: list[Candidate]) -> tuple[Candidate, str] | None:
    """The replica to promote: one already promoted (a retried MasterLost), else the one that
    received the most transactions (ties: more applied, then the lowest ordinal)."""
    if not candidates:
        return None
    promoted = [c for c in candidates if c.state.is_master]
    if promoted:
        c = min(promoted, key=lambda c: c.ordinal)
        return c, f"{c.member_id} was already promoted"
    c = max(
        candidates,
        key=lambda c: (gtid.total(c.state.received), gtid.total(c.state.applied), -c.ordinal),
    )
    return c, (
        f"{c.member_id} has the most advanced GTID position "
        f"({gtid.format_position(c.state.received) or '-'}) of {len(candidates)} reachable replica(s)"
    )


def choose_superset(candidates: list[Candidate]) -> tuple[Candidate, str]:
    """Among every candidate's state (all answered): one already promoted (a retried MasterLost),
    else one whose GTID set contains every other candidate's (ties: more applied, then the lowest
    ordinal). A candidate that is not a superset of another is not "behind": their histories have
    diverged; if no candidate contains all the others, promoting any would drop transactions
    another one has, so FailedPrecondition (a person decides)."""
    listed = ", ".join(f"{c.member_id}={c.state.gtid_set}" for c in candidates)
    promoted = sorted((c for c in candidates if c.state.is_master), key=lambda c: c.ordinal)
    if promoted:
        return promoted[0], f"{promoted[0].member_id} was already promoted (positions: {listed})"
    sets = {c.member_id: c.state.gtid_set for c in candidates}
    winners = [
        c for c in candidates if all(sets[c.member_id].contains(sets[o.member_id]) for o in candidates)
    ]
    if not winners:
        raise errors.FailedPrecondition(
            f"no candidate holds every other candidate's transactions (diverged GTID sets: {listed}); "
            "a person must decide"
        )
    best = min(winners, key=lambda c: (-gtid.total(c.state.applied), c.ordinal))
    return best, f"{best.member_id} holds every other candidate's transactions (positions: {listed})"


class MysqlWorkload(WorkloadBase):
    def __init__(self, settings: MysqlSettings) -> None:
        super().__init__(description(settings.default_image), settings)
        self.mysql_settings = settings

    def server(self, context: pb.CallbackContext, m: types_pb2.Member) -> sql.Server:
        host, port = base.endpoint(m, PORT)
        password = context.secrets.get(ADMIN_PASSWORD, "")
        if not password:
            raise errors.InvalidArgument(
                f"secret {ADMIN_PASSWORD!r} is missing", {f"context.secrets.{ADMIN_PASSWORD}": "required"}
            )
        return sql.Server(
            host, port, self.mysql_settings.operator_user, password, self.settings.connect_timeout_seconds
        )

    @callback
    async def Config(self, request: pb.ConfigRequest, context: Context) -> pb.ConfigResponse:
        return pb.ConfigResponse(launch=build_launch(request.context, self.mysql_settings))

    @callback
    async def StartMaster(self, request: pb.StartMasterRequest, context: Context) -> pb.StartMasterResponse:
        ctx = request.context
        server = self.server(ctx, base.member(ctx))
        state = await _blocking(sql.promote, server, self.mysql_settings.promote_timeout_seconds)
        return pb.StartMasterResponse(status=state.status())

    @callback
    async def StartSlave(self, request: pb.StartSlaveRequest, context: Context) -> pb.StartSlaveResponse:
        ctx = request.context
        me, master = base.member(ctx), base.master(ctx)
        if me.id == master.id:
            raise errors.FailedPrecondition(f"{me.id} is the master; it cannot follow itself")
        host, port = base.endpoint(master, PORT)
        password = ctx.secrets.get(REPLICATION_PASSWORD, "")
        if not password:
            raise errors.InvalidArgument(
                f"secret {REPLICATION_PASSWORD!r} is missing",
                {f"context.secrets.{REPLICATION_PASSWORD}": "required"},
            )
        state = await _blocking(
            sql.follow, self.server(ctx, me), host, port, self.mysql_settings.replication_user, password
        )
        return pb.StartSlaveResponse(status=state.status())

    @callback
    async def MasterRunning(
        self, request: pb.MasterRunningRequest, context: Context
    ) -> pb.MasterRunningResponse:
        state = await _blocking(sql.state, self.server(request.context, base.member(request.context)))
        return pb.MasterRunningResponse(status=state.status())

    @callback
    async def SlaveRunning(
        self, request: pb.SlaveRunningRequest, context: Context
    ) -> pb.SlaveRunningResponse:
        state = await _blocking(sql.state, self.server(request.context, base.member(request.context)))
        return pb.SlaveRunningResponse(status=state.status())

    @callback
    async def MasterLost(self, request: pb.MasterLostRequest, context: Context) -> pb.MasterLostResponse:
        ctx = request.context
        if request.candidate_ids:
            return await self._choose_among(ctx, base.candidates(ctx, request.candidate_ids))
        replicas = [
            m
            for m in base.others(ctx)
            # A member already shown as master is one promoted by an earlier attempt of this call.
            if m.role in (types_pb2.ROLE_SLAVE, types_pb2.ROLE_MASTER)
            and m.state == types_pb2.MEMBER_STATE_RUNNING
            and m.host
            and m.ports.get(PORT)
        ]
        if not replicas:
            # Nothing to promote (a single-member instance, or replicas still starting): lifecycle
            # asks again later.
            return pb.MasterLostResponse(reason="no running replica")
        candidates, problems = await self._states(ctx, replicas)
        chosen = choose(candidates)
        if chosen is None:
            raise errors.Unavailable(
                f"no replica of {ctx.instance.spec.name} can be reached: {'; '.join(problems)}"
            )
        candidate, reason = chosen
        if problems:
            reason += f" (unreachable: {'; '.join(problems)})"
        log.info("master %s of %s lost: promote %s", ctx.member_id, ctx.instance.spec.name, reason)
        return pb.MasterLostResponse(promote_member_id=candidate.member_id, reason=reason)

    async def _states(
        self, ctx: pb.CallbackContext, members: list[types_pb2.Member]
    ) -> tuple[list[Candidate], list[str]]:
        """Ask every member for its replication state at once: (answers, "<id>: <why>" of the
        members that could not be asked or did not answer)."""

        async def ask(m: types_pb2.Member) -> sql.State:
            if not (m.host and m.ports.get(PORT)):
                raise errors.Unavailable("no address yet")
            return await _blocking(sql.state, self.server(ctx, m))

        answers = await asyncio.gather(*(ask(m) for m in members), return_exceptions=True)
        candidates: list[Candidate] = []
        problems: list[str] = []
        for m, answer in zip(members, answers, strict=True):
            if isinstance(answer, errors.StatefulError):
                problems.append(f"{m.id}: {answer.message}")
            elif isinstance(answer, BaseException):
                raise answer
            else:
                candidates.append(Candidate(m.id, m.ordinal, answer))
        return candidates, problems

    async def _choose_among(
        self, ctx: pb.CallbackContext, members: list[types_pb2.Member]
    ) -> pb.MasterLostResponse:
        """Every candidate must answer: one that does not is waited for (UNAVAILABLE, lifecycle
        retries), never skipped. Then :func:`choose_superset`."""
        candidates, problems = await self._states(ctx, members)
        if problems:
            answered = ", ".join(f"{c.member_id}={c.state.gtid_set}" for c in candidates) or "none"
            raise errors.Unavailable(
                f"not every candidate of {ctx.instance.spec.name} answered: {'; '.join(problems)} "
                f"(answered: {answered})"
            )
        candidate, reason = choose_superset(candidates)
        log.info("master %s of %s lost: promote %s", ctx.member_id, ctx.instance.spec.name, reason)
        return pb.MasterLostResponse(promote_member_id=candidate.member_id, reason=reason)
