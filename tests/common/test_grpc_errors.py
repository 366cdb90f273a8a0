"""Domain errors cross the wire as the right gRPC status and come back as the same domain error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as pbg
from mesos_stateful.common import errors
from mesos_stateful.common.grpc_errors import from_rpc_error, grpc_method, is_retryable
from mesos_stateful.common.server import build_server, is_serving


class _Raising(pbg.InstanceServiceServicer):
    def __init__(self) -> None:
        self.error: errors.StatefulError = errors.NotFound("no")

    @grpc_method
    async def GetInstance(
        self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetInstanceResponse:
        raise self.error


@pytest.fixture
async def raising() -> AsyncIterator[tuple[_Raising, pbg.InstanceServiceAsyncStub, str]]:
    # Only GetInstance is overridden: mypy-protobuf marks the generated servicer's methods abstract,
    # but at runtime the base class answers the others UNIMPLEMENTED (it is not an ABC).
    servicer = _Raising()  # type: ignore[abstract]
    served = await build_server(
        "127.0.0.1:0",
        [lambda s: pbg.add_InstanceServiceServicer_to_server(servicer, s)],
        ["stateful.v1.InstanceService"],
    )
    address = f"127.0.0.1:{served.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        yield servicer, pbg.InstanceServiceStub(channel), address
    await served.stop(0)


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (errors.InvalidArgument("bad", {"spec.name": "too long"}), grpc.StatusCode.INVALID_ARGUMENT, False),
        (errors.NotFound("no such instance"), grpc.StatusCode.NOT_FOUND, False),
        (errors.AlreadyExists("taken"), grpc.StatusCode.ALREADY_EXISTS, False),
        (errors.FailedPrecondition("deleting"), grpc.StatusCode.FAILED_PRECONDITION, False),
        (errors.Unavailable("etcd down"), grpc.StatusCode.UNAVAILABLE, True),
    ],
)
async def test_error_round_trip(
    raising: tuple[_Raising, pbg.InstanceServiceAsyncStub, str],
    error: errors.StatefulError,
    code: grpc.StatusCode,
    retryable: bool,
) -> None:
    servicer, stub, _ = raising
    servicer.error = error
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInstance(pb.GetInstanceRequest(name="x"))
    assert caught.value.code() == code
    assert caught.value.details() == error.message
    assert is_retryable(caught.value) is retryable
    back = from_rpc_error(caught.value)
    assert type(back) is type(error)
    if isinstance(error, errors.InvalidArgument):
        assert isinstance(back, errors.InvalidArgument)
        assert back.fields == {"spec.name": "too long"}


# A string: the async stub class exists only in the generated .pyi (the runtime stub serves both).
Raising: TypeAlias = "tuple[_Raising, pbg.InstanceServiceAsyncStub, str]"


async def test_health_reports_serving(raising: Raising) -> None:
    _, _, address = raising
    assert await is_serving(address)
    assert await is_serving(address, service="stateful.v1.InstanceService")
    assert not await is_serving("127.0.0.1:1", timeout=0.5)
