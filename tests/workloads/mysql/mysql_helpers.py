"""Building a MariaDB instance from real Config answers, and asking its members things."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import LocalMember, MemberRunner, WorkloadServer, context, instance
from mesos_stateful.testing.workloads import pending_member as pending
from mesos_stateful.workloads.base import DATA_DIR

NAME = "db"
# Passwords with characters that would break naive SQL quoting, JSON or ${VAR} expansion.
SECRETS = {
    "admin_password": 'ad\'min "pw" ${HOST} \\x',
    "replication_password": "re'pl $PORT_MYSQL \\",
}
ADMIN = "admin"
MASTER, SLAVE = types_pb2.ROLE_MASTER, types_pb2.ROLE_SLAVE


@dataclass
class Cluster:
    """Members by ordinal, their roles and launches, and callback contexts for them."""

    workload: WorkloadServer
    runner: MemberRunner
    members: dict[int, LocalMember] = field(default_factory=dict)
    roles: dict[int, types_pb2.Role] = field(default_factory=dict)
    states: dict[int, types_pb2.MemberState] = field(default_factory=dict)
    incarnations: dict[int, int] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)

    def instance(self) -> types_pb2.Instance:
        protos = []
        for ordinal, role in sorted(self.roles.items()):
            if ordinal in self.members:
                state = self.states.get(ordinal, types_pb2.MEMBER_STATE_RUNNING)
                proto = self.members[ordinal].member_proto(ordinal, role, state)
            else:
                proto = pending(NAME, ordinal, role)
            proto.incarnation = self.incarnations.get(ordinal, 1)
            protos.append(proto)
        return instance(NAME, "mysql", protos, self.config)

    def ctx(self, ordinal: int, attempt: int = 1) -> pb.CallbackContext:
        return context(self.instance(), f"{NAME}-{ordinal}", SECRETS, attempt)

    async def launch(self, ordinal: int, role: types_pb2.Role, ready: bool = True) -> LocalMember:
        """Config, then start the member as a new task (incarnation + 1, fresh sandbox)."""
        incarnation = self.incarnations.get(ordinal, 0) + 1
        self.incarnations[ordinal] = incarnation
        self.roles[ordinal] = role
        self.states.pop(ordinal, None)
        response = await self.workload.stub.Config(pb.ConfigRequest(context=self.ctx(ordinal)))
        launch = response.launch
        launch.task_id = f"{NAME}-{ordinal}.{incarnation}"
        member = self.prepare(ordinal, launch)
        await member.start()
        if ready:
            await member.wait_ready(60)
        return member

    def volume(self, ordinal: int) -> Path:
        """The member's persistent volume: it outlives its tasks (and their sandboxes)."""
        return self.runner.root.parent / "volumes" / f"{NAME}-{ordinal}"

    def prepare(self, ordinal: int, launch: types_pb2.LaunchSpec) -> LocalMember:
        """A new task of the member: a fresh sandbox with the volume linked in at ``data`` (as
        Mesos's filesystem/posix isolator does); a relaunch keeps the member's ports."""
        old = self.members.get(ordinal)
        sandbox = self.runner.root / launch.task_id
        sandbox.mkdir(parents=True)
        self.volume(ordinal).mkdir(parents=True, exist_ok=True)
        (sandbox / DATA_DIR).symlink_to(self.volume(ordinal), target_is_directory=True)
        member = self.runner.prepare(launch, ports=old.ports if old is not None else None)
        self.members[ordinal] = member
        return member

    def address(self, ordinal: int) -> tuple[str, int]:
        m = self.members[ordinal]
        return m.host, m.port("mysql")

    async def query(self, ordinal: int, statement: str, *args: Any) -> list[dict[str, Any]]:
        host, port = self.address(ordinal)
        return await asyncio.to_thread(query, host, port, statement, *args)


def query(
    host: str,
    port: int,
    statement: str,
    *args: Any,
    password: str | None = None,
    user: str = ADMIN,
    read_timeout: float = 10,
) -> list[dict[str, Any]]:
    conn = pymysql.connect(
        host=host,
        port=port,
        user=user,
        password=SECRETS["admin_password"] if password is None else password,
        connect_timeout=3,
        read_timeout=read_timeout,
        autocommit=True,
        cursorclass=pymysql.cursors.DictCursor,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, args or None)
            return list(cursor.fetchall())
    finally:
        conn.close()


async def build(workload: WorkloadServer, runner: MemberRunner, replicas: int = 2) -> Cluster:
    """A master and ``replicas`` replicas, as lifecycle deploys them: the master is launched and
    ready, StartMaster; then each replica is launched and ready, StartSlave."""
    cluster = Cluster(workload, runner)
    for ordinal in range(1, replicas + 1):
        cluster.roles[ordinal] = SLAVE
    await cluster.launch(0, MASTER)
    await workload.stub.StartMaster(pb.StartMasterRequest(context=cluster.ctx(0)))
    for ordinal in range(1, replicas + 1):
        await cluster.launch(ordinal, SLAVE)
        await workload.stub.StartSlave(pb.StartSlaveRequest(context=cluster.ctx(ordinal)))
    return cluster
