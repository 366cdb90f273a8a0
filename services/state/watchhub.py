"""One etcd watch on the whole ``/stateful/v1/`` prefix: keeps the read cache coherent and fans
events out to Watch subscribers.

The hub loads the prefix with a Range at revision R, then watches from R + 1; after a broken stream
(etcd restart) it resumes from the last applied revision + 1, so nothing is lost or repeated.
``revision`` is the last revision whose events are all applied: the cache equals the store at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.common import errors
from mesos_stateful.state import records
from mesos_stateful.state.etcdkv import EtcdKV, WatchCompacted, is_put, prefix_end

log = logging.getLogger(__name__)

ROOT_KEY = records.ROOT.encode()


def to_watch_response(event: Any) -> pb.WatchResponse | None:
    """The WatchResponse of one etcd event, None for keys the store does not own."""
    key = records.parse_etcd_key(event.kv.key)
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
    def __init__(self, match: Callable[[pb.WatchResponse], bool], min_revision: int) -> None:
        self.match = match
        self.min_revision = min_revision
        self.queue: asyncio.Queue[pb.WatchResponse | BaseException] = asyncio.Queue()

    def offer(self, response: pb.WatchResponse) -> None:
        if response.revision >= self.min_revision and self.match(response):
            self.queue.put_nowait(response)


class WatchHub:
    def __init__(self, kv: EtcdKV, retry_seconds: float = 0.5) -> None:
        self.kv = kv
        self.retry_seconds = retry_seconds
        self.cache: dict[bytes, pb.Record] = {}
        self.revision = 0
        self.loaded = False
        self.connected = False
        self.subscribers: set[Subscriber] = set()
        self._advanced = asyncio.Event()
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
            sub.queue.put_nowait(errors.Unavailable("state service stopping"))

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
        sub = Subscriber(match, min_revision)
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

    def _advance(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision
            event, self._advanced = self._advanced, asyncio.Event()
            event.set()

    async def _load(self) -> None:
        response = await self.kv.range(ROOT_KEY, prefix_end(ROOT_KEY))
        cache: dict[bytes, pb.Record] = {}
        for kv in response.kvs:
            key = records.parse_etcd_key(kv.key)
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
            response = to_watch_response(event)
            last = max(last, int(event.kv.mod_revision))
            if response is None:
                continue
            if response.type == pb.EVENT_TYPE_PUT:
                self.cache[bytes(event.kv.key)] = response.record
            else:
                self.cache.pop(bytes(event.kv.key), None)
            for sub in list(self.subscribers):
                sub.offer(response)
        self._advance(last)

    async def _run(self) -> None:
        delay = self.retry_seconds
        while True:
            try:
                if not self.loaded:
                    await self._load()
                async for batch in self.kv.watch(ROOT_KEY, self.revision + 1):
                    if not self.connected:
                        log.info("state watch connected at revision %d", self.revision)
                    self.connected = True
                    delay = self.retry_seconds
                    self._apply(batch)
            except WatchCompacted as error:
                # Our resume point is gone: reload, and tell subscribers they missed events.
                log.warning("state watch: %s; reloading the cache", error.message)
                self.loaded = False
                for sub in list(self.subscribers):
                    sub.queue.put_nowait(errors.FailedPrecondition(error.message))
            except errors.StatefulError as error:
                if self.connected:
                    log.warning("state watch lost: %s; resuming from %d", error.message, self.revision + 1)
                else:
                    log.debug("state watch: %s", error.message)
            self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
