"""``stateful.v1.OfferService``: validation, then one call into the leader's scheduler (a standby
answers UNAVAILABLE "standby; the offers leader is at <address>")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as api_grpc
from mesos_stateful.common import errors
from mesos_stateful.common.grpc_errors import grpc_method
from mesos_stateful.offers.validation import validate_launch, validate_task_id

if TYPE_CHECKING:
    from mesos_stateful.offers.scheduler import OfferScheduler
    from mesos_stateful.offers.server import OffersServed

Context = grpc.aio.ServicerContext[Any, Any]


class OfferServicer(api_grpc.OfferServiceServicer):
    def __init__(self, node: Callable[[], OffersServed | None]) -> None:
        self._current = node

    def _node(self) -> OffersServed:
        node = self._current()
        if node is None:
            raise errors.Unavailable("the offers service is starting; retry")
        return node

    @grpc_method
    async def Launch(self, request: api.LaunchRequest, context: Context) -> api.LaunchResponse:
        validate_launch(request.launch)

        async def launch(scheduler: OfferScheduler) -> api.LaunchResponse:
            return api.LaunchResponse(task=await scheduler.launch(request.launch))

        return await self._node().call("Launch", launch)

    @grpc_method
    async def Kill(self, request: api.KillRequest, context: Context) -> api.KillResponse:
        validate_task_id(request.task_id)

        async def kill(scheduler: OfferScheduler) -> api.KillResponse:
            return api.KillResponse(task=await scheduler.kill(request.task_id))

        return await self._node().call("Kill", kill)

    @grpc_method
    async def ListTasks(self, request: api.ListTasksRequest, context: Context) -> api.ListTasksResponse:
        async def tasks(scheduler: OfferScheduler) -> api.ListTasksResponse:
            return api.ListTasksResponse(tasks=scheduler.list_tasks(request.instance))

        return await self._node().call("ListTasks", tasks)

    @grpc_method
    async def GetCluster(self, request: api.GetClusterRequest, context: Context) -> api.GetClusterResponse:
        async def cluster(scheduler: OfferScheduler) -> api.GetClusterResponse:
            return scheduler.cluster()

        return await self._node().call("GetCluster", cluster)
