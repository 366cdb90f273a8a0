"""A thin asyncio etcd v3 client on aetcd's generated stubs (the one etcd stub set in the process).

We use aetcd's stubs directly rather than its high-level client so that watches expose
``compact_revision`` / cancellation and every call has a deadline; etcd errors become domain errors
(UNAVAILABLE and DEADLINE_EXCEEDED -> ``errors.Unavailable``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aetcd import rpc

from mesos_stateful.common import errors
from mesos_stateful.common.channels import etcd_channel_options
from mesos_stateful.state.request_metrics import count_etcd_error

log = logging.getLogger(__name__)


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def map_error(error: grpc.RpcError, what: str) -> errors.StatefulError:
    # AioRpcError is not a grpc.Call but has the same accessors.
    count_etcd_error(what)
    if isinstance(error, (grpc.Call, grpc.aio.AioRpcError)):
        code, details = error.code(), error.details() or ""
    else:
        code, details = grpc.StatusCode.UNKNOWN, str(error)
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(f"{what}: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.InvalidArgument(f"{what}: {details}")
    if code == grpc.StatusCode.OUT_OF_RANGE:
        return errors.FailedPrecondition(f"{what}: {details}")
    return errors.Unavailable(f"{what}: etcd {code.name}: {details}")


async def ended_call_error(call: Any, what: str) -> errors.StatefulError:
    """The error for a call that had already ended when we wrote to it.

    With a client interceptor on the channel (tracing's, see common/tracing.py) a call to an
    unreachable etcd can fail before our first ``write()``; grpc.aio then raises
    ``asyncio.InvalidStateError`` ("RPC already finished", grpc/aio/_call.py ``_write``) instead of
    the call's ``AioRpcError``. Report it by the call's own status: an etcd outage is UNAVAILABLE
    (retried by the caller), never a servicer bug (UNKNOWN with a traceback)."""
    count_etcd_error(what)
    try:
        code, details = await call.code(), await call.details()
    except (grpc.RpcError, asyncio.InvalidStateError):
        code, details = grpc.StatusCode.UNAVAILABLE, ""
    name = code.name if code != grpc.StatusCode.OK else "call ended"
    return errors.Unavailable(f"{what}: etcd {name}: {details or 'stream ended'}")


def _finished(what: str) -> errors.StatefulError:
    """InvalidStateError from a unary call (an interceptor's call that ended before it was used)."""
    count_etcd_error(what)
    return errors.Unavailable(f"{what}: etcd call ended before it was answered (etcd unreachable)")


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    response: Any  # rpc.TxnResponse


class WatchCompacted(errors.FailedPrecondition):
    """The watch's start revision was compacted away."""

    def __init__(self, start_revision: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {start_revision} is compacted (oldest available {compact_revision}); "
            "list again and watch from the list's revision + 1"
        )
        self.compact_revision = compact_revision


class EtcdKV:
    """One channel to etcd (first reachable endpoint, gRPC picks) with KV, Lease and Watch calls."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 5.0) -> None:
        targets = [e.removeprefix("http://").removeprefix("https://") for e in endpoints]
        target = targets[0] if len(targets) == 1 else "ipv4:" + ",".join(targets)
        options = [*etcd_channel_options(), ("grpc.lb_policy_name", "round_robin")]
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(target, options=options)
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch_stub = rpc.WatchStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def status(self, timeout: float | None = None) -> int:
        """The current store revision; Unavailable if etcd cannot be reached."""
        try:
            response = await self.maintenance.Status(rpc.StatusRequest(), timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise map_error(error, "status") from error
        except asyncio.InvalidStateError:
            raise _finished("status") from None
        return int(response.header.revision)

    async def range(self, key: bytes, range_end: bytes = b"", revision: int = 0) -> Any:
        request = rpc.RangeRequest(
            key=key,
            range_end=range_end,
            revision=revision,
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.KEY,
        )
        try:
            return await self.kv.Range(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise map_error(error, "range") from error
        except asyncio.InvalidStateError:
            raise _finished("range") from None

    async def txn(self, compare: list[Any], success: list[Any], failure: list[Any]) -> TxnResult:
        request = rpc.TxnRequest(compare=compare, success=success, failure=failure)
        try:
            response = await self.kv.Txn(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise map_error(error, "txn") from error
        except asyncio.InvalidStateError:
            raise _finished("txn") from None
        return TxnResult(bool(response.succeeded), int(response.header.revision), response)

    async def grant(self, ttl: int) -> tuple[int, int]:
        try:
            response = await self.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl), timeout=self.timeout)
        except grpc.RpcError as error:
            raise map_error(error, "lease grant") from error
        except asyncio.InvalidStateError:
            raise _finished("lease grant") from None
        if response.error:
            raise errors.Unavailable(f"lease grant: {response.error}")
        return int(response.ID), int(response.TTL)

    async def keep_alive(self, lease_id: int) -> int:
        """Refresh once; the remaining TTL. NotFound if the lease expired."""
        call = self.lease.LeaseKeepAlive(timeout=self.timeout)
        try:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            await call.done_writing()
            response = await call.read()
        except grpc.RpcError as error:
            raise map_error(error, "lease keepalive") from error
        except asyncio.InvalidStateError:
            raise await ended_call_error(call, "lease keepalive") from None
        finally:
            call.cancel()
        if response is grpc.aio.EOF or response.TTL <= 0:
            raise errors.NotFound(f"lease {lease_id:x} not found (expired or revoked)")
        return int(response.TTL)

    async def revoke(self, lease_id: int) -> int:
        """Revoke the lease (its keys are deleted); returns the revision of that deletion."""
        try:
            response = await self.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=self.timeout)
        except grpc.RpcError as error:
            raise map_error(error, f"lease revoke {lease_id:x}") from error
        except asyncio.InvalidStateError:
            raise _finished(f"lease revoke {lease_id:x}") from None
        return int(response.header.revision)

    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[Any]:
        """Event batches (rpc.WatchResponse with events) for keys under ``prefix`` from
        ``start_revision`` (inclusive, 0 = now). Raises Unavailable when the stream breaks and
        WatchCompacted when the start revision is gone. The caller reconnects."""
        # "hasleader": a member cut off from its leader cancels the watch instead of going silent,
        # so we reconnect to a member that has one (clientv3 WithRequireLeader, as kube-apiserver).
        call = self.watch_stub.Watch(metadata=(("hasleader", "true"),))
        create = rpc.WatchCreateRequest(
            key=prefix,
            range_end=prefix_end(prefix),
            start_revision=start_revision,
            prev_kv=True,
            progress_notify=True,
        )
        try:
            await call.write(rpc.WatchRequest(create_request=create))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise errors.Unavailable("etcd closed the watch stream")
                if response.compact_revision:
                    raise WatchCompacted(start_revision, int(response.compact_revision))
                if response.canceled:
                    raise errors.Unavailable(f"etcd canceled the watch: {response.cancel_reason}")
                yield response
        except grpc.RpcError as error:
            raise map_error(error, "watch") from error
        except asyncio.InvalidStateError:
            # write() on a call that already ended (etcd unreachable: gRPC fails a new call at once)
            # raises InvalidStateError, not RpcError; report it as the call's own status.
            raise await ended_call_error(call, "watch") from None
        except asyncio.CancelledError:
            raise
        finally:
            call.cancel()


def put_op(key: bytes, value: bytes, lease_id: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease_id, prev_kv=True))


def delete_op(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, prev_kv=True))


def range_op(key: bytes) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def mod_equals(key: bytes, revision: int) -> Any:
    return rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=revision)


def value_equals(key: bytes, value: bytes) -> Any:
    """True when ``key`` exists and holds exactly ``value`` (etcd fails a VALUE compare on a missing
    key: etcd server/etcdserver/txn/txn.go applyCompare)."""
    return rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, value=value)


def is_put(event: Any) -> bool:
    return bool(event.type == rpc.Event.PUT)
