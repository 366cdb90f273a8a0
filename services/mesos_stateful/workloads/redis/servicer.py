"""The Redis WorkloadService: thin callbacks over config.py and replication.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.sdk import Context, WorkloadBase, callback, pb
from mesos_stateful.workloads.redis import health, replication
from mesos_stateful.workloads.redis.config import build_launch, min_replicas_to_write
from mesos_stateful.workloads.redis.description import PASSWORD, PORT, description
from mesos_stateful.workloads.redis.replication import Server
from mesos_stateful.workloads.redis.settings import RedisSettings

log = logging.getLogger(__name__)


class RedisWorkload(WorkloadBase):
    def __init__(self, settings: RedisSettings) -> None:
        super().__init__(description(settings.default_image, list(settings.redis_server_versions)), settings)
        self.redis_settings = settings

    def server(
        self,
        context: pb.CallbackContext,
        m: types_pb2.Member,
        timeout: float | None = None,
        retries: int = 1,
    ) -> Server:
        host, port = sdk.endpoint(m, PORT)
        return Server(
            host,
            port,
            context.secrets.get(PASSWORD, ""),
            timeout if timeout is not None else self.settings.connect_timeout_seconds,
            retries,
        )

    async def _self_fence_master(self, ctx: pb.CallbackContext) -> None:
        """Keep the running master's self-fence in step with the spec (``min-replicas-to-write``
        1 with more than one member, else 0; ``min-replicas-max-lag`` from the settings).
        UNAVAILABLE when the master cannot be reached (the callback is retried)."""
        if not sdk.has_master(ctx):
            return
        master = sdk.master(ctx)
        await replication.set_min_replicas(
            self.server(ctx, master),
            min_replicas_to_write(ctx.instance),
            self.redis_settings.min_replicas_max_lag,
        )

    @callback
    async def Config(self, request: pb.ConfigRequest, context: Context) -> pb.ConfigResponse:
        return pb.ConfigResponse(launch=build_launch(request.context, self.redis_settings))

    @callback
    async def StartMaster(self, request: pb.StartMasterRequest, context: Context) -> pb.StartMasterResponse:
        ctx = request.context
        server = self.server(ctx, sdk.member(ctx))
        # Self-fence first (inert while it is a replica): it is never a master without it.
        await replication.set_min_replicas(
            server, min_replicas_to_write(ctx.instance), self.redis_settings.min_replicas_max_lag
        )
        return pb.StartMasterResponse(status=await replication.promote(server))

    @callback
    async def StartSlave(self, request: pb.StartSlaveRequest, context: Context) -> pb.StartSlaveResponse:
        ctx = request.context
        me, master = sdk.member(ctx), sdk.master(ctx)
        if me.id == master.id:
            raise sdk.FailedPrecondition(f"{me.id} is the master; it cannot follow itself")
        host, port = sdk.endpoint(master, PORT)
        return pb.StartSlaveResponse(status=await replication.follow(self.server(ctx, me), host, port))

    @callback
    async def MasterRunning(
        self, request: pb.MasterRunningRequest, context: Context
    ) -> pb.MasterRunningResponse:
        info = await replication.info_replication(self.server(request.context, sdk.member(request.context)))
        return pb.MasterRunningResponse(status=replication.status(info))

    @callback
    async def SlaveRunning(
        self, request: pb.SlaveRunningRequest, context: Context
    ) -> pb.SlaveRunningResponse:
        """The replica's status; and the master's self-fence turned on now that it has a replica
        in sync (a scale-up from one member)."""
        ctx = request.context
        info = await replication.info_replication(self.server(ctx, sdk.member(ctx)))
        if sdk.master(ctx).id != ctx.member_id:
            await self._self_fence_master(ctx)
        return pb.SlaveRunningResponse(status=replication.status(info))

    @callback
    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Context
    ) -> pb.RemoveMemberResponse:
        """A replica is about to be stopped for good: when the spec is down to one member, the
        master's self-fence is turned off first (it would refuse every write with no replica
        left). Lifecycle scales down with REMOVE, KILL, DELETE_MEMBER, so this runs while the
        replica still acknowledges."""
        ctx = request.context
        me = sdk.member(ctx)
        if me.role != types_pb2.ROLE_MASTER and sdk.has_master(ctx):
            await self._self_fence_master(ctx)
        return pb.RemoveMemberResponse()

    # The ignores: WorkloadBase has no default of its own for the new callbacks, so mypy compares
    # the decorated method with the generated servicer's coroutine signature.
    @callback
    async def CheckMember(  # type: ignore[override]
        self, request: pb.CheckMemberRequest, context: Context
    ) -> pb.CheckMemberResponse:
        """Health of one member (see ``health.py``). Read-only and idempotent. The member is asked
        within ``timeout_seconds`` (``connect_timeout_seconds`` when 0), without retries;
        unreachable: UNAVAILABLE. The MASTER: one ``INFO replication``. A SLAVE: its INFO, then
        the master's, within the same deadline (an unreachable master only leaves CAUGHT_UP and
        CONSISTENT out)."""
        ctx = request.context
        timeout = (
            request.timeout_seconds if request.timeout_seconds > 0 else self.settings.connect_timeout_seconds
        )
        me = sdk.member(ctx)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                info = await replication.info_replication(self.server(ctx, me, timeout, retries=0))
        except TimeoutError:
            raise sdk.Unavailable(f"{me.id}: redis did not answer within {timeout:g}s") from None
        if me.role == types_pb2.ROLE_MASTER:
            return pb.CheckMemberResponse(health=health.master_health(info))
        master: tuple[str, str] | None = None
        master_info: dict[str, Any] | None = None
        if sdk.has_master(ctx):
            m = sdk.master(ctx)
            if m.host and m.ports.get(PORT):
                master = (m.id, replication.address(*sdk.endpoint(m, PORT)))
                try:
                    async with asyncio.timeout_at(deadline):
                        master_info = await replication.info_replication(
                            self.server(ctx, m, timeout, retries=0)
                        )
                except (TimeoutError, sdk.Unavailable) as error:
                    log.debug("check of %s: master %s did not answer: %s", me.id, m.id, error)
            else:
                master = (m.id, "")
        members = {
            replication.address(*sdk.endpoint(o, PORT)): o.id
            for o in sdk.others(ctx)
            if o.host and o.ports.get(PORT)
        }
        answer = health.replica_health(
            info,
            master_info,
            master=master,
            members=members,
            max_lag_bytes=self.redis_settings.max_lag_bytes,
            link_down_repair_seconds=self.redis_settings.link_down_repair_seconds,
        )
        return pb.CheckMemberResponse(health=answer)

    @callback
    async def Fence(  # type: ignore[override]
        self, request: pb.FenceRequest, context: Context
    ) -> pb.FenceResponse:
        """Stop the old master (``context.member_id``) taking writes before a promotion.

        Reachable within ``fence_timeout_seconds``: demoted (``replication.demote``: a read-only
        replica of nobody, its clients disconnected) -> DEMOTED. Unreachable: every member that may
        still follow it is detached (``replication.detach``) -> SELF_FENCED with
        ``self_fence_seconds = min_replicas_max_lag + 2`` (``replication.self_fence_seconds``):
        from then on its ``min-replicas-to-write 1`` refuses every write. The members asked: every
        one in ``replica_ids`` (each must answer), and every other member with an address whose
        task may still run (STARTING, RUNNING, KILLING, LOST): a replica left following it would
        keep acknowledging its writes. One that does not answer: UNAVAILABLE naming it (retried,
        never skipped). Idempotent."""
        ctx = request.context
        old = sdk.member(ctx)
        listed = sdk.candidates(ctx, request.replica_ids)
        if any(m.id == old.id for m in listed):
            raise sdk.InvalidArgument(
                f"replica_ids names the old master {old.id}",
                {"replica_ids": "must not name context.member_id"},
            )
        if not (old.host and old.ports.get(PORT)):
            raise sdk.FailedPrecondition(f"the old master {old.id} has no address: nothing to fence")
        old_host, old_port = sdk.endpoint(old, PORT)
        fence_timeout = self.redis_settings.fence_timeout_seconds
        try:
            async with asyncio.timeout(fence_timeout * 4):  # a few commands, each within the timeout
                detail = await replication.demote(self.server(ctx, old, fence_timeout, retries=0))
            log.warning("fenced %s of %s: %s", old.id, ctx.instance.spec.name, detail)
            return pb.FenceResponse(method=types_pb2.FENCE_METHOD_DEMOTED, detail=f"{old.id}: {detail}")
        except (TimeoutError, sdk.Unavailable) as error:
            unreachable = getattr(error, "message", "") or f"no answer within {fence_timeout:g}s"
        if not min_replicas_to_write(ctx.instance):
            # One member in the spec: it runs with min-replicas-to-write 0 and never fences itself.
            raise sdk.FailedPrecondition(
                f"the old master {old.id} is unreachable ({unreachable}) and, the spec having one "
                "member, does not fence itself (min-replicas-to-write 0): it cannot be shown fenced"
            )

        listed_ids = {m.id for m in listed}
        may_run = (
            types_pb2.MEMBER_STATE_STARTING,
            types_pb2.MEMBER_STATE_RUNNING,
            types_pb2.MEMBER_STATE_KILLING,
            types_pb2.MEMBER_STATE_LOST,
        )
        targets = listed + [
            m
            for m in sdk.others(ctx)
            if m.id not in listed_ids and m.host and m.ports.get(PORT) and m.state in may_run
        ]

        async def one(m: types_pb2.Member) -> str:
            try:
                return await replication.detach(self.server(ctx, m), old_host, old_port)
            except sdk.Unavailable as error:
                if m.id in listed_ids:
                    raise
                raise sdk.Unavailable(f"(not listed) {error.message}") from None

        answers, problems = await sdk.ask_members(targets, PORT, one)
        done = [f"{m.id}: {result}" for m, result in answers]
        if problems:
            raise sdk.Unavailable(
                f"the old master {old.id} is unreachable ({unreachable}) and not every member that may "
                f"follow it answered, so it cannot be shown fenced: {'; '.join(problems)}"
                + (f" (done: {'; '.join(done)})" if done else "")
            )
        seconds = replication.self_fence_seconds(self.redis_settings.min_replicas_max_lag)
        detail = (
            f"{old.id} unreachable ({unreachable}); replicas detached: {'; '.join(done) or 'none'}; "
            f"it refuses writes by min-replicas-to-write 1 within min-replicas-max-lag "
            f"({self.redis_settings.min_replicas_max_lag}s) + 2 = {seconds:g}s"
        )
        log.warning("fenced %s of %s: %s", old.id, ctx.instance.spec.name, detail)
        return pb.FenceResponse(
            method=types_pb2.FENCE_METHOD_SELF_FENCED, detail=detail, self_fence_seconds=seconds
        )

    @callback
    async def MasterLost(self, request: pb.MasterLostRequest, context: Context) -> pb.MasterLostResponse:
        """The member to promote, among ``candidate_ids`` (without them: every RUNNING SLAVE other
        than the lost master, the proto's rule for older callers). Every candidate must answer; see
        ``_choose_among`` and ``replication.choose_position``."""
        ctx = request.context
        if request.candidate_ids:
            members = sdk.candidates(ctx, request.candidate_ids)
        else:
            members = [
                m
                for m in sdk.others(ctx)
                if m.role == types_pb2.ROLE_SLAVE and m.state == types_pb2.MEMBER_STATE_RUNNING
            ]
            if not members:
                raise sdk.Unavailable(f"{ctx.instance.spec.name} has no running replica to promote now")
        return await self._choose_among(
            ctx, members, request.master_position, request.maximum_lag_on_failover
        )

    async def _choose_among(
        self,
        ctx: pb.CallbackContext,
        members: list[types_pb2.Member],
        master_position: str = "",
        maximum_lag: int = 0,
    ) -> pb.MasterLostResponse:
        """Every candidate must answer (one that does not is waited for: UNAVAILABLE, lifecycle
        retries); then the one whose data contains every other's (``replication.choose_position``);
        then patroni's ``maximum_lag_on_failover`` (bytes): a chosen member on the lost master's
        history (``master_position``'s replid) more than ``maximum_lag`` bytes behind it is not
        promoted (UNAVAILABLE: the failover waits). A position on another history cannot be
        compared and is not refused; one already promoted is not refused either (done)."""
        problems: list[str] = []
        lost: tuple[str, int] | None = None
        if master_position:
            try:
                lost = replication.parse_position(master_position)
            except ValueError as error:
                raise sdk.InvalidArgument(str(error), {"master_position": "<replid>:<offset>"}) from None

        async def ask(m: types_pb2.Member) -> dict[str, Any]:
            return await replication.info_replication(self.server(ctx, m))

        infos, unanswered = await sdk.ask_members(members, PORT, ask)
        problems += unanswered
        positions: list[replication.Position] = []
        for m, info in infos:
            if int(info.get("master_sync_in_progress", 0)):
                problems.append(f"{m.id}: a full sync is in progress (its data is partial)")
            else:
                positions.append(replication.Position.from_info(m.id, m.ordinal, info))
        listed = ", ".join(str(p) for p in positions) or "none"
        if problems:
            raise sdk.Unavailable(
                f"not every candidate of {ctx.instance.spec.name} answered: {'; '.join(problems)}"
                f" (answered: {listed})"
            )
        chosen, reason = replication.choose_position(positions, ctx.member_id)
        if maximum_lag > 0 and lost is not None and chosen.role != "master":
            behind = chosen.behind(*lost)
            if behind is not None and behind > maximum_lag:
                raise sdk.Unavailable(
                    f"{chosen.member_id} would be promoted but is {behind} bytes behind the lost master's "
                    f"last known position {master_position} (maximum_lag_on_failover {maximum_lag}); "
                    f"waiting (positions: {listed})"
                )
            if behind is not None:
                where = f"{behind} bytes behind" if behind >= 0 else f"{-behind} bytes ahead of"
                reason += f"; {where} the lost master's last known position (its last probe)"
        log.info("master %s of %s lost: promote %s", ctx.member_id, ctx.instance.spec.name, reason)
        return pb.MasterLostResponse(
            promote_member_id=chosen.member_id,
            reason=reason,
            positions={p.member_id: p.notation for p in positions},
        )
