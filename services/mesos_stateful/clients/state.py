"""StateClient: the one typed async client of the state service every service uses.

Errors are domain errors (``mesos_stateful.common.errors``). Reads are retried briefly on
UNAVAILABLE (``retry.STATE_READ``: by gRPC's retry policy on the channel, then by the client up to
its deadline); writes never are (a put may have been applied). ``watch`` survives restarts of the
state service and of etcd: it reconnects with backoff (``retry.STATE_WATCH``) from the last seen
revision + 1.

Fencing: while ``fence`` is set (by ``leadership.LeaderElector`` for the term it leads in), every
``put`` and ``delete`` carries it; the service refuses the write with ABORTED once that term is
over, and the client calls ``on_fence_lost`` and raises ``errors.NotLeader``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import state_service_pb2_grpc as pb_grpc
from mesos_stateful.clients import endpoints, records
from mesos_stateful.clients.records import make_record, value_of
from mesos_stateful.common import channels, errors, retry
from mesos_stateful.common.grpc_errors import code_and_details, from_rpc_error

if TYPE_CHECKING:
    from mesos_stateful.api.stateful.v1.state_service_pb2_grpc import StateServiceAsyncStub

log = logging.getLogger(__name__)

Record = pb.Record
WatchResponse = pb.WatchResponse
_T = TypeVar("_T")

CALL_TIMEOUT = 15.0
# The idempotent methods: retried on UNAVAILABLE by gRPC (service config) and by ``_read``.
READ_METHODS = ("Get", "List", "KeepAliveLease", "RevokeLease")


class StateClient:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # The fencing token every put / delete carries (set by the leader elector while leading).
        self.fence: pb.LeaderFence | None = None
        # Called (before NotLeader is raised) when the service refused a fenced write.
        self.on_fence_lost: Callable[[], None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: StateServiceAsyncStub | None = None
        self._closed = False

    @property
    def stub(self) -> StateServiceAsyncStub:
        # Created on first use so the client can be built outside a running event loop.
        if self._closed:
            raise errors.Unavailable("StateClient is closed")
        if self._stub is None:
            # One replica "host:port", or several ("ip:port,ip:port", "ipv4:...", "dns:///..."):
            # see state.endpoints (round_robin over the replicas that report SERVING).
            target = endpoints.grpc_target(self.endpoint)
            method_config = retry.grpc_method_config(endpoints.STATE_SERVICE, READ_METHODS, retry.STATE_READ)
            self._channel = grpc.aio.insecure_channel(
                target,
                options=[
                    *channels.channel_options(),
                    *endpoints.channel_options(target, method_config=[method_config]),
                ],
            )
            self._stub = pb_grpc.StateServiceStub(self._channel)
        return self._stub

    @property
    def channel(self) -> grpc.aio.Channel:
        _ = self.stub
        assert self._channel is not None
        return self._channel

    async def close(self) -> None:
        self._closed = True
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stub = None

    async def __aenter__(self) -> StateClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing -----------------------------------------------------------------------------

    async def _call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await call()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def _read(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """An idempotent call, retried on UNAVAILABLE for a short while (``retry.STATE_READ``)."""
        return await retry.call(retry.STATE_READ, lambda: self._call(call))

    # -- records ------------------------------------------------------------------------------

    async def get(self, kind: int, name: str) -> Record:
        request = pb.GetRequest(key=records.record_key(kind, name))
        response = await self._read(lambda: self.stub.Get(request, timeout=CALL_TIMEOUT))
        return response.record

    async def find(self, kind: int, name: str) -> Record | None:
        try:
            return await self.get(kind, name)
        except errors.NotFound:
            return None

    async def list(self, kind: int, prefix: str = "") -> tuple[list[Record], int]:
        request = pb.ListRequest(kind=cast(pb.Kind, kind), name_prefix=prefix)
        response = await self._read(lambda: self.stub.List(request, timeout=CALL_TIMEOUT))
        return list(response.records), response.revision

    async def put(
        self,
        value: Message,
        expected_revision: int | None = None,
        lease_id: int = 0,
        *,
        name: str | None = None,
        fenced: bool = True,
    ) -> Record:
        """Write ``value`` (compare-and-swap on ``expected_revision``: 0 = create only, None =
        unconditional). ``name`` names a LeaderLease's role. Carries ``fence`` unless ``fenced``
        is False (the elector's own lease writes, guarded by compare-and-swap)."""
        fence = self.fence if fenced else None
        request = pb.PutRequest(
            record=make_record(value, name=name),
            expected_revision=expected_revision or 0,
            unconditional=expected_revision is None,
            lease_id=lease_id,
            fence=fence,
        )
        try:
            response = await self._call(lambda: self.stub.Put(request, timeout=CALL_TIMEOUT))
        except errors.FailedPrecondition as error:
            raise errors.Conflict(error.message) from None
        except errors.NotLeader:
            self._fence_lost()
            raise
        return response.record

    async def delete(self, kind: int, name: str, expected_revision: int = 0, *, fenced: bool = True) -> bool:
        request = pb.DeleteRequest(
            key=records.record_key(kind, name),
            expected_revision=expected_revision,
            fence=self.fence if fenced else None,
        )
        try:
            response = await self._call(lambda: self.stub.Delete(request, timeout=CALL_TIMEOUT))
        except errors.FailedPrecondition as error:
            raise errors.Conflict(error.message) from None
        except errors.NotLeader:
            self._fence_lost()
            raise
        return response.deleted

    def _fence_lost(self) -> None:
        callback = self.on_fence_lost
        if callback is not None:
            try:
                callback()
            except Exception:  # the refusal is still raised to the writer
                log.exception("on_fence_lost failed")

    async def update(
        self, kind: int, name: str, mutate: Callable[[Message | None], Message | None]
    ) -> Record | None:
        """Read-modify-write with compare-and-swap, retried on conflict. ``mutate`` gets a copy of
        the current value (None if absent) and returns the new value, or None for "no write".
        A lost compare-and-swap is re-read and retried (``retry.STATE_CAS``); the put itself is
        never repeated blindly."""
        return await retry.call(retry.STATE_CAS, lambda: self._update_once(kind, name, mutate))

    async def _update_once(
        self, kind: int, name: str, mutate: Callable[[Message | None], Message | None]
    ) -> Record | None:
        current = await self.find(kind, name)
        copy: Message | None = None
        if current is not None:
            original = value_of(current)
            copy = type(original)()
            copy.CopyFrom(original)
        new = mutate(copy)
        if new is None:
            return current
        leader_role = name if kind == pb.KIND_LEADER else None  # a LeaderLease does not name its role
        key = records.key_of(new, leader_role)
        if (key.kind, key.name) != (kind, name):
            raise errors.InvalidArgument(
                f"update of {pb.Kind.Name(kind)} {name!r} returned a value for "
                f"{pb.Kind.Name(key.kind)} {key.name!r}"
            )
        return await self.put(new, current.mod_revision if current is not None else 0, name=leader_role)

    # -- watch --------------------------------------------------------------------------------

    async def watch(
        self, kinds: Sequence[int] = (), prefix: str = "", start_revision: int = 0
    ) -> AsyncIterator[WatchResponse]:
        """Changes in revision order, each exactly once, across restarts of the state service and
        etcd. ``start_revision`` 0 means "from now" (the current revision is read first, so a
        reconnect before the first event still misses nothing). A broken stream (a state replica
        or etcd restarting) is resumed from the last delivered revision + 1, through any replica.
        ``errors.FailedPrecondition`` ends it when changes were missed (the revision was
        compacted, or this watcher fell ``watch_queue_size`` events behind): list again and
        watch from the list's revision + 1 (a resync)."""
        next_revision = start_revision
        backoff = retry.Backoff(retry.STATE_WATCH)
        while True:
            try:
                if next_revision == 0:
                    _, revision = await self.list(pb.KIND_FRAMEWORK)
                    next_revision = revision + 1
                request = pb.WatchRequest(
                    kinds=[cast(pb.Kind, k) for k in kinds],
                    name_prefix=prefix,
                    start_revision=next_revision,
                )
                call = self.stub.Watch(request)
                try:
                    async for response in call:
                        backoff.reset()
                        if response.revision < next_revision:
                            continue  # already delivered (defensive; the service does not repeat)
                        next_revision = response.revision + 1
                        yield response
                finally:
                    call.cancel()
                raise errors.Unavailable("watch stream ended")
            except grpc.RpcError as error:
                if self._closed:
                    return
                mapped = from_rpc_error(error)
                # CANCELLED here comes from a stopping server (our own cancel raises CancelledError).
                cancelled = (
                    isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.CANCELLED
                )
                if not (cancelled or isinstance(mapped, errors.Unavailable)):
                    raise mapped from None
                log.info("state watch interrupted (%s); resuming from %d", mapped.message, next_revision)
            except errors.Unavailable as error:
                if self._closed:
                    return
                log.info("state watch interrupted (%s); resuming from %d", error.message, next_revision)
            await backoff.sleep()

    # -- leases -------------------------------------------------------------------------------

    async def grant_lease(self, ttl_seconds: int) -> int:
        request = pb.GrantLeaseRequest(ttl_seconds=ttl_seconds)
        response = await self._call(lambda: self.stub.GrantLease(request, timeout=CALL_TIMEOUT))
        return response.lease_id

    async def keep_alive(self, lease_id: int) -> int:
        request = pb.KeepAliveLeaseRequest(lease_id=lease_id)
        response = await self._read(lambda: self.stub.KeepAliveLease(request, timeout=CALL_TIMEOUT))
        return response.ttl_seconds

    async def revoke_lease(self, lease_id: int) -> None:
        request = pb.RevokeLeaseRequest(lease_id=lease_id)
        await self._read(lambda: self.stub.RevokeLease(request, timeout=CALL_TIMEOUT))

    # -- health -------------------------------------------------------------------------------

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the state service answers health SERVING; Unavailable after ``timeout``."""
        # The typeshed stubs of HealthStub declare no methods.
        stub: Any = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError as error:
                last = str(code_and_details(error)[0])
            if time.monotonic() > deadline:
                raise errors.Unavailable(
                    f"state service at {self.endpoint} not ready after {timeout}s: {last}"
                )
            await asyncio.sleep(0.1)


__all__ = ["Record", "StateClient", "WatchResponse", "records"]
