"""The state service's Prometheus metrics (names from :mod:`mesos_stateful.common.metrics`):

- ``stateful_state_request_duration_seconds{method, outcome}``: every unary StateService call,
  timed by a gRPC server interceptor (:class:`RequestMetricsInterceptor`); ``outcome`` is ``ok``
  or the gRPC status code name (``NOT_FOUND``, ``ABORTED``, ``UNAVAILABLE``...). Watch streams
  live as long as their watcher and are not timed.
- ``stateful_etcd_errors_total{kind}``: failed etcd calls (:func:`count_etcd_error`, called by
  ``etcdkv``); ``kind`` is the call (range, txn, status, lease_grant, lease_keepalive,
  lease_revoke, watch).
- ``stateful_watch_lag_seconds``: a watch delivery's time minus the record's own ``updated_at``
  (members, instances and tasks carry one; other records are not measured): how stale a change
  is when a watcher gets it (:func:`observe_watch_lag`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.common.metrics import ETCD_ERRORS_TOTAL, STATE_REQUEST_SECONDS, WATCH_LAG_SECONDS
from mesos_stateful.common.trace_context import ServerTraceInterceptor

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler

SERVICE_PREFIX = "/" + pb.DESCRIPTOR.services_by_name["StateService"].full_name + "/"

# etcdkv's call descriptions ("range", "lease revoke 1f2e"...) -> the ``kind`` label.
_ETCD_KINDS = ("range", "txn", "status", "lease grant", "lease keepalive", "lease revoke", "watch")
for _kind in (*_ETCD_KINDS, "other"):
    ETCD_ERRORS_TOTAL.labels(kind=_kind.replace(" ", "_"))  # every series from 0 (common.metrics)


def count_etcd_error(what: str) -> None:
    """One failed etcd call; ``what`` is etcdkv's description of it (its first words name it)."""
    kind = next((k for k in _ETCD_KINDS if what.startswith(k)), "other")
    ETCD_ERRORS_TOTAL.labels(kind=kind.replace(" ", "_")).inc()


def observe_watch_lag(response: pb.WatchResponse, now: float | None = None) -> None:
    """Observe delivery time (``now``, Unix seconds) minus the record's ``updated_at``, for a
    PUT of a record that has one set; a negative difference (clock skew between writers) is 0."""
    if response.type != pb.EVENT_TYPE_PUT:
        return
    case = response.record.WhichOneof("value")
    if case not in ("member", "instance", "task"):
        return
    value: Any = getattr(response.record, case)
    stamp = value.updated_at
    if stamp.seconds == 0 and stamp.nanos == 0:
        return
    delivered = time.time() if now is None else now
    WATCH_LAG_SECONDS.observe(max(delivered - (stamp.seconds + stamp.nanos / 1e9), 0.0))


def _code_name(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return "ok" if code == grpc.StatusCode.OK else code.name
    if isinstance(code, int) and code != 0:
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "ok" if code in (None, 0) else "UNKNOWN"


class RequestMetricsInterceptor(ServerTraceInterceptor):
    """Times every unary StateService call by method and outcome, and (as the
    :class:`ServerTraceInterceptor` it is) runs it in its caller's trace: one interceptor on the
    state service's server, so a request pays grpc's interceptor path once."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        full = handler_call_details.method or ""
        if handler is None or not full.startswith(SERVICE_PREFIX) or handler.unary_unary is None:
            return self.traced(handler, handler_call_details)
        method = full.removeprefix(SERVICE_PREFIX)
        behavior: Any = handler.unary_unary  # an async callable on an aio server

        async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            outcome = "UNKNOWN"
            try:
                response = await behavior(request, context)
                outcome = _code_name(context)
                return response
            except asyncio.CancelledError:
                outcome = "CANCELLED"
                raise
            except BaseException:
                named = _code_name(context)
                outcome = "UNKNOWN" if named == "ok" else named
                raise
            finally:
                STATE_REQUEST_SECONDS.labels(method=method, outcome=outcome).observe(
                    time.perf_counter() - started
                )

        timed_handler = grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return self.traced(timed_handler, handler_call_details)
