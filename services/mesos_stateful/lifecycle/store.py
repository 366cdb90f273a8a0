"""Reading one instance's world from the state service, and the lifecycle's writes to it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf.message import Message

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.records import member_name
from mesos_stateful.lifecycle import plans
from mesos_stateful.lifecycle.planner import Snapshot

KIND_INSTANCE = spb.KIND_INSTANCE
KIND_MEMBER = spb.KIND_MEMBER
KIND_TASK = spb.KIND_TASK
KIND_WORKLOAD = spb.KIND_WORKLOAD
KIND_SECRETS = spb.KIND_SECRETS


@dataclass
class Loaded:
    """One instance as read now: the planner's snapshot plus what steps need besides."""

    snapshot: Snapshot
    secrets: dict[str, str] = field(default_factory=dict)
    workload_endpoint: str = ""

    @property
    def name(self) -> str:
        return self.snapshot.name

    def with_member(self, member: types_pb2.Member) -> None:
        """Replace (or add) a member in the snapshot after writing it."""
        members = [m for m in self.snapshot.members if m.id != member.id] + [member]
        members.sort(key=lambda m: m.ordinal)
        self.snapshot = dataclasses.replace(self.snapshot, members=members)

    def with_instance(self, instance: types_pb2.Instance) -> None:
        self.snapshot = dataclasses.replace(self.snapshot, instance=instance)


class Store:
    """Typed reads and writes of the records lifecycle uses (over a ``StateClient``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def load(self, name: str) -> Loaded | None:
        record = await self.client.find(KIND_INSTANCE, name)
        if record is None:
            return None
        instance: types_pb2.Instance = record.instance
        member_records, _ = await self.client.list(KIND_MEMBER, f"{name}/")
        members = sorted((r.member for r in member_records), key=lambda m: m.ordinal)
        task_records, _ = await self.client.list(KIND_TASK, f"{name}-")
        tasks = {r.task.task_id: r.task for r in task_records if r.task.instance == name}
        workload = await self.client.find(KIND_WORKLOAD, instance.spec.workload)
        secrets = await self.client.find(KIND_SECRETS, name)
        snapshot = Snapshot(
            instance=instance,
            members=members,
            tasks=tasks,
            description=workload.workload.description if workload is not None else None,
        )
        return Loaded(
            snapshot=snapshot,
            secrets=dict(secrets.secrets.values) if secrets is not None else {},
            workload_endpoint=workload.workload.endpoint if workload is not None else "",
        )

    async def update_member(
        self,
        instance: str,
        member_id: str,
        mutate: Callable[[types_pb2.Member], types_pb2.Member | None],
    ) -> types_pb2.Member | None:
        """Read-modify-write of one member (None if it does not exist). ``mutate`` gets a copy and
        returns the new value, or None for no write."""

        def apply(current: Message | None) -> Message | None:
            if current is None:
                return None
            original = types_pb2.Member()
            original.MergeFromString(current.SerializeToString())
            new = mutate(cast(types_pb2.Member, current))
            if new is None or new == original:
                return None
            new.updated_at.CopyFrom(plans.timestamp(time.time()))
            return new

        record = await self.client.update(KIND_MEMBER, member_name(instance, member_id), apply)
        return record.member if record is not None else None

    async def create_member(self, member: types_pb2.Member) -> bool:
        """Create only; False if it already exists."""
        from mesos_stateful.common import errors

        member.updated_at.CopyFrom(plans.timestamp(time.time()))
        try:
            await self.client.put(member, expected_revision=0)
        except errors.AlreadyExists:
            return False
        return True

    async def update_instance(
        self, name: str, mutate: Callable[[types_pb2.Instance], types_pb2.Instance | None]
    ) -> types_pb2.Instance | None:
        """Read-modify-write of the instance status; ``mutate`` sees the current record (the
        gateway may have changed spec or phase meanwhile) and returns None for no write."""

        def apply(current: Message | None) -> Message | None:
            if current is None:
                return None
            original = types_pb2.Instance()
            original.MergeFromString(current.SerializeToString())
            new = mutate(cast(types_pb2.Instance, current))
            if new is None or new == original:
                return None
            new.updated_at.CopyFrom(plans.timestamp(time.time()))
            return new

        record = await self.client.update(KIND_INSTANCE, name, apply)
        return record.instance if record is not None else None
