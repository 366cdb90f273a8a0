"""Helpers of the end-to-end tests: Redis clients of members, redis-server processes of an instance."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.state.client import StateClient
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


def redis_pids(
    suite: Suite, tasks: Iterable[types_pb2.Task | types_pb2.Member], by_address: bool = True
) -> list[int]:
    """pids of live redis-server processes of these tasks (or members' current tasks) on the
    suite's cluster. redis-server rewrites its argv and environment (process title), so a process
    is recognised by its working directory (the task's sandbox under the cluster's work dir, named
    after the task id) or its "host:port" title."""
    root = str(Path(suite.cluster.cluster.settings.work_dir).resolve())
    wanted = list(tasks)
    ids = {t.task_id for t in wanted if t.task_id}
    addresses = {f"{t.host}:{t.ports[PORT]}" for t in wanted if by_address and t.host and PORT in t.ports}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "redis-server":
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                continue  # a zombie is dead already
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except (OSError, IndexError):
            continue
        in_sandbox = cwd.startswith(root) and any(f"/{task_id}/" in cwd + "/" for task_id in ids)
        if in_sandbox or any(address in title.split() for address in addresses):
            pids.append(int(entry.name))
    return pids


def kill9(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, 9)


async def write_acknowledged(
    master: types_pb2.Member, secret: str, count: int, replicas: int = 1
) -> dict[str, str]:
    """Write ``count`` keys on the master, then WAIT until ``replicas`` replicas acknowledged them
    all; returns what was written."""
    written = {f"key-{i}": f"value-{i}" for i in range(count)}
    async with connect(master, secret) as r:
        async with r.pipeline(transaction=False) as pipe:
            for k, v in written.items():
                pipe.set(k, v)
            await pipe.execute()
        # WAIT counts only this connection's writes: the same connection wrote them all.
        acked = await r.wait(replicas, 10000)
        assert acked >= replicas, f"only {acked} replicas acknowledged the writes"
    return written


async def missing_keys(member: types_pb2.Member, secret: str, written: dict[str, str]) -> list[str]:
    async with connect(member, secret) as r:
        values = await r.mget(list(written))
    return [k for k, v in zip(written, values, strict=True) if v != written[k]]


async def replication_info(member: types_pb2.Member, secret: str) -> dict[str, object]:
    async with connect(member, secret) as r:
        info: dict[str, object] = await r.info("replication")
    return info


class RoleWatch:
    """Follows an instance's member records through a state watch: every member that becomes
    MASTER (promotions) and the most MASTER members ever stored at once."""

    def __init__(self, client: StateClient, instance: str) -> None:
        self.client = client
        self.instance = instance
        self.roles: dict[str, int] = {}
        self.promotions: list[str] = []
        self.max_masters = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        records, revision = await self.client.list(spb.KIND_MEMBER, f"{self.instance}/")
        self.roles = {r.member.id: r.member.role for r in records}
        self.max_masters = self._masters()
        self._task = asyncio.create_task(self._run(revision + 1))

    def _masters(self) -> int:
        return sum(role == types_pb2.ROLE_MASTER for role in self.roles.values())

    async def _run(self, revision: int) -> None:
        async for event in self.client.watch(
            kinds=[spb.KIND_MEMBER], prefix=f"{self.instance}/", start_revision=revision
        ):
            member = event.record.member
            if event.type == spb.EVENT_TYPE_DELETE:
                self.roles.pop(member.id, None)
                continue
            if member.role == types_pb2.ROLE_MASTER and self.roles.get(member.id) != types_pb2.ROLE_MASTER:
                self.promotions.append(member.id)
            self.roles[member.id] = member.role
            self.max_masters = max(self.max_masters, self._masters())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
