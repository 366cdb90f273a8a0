"""One etcd watch on the whole ``/stateful/v1/`` prefix: keeps the read cache coherent and fans
events out to Watch subscribers.

Resume: the hub loads the prefix with a Range at revision R, then watches from R + 1. When the
stream breaks (etcd killed or restarted, a leader change, a member cut off from its leader: the
watch asks for "hasleader"), it reconnects with backoff (``WatchLimits.retry_*``, reset on success)
and resumes from the last revision it applied + 1, so no event is lost and none is repeated.
``revision`` is the last revision whose events are all applied: the cache equals the store at it.
Any other error in the loop is logged and retried the same way: the hub's task never ends before
``stop()``.

Resync (the subscriber's contract, the same as etcd's for a compacted watch): a subscriber whose
events cannot all be delivered gets its stream ended with FAILED_PRECONDITION (a message starting
``resync:``); it lists again and watches from the list's revision + 1. This happens when

- the hub's resume revision was compacted away (etcd ``--auto-compaction-retention``): the hub
  reloads the cache with a full Range, and every subscriber is told to resync;
- a subscriber is slow: at most ``WatchLimits.queue_size`` events wait for one subscriber
  (setting ``watch_queue_size``); one more and its queue is dropped and it is told to resync, so a
  slow watcher costs bounded memory and never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.clients import records
from mesos_stateful.common import errors, retry
from mesos_stateful.state.etcdkv import EtcdKV, WatchCompacted, is_put, prefix_end

log = logging.getLogger(__name__)


RESYNC = "resync: "


@dataclass(frozen=True)
class WatchLimits:
    """Bounds of the watch hub (from the state settings ``watch_*``).

    ``queue_size``: events queued per subscriber before it is told to resync (memory bound:
    ``queue_size`` records per watcher). ``retry_initial_seconds`` / ``retry_max_seconds``: the
    reconnect backoff to etcd, doubling from initial to max (etcd restarts in about a second, so
    the max is kept near that: a watch resumes within ``retry_max_seconds`` of etcd being back);
    the policy is ``retry.ETCD_WATCH`` with these delays (:meth:`reconnect_policy`).
    """

    queue_size: int = 10000
    retry_initial_seconds: float = 0.1
    retry_max_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError(f"watch queue size must be >= 1, got {self.queue_size}")
        if not 0 < self.retry_initial_seconds <= self.retry_max_seconds:
            raise ValueError(
                "watch retry backoff needs 0 < retry_initial_seconds <= retry_max_seconds, got "
                f"{self.retry_initial_seconds} and {self.retry_max_seconds}"
            )

    def reconnect_policy(self) -> retry.Policy:
        """The reconnect policy to etcd with these delays."""
        return retry.ETCD_WATCH.with_delays(self.retry_initial_seconds, self.retry_max_seconds)


def to_watch_response(event: Any, keys: records.Keys = records.DEFAULT_KEYS) -> pb.WatchResponse | None:
    """The WatchResponse of one etcd event, None for keys the store does not own."""
    key = keys.parse_etcd_key(event.kv.key)
    if key is None:
        return None
    try:
        if is_put(event):
            record = records.decode(key, event.kv.value, event.kv.mod_revision, event.kv.create_revision)
            return pb.WatchResponse(type=pb.EVENT_TYPE_PUT, record=record, revision=event.kv.mod_revision)
        prev = event.prev_kv
        record = records.decode(key, prev.value, event.kv.mod_revision, prev.create_revision)
        return pb.WatchResponse(type=pb.EVENT_TYPE_DELETE, record=record, revision=event.kv.mod_revision)
    except Exception:  # a value we cannot parse: skip it rather than kill every watcher
        log.exception("skipping undecodable value at %r", event.kv.key)
        return None


def matches(kinds: Collection[int], prefix: str) -> Callable[[pb.WatchResponse], bool]:
    wanted = frozenset(kinds)

    def match(response: pb.WatchResponse) -> bool:
        key = response.record.key
        return (not wanted or key.kind in wanted) and key.name.startswith(prefix)

    return match


class Subscriber:
    """One Watch call on the hub: a queue of at most ``limit`` events, then an error to end it."""

    def __init__(self, match: Callable[[pb.WatchResponse], bool], min_revision: int, limit: int) -> None:
        self.match = match
        self.min_revision = min_revision
        self.limit = limit
        self.queue: asyncio.Queue[pb.WatchResponse | BaseException] = asyncio.Queue()
        self.ended = False

    def offer(self, response: pb.WatchResponse) -> bool:
        """Queue ``response`` if wanted; False when the subscriber fell behind (it is ended)."""
        if self.ended or response.revision < self.min_revision or not self.match(response):
            return True
        if self.queue.qsize() >= self.limit:
            self.end(
                errors.FailedPrecondition(
                    f"{RESYNC}this watch fell {self.limit} events behind (setting watch_queue_size) "
                    f"at revision {response.revision}; list again and watch from the list's "
                    "revision + 1"
                )
            )
            return False
        self.queue.put_nowait(response)
        return True

    def end(self, error: BaseException) -> None:
        """Drop what is queued and end the stream with ``error``."""
        if self.ended:
            return
        self.ended = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(error)


class WatchHub:
    def __init__(
        self, kv: EtcdKV, limits: WatchLimits | None = None, keys: records.Keys = records.DEFAULT_KEYS
    ) -> None:
        self.kv = kv
        self.keys = keys
        self.root_key = keys.records_root.encode()
        self.limits = limits or WatchLimits()
        self.cache: dict[bytes, pb.Record] = {}
        self.revision = 0
        self.loaded = False
        self.connected = False
        self.subscribers: set[Subscriber] = set()
        self.reconnects = 0  # streams resumed after a break (for tests and logs)
        self.failures = 0  # attempts that failed (load or watch), e.g. while etcd is down
        self.resyncs = 0  # subscribers told to resync
        self._advanced = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> bool:
        """The cache is loaded and the watch stream is up (so it is current)."""
        return self.loaded and self.connected

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="state-watch-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in list(self.subscribers):
            sub.end(errors.Unavailable("state service stopping"))
        self.subscribers.clear()

    def retry_now(self) -> None:
        """Skip the current reconnect backoff (e.g. the embedded etcd is back)."""
        self._retry_now.set()

    async def wait_revision(self, revision: int, timeout: float) -> bool:
        """Whether the cache reached ``revision`` within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.revision < revision:
            remaining = deadline - loop.time()
            if remaining <= 0 or not self.synced:
                return False
            event = self._advanced
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def subscribe(self, match: Callable[[pb.WatchResponse], bool], min_revision: int) -> Subscriber:
        sub = Subscriber(match, min_revision, self.limits.queue_size)
        self.subscribers.add(sub)
        return sub

    async def events(self, sub: Subscriber) -> AsyncIterator[pb.WatchResponse]:
        try:
            while True:
                item = await sub.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.subscribers.discard(sub)

    def _resync_all(self, reason: str) -> None:
        for sub in list(self.subscribers):
            sub.end(errors.FailedPrecondition(f"{RESYNC}{reason}"))
            self.resyncs += 1
        self.subscribers.clear()

    def _advance(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision
            event, self._advanced = self._advanced, asyncio.Event()
            event.set()

    async def _load(self) -> None:
        response = await self.kv.range(self.root_key, prefix_end(self.root_key))
        cache: dict[bytes, pb.Record] = {}
        for kv in response.kvs:
            key = self.keys.parse_etcd_key(kv.key)
            if key is not None:
                cache[bytes(kv.key)] = records.decode(key, kv.value, kv.mod_revision, kv.create_revision)
        self.cache = cache
        self.revision = 0
        self.loaded = True
        self._advance(int(response.header.revision))
        log.info("state cache loaded: %d records at revision %d", len(cache), self.revision)

    def _apply(self, batch: Any) -> None:
        if not batch.events:
            # A progress notification: every event up to header.revision has been sent.
            if not batch.created:
                self._advance(int(batch.header.revision))
            return
        last = self.revision
        for event in batch.events:
            response = to_watch_response(event, self.keys)
            last = max(last, int(event.kv.mod_revision))
            if response is None:
                continue
            if response.type == pb.EVENT_TYPE_PUT:
                self.cache[bytes(event.kv.key)] = response.record
            else:
                self.cache.pop(bytes(event.kv.key), None)
            for sub in list(self.subscribers):
                if not sub.offer(response):
                    self.subscribers.discard(sub)
                    self.resyncs += 1
                    log.warning("a watcher fell behind at revision %d: told to resync", response.revision)
        self._advance(last)

    async def _run(self) -> None:
        backoff = retry.Backoff(self.limits.reconnect_policy())
        was_connected = False
        while True:
            try:
                if not self.loaded:
                    await self._load()
                async for batch in self.kv.watch(self.root_key, self.revision + 1):
                    if not self.connected:
                        if was_connected:
                            self.reconnects += 1
                            log.warning("state watch resumed at revision %d", self.revision + 1)
                        else:
                            log.info("state watch connected at revision %d", self.revision)
                        self.connected = was_connected = True
                    backoff.reset()
                    self._apply(batch)
                raise errors.Unavailable("etcd watch stream ended")
            except asyncio.CancelledError:
                raise
            except WatchCompacted as error:
                # Our resume point is gone: reload, and tell subscribers they missed events.
                log.warning("state watch: %s; reloading the cache", error.message)
                self.loaded = False
                self._resync_all(f"the state service missed events: {error.message}")
            except errors.StatefulError as error:
                if self.connected:
                    log.warning("state watch lost: %s; resuming from %d", error.message, self.revision + 1)
                else:
                    log.debug("state watch: %s", error.message)
            except Exception:
                # Never let the hub die silently: a dead hub means silent watches and a stale cache.
                log.exception("state watch failed; resuming from %d", self.revision + 1)
            self.connected = False
            self.failures += 1
            await backoff.sleep(self._retry_now)
