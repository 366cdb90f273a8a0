"""The StateService servicer: validate, call the store, map errors (decorators)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import state_service_pb2_grpc as pb_grpc
from mesos_stateful.common.grpc_errors import grpc_method, grpc_stream
from mesos_stateful.state.request_metrics import observe_watch_lag
from mesos_stateful.state.store import Store

Context = grpc.aio.ServicerContext[Any, Any]


class StateServicer(pb_grpc.StateServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @grpc_method
    async def Get(self, request: pb.GetRequest, context: Context) -> pb.GetResponse:
        return pb.GetResponse(record=await self.store.get(request.key.kind, request.key.name))

    @grpc_method
    async def List(self, request: pb.ListRequest, context: Context) -> pb.ListResponse:
        found, revision = await self.store.list(request.kind, request.name_prefix)
        return pb.ListResponse(records=found, revision=revision)

    @grpc_method
    async def Put(self, request: pb.PutRequest, context: Context) -> pb.PutResponse:
        record = await self.store.put(
            request.record,
            request.expected_revision,
            request.unconditional,
            request.lease_id,
            request.fence if request.HasField("fence") else None,
        )
        return pb.PutResponse(record=record)

    @grpc_method
    async def Delete(self, request: pb.DeleteRequest, context: Context) -> pb.DeleteResponse:
        deleted, revision = await self.store.delete(
            request.key.kind,
            request.key.name,
            request.expected_revision,
            request.fence if request.HasField("fence") else None,
        )
        return pb.DeleteResponse(deleted=deleted, revision=revision)

    @grpc_stream
    async def Watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[pb.WatchResponse]:
        async for response in self.store.watch(
            list(request.kinds), request.name_prefix, request.start_revision
        ):
            observe_watch_lag(response)
            yield response

    @grpc_method
    async def GrantLease(self, request: pb.GrantLeaseRequest, context: Context) -> pb.GrantLeaseResponse:
        lease_id, ttl = await self.store.grant_lease(request.ttl_seconds)
        return pb.GrantLeaseResponse(lease_id=lease_id, ttl_seconds=ttl)

    @grpc_method
    async def KeepAliveLease(
        self, request: pb.KeepAliveLeaseRequest, context: Context
    ) -> pb.KeepAliveLeaseResponse:
        return pb.KeepAliveLeaseResponse(ttl_seconds=await self.store.keep_alive(request.lease_id))

    @grpc_method
    async def RevokeLease(self, request: pb.RevokeLeaseRequest, context: Context) -> pb.RevokeLeaseResponse:
        await self.store.revoke_lease(request.lease_id)
        return pb.RevokeLeaseResponse()
