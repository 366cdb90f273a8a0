"""trace_context in one process: a real grpc.aio server and channel made after ``install()``, a
tracer provider of ``tracing.build_provider`` with an in-memory exporter. What a call leaves
behind depends on the caller's context and on whether the server is the API edge: none -> the edge
decides a root (the sampler), any other service does nothing; unsampled -> nothing, and nothing
sent on; sampled -> a CLIENT and a SERVER span, with the gRPC status code (an error too)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from mesos_stateful.common import trace_context, tracing

METHOD = "/test.Echo/Echo"
FAIL = "/test.Echo/Fail"


def _bytes_call(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """``channel.unary_unary(method)``: without serializers it sends and returns raw bytes."""
    return channel.unary_unary(method)


@pytest.fixture
def sampler() -> str:
    """OTEL_TRACES_SAMPLER of the test's provider (a test overrides it with parametrize)."""
    return "always_off"


@pytest.fixture
def start_roots() -> bool:
    """Whether the test's server is the API edge (``install(start_roots=...)``)."""
    return True


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch, sampler: str) -> Iterator[InMemorySpanExporter]:
    """This process's global provider (API roots as ``sampler`` says), exporting in memory; the
    one before it is put back afterwards."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    memory = InMemorySpanExporter()
    provider = tracing.build_provider("test")
    provider.add_span_processor(SimpleSpanProcessor(memory))
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    try:
        yield memory
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


class Seen:
    """What the handler saw: the trace context current while it ran and the metadata it got."""

    def __init__(self) -> None:
        self.contexts: list[trace.SpanContext] = []
        self.metadata: list[dict[str, str]] = []


@pytest_asyncio.fixture
async def channel(
    exporter: InMemorySpanExporter, start_roots: bool
) -> AsyncIterator[tuple[grpc.aio.Channel, Seen]]:
    trace_context.install(start_roots=start_roots)
    seen = Seen()

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        seen.contexts.append(trace.get_current_span().get_span_context())
        seen.metadata.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        return request

    async def fail(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no such thing")
        return b""

    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
            assert isinstance(opened, trace_context.TracedChannel)
            yield opened, seen
    finally:
        await server.stop(None)
        trace_context.uninstall()


async def test_an_untraced_call_to_the_edge_dropped_by_the_sampler_leaves_nothing(
    channel: tuple[grpc.aio.Channel, Seen], exporter: InMemorySpanExporter
) -> None:
    opened, seen = channel
    assert await _bytes_call(opened, METHOD)(b"x", timeout=5) == b"x"
    assert exporter.get_finished_spans() == ()
    # The dropped root is not made current: the handler's own calls send nothing on.
    [current] = seen.contexts
    assert not current.is_valid
    assert "traceparent" not in seen.metadata[0]


@pytest.mark.parametrize("sampler", ["always_on"])
async def test_an_untraced_call_to_the_edge_kept_by_the_sampler_is_a_root(
    channel: tuple[grpc.aio.Channel, Seen], exporter: InMemorySpanExporter
) -> None:
    opened, seen = channel
    await _bytes_call(opened, METHOD)(b"x", timeout=5)
    [root] = exporter.get_finished_spans()
    assert root.kind.name == "SERVER" and root.parent is None and root.context is not None
    assert seen.contexts[0] == root.context


@pytest.mark.parametrize(("sampler", "start_roots"), [("always_on", False)])
async def test_an_untraced_call_to_an_internal_service_starts_no_trace(
    channel: tuple[grpc.aio.Channel, Seen], exporter: InMemorySpanExporter
) -> None:
    """Off the edge (the state service, offers, lifecycle, workloads) a call without a trace
    context is a background call outside any sampled trace: no root, even when the sampler
    would keep every root (a span there would be a fragment of a trace nobody kept)."""
    opened, seen = channel
    await _bytes_call(opened, METHOD)(b"x", timeout=5)
    assert exporter.get_finished_spans() == ()
    assert not seen.contexts[0].is_valid


async def test_an_unsampled_caller_sends_nothing_on(
    channel: tuple[grpc.aio.Channel, Seen], exporter: InMemorySpanExporter
) -> None:
    opened, seen = channel
    caller = trace.SpanContext(0xA1, 0xB2, is_remote=False, trace_flags=trace.TraceFlags(0))
    with trace.use_span(trace.NonRecordingSpan(caller)):
        await _bytes_call(opened, METHOD)(b"x", timeout=5)
    assert exporter.get_finished_spans() == ()
    assert "traceparent" not in seen.metadata[0]
    assert not seen.contexts[0].is_valid


async def test_an_outside_unsampled_traceparent_is_current_in_the_handler(
    channel: tuple[grpc.aio.Channel, Seen], exporter: InMemorySpanExporter
) -> None:
    """A client of our own (not ours) that decided "not sampled" is obeyed: no span, its context
    current (the edge does not sample a root of its own for it)."""
    opened, seen = channel
    parent = f"00-{0xA1:032x}-{0xB2:016x}-00"
    await _bytes_call(opened, METHOD)(b"x", timeout=5, metadata=(("traceparent", parent),))
    assert exporter.get_finished_spans() == ()
    assert seen.contexts[0].trace_id == 0xA1 and not seen.contexts[0].trace_flags.sampled


async def test_a_sampled_caller_gets_client_and_server_spans_with_the_status(
    channel: tuple[grpc.aio.Channel, Seen], exporter: InMemorySpanExporter
) -> None:
    opened, seen = channel
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("plan deploy") as root:  # a plan root: always sampled
        await _bytes_call(opened, METHOD)(b"x", timeout=5, metadata=(("who", "me"),))
        with pytest.raises(grpc.aio.AioRpcError):
            await _bytes_call(opened, FAIL)(b"x", timeout=5)
    trace_id = root.get_span_context().trace_id
    spans = {(s.name, s.kind.name): s for s in exporter.get_finished_spans()}
    client, server = spans[(METHOD, "CLIENT")], spans[(METHOD, "SERVER")]
    assert client.context is not None and server.context is not None and server.parent is not None
    assert client.context.trace_id == server.context.trace_id == trace_id
    assert client.parent is not None and client.parent.span_id == root.get_span_context().span_id
    assert server.parent.span_id == client.context.span_id
    assert seen.metadata[0]["who"] == "me", "the caller's own metadata is kept"
    assert seen.contexts[0] == server.context
    assert client.attributes is not None and client.attributes["rpc.grpc.status_code"] == 0
    failed_client, failed_server = spans[(FAIL, "CLIENT")], spans[(FAIL, "SERVER")]
    code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
    for failed in (failed_client, failed_server):
        assert failed.attributes is not None and failed.attributes["rpc.grpc.status_code"] == code
        assert failed.status.status_code == trace.StatusCode.ERROR
    assert "no such thing" in (failed_client.status.description or "")


class CountingInterceptor(trace_context.ServerTraceInterceptor):
    """A service's own interceptor that also traces (as ``state.request_metrics`` does)."""

    def __init__(self) -> None:
        self.calls = 0

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        self.calls += 1
        return self.traced(await continuation(details), details)


async def test_a_server_whose_own_interceptor_traces_gets_no_second_one(
    exporter: InMemorySpanExporter,
) -> None:
    trace_context.install(start_roots=False)
    own = CountingInterceptor()
    try:
        server = grpc.aio.server(interceptors=[own])
        echo: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_echo)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Echo": echo}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
                with trace.get_tracer("test").start_as_current_span("plan update"):
                    await _bytes_call(opened, METHOD)(b"x", timeout=5)
        finally:
            await server.stop(None)
    finally:
        trace_context.uninstall()
    assert own.calls == 1
    kinds = sorted(s.kind.name for s in exporter.get_finished_spans() if s.name == METHOD)
    assert kinds == ["CLIENT", "SERVER"], "one SERVER span: the server traced once"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


def test_health_reflection_and_etcd_are_not_traced() -> None:
    assert not trace_context.traced_method("/grpc.health.v1.Health/Check")
    assert not trace_context.traced_method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not trace_context.traced_method("/etcdserverpb.Watch/Watch")
    assert trace_context.traced_method("/stateful.v1.StateService/Get")


def test_traceparent_strings() -> None:
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert trace_context.valid_traceparent(good)
    assert not trace_context.valid_traceparent("00-" + "0" * 32 + "-b7ad6b7169203331-01")
    assert not trace_context.valid_traceparent("junk")
    ctx = trace_context.context_of(good)
    assert ctx is not None and trace_context.current_traceparent(ctx) == good
    assert trace_context.context_of("") is None
    assert trace_context.current_traceparent() == ""  # nothing current


def test_a_provider_has_the_plan_root_sampler() -> None:
    provider: TracerProvider = tracing.build_provider("t")
    assert isinstance(provider.sampler, trace_context.PlanRootSampler)
    provider.shutdown()
