"""Tracing: the state service and the gateway, as real processes with ``STATEFUL_TRACES_DIR``
set, write their spans to files; a gateway call and the state call it makes share one trace; the
reader prints them as a tree. With the variable unset nothing is written.

The services run as subprocesses because tracing's gRPC wrappers are process-global: the test
process itself stays untraced."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2, instance_service_pb2_grpc
from mesos_stateful.common import tracing
from mesos_stateful.common.server import is_serving
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.ports import free_ports


class Services:
    def __init__(self, traces: Path, etcd_endpoint: str, logs: Path, sampler: str = "") -> None:
        state_port, gateway_port = free_ports(2)
        self.state = f"127.0.0.1:{state_port}"
        self.gateway = f"127.0.0.1:{gateway_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env[tracing.ENV_DIR] = str(traces)
        if sampler:
            env["OTEL_TRACES_SAMPLER"] = sampler
        self.logs = logs
        self.processes = [
            self._start("state", {**env, "STATEFUL_STATE_LISTEN": self.state,
                                  "STATEFUL_STATE_ETCD_ENDPOINTS": etcd_endpoint}),
            self._start("gateway", {**env, "STATEFUL_GATEWAY_LISTEN": self.gateway,
                                    "STATEFUL_GATEWAY_STATE_ENDPOINT": self.state}),
        ]

    def _start(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as log:
            command = [sys.executable, "-m", f"mesos_stateful.{name}"]
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> list[int | None]:
        """SIGTERM (a graceful stop, which flushes the spans); the exit codes."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for process in self.processes:
            try:
                codes.append(process.wait(30))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                codes.append(None)
        return codes


@pytest.fixture
def services(etcd: EtcdProcess, tmp_path: Path) -> Iterator[Services]:
    """The services with every request traced (``parentbased_always_on``)."""
    running = Services(tmp_path / "traces", etcd.endpoint, tmp_path, "parentbased_always_on")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def unsampled_services(etcd: EtcdProcess, tmp_path: Path) -> Iterator[Services]:
    """The services with no API request root sampled (``OTEL_TRACES_SAMPLER=always_off``; the
    default, 1 %, is the same rule at another ratio: see test_otlp_export)."""
    running = Services(tmp_path / "traces", etcd.endpoint, tmp_path, "always_off")
    try:
        yield running
    finally:
        running.stop()


async def wait_serving(services: Services, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for address in (services.state, services.gateway):
        while not await is_serving(address):
            assert all(p.poll() is None for p in services.processes), services.log_text()
            assert time.monotonic() < deadline, f"{address} not serving:\n{services.log_text()}"
            await asyncio.sleep(0.1)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_gateway_call_traces_into_the_state_service(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await wait_serving(services)
    async with grpc.aio.insecure_channel(services.gateway) as channel:
        stub = instance_service_pb2_grpc.InstanceServiceStub(channel)
        await stub.ListInstances(instance_service_pb2.ListInstancesRequest(), timeout=10)
    assert services.stop() == [0, 0], services.log_text()

    traces = tmp_path / "traces"
    gateway = read(traces / "gateway.jsonl")
    state = read(traces / "state.jsonl")
    assert all(s["service"] == "gateway" for s in gateway)
    assert all(s["service"] == "state" for s in state)
    # No health checks: the test polled both services' health before calling.
    assert not any("Health" in s["name"] for s in gateway + state)

    [root] = [s for s in gateway if s["name"].endswith("InstanceService/ListInstances")]
    assert root["kind"] == "SERVER" and root["parent_id"] is None  # the test process is untraced
    calls = [s for s in gateway if s["kind"] == "CLIENT" and s["trace_id"] == root["trace_id"]]
    assert calls, gateway
    served = [s for s in state if s["kind"] == "SERVER" and s["trace_id"] == root["trace_id"]]
    assert served, state
    # The state service's span hangs under the gateway's client span: context crossed the hop.
    assert {s["parent_id"] for s in served} <= {c["span_id"] for c in calls}
    assert all(c["parent_id"] == root["span_id"] for c in calls)

    assert tracing.main(["show", str(traces)]) == 0
    shown = capsys.readouterr().out
    assert f"trace {root['trace_id']}" in shown
    lines = shown.splitlines()
    top = next(i for i, line in enumerate(lines) if "InstanceService/ListInstances" in line)
    assert "gateway" in lines[top] and "ms" in lines[top]
    nested = [line for line in lines[top + 1:] if line.split()[1] == "state"]
    assert nested, shown
    # Indented by parent: gateway server span < client span < state server span.
    indent = lines[top].index("InstanceService/")
    assert nested[0].index("StateService/") > indent + 2, shown

    assert tracing.main(["show", str(traces), "--last", "1"]) == 0
    assert capsys.readouterr().out.count("trace ") == 1


async def test_unsampled_reads_cost_no_span_and_a_traced_caller_is_followed(
    unsampled_services: Services, tmp_path: Path
) -> None:
    """API requests without a trace context are roots the sampler drops: 20 reads leave no span,
    in the gateway nor in the state service (the gateway passes 'not sampled' on, the state
    service does not decide again); a read from a caller in a sampled trace is traced through
    the gateway into the state service, children of the caller's span; one from an unsampled
    caller leaves nothing."""
    services = unsampled_services
    await wait_serving(services)
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    caller_span = "b7ad6b7169203331"
    unsampled_trace = "1af7651916cd43dd8448eb211c80319c"
    request = instance_service_pb2.ListInstancesRequest()
    async with grpc.aio.insecure_channel(services.gateway) as channel:
        stub = instance_service_pb2_grpc.InstanceServiceStub(channel)
        for _ in range(20):
            await stub.ListInstances(request, timeout=10)
        for flags, trace_id in (("00", unsampled_trace), ("01", caller_trace)):
            metadata = (("traceparent", f"00-{trace_id}-{caller_span}-{flags}"),)
            await stub.ListInstances(request, timeout=10, metadata=metadata)
    assert services.stop() == [0, 0], services.log_text()

    spans = tracing.load_spans(tmp_path / "traces")
    assert {s["trace_id"] for s in spans} == {caller_trace}, spans
    [root] = [s for s in spans if s["service"] == "gateway" and s["kind"] == "SERVER"]
    assert root["parent_id"] == caller_span and root["name"].endswith("InstanceService/ListInstances")
    [call] = [s for s in spans if s["service"] == "gateway" and s["kind"] == "CLIENT"]
    [served] = [s for s in spans if s["service"] == "state" and s["kind"] == "SERVER"]
    assert call["parent_id"] == root["span_id"] and served["parent_id"] == call["span_id"]
    assert served["attributes"]["rpc.grpc.status_code"] == 0


def test_tracing_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracing.ENV_DIR, raising=False)
    monkeypatch.chdir(tmp_path)
    tracing.setup_tracing("off")
    assert tracing._provider is None
    tracing.shutdown_tracing()
    assert list(tmp_path.iterdir()) == []


def test_reader_orders_filters_and_indents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def span(name: str, span_id: str, start: int, parent: str | None = None, **attributes: Any) -> str:
        return json.dumps({
            "service": "lifecycle", "name": name, "trace_id": "t" + span_id[0], "span_id": span_id,
            "parent_id": parent, "kind": "INTERNAL", "start_ns": start * 1_000_000,
            "end_ns": (start + 5) * 1_000_000, "status": "UNSET", "status_message": "",
            "attributes": attributes,
        }) + "\n"

    (tmp_path / "lifecycle.jsonl").write_text(
        span("step promote b-1", "2a", 20, instance="b", status="COMPLETE")
        + span("callback MasterLost", "2b", 22, "2a", member="b-1", outcome="OK")
        + span("step launch a-0", "1a", 10, instance="a")
        + "{cut short"
    )
    assert tracing.main(["show", str(tmp_path), "--instance", "b"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0] == "trace t2"
    assert "step promote b-1  5.0ms  instance=b status=COMPLETE" in lines[1]
    assert lines[2].index("callback MasterLost") == lines[1].index("step promote") + 2
    assert "member=b-1 outcome=OK" in lines[2]
    assert tracing.main(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.index("step launch a-0") < out.index("step promote b-1")
    assert tracing.main(["show", str(tmp_path / "missing")]) == 1
