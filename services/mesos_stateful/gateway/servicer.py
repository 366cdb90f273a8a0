"""``stateful.v1.InstanceService``: thin gRPC adapter over :class:`InstanceDomain`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.common.grpc_errors import grpc_method, grpc_stream
from mesos_stateful.gateway import member_operations
from mesos_stateful.gateway.operations import PlanControl, actor_of
from mesos_stateful.gateway.service import InstanceDomain

Context = grpc.aio.ServicerContext[Any, Any]


class InstanceServicer(api_grpc.InstanceServiceServicer):
    def __init__(self, domain: InstanceDomain) -> None:
        self._domain = domain
        self._control = PlanControl(domain)

    @grpc_method
    async def CreateInstance(
        self, request: api.CreateInstanceRequest, context: Context
    ) -> api.CreateInstanceResponse:
        instance = await self._domain.create(request.spec)
        spec = instance.spec
        await self._control.operator_event(
            spec.name, "create", actor_of(context), f"created ({spec.workload}, {spec.replicas} members)"
        )
        return api.CreateInstanceResponse(instance=instance)

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
        instance = await self._domain.delete(request.name)
        await self._control.operator_event(request.name, "delete", actor_of(context), "deletion requested")
        return api.DeleteInstanceResponse(instance=instance)

    @grpc_method
    async def ScaleInstance(
        self, request: api.ScaleInstanceRequest, context: Context
    ) -> api.ScaleInstanceResponse:
        instance = await self._domain.scale(request.name, request.replicas)
        await self._control.operator_event(
            request.name, "scale", actor_of(context), f"scale to {request.replicas} members"
        )
        return api.ScaleInstanceResponse(instance=instance)

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
    async def UpdateInstance(
        self, request: api.UpdateInstanceRequest, context: Context
    ) -> api.UpdateInstanceResponse:
        paths = list(request.update_mask.paths)
        instance = await self._domain.update(request.spec, paths, request.etag)
        await self._control.operator_event(
            instance.spec.name,
            "update",
            actor_of(context),
            f"update of {', '.join(paths)} (generation {instance.generation})",
        )
        return api.UpdateInstanceResponse(instance=instance)

    # -- plan control and history (gateway/operations.py) -------------------------------------------

    @grpc_method
    async def RetryPlan(self, request: api.RetryPlanRequest, context: Context) -> api.RetryPlanResponse:
        return api.RetryPlanResponse(instance=await self._control.retry(request.name, actor_of(context)))

    @grpc_method
    async def PauseInstance(
        self, request: api.PauseInstanceRequest, context: Context
    ) -> api.PauseInstanceResponse:
        return api.PauseInstanceResponse(instance=await self._control.pause(request.name, actor_of(context)))

    @grpc_method
    async def ResumeInstance(
        self, request: api.ResumeInstanceRequest, context: Context
    ) -> api.ResumeInstanceResponse:
        instance = await self._control.resume(request.name, actor_of(context))
        return api.ResumeInstanceResponse(instance=instance)

    @grpc_method
    async def ListEvents(self, request: api.ListEventsRequest, context: Context) -> api.ListEventsResponse:
        return api.ListEventsResponse(events=await self._control.list_events(request.name, request.page_size))

    # -- member operations (gateway/member_operations.py) -----------------------------------------

    @grpc_method
    async def SwitchoverInstance(
        self, request: api.SwitchoverInstanceRequest, context: Context
    ) -> api.SwitchoverInstanceResponse:
        instance = await member_operations.switchover(self._domain, request.name, request.target_member_id)
        target = f" to {request.target_member_id}" if request.target_member_id else ""
        await self._control.operator_event(
            request.name, "switchover", actor_of(context), f"switchover{target}"
        )
        return api.SwitchoverInstanceResponse(instance=instance)

    @grpc_method
    async def RestartMember(
        self, request: api.RestartMemberRequest, context: Context
    ) -> api.RestartMemberResponse:
        instance = await member_operations.restart(self._domain, request.instance, request.member_id)
        await self._control.operator_event(
            request.instance, "restart", actor_of(context), f"restart of {request.member_id}"
        )
        return api.RestartMemberResponse(instance=instance)

    @grpc_method
    async def ReplaceMember(
        self, request: api.ReplaceMemberRequest, context: Context
    ) -> api.ReplaceMemberResponse:
        instance = await member_operations.replace(self._domain, request.instance, request.member_id)
        await self._control.operator_event(
            request.instance, "replace", actor_of(context), f"replace of {request.member_id}"
        )
        return api.ReplaceMemberResponse(instance=instance)
