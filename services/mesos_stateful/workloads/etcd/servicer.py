"""The etcd WorkloadService: thin callbacks over config.py and members.py."""

from __future__ import annotations

import logging

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.sdk import Context, WorkloadBase, callback, pb
from mesos_stateful.workloads.etcd import members
from mesos_stateful.workloads.etcd.config import build_launch, client_url, peer_url
from mesos_stateful.workloads.etcd.description import description
from mesos_stateful.workloads.etcd.settings import EtcdSettings

log = logging.getLogger(__name__)


def belongs_to(m: members.Member, member: types_pb2.Member) -> bool:
    """Whether etcd member ``m`` is a launch of our ``member``: named ``<member id>.<n>``, or
    (added, maybe never started) at its current peer URL."""
    url = peer_url(member)
    return (
        m.name == member.id or m.name.startswith(member.id + ".") or (url is not None and url in m.peer_urls)
    )


class EtcdWorkload(WorkloadBase):
    def __init__(self, settings: EtcdSettings) -> None:
        super().__init__(description(settings.default_image), settings)
        self.etcd_settings = settings

    @property
    def timeout(self) -> float:
        return self.etcd_settings.request_timeout_seconds

    @callback
    async def Config(self, request: pb.ConfigRequest, context: Context) -> pb.ConfigResponse:
        return pb.ConfigResponse(launch=build_launch(request.context, self.etcd_settings))

    async def _own_status(self, ctx: pb.CallbackContext, with_raft: bool) -> dict[str, str]:
        me = sdk.member(ctx)
        url = client_url(me)
        if url is None:
            raise sdk.FailedPrecondition(f"member {me.id} has no client address yet")
        async with members.Client(url, self.timeout) as client:
            listed = await client.members()
            own = [m for m in listed if url in m.client_urls]
            if not own:
                raise sdk.Unavailable(f"{me.id} is not a started member of the cluster yet")
            status = {
                "etcd_member_id": own[0].hex_id,
                "etcd_name": own[0].name,
                "cluster_members": str(len(listed)),
            }
            if with_raft:
                raft = await client.status()
                status.update(
                    leader=str(raft.get("leader") == str(own[0].id)).lower(),
                    raft_term=str(raft.get("raftTerm", "")),
                    raft_index=str(raft.get("raftIndex", "")),
                    version=str(raft.get("version", "")),
                    db_size=str(raft.get("dbSize", "")),
                )
        return status

    @callback
    async def Start(self, request: pb.StartRequest, context: Context) -> pb.StartResponse:
        return pb.StartResponse(status=await self._own_status(request.context, with_raft=False))

    @callback
    async def PeerRunning(self, request: pb.PeerRunningRequest, context: Context) -> pb.PeerRunningResponse:
        return pb.PeerRunningResponse(status=await self._own_status(request.context, with_raft=True))

    @callback
    async def PeerLost(self, request: pb.PeerLostRequest, context: Context) -> pb.PeerLostResponse:
        # Always replace: lifecycle first calls RemoveMember (so the lost peer stops counting
        # against the quorum), then launches the same member id anew, which joins as a new member.
        return pb.PeerLostResponse(replace=True)

    @callback
    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Context
    ) -> pb.RemoveMemberResponse:
        ctx = request.context
        target = sdk.member(ctx)
        # Ask the other peers (running ones first), the leaving member itself last.
        others = sorted(sdk.others(ctx), key=lambda m: m.state != types_pb2.MEMBER_STATE_RUNNING)
        endpoints = [url for m in [*others, target] if (url := client_url(m))]
        if not [m for m in others if client_url(m)]:
            # The last member: there is no cluster left to forget it.
            log.info("%s is the only peer with an address; nothing to remove it from", target.id)
            return pb.RemoveMemberResponse()

        async def remove(client: members.Client) -> list[str]:
            removed = []
            for m in await client.members():
                if belongs_to(m, target):
                    try:
                        await client.remove(m.id)
                    except sdk.NotFound:
                        continue  # removed meanwhile
                    removed.append(f"{m.hex_id} ({m.name or 'unstarted'})")
            return removed

        endpoint, removed = await members.first_answer(endpoints, self.timeout, remove)
        log.info(
            "removed %s from %s via %s: %s",
            target.id,
            ctx.instance.spec.name,
            endpoint,
            ", ".join(removed) or "already gone",
        )
        return pb.RemoveMemberResponse()
