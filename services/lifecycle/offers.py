"""The lifecycle's client of the offers service (Launch / Kill), with domain errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import grpc

from mesos_stateful.api.stateful.v1 import offer_service_pb2, offer_service_pb2_grpc, types_pb2
from mesos_stateful.common import errors
from mesos_stateful.common.grpc_errors import from_rpc_error
from mesos_stateful.lifecycle.callbacks import CHANNEL_OPTIONS

if TYPE_CHECKING:
    from mesos_stateful.api.stateful.v1.offer_service_pb2_grpc import OfferServiceAsyncStub

_T = TypeVar("_T")


class OffersClient:
    def __init__(self, endpoint: str, timeout_seconds: float) -> None:
        self.endpoint = endpoint
        self._timeout = timeout_seconds
        self._channel: grpc.aio.Channel | None = None
        self._stub: OfferServiceAsyncStub | None = None

    @property
    def stub(self) -> OfferServiceAsyncStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.endpoint, options=CHANNEL_OPTIONS)
            self._stub = offer_service_pb2_grpc.OfferServiceStub(self._channel)
        return self._stub

    async def _call(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await call()
        except grpc.RpcError as error:
            mapped = from_rpc_error(error)
            mapped.message = f"offers {what}: {mapped.message}"
            mapped.args = (mapped.message,)
            raise mapped from None

    async def launch(self, launch: types_pb2.LaunchSpec) -> types_pb2.Task:
        request = offer_service_pb2.LaunchRequest(launch=launch)
        response = await self._call(
            f"Launch {launch.task_id}", lambda: self.stub.Launch(request, timeout=self._timeout)
        )
        return response.task

    async def kill(self, task_id: str) -> types_pb2.Task | None:
        """Kill (or dequeue) a task; None if the offers service does not know it."""
        request = offer_service_pb2.KillRequest(task_id=task_id)
        try:
            response = await self._call(
                f"Kill {task_id}", lambda: self.stub.Kill(request, timeout=self._timeout)
            )
        except errors.NotFound:
            return None
        return response.task

    async def pending_reason(self, task_id: str) -> str:
        """Why a queued launch has not matched an offer yet ("" if unknown)."""
        try:
            cluster = await self._call(
                "GetCluster",
                lambda: self.stub.GetCluster(offer_service_pb2.GetClusterRequest(), timeout=self._timeout),
            )
        except errors.StatefulError:
            return ""
        return next((p.reason for p in cluster.pending if p.task_id == task_id), "")

    async def reservations(self, instance: str) -> list[offer_service_pb2.Reservation]:
        """The instance's reservations and volumes the offers service still knows of, by agent
        (hostname, reservation)."""
        cluster = await self._call(
            "GetCluster",
            lambda: self.stub.GetCluster(offer_service_pb2.GetClusterRequest(), timeout=self._timeout),
        )
        return [r for agent in cluster.agents for r in agent.reservations if r.instance == instance]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stub = None
