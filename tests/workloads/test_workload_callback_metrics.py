"""A workload service's own /metrics (``serve_metrics``, prometheus-client's server) shows every
callback it served: ``stateful_workload_callback_duration_seconds`` by callback and outcome (ok or
the gRPC status code it answered with) and ``stateful_workload_callback_errors_total`` by callback
and code. A workload built on ``WorkloadBase`` (callbacks that succeed, refuse, fail on a bug, and
one that outlives the callback timeout), served on a real gRPC server, called over gRPC; the page
read over HTTP and parsed with prometheus-client's parser."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import workload_service_pb2_grpc as pb_grpc
from mesos_stateful.common import errors
from mesos_stateful.common.metrics_server import serve_metrics
from mesos_stateful.workloads.base import (
    Context,
    RunningWorkload,
    WorkloadBase,
    WorkloadSettings,
    callback,
    start_workload,
)

WORKLOAD = "metricsprobe"


class Probe(WorkloadBase):
    @callback
    async def Config(self, request: pb.ConfigRequest, context: Context) -> pb.ConfigResponse:
        return pb.ConfigResponse()

    @callback
    async def StartMaster(self, request: pb.StartMasterRequest, context: Context) -> pb.StartMasterResponse:
        raise errors.FailedPrecondition("not a replica of the old master")

    @callback
    async def StartSlave(self, request: pb.StartSlaveRequest, context: Context) -> pb.StartSlaveResponse:
        await asyncio.sleep(30)  # past callback_timeout_seconds
        return pb.StartSlaveResponse()

    @callback
    async def SlaveLost(self, request: pb.SlaveLostRequest, context: Context) -> pb.SlaveLostResponse:
        raise KeyError("a bug")


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[RunningWorkload, int]]:
    settings = WorkloadSettings(
        listen="127.0.0.1:0",
        register_in_state=False,
        callback_timeout_seconds=0.5,
        connect_timeout_seconds=0.2,
    )
    server, port = serve_metrics("127.0.0.1:0")
    assert server is not None
    running = await start_workload(Probe(types_pb2.WorkloadDescription(name=WORKLOAD), settings), settings)
    try:
        yield running, port
    finally:
        await running.stop(grace_seconds=1, revoke=False)
        server.shutdown()


def _samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("workload") == WORKLOAD:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset({"workload": WORKLOAD, **labels}.items())), 0.0)


@pytest.mark.asyncio
async def test_callbacks_are_timed_and_errors_counted_by_callback(
    served: tuple[RunningWorkload, int],
) -> None:
    running, port = served
    before = await asyncio.to_thread(_samples, port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.WorkloadServiceStub(channel)
        for _ in range(3):
            await stub.Config(pb.ConfigRequest(), timeout=5)
        calls: list[tuple[Awaitable[object], grpc.StatusCode]] = [
            (stub.StartMaster(pb.StartMasterRequest(), timeout=5), grpc.StatusCode.FAILED_PRECONDITION),
            (stub.StartSlave(pb.StartSlaveRequest(), timeout=5), grpc.StatusCode.UNAVAILABLE),
            (stub.SlaveLost(pb.SlaveLostRequest(), timeout=5), grpc.StatusCode.UNKNOWN),
        ]
        for call, code in calls:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call
            assert failed.value.code() == code
    after = await asyncio.to_thread(_samples, port)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    seconds = "stateful_workload_callback_duration_seconds"
    assert grew(f"{seconds}_count", callback="Config", outcome="ok") == 3
    assert grew(f"{seconds}_count", callback="StartMaster", outcome="failed_precondition") == 1
    assert grew(f"{seconds}_count", callback="StartSlave", outcome="unavailable") == 1
    assert grew(f"{seconds}_count", callback="SlaveLost", outcome="unknown") == 1
    # The timed-out callback took the timeout (0.5 s), not the 30 s it asked for.
    took = grew(f"{seconds}_sum", callback="StartSlave", outcome="unavailable")
    assert 0.45 <= took < 5, took
    errors_total = "stateful_workload_callback_errors_total"
    assert grew(errors_total, callback="StartMaster", code="failed_precondition") == 1
    assert grew(errors_total, callback="StartSlave", code="unavailable") == 1
    assert grew(errors_total, callback="SlaveLost", code="unknown") == 1
    assert grew(errors_total, callback="Config", code="ok") == 0
    # Low cardinality: nothing of the request (member, instance) in the labels.
    labels = {
        key for (name, pairs) in after for key, _ in pairs if name.startswith("stateful_workload_callback")
    }
    assert labels <= {"workload", "callback", "outcome", "code", "le"}, labels
