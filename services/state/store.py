"""The store: records in etcd, compare-and-swap writes, leases, a watch-fed read cache, watches.

Writes go straight to etcd (one transaction each, never retried here). Reads are served from the
cache when it is synced and has applied this store's last write (read-your-writes); otherwise from
etcd. While etcd is unreachable every call fails fast with ``errors.Unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.common import errors
from mesos_stateful.state import records
from mesos_stateful.state.etcdkv import (
    EtcdKV,
    WatchCompacted,
    delete_op,
    mod_equals,
    prefix_end,
    put_op,
    range_op,
)
from mesos_stateful.state.watchhub import ROOT_KEY, WatchHub, WatchLimits, matches, to_watch_response

log = logging.getLogger(__name__)


class Store:
    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float = 5.0,
        use_cache: bool = True,
        cache_wait_seconds: float = 2.0,
        watch_limits: WatchLimits | None = None,
    ) -> None:
        self.kv = EtcdKV(endpoints, timeout=timeout)
        self.hub = WatchHub(self.kv, watch_limits)
        self.use_cache = use_cache
        self.cache_wait_seconds = cache_wait_seconds
        self._written = 0  # the highest revision this store wrote

    async def start(self) -> None:
        self.hub.start()

    async def close(self) -> None:
        await self.hub.stop()
        await self.kv.close()

    async def healthy(self, timeout: float = 2.0) -> bool:
        try:
            await self.kv.status(timeout=timeout)
        except errors.StatefulError:
            return False
        return True

    def _note_written(self, revision: int) -> None:
        self._written = max(self._written, revision)

    async def _cache_ready(self) -> bool:
        if not (self.use_cache and self.hub.synced):
            return False
        return await self.hub.wait_revision(self._written, self.cache_wait_seconds)

    # -- reads --------------------------------------------------------------------------------

    async def find(self, kind: int, name: str) -> pb.Record | None:
        records.validate_name(kind, name)
        key = records.etcd_key(kind, name)
        if await self._cache_ready():
            return self.hub.cache.get(key)
        response = await self.kv.range(key)
        if not response.kvs:
            return None
        kv = response.kvs[0]
        return records.decode(records.record_key(kind, name), kv.value, kv.mod_revision, kv.create_revision)

    async def get(self, kind: int, name: str) -> pb.Record:
        record = await self.find(kind, name)
        if record is None:
            raise errors.NotFound(f"{pb.Kind.Name(kind)} {name!r} not found")
        return record

    async def list(self, kind: int, name_prefix: str = "") -> tuple[list[pb.Record], int]:
        """Records ordered by name, and the revision they were read at."""
        records.validate_prefix(kind, name_prefix)
        prefix = records.etcd_prefix(kind, name_prefix)
        exact = kind == pb.KIND_FRAMEWORK
        if await self._cache_ready():
            found = [r for k, r in self.hub.cache.items() if (k == prefix if exact else k.startswith(prefix))]
            found.sort(key=lambda r: r.key.name)
            return found, self.hub.revision
        response = await self.kv.range(prefix, b"" if exact else prefix_end(prefix))
        out: list[pb.Record] = []
        for kv in response.kvs:
            key = records.parse_etcd_key(kv.key)
            if key is not None and key.kind == kind:
                out.append(records.decode(key, kv.value, kv.mod_revision, kv.create_revision))
        out.sort(key=lambda r: r.key.name)
        return out, int(response.header.revision)

    # -- writes -------------------------------------------------------------------------------

    async def put(
        self, record: pb.Record, expected_revision: int = 0, unconditional: bool = False, lease_id: int = 0
    ) -> pb.Record:
        records.validate_record(record)
        if expected_revision < 0:
            raise errors.InvalidArgument("negative expected_revision", {"expected_revision": "must be >= 0"})
        key = records.etcd_key(record.key.kind, record.key.name)
        data = records.encode(record)
        compare = [] if unconditional else [mod_equals(key, expected_revision)]
        result = await self.kv.txn(compare, [put_op(key, data, lease_id)], [range_op(key)])
        if not result.succeeded:
            current = result.response.responses[0].response_range.kvs
            what = f"{pb.Kind.Name(record.key.kind)} {record.key.name!r}"
            if expected_revision == 0:
                raise errors.AlreadyExists(f"{what} already exists")
            now = f"is at revision {current[0].mod_revision}" if current else "no longer exists"
            raise errors.Conflict(f"{what} {now}, expected revision {expected_revision}")
        self._note_written(result.revision)
        put = result.response.responses[0].response_put
        created = put.prev_kv.create_revision if put.HasField("prev_kv") else result.revision
        return records.decode(record.key, data, result.revision, created)

    async def delete(self, kind: int, name: str, expected_revision: int = 0) -> tuple[bool, int]:
        """Whether a record was deleted, and the store revision after the call."""
        records.validate_name(kind, name)
        key = records.etcd_key(kind, name)
        compare = [mod_equals(key, expected_revision)] if expected_revision > 0 else []
        result = await self.kv.txn(compare, [delete_op(key)], [range_op(key)])
        if not result.succeeded:
            current = result.response.responses[0].response_range.kvs
            if not current:
                return False, result.revision
            raise errors.Conflict(
                f"{pb.Kind.Name(kind)} {name!r} is at revision {current[0].mod_revision}, "
                f"expected revision {expected_revision}"
            )
        deleted = result.response.responses[0].response_delete_range.deleted > 0
        if deleted:
            self._note_written(result.revision)
        return deleted, result.revision

    # -- leases -------------------------------------------------------------------------------

    async def grant_lease(self, ttl_seconds: int) -> tuple[int, int]:
        if ttl_seconds <= 0:
            raise errors.InvalidArgument("lease ttl must be positive", {"ttl_seconds": "must be > 0"})
        return await self.kv.grant(ttl_seconds)

    async def keep_alive(self, lease_id: int) -> int:
        if lease_id <= 0:
            raise errors.InvalidArgument("lease id must be set", {"lease_id": "must be > 0"})
        return await self.kv.keep_alive(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        if lease_id <= 0:
            raise errors.InvalidArgument("lease id must be set", {"lease_id": "must be > 0"})
        # Reads after this must not see the lease's records from the cache (read your writes).
        self._note_written(await self.kv.revoke(lease_id))

    # -- watch --------------------------------------------------------------------------------

    async def watch(
        self, kinds: Sequence[int], name_prefix: str = "", start_revision: int = 0
    ) -> AsyncIterator[pb.WatchResponse]:
        """Changes in revision order, each once, from ``start_revision`` (inclusive; 0 = now)."""
        for kind in kinds:
            records.info_of(kind)
        if start_revision < 0:
            raise errors.InvalidArgument("negative start_revision", {"start_revision": "must be >= 0"})
        match = matches(kinds, name_prefix)
        if self.hub.loaded and (start_revision == 0 or start_revision > self.hub.revision):
            # The hub has not passed start_revision yet: its live feed misses nothing we want.
            sub = self.hub.subscribe(match, start_revision)
            async for response in self.hub.events(sub):
                yield response
            return
        # Older than the hub (or the hub is not loaded yet): a dedicated etcd watch from
        # start_revision, resumed after failures.
        async for response in self._replay(match, start_revision):
            yield response

    async def _replay(
        self, match: Callable[[pb.WatchResponse], bool], start_revision: int
    ) -> AsyncIterator[pb.WatchResponse]:
        next_revision = start_revision
        limits = self.hub.limits
        delay = limits.retry_initial_seconds
        while True:
            try:
                async for batch in self.kv.watch(ROOT_KEY, next_revision):
                    delay = limits.retry_initial_seconds
                    if next_revision == 0 and batch.created:
                        # "From now": pin "now" so a reconnect resumes where this watch began.
                        next_revision = int(batch.header.revision) + 1
                    for event in batch.events:
                        next_revision = max(next_revision, int(event.kv.mod_revision) + 1)
                        response = to_watch_response(event)
                        if response is not None and match(response):
                            yield response
            except WatchCompacted:
                raise
            except errors.Unavailable as error:
                log.info("replay watch broken (%s); resuming from %d", error.message, next_revision)
            await asyncio.sleep(delay)
            delay = min(delay * 2, limits.retry_max_seconds)
