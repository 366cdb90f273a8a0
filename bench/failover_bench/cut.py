"""The measurement of a *cut* master, shared by the suite and Sentinel sides of
bench/partition_failover.py: a steady write load on the master (each SET followed by ``WAIT 1`` on
the same connection), the cut (SIGSTOP of its redis-server, or its agent cut off from the Mesos
master), the first write a new master accepts, the old master brought back (SIGCONT) while the
write load keeps going to it, and then the counts:

- **acknowledged writes lost**: keys whose ``WAIT 1`` answered >= 1, absent or different on the
  new master at the end (must be 0);
- **old-master window**: the old master's ``OK`` replies to ``SET`` received after the new
  master's first accepted write (two writable masters; must be 0 for the suite).

The write load never stops during the cut: a write that does not answer within the op timeout
drops its connection (redis-py does) and the next one reconnects, so an old master that comes back
gets writes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from failover_bench import redisio
from failover_bench.redisio import Address


@dataclass
class LoadStats:
    """What the write load saw on one server."""

    sets_ok: list[float] = field(default_factory=list)  # monotonic time of each SET's OK reply
    acked: dict[str, str] = field(default_factory=dict)  # key -> value, WAIT 1 answered >= 1
    acked_at: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # error class/prefix -> count
    attempts: int = 0

    def oks_after(self, moment: float) -> list[float]:
        return [t for t in self.sets_ok if t > moment]


class WriteLoad:
    """SET + ``WAIT 1 <wait_ms>`` in one pipeline on one connection to ``address``, every
    ``interval`` seconds, until stopped. Keys are ``<prefix>:<n>``."""

    def __init__(
        self,
        address: Address,
        password: str | None,
        prefix: str,
        interval: float = 0.01,
        op_timeout: float = 0.5,
        wait_ms: int = 200,
    ) -> None:
        self.address, self.password, self.prefix = address, password, prefix
        self.interval, self.op_timeout, self.wait_ms = interval, op_timeout, wait_ms
        self.stats = LoadStats()
        self._task: asyncio.Task[None] | None = None
        self._n = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> LoadStats:
        if self._task is not None:
            self._task.cancel()
            # gather: a cancel of the caller itself still propagates (suppress would swallow it)
            await asyncio.gather(self._task, return_exceptions=True)
        return self.stats

    def _error(self, error: BaseException) -> None:
        text = str(error).split(" ")[0] if isinstance(error, RedisError) and str(error) else ""
        key = type(error).__name__ + (f" {text}" if text and text.isupper() else "")
        self.stats.errors[key] = self.stats.errors.get(key, 0) + 1

    async def _run(self) -> None:
        conn = redisio.client(self.address, self.password, timeout=self.op_timeout)
        try:
            while True:
                self._n += 1
                key, value = f"{self.prefix}:{self._n}", f"v{self._n}-{time.time_ns()}"
                self.stats.attempts += 1
                try:
                    pipe = conn.pipeline(transaction=False)
                    pipe.set(key, value)
                    pipe.execute_command("WAIT", 1, self.wait_ms)
                    replies = await pipe.execute(raise_on_error=False)
                    now = time.monotonic()
                    set_reply, wait_reply = replies[0], replies[-1]
                    if isinstance(set_reply, Exception):
                        self._error(set_reply)
                    elif set_reply is True or set_reply == "OK":
                        self.stats.sets_ok.append(now)
                        if not isinstance(wait_reply, Exception) and int(wait_reply) >= 1:
                            self.stats.acked[key] = value
                            self.stats.acked_at[key] = now
                except (RedisError, OSError, TimeoutError) as error:
                    self._error(error)
                await asyncio.sleep(self.interval)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await conn.aclose()


async def current_master(addresses: Iterable[Address], password: str | None) -> Address | None:
    """The first of ``addresses`` that reports role:master (None if none answers so)."""
    for address in addresses:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            info = await redisio.replication(address, password, timeout=1.0)
            if info.get("role") == "master":
                return address
    return None


@dataclass
class CutResult:
    """One cut, measured: ``seconds`` from the cut to the new master's first accepted write."""

    seconds: float | None
    new_master: Address | None
    acked_before_cut: int
    acked_total: int
    lost: list[str]
    lost_acked_after_new: int  # of ``lost``: acknowledged after the new master's first write
    checked_on: Address | None
    old_oks_after_new: int
    old_last_ok_after_new_s: float | None
    load_errors: dict[str, int]

    def info(self) -> dict[str, Any]:
        return {
            "new_master": redisio.fmt(self.new_master) if self.new_master else None,
            "acked_before_cut": self.acked_before_cut,
            "acked_keys": self.acked_total,
            "lost_acked_keys": len(self.lost),
            "lost_acked_after_new_master": self.lost_acked_after_new,
            "lost_sample": self.lost[:5],
            "checked_on": redisio.fmt(self.checked_on) if self.checked_on else None,
            "old_master_oks_after_new_master": self.old_oks_after_new,
            "old_master_last_ok_after_new_master_s": self.old_last_ok_after_new_s,
            "old_master_load_errors": self.load_errors,
        }


async def measure_cut(
    *,
    old_master: Address,
    candidates: Callable[[], Iterable[Address]],
    password: str | None,
    prefix: str,
    cut: Callable[[], Any],
    after_new_master: Callable[[], Any] | None,
    warmup: float,
    window: float,
    deadline: float,
    poll_interval: float,
) -> CutResult:
    """Run the write load on ``old_master`` for ``warmup`` seconds, call ``cut`` (sync or async;
    the time is taken just before), wait for a new master among ``candidates()`` (up to
    ``deadline`` seconds), call ``after_new_master`` (e.g. SIGCONT) and keep the load on the old
    master for ``window`` seconds more; then check every acknowledged key on the master of that
    moment (the new one, unless another took over)."""
    load = WriteLoad(old_master, password, prefix, interval=poll_interval)
    load.start()
    try:
        await asyncio.sleep(warmup)
        acked_before = len(load.stats.acked)
        t_cut = time.monotonic()
        result = cut()
        if asyncio.iscoroutine(result):
            await result
        found = await redisio.wait_new_master(
            candidates, old_master, password, t_cut + deadline, poll_interval
        )
        if found is None:
            stats = await load.stop()
            return CutResult(
                None, None, acked_before, len(stats.acked), [], 0, None, 0, None, dict(stats.errors)
            )
        if after_new_master is not None:
            result = after_new_master()
            if asyncio.iscoroutine(result):
                await result
        await asyncio.sleep(window)
    finally:
        stats = await load.stop()
    others = [a for a in candidates() if a != old_master]
    checked_on = found.address
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        info = await redisio.replication(found.address, password)
        if info.get("role") != "master":
            checked_on = await current_master(others, password) or found.address
    lost = await redisio.missing_keys(checked_on, password, stats.acked)
    after = stats.oks_after(found.at)
    return CutResult(
        seconds=found.at - t_cut,
        new_master=found.address,
        acked_before_cut=acked_before,
        acked_total=len(stats.acked),
        lost=sorted(lost),
        lost_acked_after_new=sum(1 for k in lost if stats.acked_at[k] > found.at),
        checked_on=checked_on,
        old_oks_after_new=len(after),
        old_last_ok_after_new_s=round(max(after) - found.at, 4) if after else None,
        load_errors=dict(stats.errors),
    )
