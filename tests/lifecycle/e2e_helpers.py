"""Helpers of the end-to-end tests: Redis clients of members, redis-server processes of an instance."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.lifecycle import Suite
from mesos_stateful.testing.procs import belongs_to

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
    is recognised by the files of its stdout/stderr or its working directory in the task's sandbox
    (under the cluster's work dir, in a folder named after the task id; redis-server itself runs
    in its volume, named after the member) or by its "host:port" title."""
    return list(redis_titles(suite, tasks, by_address))


def redis_titles(
    suite: Suite, tasks: Iterable[types_pb2.Task | types_pb2.Member], by_address: bool = True
) -> dict[int, str]:
    """pid -> process title (e.g. "redis-server 127.1.2.3:10001") of the live redis-server
    processes of these tasks, recognised as :func:`redis_pids` says."""
    return redis_titles_under(Path(suite.cluster.cluster.settings.work_dir), tasks, by_address)


def redis_pids_under(
    work_dir: Path, tasks: Iterable[types_pb2.Task | types_pb2.Member], by_address: bool = True
) -> list[int]:
    """:func:`redis_pids` for a cluster known by its work dir only (a suite run as `make run` runs
    it: ``<data_dir>/cluster``)."""
    return list(redis_titles_under(work_dir, tasks, by_address))


def redis_titles_under(
    work_dir: Path, tasks: Iterable[types_pb2.Task | types_pb2.Member], by_address: bool = True
) -> dict[int, str]:
    """:func:`redis_titles` of the cluster whose work dir is ``work_dir``."""
    root = str(work_dir.resolve())
    wanted = list(tasks)
    ids = {t.task_id for t in wanted if t.task_id}
    addresses = {f"{t.host}:{t.ports[PORT]}" for t in wanted if by_address and t.host and PORT in t.ports}
    pids: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "redis-server":
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                continue  # a zombie is dead already
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            places = [os.readlink(entry / "cwd")]
        except (OSError, IndexError):
            continue
        for fd in ("1", "2"):  # stdout/stderr: files in the task's sandbox (.../executors/<task id>/runs/..)
            with contextlib.suppress(OSError):
                places.append(os.readlink(entry / "fd" / fd))
        in_sandbox = any(
            place.startswith(root) and f"/{task_id}/" in place + "/" for place in places for task_id in ids
        )
        # The title only among the test's own processes: another suite may run a member titled
        # with the same host:port (a frozen one, or one of a cluster being torn down).
        titled = any(a in title.split() for a in addresses) and belongs_to(int(entry.name), [root])
        if in_sandbox or titled:
            pids[int(entry.name)] = title.strip()
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
        self.promoted_at: dict[str, float] = {}  # member id -> wall time its last promotion was seen
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
                self.promoted_at[member.id] = time.time()
            self.roles[member.id] = member.role
            self.max_masters = max(self.max_masters, self._masters())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _stopped(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for its end. A client library may swallow a cancellation (redis-py
    can turn it into a ConnectionError, which a write loop counts and retries): then the task
    goes on and a plain ``await task`` never returns (seen as a test hung until its timeout), so
    the cancellation is repeated until the task ends."""
    if task is None:
        return
    task.cancel()
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if not done:
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class AcknowledgedWriter:
    """Writes ``<prefix>-<i>`` keys to one member in a loop until stopped, each as ``SET`` then
    ``WAIT 1`` in one pipeline (one connection, so WAIT counts that SET; a reconnect re-sends
    both). Records every key whose WAIT returned >= 1 (acknowledged) and, for every OK the member
    gave, the monotonic time the reply arrived (the latest the write can have been accepted).
    Errors (READONLY once demoted, connection closed, ...) are counted and the loop goes on."""

    def __init__(self, member: types_pb2.Member, secret: str, prefix: str, wait_ms: int = 1000) -> None:
        self.member = member
        self.secret = secret
        self.prefix = prefix
        self.wait_ms = wait_ms
        self.acknowledged: dict[str, str] = {}
        self.ok_times: list[float] = []
        self.attempts = 0
        self.errors: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        async with connect(self.member, self.secret) as r:
            while True:
                key, value = f"{self.prefix}-{i}", f"value-{i}"
                i += 1
                self.attempts += 1
                try:
                    async with r.pipeline(transaction=False) as pipe:
                        pipe.set(key, value)
                        pipe.execute_command("WAIT", 1, self.wait_ms)
                        stored, acked = await pipe.execute(raise_on_error=False)
                    received = time.monotonic()
                except Exception as error:  # the connection dropped: whether SET landed is unknown
                    self._count(error)
                    await asyncio.sleep(0.01)
                    continue
                if isinstance(stored, Exception):
                    self._count(stored)
                    await asyncio.sleep(0.01)
                    continue
                self.ok_times.append(received)
                if isinstance(acked, int) and acked >= 1:
                    self.acknowledged[key] = value
                await asyncio.sleep(0.002)

    def _count(self, error: BaseException) -> None:
        name = str(error).split(" ", 1)[0] or type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    async def stop(self) -> None:
        await _stopped(self._task)


class FirstWrite:
    """Tries a write on every member of the instance but ``exclude`` (read from the state service
    each round) until one accepts it; records which member and the monotonic time the write was
    sent (the earliest it can have been accepted)."""

    def __init__(self, suite: Suite, instance: str, secret: str, exclude: str) -> None:
        self.suite = suite
        self.instance = instance
        self.secret = secret
        self.exclude = exclude
        self.member_id = ""
        self.sent_at = 0.0
        self.wall_at = 0.0
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        clients: dict[str, aioredis.Redis] = {}
        try:
            n = 0
            while True:
                instance = await self.suite.instance(self.instance)
                for m in instance.members if instance is not None else []:
                    if m.id == self.exclude or not m.host or PORT not in m.ports:
                        continue
                    address = f"{m.host}:{m.ports[PORT]}"
                    if address not in clients:
                        clients[address] = aioredis.Redis(
                            host=m.host,
                            port=m.ports[PORT],
                            password=self.secret or None,
                            socket_timeout=2,
                            socket_connect_timeout=2,
                            decode_responses=True,
                        )
                    n += 1
                    sent, wall = time.monotonic(), time.time()
                    try:
                        await clients[address].set(f"new-{n}", "x")
                    except Exception:  # READONLY, NOREPLICAS, not there yet
                        continue
                    self.member_id, self.sent_at, self.wall_at = m.id, sent, wall
                    self.done.set()
                    return
                await asyncio.sleep(0.01)
        finally:
            for client in clients.values():
                await client.aclose()

    async def wait(self, timeout: float) -> None:
        await asyncio.wait_for(self.done.wait(), timeout)

    async def stop(self) -> None:
        await _stopped(self._task)


@dataclass
class Seen:
    """One stored version of an instance or a member, as a watch delivered it."""

    at: float  # monotonic time of delivery
    instance: types_pb2.Instance | None = None
    member: types_pb2.Member | None = None


@dataclass
class InstanceWatch:
    """Every stored version of an instance and of its members from ``start()`` on (a state watch:
    nothing transient is missed, unlike polling), with the time each was seen."""

    client: StateClient
    instance: str
    seen: list[Seen] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        _, revision = await self.client.list(spb.KIND_INSTANCE, self.instance)
        self._task = asyncio.create_task(self._run(revision + 1))

    async def _run(self, revision: int) -> None:
        async for event in self.client.watch(
            kinds=[spb.KIND_INSTANCE, spb.KIND_MEMBER], prefix=self.instance, start_revision=revision
        ):
            if event.type == spb.EVENT_TYPE_DELETE:
                continue
            record = event.record
            if record.HasField("instance") and record.instance.spec.name == self.instance:
                self.seen.append(Seen(time.monotonic(), instance=record.instance))
            elif record.HasField("member") and record.key.name.startswith(f"{self.instance}/"):
                self.seen.append(Seen(time.monotonic(), member=record.member))

    def instances(self, since: float = 0.0) -> list[types_pb2.Instance]:
        return [s.instance for s in self.seen if s.instance is not None and s.at >= since]

    def first(
        self, member_id: str, condition: Callable[[types_pb2.Member], bool], since: float = 0.0
    ) -> Seen | None:
        """The first version of the member seen since ``since`` for which ``condition`` holds."""
        return next(
            (
                s
                for s in self.seen
                if s.member is not None and s.at >= since and s.member.id == member_id and condition(s.member)
            ),
            None,
        )

    async def stop(self) -> None:
        await _stopped(self._task)


def condition_of(member: types_pb2.Member, kind: int) -> types_pb2.MemberCondition | None:
    """The member's condition of that type in its last stored health."""
    return next((c for c in member.health.conditions if c.type == kind), None)


async def server_roles(suite: Suite, instance: str, secret: str) -> dict[str, dict[str, object]]:
    """The INFO replication of every live redis-server process of every task the instance ever
    had (found by sandbox, whatever the member records say), by its "host:port"."""
    tasks = list((await suite.tasks(instance)).values())
    answers: dict[str, dict[str, object]] = {}
    for title in redis_titles(suite, tasks, by_address=False).values():
        address = title.split()[1] if len(title.split()) > 1 else ""
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise AssertionError(f"a redis-server without an address in its title: {title!r}")
        m = types_pb2.Member(host=host, ports={PORT: int(port)})
        answers[address] = await replication_info(m, secret)
    return answers


SCAN_SECONDS = 0.5  # how often the sampler looks for new redis-server processes


class RoleSampler:
    """Samples ``INFO replication`` of every live redis-server the instance ever started (found by
    sandbox, whatever the records say) every ``interval`` seconds; keeps the most servers seen
    with role master at once, and the samples where that was more than one."""

    def __init__(self, suite: Suite, instance: str, secret: str, interval: float = 0.05) -> None:
        self.suite = suite
        self.instance = instance
        self.secret = secret
        self.interval = interval
        self.samples = 0
        self.max_masters = 0
        self.two_masters: list[list[str]] = []
        self.addresses: set[str] = set()
        self._clients: dict[str, aioredis.Redis] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _one(self, address: str) -> str:
        client = self._clients.get(address)
        if client is None:
            host, _, port = address.rpartition(":")
            client = self._clients[address] = aioredis.Redis(
                host=host,
                port=int(port),
                password=self.secret or None,
                socket_timeout=1,
                socket_connect_timeout=1,
                decode_responses=True,
            )
        try:
            info = await client.info("replication")
        except Exception:  # stopping, killed, not listening yet: not a master that takes writes
            return ""
        return str(info.get("role", ""))

    async def _scan(self) -> None:
        """Every ``SCAN_SECONDS``: the addresses of the live redis-servers of every task the
        instance ever had (a /proc scan, off the event loop)."""
        while True:
            tasks = list((await self.suite.tasks(self.instance)).values())
            titles = await asyncio.to_thread(redis_titles, self.suite, tasks, False)
            self.addresses |= {
                t.split()[1] for t in titles.values() if len(t.split()) > 1 and ":" in t.split()[1]
            }
            await asyncio.sleep(SCAN_SECONDS)

    async def _run(self) -> None:
        scan = asyncio.create_task(self._scan())
        try:
            while True:
                instance = await self.suite.instance(self.instance)
                for m in instance.members if instance is not None else []:
                    if m.host and PORT in m.ports:
                        self.addresses.add(f"{m.host}:{m.ports[PORT]}")
                addresses = sorted(self.addresses)
                roles = await asyncio.gather(*(self._one(a) for a in addresses))
                masters = [a for a, role in zip(addresses, roles, strict=True) if role == "master"]
                self.samples += 1
                self.max_masters = max(self.max_masters, len(masters))
                if len(masters) > 1:
                    self.two_masters.append(masters)
                await asyncio.sleep(self.interval)
        finally:
            scan.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scan
            for client in self._clients.values():
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
