"""The lifecycle's client of the offers service (Launch / Kill), with domain errors.

Offers runs as a leader and standbys (role "offers", a lease in state; only the leader holds the
Mesos framework connection; a standby answers UNAVAILABLE). The client sends each call to the
address the offers leader advertises in its lease (``find_leader``), re-read at most every
``LEADER_CACHE_SECONDS`` and at once after an UNAVAILABLE. An attempt answered UNAVAILABLE or
DEADLINE_EXCEEDED (each attempt gets at most half the deadline) is retried within the call's
deadline: every call here is idempotent (Launch is on the task id, Kill and GetCluster change
nothing twice), so a lifecycle keeps working across an offers failover. While no leader is
recorded (an offers service without election, or none up yet) it uses the configured endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import grpc

from mesos_stateful.api.stateful.v1 import offer_service_pb2, offer_service_pb2_grpc, types_pb2
from mesos_stateful.clients.leadership import find_leader
from mesos_stateful.common import errors, retry
from mesos_stateful.common.grpc_errors import from_rpc_error
from mesos_stateful.lifecycle.callbacks import CHANNEL_OPTIONS

if TYPE_CHECKING:
    from mesos_stateful.api.stateful.v1.offer_service_pb2_grpc import OfferServiceAsyncStub
    from mesos_stateful.clients.state import StateClient

log = logging.getLogger(__name__)

_T = TypeVar("_T")

OFFERS_ROLE = "offers"
# The leader's address is re-read from state at most this often (seconds) while calls succeed.
LEADER_CACHE_SECONDS = 1.0
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.aio.AioRpcError) else None


Call = Callable[["OfferServiceAsyncStub", float], Awaitable[_T]]


class OffersClient:
    """``endpoint``: used while no offers leader is recorded. ``state``: where the leader's lease
    is read (None: always ``endpoint``). ``timeout_seconds``: the deadline of one call, retries
    included."""

    def __init__(self, endpoint: str, timeout_seconds: float, state: StateClient | None = None) -> None:
        self.fallback = endpoint
        self.endpoint = endpoint  # where calls go now
        self._timeout = timeout_seconds
        self._state = state
        self._resolved_at = float("-inf")
        self._channel: grpc.aio.Channel | None = None
        self._stub: OfferServiceAsyncStub | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def stub(self) -> OfferServiceAsyncStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.endpoint, options=CHANNEL_OPTIONS)
            self._stub = offer_service_pb2_grpc.OfferServiceStub(self._channel)
        return self._stub

    async def _resolve(self, force: bool) -> None:
        """Point the client at the recorded offers leader (re-read if ``force`` or stale)."""
        if self._state is None:
            return
        now = time.monotonic()
        if not force and now - self._resolved_at < LEADER_CACHE_SECONDS:
            return
        try:
            lease = await find_leader(self._state, OFFERS_ROLE)
        except errors.StatefulError as error:
            log.debug("offers leader not read (%s); keeping %s", error.message, self.endpoint)
            return
        self._resolved_at = now
        address = lease.address if lease is not None and lease.address else self.fallback
        if address != self.endpoint:
            log.info("offers leader is at %s (was %s)", address, self.endpoint)
            self._switch(address)

    def _switch(self, address: str) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        self.endpoint = address
        if channel is not None:
            # Closed in the background with a grace: other calls may be in flight on it.
            task = asyncio.create_task(channel.close(grace=self._timeout), name="close-offers-channel")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _call(self, what: str, call: Call[_T]) -> _T:
        """One call at the leader, again at the leader found anew while it answers UNAVAILABLE or
        DEADLINE_EXCEEDED (``retry.OFFERS_CALL``), within the client's timeout."""
        deadline = time.monotonic() + self._timeout
        attempts = 0

        async def attempt() -> _T:
            nonlocal attempts
            attempts += 1
            await self._resolve(attempts > 1)
            # One attempt may take half the deadline: a leader that stopped answering (frozen, cut
            # off) leaves time to find the next one.
            budget = min(deadline - time.monotonic(), max(self._timeout / 2, 1.0))
            try:
                return await call(self.stub, max(budget, 0.01))
            except grpc.RpcError as error:
                if _code(error) in _RETRIED:
                    raise
                raise self._error(what, error) from None

        def failed(error: BaseException, _delay: float) -> None:
            code = _code(error) if isinstance(error, grpc.RpcError) else error
            log.info("offers %s at %s: %s; finding the leader again", what, self.endpoint, code)

        try:
            return await retry.call(retry.OFFERS_CALL.with_deadline(self._timeout), attempt, on_retry=failed)
        except grpc.RpcError as error:
            raise self._error(what, error) from None

    def _error(self, what: str, error: grpc.RpcError) -> errors.StatefulError:
        mapped = from_rpc_error(error)
        mapped.message = f"offers {what} (at {self.endpoint}): {mapped.message}"
        mapped.args = (mapped.message,)
        return mapped

    async def launch(self, launch: types_pb2.LaunchSpec) -> types_pb2.Task:
        request = offer_service_pb2.LaunchRequest(launch=launch)
        response = await self._call(f"Launch {launch.task_id}", lambda s, t: s.Launch(request, timeout=t))
        return response.task

    async def kill(self, task_id: str) -> types_pb2.Task | None:
        """Kill (or dequeue) a task; None if the offers service does not know it."""
        request = offer_service_pb2.KillRequest(task_id=task_id)
        try:
            response = await self._call(f"Kill {task_id}", lambda s, t: s.Kill(request, timeout=t))
        except errors.NotFound:
            return None
        return response.task

    async def _cluster(self) -> offer_service_pb2.GetClusterResponse:
        request = offer_service_pb2.GetClusterRequest()
        return await self._call("GetCluster", lambda s, t: s.GetCluster(request, timeout=t))

    async def pending_reason(self, task_id: str) -> str:
        """Why a queued launch has not matched an offer yet ("" if unknown)."""
        try:
            cluster = await self._cluster()
        except errors.StatefulError:
            return ""
        return next((p.reason for p in cluster.pending if p.task_id == task_id), "")

    async def agents(self) -> list[offer_service_pb2.Agent]:
        """The agents the offers service knows (seen in offers, not removed), with our
        reservations there (``GetCluster``)."""
        cluster = await self._cluster()
        return list(cluster.agents)

    async def reservations(self, instance: str) -> list[offer_service_pb2.Reservation]:
        """The instance's reservations and volumes the offers service still knows of, by agent
        (hostname, reservation)."""
        cluster = await self._cluster()
        return [r for agent in cluster.agents for r in agent.reservations if r.instance == instance]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stub = None
        for task in list(self._closing):
            task.cancel()
