"""``stateful.v1.InstanceService``: thin gRPC adapter over :class:`InstanceDomain`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.common.grpc_errors import grpc_method, grpc_stream
from mesos_stateful.gateway import operations
from mesos_stateful.gateway.service import InstanceDomain

Context = grpc.aio.ServicerContext[Any, Any]


class InstanceServicer(api_grpc.InstanceServiceServicer):
    def __init__(self, domain: InstanceDomain) -> None:
        self._domain = domain

    @grpc_method
    async def CreateInstance(
        self, request: api.CreateInstanceRequest, context: Context
    ) -> api.CreateInstanceResponse:
        return api.CreateInstanceResponse(instance=await self._domain.create(request.spec))

    @grpc_method
    async def GetInstance(self, request: api.GetInstanceRequest, context: Context) -> api.GetInstanceResponse:
        instance, secrets = await self._domain.get(request.name, request.include_secrets)
        return api.GetInstanceResponse(instance=instance, secrets=secrets)

    @grpc_method
    async def ListInstances(
        self, request: api.ListInstancesRequest, context: Context
    ) -> api.ListInstancesResponse:
        instances, token = await self._domain.list_instances(
            request.page_size, request.page_token, request.workload, dict(request.labels)
        )
        return api.ListInstancesResponse(instances=instances, next_page_token=token)

    @grpc_method
    async def DeleteInstance(
        self, request: api.DeleteInstanceRequest, context: Context
    ) -> api.DeleteInstanceResponse:
        return api.DeleteInstanceResponse(instance=await self._domain.delete(request.name))

    @grpc_method
    async def ScaleInstance(
        self, request: api.ScaleInstanceRequest, context: Context
    ) -> api.ScaleInstanceResponse:
        return api.ScaleInstanceResponse(instance=await self._domain.scale(request.name, request.replicas))

    @grpc_stream
    async def WatchInstances(
        self, request: api.WatchInstancesRequest, context: Context
    ) -> AsyncIterator[api.WatchInstancesResponse]:
        async for response in self._domain.watch(request.name, request.workload, request.start_revision):
            yield response

    @grpc_method
    async def ListWorkloads(
        self, request: api.ListWorkloadsRequest, context: Context
    ) -> api.ListWorkloadsResponse:
        return api.ListWorkloadsResponse(workloads=await self._domain.list_workloads())

    @grpc_method
    async def SwitchoverInstance(
        self, request: api.SwitchoverInstanceRequest, context: Context
    ) -> api.SwitchoverInstanceResponse:
        instance = await operations.switchover(self._domain, request.name, request.target_member_id)
        return api.SwitchoverInstanceResponse(instance=instance)

    @grpc_method
    async def RestartMember(
        self, request: api.RestartMemberRequest, context: Context
    ) -> api.RestartMemberResponse:
        instance = await operations.restart(self._domain, request.instance, request.member_id)
        return api.RestartMemberResponse(instance=instance)

    @grpc_method
    async def ReplaceMember(
        self, request: api.ReplaceMemberRequest, context: Context
    ) -> api.ReplaceMemberResponse:
        instance = await operations.replace(self._domain, request.instance, request.member_id)
        return api.ReplaceMemberResponse(instance=instance)
