"""Mapping between the suite's errors and gRPC status, in one place, both directions."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from mesos_stateful.common import errors

_P = ParamSpec("_P")
_T = TypeVar("_T")

_CODES: list[tuple[type[errors.StatefulError], grpc.StatusCode]] = [
    (errors.NotLeader, grpc.StatusCode.ABORTED),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.TemporaryError, grpc.StatusCode.UNAVAILABLE),
    (errors.PermanentError, grpc.StatusCode.FAILED_PRECONDITION),
]

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def status_code_for(error: errors.StatefulError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: errors.StatefulError) -> status_pb2.Status:
    """A google.rpc.Status for the error, with a BadRequest detail for invalid fields."""
    code = status_code_for(error)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    if isinstance(error, errors.InvalidArgument) and error.fields:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in sorted(error.fields.items())
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    return status


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: errors.StatefulError) -> NoReturn:
    await context.abort_with_status(rpc_status.to_status(to_status(error)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def grpc_method(
    method: Callable[_P, Awaitable[_T]],
) -> Callable[_P, Awaitable[_T]]:
    """Decorates an async unary servicer method: domain errors become gRPC status."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except errors.StatefulError as error:
            await abort(_context_of(args), error)

    return wrapper


def grpc_stream(
    method: Callable[_P, AsyncIterator[_T]],
) -> Callable[_P, AsyncIterator[_T]]:
    """Decorates an async server-streaming servicer method: domain errors become gRPC status."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> AsyncIterator[_T]:
        try:
            async for item in method(*args, **kwargs):
                yield item
        except errors.StatefulError as error:
            await abort(_context_of(args), error)

    return wrapper


def _context_of(args: tuple[Any, ...]) -> grpc.aio.ServicerContext[Any, Any]:
    # Servicer methods are (self, request, context).
    return args[-1]  # type: ignore[no-any-return]


def code_and_details(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """Status code and message of a failed call. Sync failures implement grpc.Call; aio failures
    (grpc.aio.AioRpcError) do not, but have the same accessors."""
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        code = error.code()
        return code, error.details() or str(code)
    return grpc.StatusCode.UNKNOWN, str(error) or "unknown error"


def from_rpc_error(error: grpc.RpcError) -> errors.StatefulError:
    """The domain error for a failed call (sync or aio), keeping field violations. For clients."""
    code, message = code_and_details(error)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.InvalidArgument(message, field_violations(error))
    mapping: dict[grpc.StatusCode, type[errors.StatefulError]] = {
        grpc.StatusCode.NOT_FOUND: errors.NotFound,
        grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
        grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
        grpc.StatusCode.ABORTED: errors.NotLeader,
        grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
        grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
    }
    return mapping.get(code, errors.PermanentError)(message)


_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """Field -> description from a google.rpc.BadRequest detail, if the error carries one."""
    if not isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return {}
    status = status_pb2.Status()
    for key, value in error.trailing_metadata() or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            status.ParseFromString(value)
    fields: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
            fields.update({v.field: v.description for v in bad.field_violations})
    return fields


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, errors.StatefulError):
        return error.retryable
    if isinstance(error, grpc.RpcError):
        return code_and_details(error)[0] in RETRYABLE_CODES
    return False
