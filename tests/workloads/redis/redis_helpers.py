"""Building a Redis instance from real Config answers, and asking its members things."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import LocalMember, MemberRunner, WorkloadServer, context, instance
from mesos_stateful.testing.workloads import pending_member as pending

NAME = "cache"
# A password with characters that would break naive quoting or ${VAR} expansion.
PASSWORD = 'pa$s "w0rd" ${HOST} \\x'
MASTER, SLAVE = types_pb2.ROLE_MASTER, types_pb2.ROLE_SLAVE


@dataclass
class Cluster:
    """Members by ordinal, their roles, and how to build callback contexts for them."""

    workload: WorkloadServer
    runner: MemberRunner
    password: str
    members: dict[int, LocalMember] = field(default_factory=dict)
    roles: dict[int, types_pb2.Role] = field(default_factory=dict)
    states: dict[int, types_pb2.MemberState] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)

    def instance(self) -> types_pb2.Instance:
        protos = []
        for ordinal, role in self.roles.items():
            if ordinal in self.members:
                state = self.states.get(ordinal, types_pb2.MEMBER_STATE_RUNNING)
                protos.append(self.members[ordinal].member_proto(ordinal, role, state))
            else:
                protos.append(pending(NAME, ordinal, role))
        return instance(NAME, "redis", protos, self.config)

    def ctx(self, ordinal: int, attempt: int = 1) -> pb.CallbackContext:
        return context(self.instance(), f"{NAME}-{ordinal}", {"password": self.password}, attempt)

    async def config_for(self, ordinal: int, role: types_pb2.Role) -> types_pb2.LaunchSpec:
        self.roles[ordinal] = role
        response = await self.workload.stub.Config(pb.ConfigRequest(context=self.ctx(ordinal)))
        launch = response.launch
        launch.task_id = f"{NAME}-{ordinal}.1"
        return launch

    def prepare(self, ordinal: int, launch: types_pb2.LaunchSpec) -> LocalMember:
        member = self.runner.prepare(launch)
        self.members[ordinal] = member
        return member

    async def launch(self, ordinal: int, role: types_pb2.Role, ready: bool = True) -> LocalMember:
        member = self.prepare(ordinal, await self.config_for(ordinal, role))
        await member.start()
        if ready:
            await member.wait_ready()
        return member

    @asynccontextmanager
    async def client(self, ordinal: int) -> AsyncIterator[aioredis.Redis]:
        m = self.members[ordinal]
        # One connection: WAIT counts only the calling connection's writes.
        client = aioredis.Redis(
            host=m.host,
            port=m.port("redis"),
            password=self.password,
            decode_responses=True,
            single_connection_client=True,
            socket_timeout=10,
        )
        try:
            yield client
        finally:
            await client.aclose()

    async def info(self, ordinal: int) -> dict[str, Any]:
        async with self.client(ordinal) as c:
            return dict(await c.info("replication"))


async def build(workload: WorkloadServer, runner: MemberRunner, password: str, replicas: int = 2) -> Cluster:
    """A master and ``replicas`` replicas, launched from Config answers as lifecycle would: the
    master first, the replicas once it is ready."""
    cluster = Cluster(workload, runner, password)
    for ordinal in range(1, replicas + 1):
        cluster.roles[ordinal] = SLAVE
    await cluster.launch(0, MASTER)
    for ordinal in range(1, replicas + 1):
        await cluster.launch(ordinal, SLAVE)
    return cluster
