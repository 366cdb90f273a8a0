"""OTLP export: the state service, a real process started with the standard ``OTEL_*`` variables,
sends its spans to a real OTLP receiver in the test (a gRPC ``TraceService`` server built from the
``opentelemetry-proto`` package; an HTTP ``/v1/traces`` endpoint for ``http/protobuf``), with its
resource's ``service.name``; a gRPC call made by the test shows up as its server span.

:class:`OtlpReceiver` is also used by ``tests/lifecycle/test_plan_trace.py``."""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from mesos_stateful.api.stateful.v1 import state_service_pb2, state_service_pb2_grpc
from mesos_stateful.common import tracing
from mesos_stateful.common.server import is_serving
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.ports import free_port, free_ports

# Flush spans within 100 ms (the batch processor's default is 5 s: OTEL_BSP_SCHEDULE_DELAY, ms).
FAST_FLUSH = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
CALLER_TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
CALLER_SPAN_ID = bytes.fromhex("00f067aa0ba902b7")
CALLER_TRACEPARENT = f"00-{CALLER_TRACE_ID.hex()}-{CALLER_SPAN_ID.hex()}-01"


def value_of(value: common_pb2.AnyValue) -> Any:
    """An OTLP attribute value as Python (strings, ints, bools, doubles, arrays of them)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes_of(pairs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in pairs}


class OtlpReceiver:
    """What an OTLP receiver got: ``(service.name, span)`` pairs, in arrival order."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self.requests = 0
        self._lock = threading.Lock()

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                service = str(attributes_of(resource_spans.resource.attributes).get("service.name", ""))
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope_spans.spans)

    def snapshot(self) -> list[tuple[str, trace_pb2.Span]]:
        with self._lock:
            return list(self.spans)

    async def wait_for(self, found: Any, timeout: float, what: str) -> Any:
        """Poll until ``found(spans)`` is truthy (its value), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = found(self.snapshot())
            if result:
                return result
            assert time.monotonic() < deadline, f"no {what} within {timeout}s; got {self.names()}"
            await asyncio.sleep(0.05)

    def names(self) -> list[str]:
        return [f"{service}:{span.name}" for service, span in self.snapshot()]


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.receiver.take(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest_asyncio.fixture
async def otlp_grpc() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    """An OTLP/gRPC receiver on a free port: (receiver, endpoint URL)."""
    receiver = OtlpReceiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(receiver), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


@pytest.fixture
def otlp_http() -> Iterator[tuple[OtlpReceiver, str]]:
    """An OTLP/HTTP (protobuf) receiver on a free port: (receiver, traces endpoint URL)."""
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/x-protobuf"
            if ok:
                receiver.take(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if ok else 400)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _clean_env() -> dict[str, str]:
    """The test's environment without any tracing or OTEL_* setting of the machine."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != tracing.ENV_DIR}


class StateProcess:
    """``python -m mesos_stateful.state`` on a free port with ``env`` added."""

    def __init__(self, etcd: EtcdProcess, env: dict[str, str], log: Path) -> None:
        self.endpoint = f"127.0.0.1:{free_port()}"
        self.log = log
        full = {
            **_clean_env(),
            **FAST_FLUSH,
            **env,
            "STATEFUL_STATE_LISTEN": self.endpoint,
            "STATEFUL_STATE_ETCD_ENDPOINTS": etcd.endpoint,
        }
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mesos_stateful.state"], env=full, stdout=out, stderr=subprocess.STDOUT
            )

    async def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not await is_serving(self.endpoint):
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"not serving:\n{self.log.read_text(errors='replace')}"
            await asyncio.sleep(0.1)

    async def list_instances(self) -> None:
        """A List call from a caller inside a sampled trace (CALLER_TRACE_ID): the default sampler
        traces only 1 % of requests that arrive without one."""
        async with grpc.aio.insecure_channel(self.endpoint) as channel:
            stub = state_service_pb2_grpc.StateServiceStub(channel)
            await stub.List(
                state_service_pb2.ListRequest(kind=state_service_pb2.KIND_INSTANCE),
                timeout=10,
                metadata=(("traceparent", CALLER_TRACEPARENT),),
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _list_span(service: str) -> Any:
    def found(spans: list[tuple[str, trace_pb2.Span]]) -> list[trace_pb2.Span]:
        return [
            span
            for name, span in spans
            if name == service
            and span.name == "/stateful.v1.StateService/List"
            and span.kind == trace_pb2.Span.SPAN_KIND_SERVER
        ]

    return found


async def test_state_service_exports_over_otlp_grpc(
    otlp_grpc: tuple[OtlpReceiver, str], etcd: EtcdProcess, tmp_path: Path
) -> None:
    receiver, endpoint = otlp_grpc
    state = StateProcess(etcd, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, tmp_path / "state.log")
    try:
        await state.wait_serving()
        await state.list_instances()
        [span] = await receiver.wait_for(_list_span("state"), 30, "List span of service state")
        assert len(span.trace_id) == 16 and len(span.span_id) == 8
        # The caller's trace context crossed the hop: the server span is its child.
        assert span.trace_id == CALLER_TRACE_ID and span.parent_span_id == CALLER_SPAN_ID
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
        # Health checks are not traced (the test polled health before calling).
        assert not any("Health" in name for name in receiver.names())
    finally:
        state.stop()
    # No JSON-lines files without STATEFUL_TRACES_DIR: OTLP alone.
    assert not (tmp_path / "traces").exists()


async def test_state_service_exports_over_otlp_http_with_its_configured_name(
    otlp_http: tuple[OtlpReceiver, str], etcd: EtcdProcess, tmp_path: Path
) -> None:
    receiver, endpoint = otlp_http
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "state-east",
        # Both exporters at once: the local files stay on.
        tracing.ENV_DIR: str(tmp_path / "traces"),
    }
    state = StateProcess(etcd, env, tmp_path / "state.log")
    try:
        await state.wait_serving()
        await state.list_instances()
        [span] = await receiver.wait_for(_list_span("state-east"), 30, "List span of service state-east")
    finally:
        state.stop()
    spans = tracing.load_spans(tmp_path / "traces")
    assert any(s["span_id"] == span.span_id.hex() for s in spans), "the same span in the JSON-lines file"


def test_sampler_and_service_name_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace.sampling import Decision

    def sampled(provider: Any, name: str, trace_id: int = 1 << 100) -> bool:
        decision = provider.sampler.should_sample(None, trace_id, name).decision
        return bool(decision == Decision.RECORD_AND_SAMPLE)

    # always_off drops API roots, never a plan's root (plans and failovers are traced whole).
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    provider = tracing.build_provider("offers")
    assert not sampled(provider, "/stateful.v1.InstanceService/GetInstance")
    assert sampled(provider, "plan recovery")
    assert provider.resource.attributes["service.name"] == "offers"
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "offers-a")
    provider = tracing.build_provider("offers")
    assert sampled(provider, "/stateful.v1.InstanceService/GetInstance")
    assert provider.resource.attributes["service.name"] == "offers-a"
    provider.shutdown()
    # Unset: 1 % of API roots (by trace id), every plan root.
    monkeypatch.delenv("OTEL_TRACES_SAMPLER")
    provider = tracing.build_provider("offers")
    ids = random.Random(13)
    read = "/stateful.v1.InstanceService/GetInstance"
    kept = sum(sampled(provider, read, ids.getrandbits(128)) for _ in range(10_000))
    assert 50 <= kept <= 150, kept
    assert all(sampled(provider, "plan deploy", ids.getrandbits(128)) for _ in range(100))
    provider.shutdown()


def test_preset_ids_name_one_root_span() -> None:
    from opentelemetry import context
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = tracing.build_provider("t")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    # Plan roots (always sampled), as the lifecycle emits them.
    with tracing.preset_ids(0xABC, 0xDEF):
        tracer.start_span("plan root", context=context.Context()).end()
        tracer.start_span("plan other", context=context.Context()).end()
    tracer.start_span("plan after", context=context.Context()).end()
    root, other, after = exporter.get_finished_spans()
    assert root.context is not None and other.context is not None and after.context is not None
    assert (root.context.trace_id, root.context.span_id) == (0xABC, 0xDEF)
    assert other.context.span_id != 0xDEF and after.context.trace_id != 0xABC
    provider.shutdown()


def test_an_unknown_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/json"):
        tracing.otlp_exporter()


async def test_a_collector_that_never_answers_does_not_hold_the_stop(
    etcd: EtcdProcess, tmp_path: Path
) -> None:
    """A collector that accepts connections and never answers (a listening socket nobody reads):
    SIGTERM stops the service within its own bound (tracing.SHUTDOWN_SECONDS for the flush), not
    after the exporter's retries."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    state = StateProcess(etcd, env, tmp_path / "state.log")
    try:
        await state.wait_serving()
        for _ in range(5):
            await state.list_instances()  # spans waiting to be exported
        started = time.monotonic()
        state.process.terminate()
        code = await asyncio.to_thread(state.process.wait, 60)
        took = time.monotonic() - started
    finally:
        state.stop()
        silent.close()
    assert code == 0, state.log.read_text(errors="replace")
    assert took < tracing.SHUTDOWN_SECONDS + 8, f"stop took {took:.1f}s"


def test_span_files_are_bounded(tmp_path: Path) -> None:
    """Past its bound a span file becomes <service>.old.jsonl (replacing the previous one): at
    most about twice the bound on disk per service, and the reader reads both."""
    path = tmp_path / "state.jsonl"
    exporter = tracing.JsonLinesExporter(path, "state", max_bytes=2000)
    provider = tracing.build_provider("state", [exporter])
    tracer = provider.get_tracer("test")
    for i in range(200):
        with tracer.start_as_current_span(f"plan {i}", attributes={"instance": "cache"}):  # always sampled
            pass
        provider.force_flush()
    provider.shutdown()
    old = tmp_path / "state.old.jsonl"
    assert old.exists() and path.exists()
    assert path.stat().st_size < 2000 + 2000 and old.stat().st_size < 2000 + 2000
    names = [span["name"] for span in tracing.load_spans(tmp_path)]
    assert "plan 199" in names and "plan 0" not in names


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "bogus"}, "OTLP protocol 'bogus' is not supported"),
        # The SDK would print a bare line and sample every request (new-user finding).
        ({"OTEL_TRACES_SAMPLER": "bogus"}, "OTEL_TRACES_SAMPLER='bogus' is not a sampler"),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "abc"},
            "OTEL_TRACES_SAMPLER_ARG='abc' is not a probability",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "7"},
            "OTEL_TRACES_SAMPLER_ARG='7' is not a probability",
        ),
    ],
)
def test_make_run_refuses_bad_tracing_settings_before_starting_anything(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    """A mistyped OTEL_* value: `make run`'s preflight says so and exits, instead of every service
    crash-looping on it (or tracing everything)."""
    from suite.suite_helpers import suite_env

    _, env = suite_env(tmp_path / "state")
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4317"
    env.update(variables)
    done = subprocess.run(
        [sys.executable, "-m", "mesos_stateful.suite"], env=env, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert message in output and "Traceback" not in output, output
    assert not (tmp_path / "state" / "suite-status.json").exists()


def test_a_service_started_alone_refuses_a_bad_sampler_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STATEFUL_"))}
    env.update({"STATEFUL_TRACES_DIR": str(tmp_path / "traces"), "OTEL_TRACES_SAMPLER": "bogus"})
    port = free_ports(1)[0]
    done = subprocess.run(
        [sys.executable, "-m", "mesos_stateful.gateway", "--listen", f"127.0.0.1:{port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "OTEL_TRACES_SAMPLER='bogus' is not a sampler" in output and "Traceback" not in output, output
