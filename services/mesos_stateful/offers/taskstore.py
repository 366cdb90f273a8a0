"""Task and framework records in the state service, with a cache of what offers wrote.

Offers is the only writer of task records (lifecycle only deletes terminal ones), so the cache
is the truth once loaded; every change is written to the state service first and cached only
when the write succeeded.
"""

from __future__ import annotations

import logging

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors

log = logging.getLogger(__name__)


def copy_task(task: types_pb2.Task) -> types_pb2.Task:
    copy = types_pb2.Task()
    copy.CopyFrom(task)
    return copy


class TaskStore:
    def __init__(self, client: StateClient) -> None:
        self.client = client
        self.tasks: dict[str, types_pb2.Task] = {}
        self._revisions: dict[str, int] = {}

    async def load(self) -> int:
        """Read every task record; returns the store revision of the read."""
        records, revision = await self.client.list(spb.KIND_TASK)
        self.tasks = {r.task.task_id: r.task for r in records}
        self._revisions = {r.task.task_id: r.mod_revision for r in records}
        return revision

    def get(self, task_id: str) -> types_pb2.Task | None:
        return self.tasks.get(task_id)

    async def find(self, task_id: str) -> types_pb2.Task | None:
        """The cached task, else the stored one (cached from then on)."""
        task = self.tasks.get(task_id)
        if task is not None:
            return task
        record = await self.client.find(spb.KIND_TASK, task_id)
        if record is None:
            return None
        self._cache(record)
        return record.task

    async def create(self, task: types_pb2.Task) -> tuple[types_pb2.Task, bool]:
        """Create the record; (existing task, False) if the id is taken."""
        try:
            record = await self.client.put(task, expected_revision=0)
        except errors.AlreadyExists:
            existing = await self.client.find(spb.KIND_TASK, task.task_id)
            if existing is None:
                raise errors.Conflict(f"task {task.task_id} changed while being created") from None
            self._cache(existing)
            return existing.task, False
        self._cache(record)
        return record.task, True

    async def save(self, task: types_pb2.Task) -> types_pb2.Task:
        """Write ``task`` over the stored record (compare-and-swap, re-read on conflict).
        NotFound if the record was deleted meanwhile (it is forgotten then)."""
        revision = self._revisions.get(task.task_id, 0)
        for _ in range(5):
            try:
                record = await self.client.put(task, expected_revision=revision or None)
            except errors.Conflict:
                current = await self.client.find(spb.KIND_TASK, task.task_id)
                if current is None:
                    self.forget(task.task_id)
                    raise errors.NotFound(f"task {task.task_id} was deleted") from None
                revision = current.mod_revision
                continue
            self._cache(record)
            return record.task
        raise errors.Conflict(f"task {task.task_id}: too many concurrent writes")

    def forget(self, task_id: str) -> None:
        self.tasks.pop(task_id, None)
        self._revisions.pop(task_id, None)

    def _cache(self, record: spb.Record) -> None:
        self.tasks[record.task.task_id] = record.task
        self._revisions[record.task.task_id] = record.mod_revision

    # -- the framework record -----------------------------------------------------------------

    async def load_framework(self) -> types_pb2.Framework | None:
        record = await self.client.find(spb.KIND_FRAMEWORK, "")
        return record.framework if record is not None else None

    async def save_framework(self, framework: types_pb2.Framework) -> None:
        await self.client.put(framework)

    async def delete_framework(self) -> None:
        await self.client.delete(spb.KIND_FRAMEWORK, "")
