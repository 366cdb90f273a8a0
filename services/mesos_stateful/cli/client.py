"""The CLI's connection to the gateway and the one place gRPC errors become CLI messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import typer
from rich.console import Console

from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.common.channels import channel_options
from mesos_stateful.common.grpc_errors import field_violations

# Exit codes: 2 for bad input (as click uses for usage errors), 1 for everything else.
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

UNARY_TIMEOUT_SECONDS = 30.0

# gRPC retries (gRFC A6) of the calls that are safe to repeat: reads, and ScaleInstance (it sets
# an absolute member count). A gateway restarting under a call answers UNAVAILABLE; these calls
# are tried again for about 4 s (0.2 s doubling to 2 s, 5 attempts: gRPC's largest). CreateInstance and
# DeleteInstance are not retried: a repeat after a reset could answer ALREADY_EXISTS / NOT_FOUND
# for a call that did what was asked.
_RETRIED_METHODS = ("GetInstance", "ListInstances", "ScaleInstance", "ListWorkloads")
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "stateful.v1.InstanceService", "method": m} for m in _RETRIED_METHODS],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

_UNREACHABLE_HINTS = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "name resolution",
    "connections to all backends failing",
    "no address",
)

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class CliFailure(Exception):
    """A failure to report as ``error: <message>`` and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.fields = fields or {}


@dataclass
class Gateway:
    """Where and how to call the gateway (from the global options)."""

    endpoint: str
    token: str | None = None
    output: str = "table"
    _channel: grpc.Channel | None = field(default=None, repr=False)
    # The channel's connectivity as gRPC reports it (set from gRPC's own thread): whether it has
    # ever been READY (a stream that breaks afterwards is resumed, see wait.watch_stream) and
    # whether it is READY now.
    ever_ready: bool = field(default=False, repr=False)
    ready: bool = field(default=False, repr=False)

    def _connectivity(self, state: grpc.ChannelConnectivity) -> None:
        self.ready = state == grpc.ChannelConnectivity.READY
        self.ever_ready = self.ever_ready or self.ready

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def stub(self) -> api_grpc.InstanceServiceStub:
        if self._channel is None:
            retries = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]
            options = [*channel_options(), *retries]
            self._channel = grpc.insecure_channel(self.endpoint, options=options)
            self._channel.subscribe(self._connectivity, try_to_connect=False)
        return api_grpc.InstanceServiceStub(self._channel)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.unsubscribe(self._connectivity)
            self._channel.close()
            self._channel = None


def is_unreachable(error: grpc.RpcError) -> bool:
    """True when the call never reached the gateway (as opposed to the gateway answering
    UNAVAILABLE because the state service is down)."""
    if not isinstance(error, grpc.Call) or error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (error.details() or "").lower()
    if details.startswith("the state service"):
        return False  # the gateway answered: its own dependency is down
    return any(hint in details for hint in _UNREACHABLE_HINTS)


def failure_of(error: grpc.RpcError, endpoint: str) -> CliFailure:
    if is_unreachable(error):
        return CliFailure(f"cannot reach the gateway at {endpoint}: is it running? (make run)")
    if not isinstance(error, grpc.Call):
        return CliFailure(str(error))
    code = error.code()
    message = error.details() or code.name
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return CliFailure(message, EXIT_BAD_INPUT, field_violations(error))
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CliFailure(f"{message} (use --token or STATEFUL_TOKEN)")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliFailure(f"the gateway at {endpoint} did not answer in time")
    return CliFailure(message)


def report(failure: CliFailure) -> None:
    message = failure.message
    if failure.fields:
        # The gateway's message is "<what>: <every violation>"; the lines below list them.
        message = message.split(": ", 1)[0]
    stderr.print(f"error: {message}", markup=False)
    for name, description in sorted(failure.fields.items()):
        stderr.print(f"  {name}: {description}", markup=False)


@contextmanager
def reporting(gateway: Gateway) -> Iterator[None]:
    """Turn every failure inside into one error message and a non-zero exit, never a traceback."""
    try:
        yield
    except grpc.RpcError as error:
        failure = failure_of(error, gateway.endpoint)
        report(failure)
        raise typer.Exit(failure.code) from None
    except CliFailure as failure:
        report(failure)
        raise typer.Exit(failure.code) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        gateway.close()
