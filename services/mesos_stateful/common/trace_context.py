"""W3C trace context through every gRPC aio hop, with a span only where there is something to record.

Replaces the OpenTelemetry gRPC aio instrumentors, which wrapped every call of every channel and
server in a span (recorded or not) and cost 27-50 % of the gateway's throughput (bench/README.md,
``tracing_overhead.py``). :func:`install` (run by ``tracing.setup_tracing`` before any server or
channel exists) wraps ``grpc.aio.server`` and ``grpc.aio.insecure_channel`` / ``secure_channel``:

- **server side** (:class:`ServerTraceInterceptor`, a ``grpc.aio.ServerInterceptor``): the parent
  is read from the request metadata (``traceparent`` / ``tracestate``) with the configured
  OpenTelemetry propagator (``opentelemetry.propagate``; W3C trace context by default). A sampled
  parent -> a SERVER span, its child, current while the handler runs. An unsampled parent (sent by
  an outside client only: our own calls never send one) -> no span; the parent context is made
  current. No parent: on the **API edge** (the gateway: ``install(start_roots=True)``) a root,
  which the sampler (below) keeps or drops (kept -> a span as above; dropped -> nothing more);
  on every other service nothing at all (the call is internal and outside a sampled trace: a
  span there would be a fragment of a trace nobody kept). A service whose server has an
  interceptor of its own subclasses this one (``state.request_metrics``), so that a request
  pays grpc's interceptor path (~25-35 us a hop, bench/README.md) once, not twice.
- **client side** (:class:`TracedChannel`): each multicallable is wrapped once, when the stub is
  built. On a call: no valid current span context, or an unsampled one -> the call goes out
  untouched (one contextvar read; nothing downstream would record it, so no ``traceparent`` is
  sent and no hop extracts one); a sampled one -> a CLIENT span, injected into the metadata, ended
  by the call's done callback. The call object returned is grpc's own (``await``, ``read()``,
  ``code()`` all work as without tracing: grpc's client interceptor API would return an
  intercepted call and run each call in a task).

Health checks (``/grpc.health.``), reflection (``/grpc.reflection.``) and etcd (``/etcdserverpb.``)
are never traced nor wrapped.

**Sampling** (:func:`build_sampler`; the decision of issue 13's overhead limit): parent-based
everywhere -- a span with a parent is sampled exactly when its parent is, so a trace is whole or
absent. Roots are started in two places only, the lifecycle's plans and the API edge:

- a **plan root** (spans named ``plan <name>``, the lifecycle's plans and failovers,
  ``mesos_stateful.lifecycle.spans``) is always sampled, whatever ``OTEL_TRACES_SAMPLER`` says: a
  failover is always one whole trace;
- an **API root** (a request reaching the gateway from an untraced client) follows
  ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (the standard names; ``parentbased_*``
  and the plain ones decide the same for a root), and when that is unset ``traceidratio`` at
  :data:`DEFAULT_ROOT_RATIO` (1 %): a busy gateway does not pay for a span per read, a user who
  wants every request sets ``OTEL_TRACES_SAMPLER=parentbased_always_on``.

A service's background calls outside a plan (health probes, reconciliation, watches) start no
trace: an unsampled context is not sent on, and only the edge starts roots.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace import SpanKind, StatusCode

SCOPE = "mesos_stateful.grpc"
# Methods never traced: health checks, reflection, etcd (its watch uses ``call.read()``).
UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.", "/etcdserverpb.")
PLAN_ROOT_PREFIX = "plan "
DEFAULT_ROOT_RATIO = 0.01
ENV_SAMPLER = "OTEL_TRACES_SAMPLER"
TRACEPARENT = "traceparent"
# grpc.StatusCode by its integer value (the code a span records as ``rpc.grpc.status_code``).
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def traced_method(method: str) -> bool:
    """False for the methods never traced (:data:`UNTRACED_PREFIXES`)."""
    return not method.startswith(UNTRACED_PREFIXES)


# --- sampling ---------------------------------------------------------------------------------------


class PlanRootSampler(sampling.Sampler):
    """Parent-based; roots named ``plan ...`` always sampled, other roots as ``api_roots`` says."""

    def __init__(self, api_roots: sampling.Sampler) -> None:
        self.api_roots = api_roots
        self._parent_based = sampling.ParentBased(root=self)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> sampling.SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            # ParentBased's rule (remote or local, sampled or not); it calls back here only for roots.
            return self._parent_based.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        if name.startswith(PLAN_ROOT_PREFIX):
            return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self.api_roots.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"PlanRootSampler{{plans=always, roots={self.api_roots.get_description()}}}"


def build_sampler() -> PlanRootSampler:
    """The sampler of :mod:`tracing`'s provider: see the module docstring. ``OTEL_TRACES_SAMPLER``
    is parsed by the SDK (its standard names and entry points); unset -> ``traceidratio`` at
    :data:`DEFAULT_ROOT_RATIO`."""
    if os.environ.get(ENV_SAMPLER, "").strip():
        # The SDK's own parser of OTEL_TRACES_SAMPLER / _ARG (what TracerProvider() would use).
        configured: sampling.Sampler = sampling._get_from_env_or_default()
    else:
        configured = sampling.TraceIdRatioBased(DEFAULT_ROOT_RATIO)
    if isinstance(configured, sampling.ParentBased):
        configured = configured._root  # only its root decision is used: parents are handled above
    return PlanRootSampler(configured)


# --- server side ------------------------------------------------------------------------------------


_tracers: list[tuple[trace.TracerProvider, trace.Tracer]] = []


def _tracer() -> trace.Tracer:
    """This module's tracer of the current global provider, cached: the SDK's ``get_tracer``
    makes a new tracer each time (~40 us, more than the rest of a call's tracing)."""
    provider = trace.get_tracer_provider()
    if _tracers and _tracers[0][0] is provider:
        return _tracers[0][1]
    tracer = provider.get_tracer(SCOPE)
    _tracers[:] = [(provider, tracer)]
    return tracer


_SPLIT: dict[str, dict[str, str]] = {}


def _split(method: str) -> dict[str, str]:
    """The span attributes of ``method`` (``/pkg.Service/Method``), made once per method: the SDK
    copies them into a recorded span and the sampler reads them only, so one dict is shared."""
    attributes = _SPLIT.get(method)
    if attributes is None:
        service, _, name = method.lstrip("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        if len(_SPLIT) < 1024:  # a server's methods: bounded against odd clients' names
            _SPLIT[method] = attributes
    return attributes


# Metadata keys the propagators read (W3C trace context and baggage).
_CARRIED = frozenset({TRACEPARENT, "tracestate", "baggage"})
# OTEL_PROPAGATORS values whose only effect on a carrier holding just a traceparent is that
# traceparent: the fast paths below apply (the SDK's default is "tracecontext,baggage").
_PLAIN_PROPAGATORS = frozenset({"", "tracecontext,baggage", "baggage,tracecontext", "tracecontext"})


def _plain_propagation() -> bool:
    return os.environ.get("OTEL_PROPAGATORS", "").replace(" ", "").lower() in _PLAIN_PROPAGATORS


_PLAIN = _plain_propagation()


def _metadata_getter(metadata: Any) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if key in _CARRIED and isinstance(value, str):
            carrier[key] = value
    return carrier


def _extract(carrier: dict[str, str]) -> Context:
    """``propagate.extract(carrier)``, with a fast path for the common case, a lone version-00
    ``traceparent`` under the default propagators (the SDK's extract takes ~20 us: most of an
    unsampled hop's cost). Same result: a remote non-recording span of those ids and flags."""
    value = carrier.get(TRACEPARENT)
    if _PLAIN and value is not None and len(carrier) == 1 and value[:3] == "00-" and valid_traceparent(value):
        span_context = trace.SpanContext(
            int(value[3:35], 16),
            int(value[36:52], 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(value[53:55], 16)),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context), Context())
    return propagate.extract(carrier)


def _inject(ctx: Context | None) -> dict[str, str]:
    """``propagate.inject`` into a new carrier, with the same fast path (no trace state, no
    baggage: then the default propagators write only the ``traceparent``)."""
    span_context = trace.get_current_span(ctx).get_span_context()
    if _PLAIN and span_context.is_valid and not span_context.trace_state and not baggage.get_all(ctx):
        flags = "01" if span_context.trace_flags.sampled else "00"
        return {TRACEPARENT: f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags}"}
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return carrier


def _record_code(span: trace.Span, code: grpc.StatusCode | None, message: str = "") -> None:
    code = code or grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(StatusCode.ERROR, f"{code.name}: {message}" if message else code.name)


def _server_code(context: Any) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:  # not available on this context: treat as OK
        return None
    if isinstance(code, int):
        return _CODES.get(code)
    return code if isinstance(code, grpc.StatusCode) else None


class ServerTraceInterceptor(grpc.aio.ServerInterceptor):
    """Makes the caller's trace context current in the handler; a SERVER span when sampled.

    A subclass that intercepts for its own reasons ends its ``intercept_service`` with
    ``return self.traced(handler, handler_call_details)``; :func:`install` then adds no second one.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        return self.traced(await continuation(handler_call_details), handler_call_details)

    def traced(
        self, handler: grpc.RpcMethodHandler[Any, Any] | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """``handler`` run in the caller's trace (see the module docstring); itself when there is
        nothing to trace (tracing not installed, an untraced method, no parent off the edge)."""
        if handler is None or not _originals:
            return handler
        method: str = handler_call_details.method
        carrier = _metadata_getter(handler_call_details.invocation_metadata)
        if not carrier:
            if not _roots[0] or not traced_method(method):
                return handler
            parent = Context()
        elif not traced_method(method):
            return handler
        else:
            parent = _extract(carrier)
            parent_span = trace.get_current_span(parent).get_span_context()
            if parent_span.is_valid and not parent_span.trace_flags.sampled:
                _enter(parent)
                return handler
        span = _tracer().start_span(method, context=parent, kind=SpanKind.SERVER, attributes=_split(method))
        if not span.is_recording():
            return handler
        return _wrap(handler, trace.set_span_in_context(span, parent), span)


def _enter(ctx: Context) -> None:
    """Make ``ctx`` current for the rest of this RPC, without wrapping its handler: grpc.aio runs
    the interceptors and then the handler in the same task, one task per RPC (``_handle_rpc`` of
    grpc's ``_server.pyx.pxi``), so the context set here is the handler's and ends with the task
    (tests/tracing/test_trace_context.py checks that the handler sees it)."""
    otel_context.attach(ctx)


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], ctx: Context, span: trace.Span | None
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behaviour run with ``ctx`` current, ending ``span`` (if any) after it."""
    if handler.request_streaming and handler.response_streaming:
        field = "stream_stream"
    elif handler.request_streaming:
        field = "stream_unary"
    elif handler.response_streaming:
        field = "unary_stream"
    else:
        field = "unary_unary"
    behaviour = getattr(handler, field)

    def finish(context: Any, error: BaseException | None) -> None:
        if span is None:
            return
        code = _server_code(context)
        if error is not None and code in (None, grpc.StatusCode.OK):
            if isinstance(error, asyncio.CancelledError):
                code = grpc.StatusCode.CANCELLED
            else:
                code = grpc.StatusCode.UNKNOWN
                span.record_exception(error)
        described = error is not None and not isinstance(error, grpc.RpcError)
        _record_code(span, code, str(error) if described else "")
        span.end()

    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: Any) -> Any:
            token = otel_context.attach(ctx)
            error: BaseException | None = None
            try:
                async for item in behaviour(request, context):
                    yield item
            except BaseException as raised:
                error = raised
                raise
            finally:
                finish(context, error)
                otel_context.detach(token)

        return handler._replace(**{field: streaming})  # type: ignore[attr-defined, no-any-return]
    if inspect.iscoroutinefunction(behaviour):

        async def unary(request: Any, context: Any) -> Any:
            token = otel_context.attach(ctx)
            error: BaseException | None = None
            try:
                return await behaviour(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                finish(context, error)
                otel_context.detach(token)

        return handler._replace(**{field: unary})  # type: ignore[attr-defined, no-any-return]
    # A synchronous behaviour (run by grpc in its thread pool): context cannot follow; left as is.
    if span is not None:
        span.end()
    return handler


# --- client side ------------------------------------------------------------------------------------


def _with_context(kwargs: dict[str, Any], ctx: Context | None) -> dict[str, Any]:
    carrier = _inject(ctx)
    if carrier:
        metadata = kwargs.get("metadata")
        kwargs["metadata"] = (*tuple(metadata or ()), *carrier.items())
    return kwargs


def _end_client_span(span: trace.Span, call: Any) -> None:
    """Done callback of a sampled call: ends its span with the call's status (read in a task:
    an aio call's ``code()`` is a coroutine)."""
    ended = time.time_ns()

    async def finish() -> None:
        try:
            if call.cancelled():
                code: grpc.StatusCode | None = grpc.StatusCode.CANCELLED
                details = ""
            else:
                code = await call.code()
                details = await call.details() or ""
        except Exception as error:  # the call object cannot tell: record what happened
            code, details = grpc.StatusCode.UNKNOWN, str(error)
        _record_code(span, code, details)
        span.end(end_time=ended)

    try:
        asyncio.get_running_loop().create_task(finish())
    except RuntimeError:  # no loop any more (shutting down): end it without a status
        span.end(end_time=ended)


class _TracedMultiCallable:
    """A multicallable that passes the current trace context on (see the module docstring)."""

    __slots__ = ("_attributes", "_inner", "_method")

    def __init__(self, inner: Any, method: str) -> None:
        self._inner = inner
        self._method = method
        self._attributes = _split(method)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        current = trace.get_current_span().get_span_context()
        if not current.trace_flags.sampled or not current.is_valid:
            return self._inner(*args, **kwargs)
        span = _tracer().start_span(self._method, kind=SpanKind.CLIENT, attributes=self._attributes)
        try:
            call = self._inner(*args, **_with_context(kwargs, trace.set_span_in_context(span)))
        except BaseException as error:
            span.record_exception(error)
            _record_code(span, grpc.StatusCode.UNKNOWN, str(error))
            span.end()
            raise
        call.add_done_callback(lambda done: _end_client_span(span, done))
        return call


class TracedChannel(grpc.aio.Channel):
    """A ``grpc.aio.Channel`` whose multicallables pass trace context on; everything else is the
    wrapped channel's."""

    def __init__(self, inner: grpc.aio.Channel) -> None:
        self._inner = inner

    def _wrap(self, made: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        method = args[0] if args else kwargs.get("method", "")
        method = method.decode() if isinstance(method, bytes) else str(method)
        return _TracedMultiCallable(made, method) if traced_method(method) else made

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._inner.unary_unary(*args, **kwargs), args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._inner.unary_stream(*args, **kwargs), args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._inner.stream_unary(*args, **kwargs), args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._inner.stream_stream(*args, **kwargs), args, kwargs)

    async def __aenter__(self) -> TracedChannel:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await self._inner.__aexit__(exc_type, exc_val, exc_tb)

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._inner.channel_ready()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# --- trace context as a string (stored records, Mesos labels) ---------------------------------------

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def valid_traceparent(value: str) -> bool:
    """True for a W3C ``traceparent`` of the form ``vv-<32 hex>-<16 hex>-ff`` (lower case;
    https://www.w3.org/TR/trace-context/#traceparent-header) with non-zero ids."""
    if not _TRACEPARENT.match(value):
        return False
    _, trace_id, span_id, _ = value.split("-")
    return trace_id != "0" * 32 and span_id != "0" * 16


def current_traceparent(ctx: Context | None = None) -> str:
    """The ``traceparent`` of ``ctx`` (default: the current context), "" when it has no valid span
    context or is not sampled (nothing would join it)."""
    span_context = trace.get_current_span(ctx).get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return ""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-01"


def context_of(traceparent: str) -> Context | None:
    """The context whose current span is the remote span of ``traceparent``; None if invalid."""
    if not valid_traceparent(traceparent):
        return None
    ctx = propagate.extract({TRACEPARENT: traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


# --- install ----------------------------------------------------------------------------------------

_originals: dict[str, Any] = {}
# Whether this process's servers start roots for requests that come without a trace context (the
# API edge, see the module docstring); one cell so that :func:`install` sets it in place.
_roots = [False]


def install(start_roots: bool = False) -> None:
    """Wrap ``grpc.aio.server`` (our interceptor first, unless one of the server's own interceptors
    is a :class:`ServerTraceInterceptor`) and ``grpc.aio.insecure_channel`` / ``secure_channel``
    (a :class:`TracedChannel`) for this process (idempotent). ``start_roots``: this process is
    the API edge (the gateway). Servers and channels made before are not traced."""
    if _originals:
        return
    _roots[0] = start_roots
    aio: Any = grpc.aio
    server, insecure, secure = aio.server, aio.insecure_channel, aio.secure_channel
    _originals.update(server=server, insecure_channel=insecure, secure_channel=secure)

    def traced_server(*args: Any, **kwargs: Any) -> Any:
        own = list(kwargs.get("interceptors") or ())
        if not any(isinstance(interceptor, ServerTraceInterceptor) for interceptor in own):
            kwargs["interceptors"] = [ServerTraceInterceptor(), *own]
        return server(*args, **kwargs)

    def traced_insecure(*args: Any, **kwargs: Any) -> TracedChannel:
        return TracedChannel(insecure(*args, **kwargs))

    def traced_secure(*args: Any, **kwargs: Any) -> TracedChannel:
        return TracedChannel(secure(*args, **kwargs))

    aio.server, aio.insecure_channel, aio.secure_channel = traced_server, traced_insecure, traced_secure


def uninstall() -> None:
    """Undo :func:`install` (tests)."""
    aio: Any = grpc.aio
    for name, original in _originals.items():
        setattr(aio, name, original)
    _originals.clear()
    _roots[0] = False
