"""OpenTelemetry tracing for every service: JSON-lines files and/or OTLP, and a reader for the files.

Two exporters, either or both:

- ``STATEFUL_TRACES_DIR`` set to a folder (the zero-setup local default): each service writes its
  spans, one JSON object per line, to ``<dir>/<service>.jsonl`` (``make run`` sets it to
  ``<data_dir>/traces``).
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set: spans also go to an
  OTLP receiver (Jaeger, an OpenTelemetry collector...), over the protocol of
  ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the default,
  or ``http/protobuf``). Headers, timeout, compression, certificates and ``insecure`` are read by
  the exporters themselves from the standard ``OTEL_EXPORTER_OTLP_*`` variables
  (https://opentelemetry.io/docs/specs/otel/protocol/exporter/). The resource's ``service.name`` is
  ``OTEL_SERVICE_NAME`` if set, else the service's own name; ``OTEL_RESOURCE_ATTRIBUTES`` adds
  attributes. Sampling (:func:`mesos_stateful.common.trace_context.build_sampler`): a plan's or
  failover's trace is always recorded whole; a root that is not a plan (an API request from an
  untraced client) follows ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, ``traceidratio``
  at 1 % when unset; every other span follows its parent.

Neither set: :func:`setup_tracing` does nothing and spans are no-ops.

:func:`setup_tracing` must run at the very start of a service's ``main()``, before any gRPC server
or channel exists: it installs :mod:`mesos_stateful.common.trace_context`, which wraps
``grpc.aio.server`` / ``grpc.aio.insecure_channel`` so W3C trace context propagates on every hop
(gateway -> state, lifecycle -> offers / workloads / state) and a span is made only when its trace
is sampled. Health checks, reflection and the state service's own etcd calls are not traced.
:func:`shutdown_tracing` flushes the spans on exit.

Span ids: the provider's :class:`PresetIdGenerator` is random, except inside :func:`preset_ids`,
where it hands out a chosen (trace id, span id) once: the lifecycle chooses a plan's root span
context when it makes the plan (``Plan.trace_parent``), parents every step span on it, and emits
the root span itself with those ids when the plan ends (``mesos_stateful.lifecycle.spans``).

Read the files with::

    python -m mesos_stateful.common.tracing show [DIR] [--instance NAME] [--last N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from mesos_stateful.common import trace_context

ENV_DIR = "STATEFUL_TRACES_DIR"
DEFAULT_DIR = "state/traces"  # <data_dir>/traces of ``make run``
# The standard OTLP exporter variables (https://opentelemetry.io/docs/specs/otel/protocol/exporter/).
log = logging.getLogger(__name__)

ENV_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
ENV_OTLP_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
ENV_SERVICE_NAME = "OTEL_SERVICE_NAME"
GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"

_provider: TracerProvider | None = None


ENV_MAX_MB = "STATEFUL_TRACES_MAX_MB"
DEFAULT_MAX_MB = 64.0
SHUTDOWN_SECONDS = 3.0  # at most this long to flush spans on exit (a collector away must not hold a stop)


class JsonLinesExporter(SpanExporter):
    """Appends each finished span as one compact JSON object per line. The file is bounded: past
    ``max_bytes`` it becomes ``<service>.old.jsonl`` (replacing the previous one) and a new file
    starts, so a long-running suite keeps at most about twice the bound per service
    (``$STATEFUL_TRACES_MAX_MB``, default 64 MB; readers read both files)."""

    def __init__(self, path: Path, service: str, max_bytes: int | None = None) -> None:
        self.path = path
        self.service = service
        self.max_bytes = max_bytes if max_bytes is not None else _max_bytes()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_dict(span, self.service), default=str) + "\n" for span in spans)
        try:
            with self._lock:
                if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
                    self.path.replace(self.path.with_name(f"{self.service}.old.jsonl"))
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(lines)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def _max_bytes() -> int:
    raw = os.environ.get(ENV_MAX_MB, "").strip()
    try:
        megabytes = float(raw) if raw else DEFAULT_MAX_MB
    except ValueError:
        megabytes = DEFAULT_MAX_MB
    return max(1, int(megabytes * 1024 * 1024))


def span_dict(span: ReadableSpan, service: str) -> dict[str, Any]:
    context = span.context
    return {
        "service": service,
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}" if context else "",
        "span_id": f"{context.span_id:016x}" if context else "",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description or "",
        "attributes": dict(span.attributes or {}),
    }


# (trace id, span id) the next span started in this context takes (see preset_ids).
_preset: ContextVar[list[tuple[int, int]] | None] = ContextVar("mesos_stateful_preset_ids", default=None)


class PresetIdGenerator(RandomIdGenerator):
    """Random ids (the SDK default), except for the one span started inside :func:`preset_ids`."""

    def generate_trace_id(self) -> int:
        preset = _preset.get()
        return preset[0][0] if preset else super().generate_trace_id()

    def generate_span_id(self) -> int:
        preset = _preset.get()
        if preset:
            # The SDK asks for the span id once per span, after the trace id: one use only.
            return preset.pop()[1]
        return super().generate_span_id()


@contextmanager
def preset_ids(trace_id: int, span_id: int) -> Iterator[None]:
    """The first span started (as a root: no valid parent) inside takes these ids; later ones
    are random. Only with a provider built by :func:`build_provider`."""
    token = _preset.set([(trace_id, span_id)])
    try:
        yield
    finally:
        _preset.reset(token)


def otlp_protocol() -> str:
    """The OTLP protocol the environment asks for (``grpc`` unless set)."""
    for name in ENV_OTLP_PROTOCOLS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return GRPC


#: The samplers ``OTEL_TRACES_SAMPLER`` may name (OpenTelemetry SDK environment variables spec);
#: the ``*traceidratio`` ones take ``OTEL_TRACES_SAMPLER_ARG``, a probability in [0, 1].
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def check_otlp_settings() -> str:
    """Why the tracing environment cannot work as meant ("" when it can): an OTLP protocol other
    than grpc / http/protobuf, a sampler the SDK does not know (it would then sample every
    request), a ratio that is not a probability. Checked by ``make run``'s preflight before any
    service starts, and by every service when it sets tracing up."""
    if any(os.environ.get(name, "").strip() for name in ENV_OTLP_ENDPOINTS):
        protocol = otlp_protocol()
        if protocol not in (GRPC, HTTP_PROTOBUF):
            return (
                f"OTLP protocol {protocol!r} is not supported: "
                "set OTEL_EXPORTER_OTLP_PROTOCOL to grpc or http/protobuf"
            )
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "").strip()
    if sampler and sampler not in SAMPLERS:
        return f"OTEL_TRACES_SAMPLER={sampler!r} is not a sampler: use one of {', '.join(SAMPLERS)}"
    if sampler.endswith("traceidratio"):
        arg = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        try:
            ratio = float(arg) if arg else 1.0
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            return f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a probability: give a number from 0 to 1"
    return ""


def otlp_exporter() -> SpanExporter | None:
    """An OTLP span exporter configured by the ``OTEL_EXPORTER_OTLP_*`` variables, or None when no
    endpoint is set. Raises ValueError for a protocol other than grpc / http/protobuf."""
    if not any(os.environ.get(name, "").strip() for name in ENV_OTLP_ENDPOINTS):
        return None
    protocol = otlp_protocol()
    if protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == HTTP_PROTOBUF:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"OTLP protocol {protocol!r} is not supported (use {GRPC} or {HTTP_PROTOBUF})")


def build_provider(service_name: str, exporters: Sequence[SpanExporter] = ()) -> TracerProvider:
    """A tracer provider with :class:`PresetIdGenerator`, the sampler of
    :func:`trace_context.build_sampler` (plan roots always, other roots as ``OTEL_TRACES_SAMPLER``
    says, 1 % when unset; children follow their parent), ``service.name`` from
    ``OTEL_SERVICE_NAME`` else ``service_name``, and a batch processor per exporter."""
    attributes = {} if os.environ.get(ENV_SERVICE_NAME, "").strip() else {"service.name": service_name}
    provider = TracerProvider(
        resource=Resource.create(attributes),
        id_generator=PresetIdGenerator(),
        sampler=trace_context.build_sampler(),
    )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def setup_tracing(service_name: str, start_roots: bool = False) -> None:
    """Trace to ``$STATEFUL_TRACES_DIR/<service_name>.jsonl`` if that variable is set, and to OTLP
    if an ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` is set (idempotent). ``start_roots``: the
    process is the API edge (the gateway), whose requests without a trace context start sampled
    roots (``trace_context``: the other services trace only inside a sampled trace)."""
    global _provider
    if _provider is not None:
        return
    problem = check_otlp_settings()
    if problem:
        raise SystemExit(f"{service_name}: {problem}")
    exporters: list[SpanExporter] = []
    directory = os.environ.get(ENV_DIR, "").strip()
    if directory:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        exporters.append(JsonLinesExporter(folder / f"{service_name}.jsonl", service_name))
    otlp = otlp_exporter()
    if otlp is not None:
        exporters.append(otlp)
        endpoint = next(os.environ[n].strip() for n in ENV_OTLP_ENDPOINTS if os.environ.get(n, "").strip())
        log.info("traces: exported over OTLP (%s) to %s", otlp_protocol(), endpoint)
    if not exporters:
        return
    provider = build_provider(service_name, exporters)
    trace.set_tracer_provider(provider)
    trace_context.install(start_roots=start_roots)
    _provider = provider


def shutdown_tracing(timeout: float = SHUTDOWN_SECONDS) -> None:
    """Flush and stop the exporters, waiting at most ``timeout`` seconds (no-op when tracing is
    off): an OTLP collector that is away or does not answer would otherwise hold the service's
    stop for the exporter's retries, past its supervisor's grace (then it is SIGKILLed)."""
    global _provider
    provider, _provider = _provider, None
    if provider is None:
        return
    done = threading.Thread(target=provider.shutdown, name="tracing-shutdown", daemon=True)
    done.start()
    done.join(timeout)
    if done.is_alive():
        print(
            f"tracing: spans not flushed within {timeout:.0f}s (is the OTLP collector reachable?); "
            "stopping without them",
            file=sys.stderr,
        )


# --- reader --------------------------------------------------------------------------------------

# Attributes the reader leaves out: gRPC/network plumbing that repeats on every span (the span
# name already says the method; a non-OK gRPC status is shown as ``grpc=<code>``).
_NOISE = ("rpc.", "net.", "server.", "network.", "client.")
_GRPC_CODE = "rpc.grpc.status_code"


def load_spans(directory: Path) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                span = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(span, dict) and span.get("start_ns") is not None:
                spans.append(span)
    return spans


def select_traces(
    spans: Iterable[dict[str, Any]], instance: str = "", last: int = 0
) -> list[list[dict[str, Any]]]:
    """Spans grouped by trace, traces ordered by start; only those touching ``instance`` if set,
    only the ``last`` N if > 0."""
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        traces[span["trace_id"]].append(span)
    chosen = [
        group
        for group in traces.values()
        if not instance or any(s.get("attributes", {}).get("instance") == instance for s in group)
    ]
    chosen.sort(key=lambda group: min(s["start_ns"] for s in group))
    return chosen[-last:] if last > 0 else chosen


def format_trace(group: list[dict[str, Any]]) -> list[str]:
    """One line per span, depth-first, children by start time, indented under their parent."""
    ids = {s["span_id"] for s in group}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for span in group:
        parent = span.get("parent_id")
        children[parent if parent in ids else None].append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["start_ns"]):
            lines.append(format_span(span, depth))
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return lines


def format_span(span: dict[str, Any], depth: int) -> str:
    start = datetime.fromtimestamp(span["start_ns"] / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
    end = span.get("end_ns") or span["start_ns"]
    duration = (end - span["start_ns"]) / 1e6
    shown = [
        f"{key}={value}"
        for key, value in span.get("attributes", {}).items()
        if not key.startswith(_NOISE) and value not in ("", None)
    ]
    if span.get("attributes", {}).get(_GRPC_CODE):
        shown.append(f"grpc={span['attributes'][_GRPC_CODE]}")
    attributes = " ".join(shown)
    name = str(span["name"]).removeprefix("/stateful.v1.")
    status = ""
    if span.get("status") == "ERROR":
        status = f"  [ERROR: {span.get('status_message', '')}]"
    return (
        f"{start}  {span.get('service', '?'):<16} {'  ' * depth}{name}  "
        f"{duration:.1f}ms  {attributes}{status}".rstrip()
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesos_stateful.common.tracing")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print the traces written under DIR")
    show.add_argument("dir", nargs="?", default=os.environ.get(ENV_DIR) or DEFAULT_DIR)
    show.add_argument("--instance", default="", help="only traces about this instance")
    show.add_argument("--last", type=int, default=0, help="only the last N traces")
    args = parser.parse_args(argv)
    # Absolute, so a run from another folder names the folder it really looked in.
    directory = Path(args.dir).expanduser().resolve()
    if not directory.is_dir():
        print(
            f"no traces folder {directory} (pass DIR, or set {ENV_DIR} as the services had it); "
            "`statefulctl trace NAME` shows an instance's plans as timelines",
            file=sys.stderr,
        )
        return 1
    groups = select_traces(load_spans(directory), args.instance, args.last)
    if args.instance and not groups:
        print(f"no trace of {args.instance} in {directory}", file=sys.stderr)
        return 1
    try:
        for group in groups:
            print(f"trace {group[0]['trace_id']}")
            for line in format_trace(group):
                print("  " + line)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
