"""Small helpers for the state tests: polling with a deadline, record builders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.testing import poll


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` (only to catch hangs)."""
    await poll.eventually(check, what or str(check), timeout, interval=0.05)


def instance(name: str, generation: int = 0) -> types_pb2.Instance:
    value = types_pb2.Instance(generation=generation)
    value.spec.name = name
    return value


def member(instance_name: str, ordinal: int) -> types_pb2.Member:
    return types_pb2.Member(id=f"{instance_name}-{ordinal}", instance=instance_name, ordinal=ordinal)


def task(task_id: str) -> types_pb2.Task:
    return types_pb2.Task(task_id=task_id)
