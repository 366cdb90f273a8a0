"""``stateful.v1.OfferService``: validation, then one call into the scheduler."""

from __future__ import annotations

from typing import Any

import grpc

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as api_grpc
from mesos_stateful.common.grpc_errors import grpc_method
from mesos_stateful.offers.scheduler import OfferScheduler
from mesos_stateful.offers.validation import validate_launch, validate_task_id

Context = grpc.aio.ServicerContext[Any, Any]


class OfferServicer(api_grpc.OfferServiceServicer):
    def __init__(self, scheduler: OfferScheduler) -> None:
        self._scheduler = scheduler

    @grpc_method
    async def Launch(self, request: api.LaunchRequest, context: Context) -> api.LaunchResponse:
        validate_launch(request.launch)
        return api.LaunchResponse(task=await self._scheduler.launch(request.launch))

    @grpc_method
    async def Kill(self, request: api.KillRequest, context: Context) -> api.KillResponse:
        validate_task_id(request.task_id)
        return api.KillResponse(task=await self._scheduler.kill(request.task_id))

    @grpc_method
    async def ListTasks(self, request: api.ListTasksRequest, context: Context) -> api.ListTasksResponse:
        return api.ListTasksResponse(tasks=self._scheduler.list_tasks(request.instance))

    @grpc_method
    async def GetCluster(self, request: api.GetClusterRequest, context: Context) -> api.GetClusterResponse:
        return self._scheduler.cluster()
