"""Helpers of the end-to-end tests: Redis clients of members, redis-server processes of an instance."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.testing.lifecycle import Suite

PORT = "redis"


@asynccontextmanager
async def connect(member: types_pb2.Member, password: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(
        host=member.host,
        port=member.ports[PORT],
        password=password or None,
        socket_timeout=5,
        socket_connect_timeout=3,
        decode_responses=True,
    )
    try:
        yield client
    finally:
        await client.aclose()


async def password(suite: Suite, name: str) -> str:
    response = await suite.get(name, secrets=True)
    return response.secrets.get("password", "")


def redis_pids(task_id: str | None = None, instance: str | None = None) -> list[int]:
    """pids of redis-server processes whose environment names the task (MESOS_TASK_ID / sandbox)
    or the instance (INSTANCE)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if not cmdline or not cmdline[0].endswith(b"redis-server"):
                continue
            environ = dict(
                item.split("=", 1)
                for item in (entry / "environ").read_text(errors="replace").split("\0")
                if "=" in item
            )
        except (OSError, ValueError):
            continue
        if instance is not None and environ.get("INSTANCE") != instance:
            continue
        if (
            task_id is not None
            and task_id not in environ.get("MESOS_SANDBOX", "")
            and (environ.get("MESOS_TASK_ID") != task_id)
        ):
            continue
        pids.append(int(entry.name))
    return pids


def kill9(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, 9)
