"""Talking to Redis for the measurement: acknowledged writes, the write loop that finds the new
master after a kill, and the check that acknowledged keys survived.

Every client has retries off and short timeouts, so that a dead server costs one fast failure
and the loop, not the client library, decides when to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

Address = tuple[str, int]


def client(address: Address, password: str | None, timeout: float = 0.5) -> aredis.Redis:
    """One connection, no retries, ``timeout`` for connect and for each reply."""
    return aredis.Redis(
        host=address[0],
        port=address[1],
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=True,
        decode_responses=True,
    )


def fmt(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


async def replication(address: Address, password: str | None, timeout: float = 1.0) -> dict[str, object]:
    """INFO replication of one server."""
    conn = client(address, password, timeout)
    try:
        info: dict[str, object] = await conn.info("replication")
        return info
    finally:
        await conn.aclose()


async def wait_until(what: str, check: Callable[[], object], deadline: float, interval: float = 0.05) -> None:
    """Poll ``check`` (sync or async, truthy = done; RedisError/OSError = not yet) until the
    monotonic ``deadline``; TimeoutError naming ``what`` and the last error otherwise."""
    last = ""
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            last = f"last answer: {result!r}"
        except (RedisError, OSError) as error:
            last = f"last error: {error}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not done in time ({last})")
        await asyncio.sleep(interval)


async def wait_ping(address: Address, password: str | None, deadline: float) -> None:
    async def ping() -> bool:
        conn = client(address, password)
        try:
            return bool(await conn.ping())
        finally:
            await conn.aclose()

    await wait_until(f"redis {fmt(address)} answers PING", ping, deadline)


@dataclass
class Acked:
    """Keys written and acknowledged by at least one replica (WAIT 1) before the kill."""

    keys: dict[str, str]
    batches_unacked: int


async def write_acked_keys(
    master: Address,
    password: str | None,
    prefix: str,
    batches: int = 10,
    per_batch: int = 20,
    wait_timeout_ms: int = 5000,
) -> Acked:
    """Write ``batches`` batches of keys on one connection, each followed by ``WAIT 1`` (which
    counts only this connection's writes); keep the keys of the batches a replica acknowledged."""
    conn = client(master, password, timeout=wait_timeout_ms / 1000 + 2)
    acked: dict[str, str] = {}
    unacked = 0
    try:
        for batch in range(batches):
            pipe = conn.pipeline(transaction=False)
            keys = {f"{prefix}:{batch}:{i}": f"v{batch}-{i}-{time.time_ns()}" for i in range(per_batch)}
            for key, value in keys.items():
                pipe.set(key, value)
            pipe.execute_command("WAIT", 1, wait_timeout_ms)
            replies = await pipe.execute()
            if int(replies[-1]) >= 1:
                acked.update(keys)
            else:
                unacked += 1
    finally:
        await conn.aclose()
    return Acked(acked, unacked)


async def missing_keys(address: Address, password: str | None, keys: dict[str, str]) -> list[str]:
    """Acknowledged keys that are absent or hold another value on ``address``."""
    conn = client(address, password, timeout=5.0)
    try:
        names = list(keys)
        values: list[object] = []
        for start in range(0, len(names), 500):
            values += await conn.mget(names[start : start + 500])
        return [k for k, v in zip(names, values, strict=True) if v != keys[k]]
    finally:
        await conn.aclose()


@dataclass
class NewMaster:
    address: Address
    at: float  # monotonic time of the first successful SET on it


async def _probe(address: Address, password: str | None, interval: float, stop_at: float) -> NewMaster:
    """Loop SET on one server until a SET succeeds while it reports role:master."""
    conn = client(address, password, timeout=0.5)
    try:
        while time.monotonic() < stop_at:
            try:
                await conn.set("bench:failover:probe", str(time.time_ns()))
                at = time.monotonic()
                info = await conn.info("replication")
                if info.get("role") == "master":
                    return NewMaster(address, at)
            except (RedisError, OSError):
                pass
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await conn.aclose()
    raise TimeoutError


async def wait_new_master(
    candidates: Callable[[], Iterable[Address]],
    excluded: Address,
    password: str | None,
    deadline: float,
    interval: float = 0.01,
) -> NewMaster | None:
    """The first server among ``candidates()`` (re-read every 100 ms, so addresses that appear
    later are probed too) other than ``excluded`` that accepts a write as master; None when
    none does before the monotonic ``deadline``."""
    probes: dict[Address, asyncio.Task[NewMaster]] = {}
    try:
        while time.monotonic() < deadline:
            for address in candidates():
                if address != excluded and address not in probes:
                    probes[address] = asyncio.create_task(_probe(address, password, interval, deadline))
            done = [t for t in probes.values() if t.done() and not t.cancelled() and t.exception() is None]
            if done:
                return min((t.result() for t in done), key=lambda m: m.at)
            pending = [t for t in probes.values() if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(0.1)
        return None
    finally:
        for task in probes.values():
            task.cancel()
        await asyncio.gather(*probes.values(), return_exceptions=True)
