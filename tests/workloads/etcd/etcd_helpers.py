"""Building an etcd instance from real Config answers, one peer at a time, as lifecycle does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.testing.workloads import LocalMember, MemberRunner, WorkloadServer, context, instance
from mesos_stateful.testing.workloads import pending_member as pending
from mesos_stateful.workloads.base import DATA_DIR
from mesos_stateful.workloads.etcd import members

# The same module under a name that Cluster's `members` field does not hide (its annotations).
from mesos_stateful.workloads.etcd import members as etcd_members

NAME = "kv"
PEER = types_pb2.ROLE_PEER


@dataclass
class Cluster:
    workload: WorkloadServer
    runner: MemberRunner
    members: dict[int, LocalMember] = field(default_factory=dict)
    states: dict[int, types_pb2.MemberState] = field(default_factory=dict)
    incarnations: dict[int, int] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)
    ports: dict[int, dict[str, int]] = field(default_factory=dict)

    def instance(self) -> types_pb2.Instance:
        protos = []
        for ordinal in sorted(self.incarnations):
            if ordinal in self.members:
                state = self.states.get(ordinal, types_pb2.MEMBER_STATE_RUNNING)
                proto = self.members[ordinal].member_proto(ordinal, PEER, state)
            else:
                proto = pending(NAME, ordinal, PEER)
            proto.incarnation = self.incarnations[ordinal]
            protos.append(proto)
        return instance(NAME, "etcd", protos, self.config)

    def ctx(self, ordinal: int, attempt: int = 1) -> pb.CallbackContext:
        return context(self.instance(), f"{NAME}-{ordinal}", {}, attempt)

    async def config_for(self, ordinal: int) -> types_pb2.LaunchSpec:
        """Config for a new launch of the member (incarnation + 1)."""
        self.incarnations[ordinal] = self.incarnations.get(ordinal, 0) + 1
        self.members.pop(ordinal, None)
        self.states.pop(ordinal, None)
        launch = (await self.workload.stub.Config(pb.ConfigRequest(context=self.ctx(ordinal)))).launch
        launch.task_id = f"{NAME}-{ordinal}.{self.incarnations[ordinal]}"
        return launch

    def volume(self, ordinal: int) -> Path:
        """The member's persistent volume: it outlives its tasks (and their sandboxes)."""
        return self.runner.root.parent / "volumes" / f"{NAME}-{ordinal}"

    def prepare(self, ordinal: int, launch: types_pb2.LaunchSpec) -> LocalMember:
        """A new task of the member: a fresh sandbox with the volume linked in at ``data`` (as
        Mesos's filesystem/posix isolator does), on the member's ports (kept, as reserved)."""
        sandbox = self.runner.root / launch.task_id
        sandbox.mkdir(parents=True)
        self.volume(ordinal).mkdir(parents=True, exist_ok=True)
        (sandbox / DATA_DIR).symlink_to(self.volume(ordinal), target_is_directory=True)
        member = self.runner.prepare(launch, ports=self.ports.get(ordinal))
        self.ports[ordinal] = member.ports
        self.members[ordinal] = member
        self.states[ordinal] = types_pb2.MEMBER_STATE_STARTING
        return member

    async def start_all(self, ordinals: list[int]) -> None:
        """Relaunch peers together (as after a restart of the whole suite), then wait for each."""
        for ordinal in ordinals:
            await self.prepare(ordinal, await self.config_for(ordinal)).start()
        for ordinal in ordinals:
            await self.members[ordinal].wait_ready(60)
            self.states[ordinal] = types_pb2.MEMBER_STATE_RUNNING

    async def launch(self, ordinal: int) -> LocalMember:
        """Config -> launch -> ready -> Start -> PeerRunning."""
        member = self.prepare(ordinal, await self.config_for(ordinal))
        await member.start()
        await member.wait_ready(60)
        self.states[ordinal] = types_pb2.MEMBER_STATE_RUNNING
        await self.workload.stub.Start(pb.StartRequest(context=self.ctx(ordinal)))
        await self.workload.stub.PeerRunning(pb.PeerRunningRequest(context=self.ctx(ordinal)))
        return member

    async def remove(self, ordinal: int) -> None:
        """Scale down: RemoveMember, then kill (etcd exits by itself once removed)."""
        await self.workload.stub.RemoveMember(pb.RemoveMemberRequest(context=self.ctx(ordinal)))
        await self.members[ordinal].stop(grace_seconds=10)
        del self.members[ordinal], self.incarnations[ordinal]
        self.states.pop(ordinal, None)

    def url(self, ordinal: int) -> str:
        return f"http://{self.members[ordinal].host}:{self.members[ordinal].port('client')}"

    def live(self) -> list[int]:
        return [o for o, m in sorted(self.members.items()) if m.running]

    def client(self, ordinal: int) -> etcd_members.Client:
        return members.Client(self.url(ordinal), 5.0)

    async def member_list(self, ordinal: int) -> list[etcd_members.Member]:
        async with self.client(ordinal) as c:
            return await c.members()


async def build(workload: WorkloadServer, runner: MemberRunner, peers: int = 3) -> Cluster:
    cluster = Cluster(workload, runner)
    for ordinal in range(peers):
        cluster.incarnations.setdefault(ordinal, 0)
    for ordinal in range(peers):
        await cluster.launch(ordinal)
    return cluster
