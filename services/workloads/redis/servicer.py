"""The Redis WorkloadService: thin callbacks over config.py and replication.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.workloads import base
from mesos_stateful.workloads.base import Context, WorkloadBase, callback, pb
from mesos_stateful.workloads.redis import replication
from mesos_stateful.workloads.redis.config import build_launch
from mesos_stateful.workloads.redis.description import PASSWORD, PORT, description
from mesos_stateful.workloads.redis.replication import Candidate, Server
from mesos_stateful.workloads.redis.settings import RedisSettings

log = logging.getLogger(__name__)


class RedisWorkload(WorkloadBase):
    def __init__(self, settings: RedisSettings) -> None:
        super().__init__(description(), settings)
        self.redis_settings = settings

    def server(self, context: pb.CallbackContext, m: types_pb2.Member) -> Server:
        host, port = base.endpoint(m, PORT)
        return Server(host, port, context.secrets.get(PASSWORD, ""), self.settings.connect_timeout_seconds)

    @callback
    async def Config(self, request: pb.ConfigRequest, context: Context) -> pb.ConfigResponse:
        return pb.ConfigResponse(launch=build_launch(request.context, self.redis_settings))

    @callback
    async def StartMaster(self, request: pb.StartMasterRequest, context: Context) -> pb.StartMasterResponse:
        me = base.member(request.context)
        return pb.StartMasterResponse(status=await replication.promote(self.server(request.context, me)))

    @callback
    async def StartSlave(self, request: pb.StartSlaveRequest, context: Context) -> pb.StartSlaveResponse:
        ctx = request.context
        me, master = base.member(ctx), base.master(ctx)
        if me.id == master.id:
            raise errors.FailedPrecondition(f"{me.id} is the master; it cannot follow itself")
        host, port = base.endpoint(master, PORT)
        return pb.StartSlaveResponse(status=await replication.follow(self.server(ctx, me), host, port))

    @callback
    async def MasterRunning(
        self, request: pb.MasterRunningRequest, context: Context
    ) -> pb.MasterRunningResponse:
        info = await replication.info_replication(self.server(request.context, base.member(request.context)))
        return pb.MasterRunningResponse(status=replication.status(info))

    @callback
    async def SlaveRunning(
        self, request: pb.SlaveRunningRequest, context: Context
    ) -> pb.SlaveRunningResponse:
        info = await replication.info_replication(self.server(request.context, base.member(request.context)))
        return pb.SlaveRunningResponse(status=replication.status(info))

    @callback
    async def MasterLost(self, request: pb.MasterLostRequest, context: Context) -> pb.MasterLostResponse:
        ctx = request.context
        if request.candidate_ids:
            return await self._choose_among(ctx, base.candidates(ctx, request.candidate_ids))
        replicas = [
            m for m in base.others(ctx) if m.role == types_pb2.ROLE_SLAVE and m.host and m.ports.get(PORT)
        ]
        candidates, problems = await self._candidates(ctx, replicas)
        chosen = replication.choose(candidates)
        if chosen is None:
            detail = "; ".join(problems) or "no replicas"
            raise errors.Unavailable(f"no replica of {ctx.instance.spec.name} can be promoted now: {detail}")
        reason = (
            f"{chosen.member_id} was already promoted"
            if chosen.is_master
            else f"{chosen.member_id} has the highest replication offset ({chosen.offset}) "
            f"of {len(candidates)} reachable replica(s)"
        )
        log.info("master %s of %s lost: promote %s", ctx.member_id, ctx.instance.spec.name, reason)
        return pb.MasterLostResponse(promote_member_id=chosen.member_id, reason=reason)

    async def _candidates(
        self, ctx: pb.CallbackContext, replicas: list[types_pb2.Member]
    ) -> tuple[list[Candidate], list[str]]:
        """Ask every replica for its replication state at once; unreachable ones and ones that
        never finished their initial sync (partial data) are left out."""
        infos = await asyncio.gather(
            *(replication.info_replication(self.server(ctx, m)) for m in replicas), return_exceptions=True
        )
        candidates: list[Candidate] = []
        problems: list[str] = []
        for m, info in zip(replicas, infos, strict=True):
            if isinstance(info, errors.StatefulError):
                problems.append(f"{m.id}: {info.message}")
            elif isinstance(info, BaseException):
                raise info
            elif info.get("role") == "master":
                candidates.append(Candidate(m.id, m.ordinal, replication.offset(info), is_master=True))
            elif int(info.get("master_sync_in_progress", 0)) or replication.offset(info) < 0:
                problems.append(f"{m.id}: initial sync not finished")
            else:
                candidates.append(Candidate(m.id, m.ordinal, replication.offset(info)))
        return candidates, problems

    async def _choose_among(
        self, ctx: pb.CallbackContext, members: list[types_pb2.Member]
    ) -> pb.MasterLostResponse:
        """Every candidate must answer (one that does not is waited for: UNAVAILABLE, lifecycle
        retries); then the one whose data contains every other's (``replication.choose_position``)."""
        problems: list[str] = []

        async def ask(m: types_pb2.Member) -> dict[str, Any]:
            if not (m.host and m.ports.get(PORT)):
                raise errors.Unavailable("no address yet")
            return await replication.info_replication(self.server(ctx, m))

        infos = await asyncio.gather(*(ask(m) for m in members), return_exceptions=True)
        positions: list[replication.Position] = []
        for m, info in zip(members, infos, strict=True):
            if isinstance(info, errors.StatefulError):
                problems.append(f"{m.id}: {info.message}")
            elif isinstance(info, BaseException):
                raise info
            elif int(info.get("master_sync_in_progress", 0)):
                problems.append(f"{m.id}: a full sync is in progress (its data is partial)")
            else:
                positions.append(replication.Position.from_info(m.id, m.ordinal, info))
        if problems:
            raise errors.Unavailable(
                f"not every candidate of {ctx.instance.spec.name} answered: {'; '.join(problems)}"
                f" (answered: {', '.join(str(p) for p in positions) or 'none'})"
            )
        chosen, reason = replication.choose_position(positions, ctx.member_id)
        log.info("master %s of %s lost: promote %s", ctx.member_id, ctx.instance.spec.name, reason)
        return pb.MasterLostResponse(promote_member_id=chosen.member_id, reason=reason)
