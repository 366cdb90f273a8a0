"""Building a Redis instance from real Config answers, and asking its members things."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import LocalMember, MemberRunner, WorkloadServer, context, instance
from mesos_stateful.testing.workloads import pending_member as pending
from mesos_stateful.workloads.base import DATA_DIR

NAME = "cache"
# A password with characters that would break naive quoting or ${VAR} expansion.
PASSWORD = 'pa$s "w0rd" ${HOST} \\x'
MASTER, SLAVE = types_pb2.ROLE_MASTER, types_pb2.ROLE_SLAVE
DATA = DATA_DIR


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
    incarnations: dict[int, int] = field(default_factory=dict)
    # spec.replicas (members the spec asks for); None: as many as there are members.
    replicas: int | None = None

    def instance(self) -> types_pb2.Instance:
        protos = []
        for ordinal, role in self.roles.items():
            if ordinal in self.members:
                state = self.states.get(ordinal, types_pb2.MEMBER_STATE_RUNNING)
                protos.append(self.members[ordinal].member_proto(ordinal, role, state))
            else:
                protos.append(pending(NAME, ordinal, role))
        return instance(NAME, "redis", protos, self.config, self.replicas)

    def ctx(self, ordinal: int, attempt: int = 1) -> pb.CallbackContext:
        return context(self.instance(), f"{NAME}-{ordinal}", {"password": self.password}, attempt)

    async def config_for(self, ordinal: int, role: types_pb2.Role) -> types_pb2.LaunchSpec:
        """Config for the next task of the member (incarnation + 1)."""
        self.roles[ordinal] = role
        self.incarnations[ordinal] = self.incarnations.get(ordinal, 0) + 1
        response = await self.workload.stub.Config(pb.ConfigRequest(context=self.ctx(ordinal)))
        launch = response.launch
        launch.task_id = f"{NAME}-{ordinal}.{self.incarnations[ordinal]}"
        return launch

    def volume(self, ordinal: int) -> Path:
        """The member's persistent volume: it outlives its tasks (and their sandboxes)."""
        return self.runner.root.parent / "volumes" / f"{NAME}-{ordinal}"

    def prepare(self, ordinal: int, launch: types_pb2.LaunchSpec) -> LocalMember:
        """A new task of the member: a fresh sandbox with the volume linked in at ``data`` (as
        Mesos's filesystem/posix isolator does); a relaunch keeps the member's ports."""
        old = self.members.get(ordinal)
        link_volume(self.runner, launch, self.volume(ordinal))
        member = self.runner.prepare(launch, ports=old.ports if old is not None else None)
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


def link_volume(runner: MemberRunner, launch: types_pb2.LaunchSpec, volume: Path) -> None:
    """Lay out the task's sandbox with the member's volume at ``data``, before the runner writes
    the launch's files into it."""
    sandbox = runner.root / launch.task_id
    sandbox.mkdir(parents=True, exist_ok=True)
    volume.mkdir(parents=True, exist_ok=True)
    (sandbox / DATA).symlink_to(volume, target_is_directory=True)


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
