"""Calling a workload's callbacks: registry look-up, deadline, context, error classification.

Retries are not done here: a retryable failure (UNAVAILABLE, DEADLINE_EXCEEDED, workload not
registered) raises :class:`mesos_stateful.common.errors.TemporaryError`, which the step runner
records on the step (DELAYED, attempts, next_attempt_at) and retries with backoff; any other status
raises a ``PermanentError`` (the step goes ERROR).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, cast

import grpc
from opentelemetry.trace import Span

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2, workload_service_pb2, workload_service_pb2_grpc
from mesos_stateful.common import errors
from mesos_stateful.common.channels import channel_options
from mesos_stateful.common.grpc_errors import RETRYABLE_CODES, code_and_details, from_rpc_error
from mesos_stateful.lifecycle.planner import Snapshot
from mesos_stateful.lifecycle.spans import callback_span

log = logging.getLogger(__name__)

wpb = workload_service_pb2

# Reconnect quickly after a workload service restarts (gRPC's default backoff grows to 120 s),
# with the keepalive the servers accept.
CHANNEL_OPTIONS = channel_options()

# Callback name -> request message type.
REQUESTS: dict[str, type[Any]] = {
    "Config": wpb.ConfigRequest,
    "Start": wpb.StartRequest,
    "StartMaster": wpb.StartMasterRequest,
    "StartSlave": wpb.StartSlaveRequest,
    "MasterRunning": wpb.MasterRunningRequest,
    "SlaveRunning": wpb.SlaveRunningRequest,
    "MasterLost": wpb.MasterLostRequest,
    "SlaveLost": wpb.SlaveLostRequest,
    "PeerRunning": wpb.PeerRunningRequest,
    "PeerLost": wpb.PeerLostRequest,
    "RemoveMember": wpb.RemoveMemberRequest,
    "CheckMember": wpb.CheckMemberRequest,
    "Fence": wpb.FenceRequest,
}


class NotImplementedByWorkload(errors.PermanentError):
    """The workload service answered UNIMPLEMENTED: it does not have this (optional) callback."""


def callback_context(
    snapshot: Snapshot, member_id: str, secrets: Mapping[str, str], attempt: int
) -> wpb.CallbackContext:
    """The whole instance (members sorted by ordinal), the member, the secrets and the attempt."""
    instance = types_pb2.Instance()
    instance.CopyFrom(snapshot.instance)
    del instance.members[:]
    instance.members.extend(sorted(snapshot.members, key=lambda m: m.ordinal))
    context = wpb.CallbackContext(instance=instance, member_id=member_id, attempt=max(1, attempt))
    context.secrets.update(secrets)
    return context


class Callbacks:
    """Invokes WorkloadService callbacks on the endpoint registered for a workload."""

    def __init__(self, state: Any, timeout_seconds: float) -> None:
        self._state = state
        self._timeout = timeout_seconds
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # workload -> the instances whose last callback to it failed with a retryable error
        # (unreachable, deadline, not registered): their step is DELAYED waiting on that workload.
        self._waiting: dict[str, set[str]] = {}

    def waiting_on(self, workload: str) -> set[str]:
        """The instances whose last callback to ``workload`` failed retryably, forgotten here:
        called when the workload (re-)registers, so their DELAYED steps retry at once."""
        return self._waiting.pop(workload, set())

    async def endpoint(self, workload: str) -> str:
        record = await self._state.find(spb.KIND_WORKLOAD, workload)
        if record is None or not record.workload.endpoint:
            raise errors.Unavailable(f"workload {workload!r} is not registered")
        return cast(str, record.workload.endpoint)

    def _stub(self, endpoint: str) -> workload_service_pb2_grpc.WorkloadServiceStub:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
            self._channels[endpoint] = channel
        return workload_service_pb2_grpc.WorkloadServiceStub(channel)

    async def _drop(self, endpoint: str) -> None:
        """Forget the endpoint's channel (the next call opens a fresh one). It is closed in the
        background with a grace of one callback timeout: closing it at once would cancel the
        other calls in flight on it (other instances' steps)."""
        channel = self._channels.pop(endpoint, None)
        if channel is not None:
            task = asyncio.create_task(channel.close(grace=self._timeout), name=f"close-{endpoint}")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def call(
        self,
        workload: str,
        method: str,
        context: wpb.CallbackContext,
        timeout: float | None = None,
        traced: bool = True,
        **fields: Any,
    ) -> Any:
        """Call ``method`` with ``context`` (and other request ``fields``, e.g. MasterLost's
        ``candidate_ids``) within ``timeout`` seconds (default: the callback timeout); returns the
        response message. Errors: ``Unavailable`` (retry), ``NotImplementedByWorkload``, other
        ``PermanentError``. ``traced=False``: no span (the health monitor's probes, several a
        second, would bury every other span)."""
        instance = context.instance.spec.name
        try:
            if not traced:
                response = await self._call(workload, method, context, None, fields, timeout or self._timeout)
            else:
                with callback_span(workload, method, context.member_id, context.attempt) as span:
                    response = await self._call(
                        workload, method, context, span, fields, timeout or self._timeout
                    )
        except errors.TemporaryError:
            self._waiting.setdefault(workload, set()).add(instance)
            raise
        waiting = self._waiting.get(workload)
        if waiting is not None:
            waiting.discard(instance)
        return response

    async def _call(
        self,
        workload: str,
        method: str,
        context: wpb.CallbackContext,
        span: Span | None,
        fields: dict[str, Any],
        timeout: float,
    ) -> Any:
        endpoint = await self.endpoint(workload)
        request = REQUESTS[method](context=context, **fields)
        stub = self._stub(endpoint)
        try:
            response = await getattr(stub, method)(request, timeout=timeout)
            if span is not None:
                span.set_attribute("code", "OK")
            return response
        except grpc.RpcError as error:
            code, details = code_and_details(error)
            if span is not None:
                span.set_attribute("code", code.name)
            message = f"{method} on {workload} at {endpoint}: {code.name}: {details}"
            if code in RETRYABLE_CODES:
                # A fresh channel next time: the service may be back on a new process.
                await self._drop(endpoint)
                raise errors.Unavailable(message) from None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise NotImplementedByWorkload(message) from None
            mapped = from_rpc_error(error)
            if mapped.retryable:
                raise errors.Unavailable(message) from None
            raise errors.PermanentError(message) from None

    async def alive(self, workload: str, timeout: float) -> bool:
        """Whether the workload's service answers ``Describe`` within ``timeout`` seconds."""
        try:
            endpoint = await self.endpoint(workload)
        except errors.StatefulError:
            return False
        try:
            await self._stub(endpoint).Describe(wpb.DescribeRequest(), timeout=timeout)  # type: ignore[misc]
        except grpc.RpcError:
            return False
        return True

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            await channel.close()
        for task in list(self._closing):
            task.cancel()
