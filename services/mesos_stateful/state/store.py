"""The store: records in etcd, compare-and-swap writes, leases, a watch-fed read cache, watches.

Writes go straight to etcd (one transaction each, never retried here). Reads are served from the
cache when it is synced and has applied this store's last write (read-your-writes); otherwise from
etcd. While etcd is unreachable every call fails fast with ``errors.Unavailable``.

Fencing (PutRequest.fence / DeleteRequest.fence): a fenced write is applied only while the role's
leader lease is held in the fence's term. The check is one more compare in the write's own etcd
transaction, on the VALUE of the role's side key (``records.leader_term_key``), which every change
of the leader record rewrites in its transaction; so a write racing a takeover is either applied
before the takeover's transaction or refused (``errors.NotLeader``, gRPC ABORTED).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients import records
from mesos_stateful.common import errors, retry
from mesos_stateful.state.etcdkv import (
    EtcdKV,
    WatchCompacted,
    delete_op,
    mod_equals,
    prefix_end,
    put_op,
    range_op,
    value_equals,
)
from mesos_stateful.state.watchhub import WatchHub, WatchLimits, matches, to_watch_response

log = logging.getLogger(__name__)


class Store:
    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float = 5.0,
        use_cache: bool = True,
        cache_wait_seconds: float = 2.0,
        watch_limits: WatchLimits | None = None,
        keys: records.Keys = records.DEFAULT_KEYS,
    ) -> None:
        self.kv = EtcdKV(endpoints, timeout=timeout)
        self.keys = keys
        self.hub = WatchHub(self.kv, watch_limits, keys)
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
        key = self.keys.etcd_key(kind, name)
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
        prefix = self.keys.etcd_prefix(kind, name_prefix)
        exact = kind == pb.KIND_FRAMEWORK
        if await self._cache_ready():
            found = [r for k, r in self.hub.cache.items() if (k == prefix if exact else k.startswith(prefix))]
            found.sort(key=lambda r: r.key.name)
            return found, self.hub.revision
        response = await self.kv.range(prefix, b"" if exact else prefix_end(prefix))
        out: list[pb.Record] = []
        for kv in response.kvs:
            key = self.keys.parse_etcd_key(kv.key)
            if key is not None and key.kind == kind:
                out.append(records.decode(key, kv.value, kv.mod_revision, kv.create_revision))
        out.sort(key=lambda r: r.key.name)
        return out, int(response.header.revision)

    # -- writes -------------------------------------------------------------------------------

    async def put(
        self,
        record: pb.Record,
        expected_revision: int = 0,
        unconditional: bool = False,
        lease_id: int = 0,
        fence: pb.LeaderFence | None = None,
    ) -> pb.Record:
        records.validate_record(record)
        if expected_revision < 0:
            raise errors.InvalidArgument("negative expected_revision", {"expected_revision": "must be >= 0"})
        if fence is not None:
            records.validate_fence(fence)
        key = self.keys.etcd_key(record.key.kind, record.key.name)
        data = records.encode(record)
        compare = [] if unconditional else [mod_equals(key, expected_revision)]
        success = [put_op(key, data, lease_id)]
        failure = [range_op(key)]
        if record.key.kind == pb.KIND_LEADER:
            if unconditional or lease_id:
                raise errors.InvalidArgument(
                    "leader records are written with compare-and-swap only, without an etcd lease",
                    {"unconditional": "must be false", "lease_id": "must be 0"},
                )
            side_compare, side_put = await self._leader_change(
                record.key.name, record.leader, expected_revision
            )
            compare.append(side_compare)
            success += side_put
        if fence is not None:
            compare.append(
                value_equals(self.keys.leader_term_key(fence.role), records.held_term_value(fence.term))
            )
            failure.append(range_op(self.keys.leader_term_key(fence.role)))
        result = await self.kv.txn(compare, success, failure)
        if not result.succeeded:
            if fence is not None:
                self._check_fence(fence, result.response.responses[1].response_range.kvs)
            current = result.response.responses[0].response_range.kvs
            what = f"{pb.Kind.Name(record.key.kind)} {record.key.name!r}"
            if expected_revision == 0:
                raise errors.AlreadyExists(f"{what} already exists")
            now = f"is at revision {current[0].mod_revision}" if current else "no longer exists"
            if current and current[0].mod_revision == expected_revision:
                now = "changed its term concurrently"  # only the leader's side key compare failed
            raise errors.Conflict(f"{what} {now}, expected revision {expected_revision}")
        self._note_written(result.revision)
        put = result.response.responses[0].response_put
        created = put.prev_kv.create_revision if put.HasField("prev_kv") else result.revision
        return records.decode(record.key, data, result.revision, created)

    async def delete(
        self, kind: int, name: str, expected_revision: int = 0, fence: pb.LeaderFence | None = None
    ) -> tuple[bool, int]:
        """Whether a record was deleted, and the store revision after the call."""
        records.validate_name(kind, name)
        if fence is not None:
            records.validate_fence(fence)
        key = self.keys.etcd_key(kind, name)
        compare = [mod_equals(key, expected_revision)] if expected_revision > 0 else []
        success = [delete_op(key)]
        failure = [range_op(key)]
        if kind == pb.KIND_LEADER:
            # The term ends with the record; the side key keeps it so terms never go back.
            current = await self.kv.range(key)
            if current.kvs:
                kv = current.kvs[0]
                lease = records.decode(records.record_key(kind, name), kv.value, kv.mod_revision, 0).leader
                side_key = self.keys.leader_term_key(name)
                side = await self.kv.range(side_key)
                side_term = records.parse_term_value(side.kvs[0].value)[0] if side.kvs else 0
                compare.append(mod_equals(key, kv.mod_revision))
                compare.append(mod_equals(side_key, side.kvs[0].mod_revision if side.kvs else 0))
                success.append(put_op(side_key, records.released_term_value(max(side_term, lease.term))))
        if fence is not None:
            compare.append(
                value_equals(self.keys.leader_term_key(fence.role), records.held_term_value(fence.term))
            )
            failure.append(range_op(self.keys.leader_term_key(fence.role)))
        result = await self.kv.txn(compare, success, failure)
        if not result.succeeded:
            if fence is not None:
                self._check_fence(fence, result.response.responses[1].response_range.kvs)
            current = result.response.responses[0].response_range.kvs
            if kind == pb.KIND_LEADER and current and expected_revision <= 0:
                raise errors.Conflict(f"{pb.Kind.Name(kind)} {name!r} changed while being deleted; try again")
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

    # -- leader records and fences ----------------------------------------------------------

    async def _leader_change(
        self, role: str, lease: types_pb2.LeaderLease, expected_revision: int
    ) -> tuple[Any, Sequence[Any]]:
        """The compare and the side-key write that go into the transaction of a leader record put.

        Rules (the term is the fencing token, so it never goes back): a term >= 1 not below the
        side key's; a holder that takes the lease (a new holder, or any holder after a release)
        raises the term; a renewal by the holder keeps it; a release (holder "") keeps the term
        and ends it. The side key's mod_revision is compared so these checks hold at the write."""
        records.validate_leader(lease)
        key = self.keys.etcd_key(pb.KIND_LEADER, role)
        side_key = self.keys.leader_term_key(role)
        side = await self.kv.range(side_key)
        side_term, held = records.parse_term_value(side.kvs[0].value) if side.kvs else (0, False)
        side_mod = int(side.kvs[0].mod_revision) if side.kvs else 0
        found = await self.kv.range(key)
        found_mod = int(found.kvs[0].mod_revision) if found.kvs else 0
        if found_mod != expected_revision:
            return mod_equals(side_key, side_mod), []  # the record's compare-and-swap fails in the txn
        current_holder = ""
        if found.kvs:
            kv = found.kvs[0]
            current_holder = records.decode(
                records.record_key(pb.KIND_LEADER, role), kv.value, 0, 0
            ).leader.holder
        what = f"leader lease of {role!r}"
        if lease.term < side_term:
            raise errors.FailedPrecondition(
                f"{what}: term {lease.term} is older than the current term {side_term}"
            )
        renewal = held and lease.term == side_term and bool(lease.holder) and lease.holder == current_holder
        if lease.holder and not renewal and lease.term <= side_term:
            raise errors.FailedPrecondition(
                f"{what}: {lease.holder!r} takes the lease in term {lease.term}; "
                f"it must be above term {side_term}"
            )
        if not lease.holder and side_term and lease.term != side_term:
            raise errors.FailedPrecondition(f"{what}: a release keeps the term {side_term}, not {lease.term}")
        writes: list[Any] = []
        if not lease.holder:
            writes.append(put_op(side_key, records.released_term_value(lease.term)))
        elif not renewal:
            writes.append(put_op(side_key, records.held_term_value(lease.term)))
        return mod_equals(side_key, side_mod), writes

    @staticmethod
    def _check_fence(fence: pb.LeaderFence, side: Sequence[Any]) -> None:
        """NotLeader unless the side key (as read in the failed transaction) holds the fence's term."""
        if side and side[0].value == records.held_term_value(fence.term):
            return
        over = f"term {fence.term} of {fence.role} is over"
        if not side:
            raise errors.NotLeader(f"{over} (no leader lease of {fence.role} exists)")
        term, held = records.parse_term_value(side[0].value)
        if held:
            raise errors.NotLeader(f"{over} (the leader is now term {term})")
        raise errors.NotLeader(
            f"{over} (the lease was released in term {term}; the next leader takes a new term)"
        )

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
        """Changes in revision order, each once, from ``start_revision`` (inclusive; 0 = now).
        Ends with FailedPrecondition ("resync") when changes were missed (a compacted revision, or
        a watcher ``WatchLimits.queue_size`` events behind): the caller lists again."""
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
        backoff = retry.Backoff(self.hub.limits.reconnect_policy())
        while True:
            try:
                async for batch in self.kv.watch(self.hub.root_key, next_revision):
                    backoff.reset()
                    if next_revision == 0 and batch.created:
                        # "From now": pin "now" so a reconnect resumes where this watch began.
                        next_revision = int(batch.header.revision) + 1
                    for event in batch.events:
                        next_revision = max(next_revision, int(event.kv.mod_revision) + 1)
                        response = to_watch_response(event, self.keys)
                        if response is not None and match(response):
                            yield response
            except WatchCompacted:
                raise
            except errors.Unavailable as error:
                log.info("replay watch broken (%s); resuming from %d", error.message, next_revision)
            await backoff.sleep()
