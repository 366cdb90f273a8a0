"""OpenTelemetry tracing for every service, written to JSON-lines files, and a reader for them.

Set ``STATEFUL_TRACES_DIR`` to a folder to turn tracing on: each service then writes its spans,
one JSON object per line, to ``<dir>/<service>.jsonl`` (``make run`` sets it to
``<data_dir>/traces``). Unset, :func:`setup_tracing` does nothing and spans are no-ops.

:func:`setup_tracing` must run at the very start of a service's ``main()``, before any gRPC server
or channel exists: it installs the OpenTelemetry gRPC aio instrumentors, which wrap
``grpc.aio.server`` / ``grpc.aio.insecure_channel`` so trace context propagates on every hop
(gateway -> state, lifecycle -> offers / workloads / state). Health checks, reflection and the
state service's own etcd calls are not traced. :func:`shutdown_tracing` flushes the spans on exit.

Read the spans with::

    python -m mesos_stateful.common.tracing show [DIR] [--instance NAME] [--last N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

ENV_DIR = "STATEFUL_TRACES_DIR"
DEFAULT_DIR = "state/traces"  # <data_dir>/traces of ``make run``

_provider: TracerProvider | None = None


class JsonLinesExporter(SpanExporter):
    """Appends each finished span as one compact JSON object per line."""

    def __init__(self, path: Path, service: str) -> None:
        self.path = path
        self.service = service
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_dict(span, self.service), default=str) + "\n" for span in spans)
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(lines)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


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


def _untraced() -> Any:
    """gRPC calls not worth a span: health checks, reflection, and etcd (the state service's
    etcd watch uses ``call.read()``, which a tracing interceptor's response iterator forbids)."""
    return filters.negate(
        filters.any_of(
            filters.health_check(),
            filters.service_prefix("grpc.reflection"),
            filters.service_prefix("etcdserverpb"),
        )
    )


def setup_tracing(service_name: str) -> None:
    """Trace to ``$STATEFUL_TRACES_DIR/<service_name>.jsonl`` if that variable is set (idempotent)."""
    global _provider
    directory = os.environ.get(ENV_DIR, "").strip()
    if not directory or _provider is not None:
        return
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(
        BatchSpanProcessor(JsonLinesExporter(folder / f"{service_name}.jsonl", service_name))
    )
    trace.set_tracer_provider(provider)
    # The instrumentors are untyped: go through Any.
    instrumentors: list[Any] = [GrpcAioInstrumentorServer, GrpcAioInstrumentorClient]
    for instrumentor in instrumentors:
        instrumentor(filter_=_untraced()).instrument(tracer_provider=provider)
    _provider = provider


def shutdown_tracing() -> None:
    """Flush and stop the exporter (no-op when tracing is off)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


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
    directory = Path(args.dir)
    if not directory.is_dir():
        print(f"no traces folder {directory} (set {ENV_DIR} before starting the services)", file=sys.stderr)
        return 1
    try:
        for group in select_traces(load_spans(directory), args.instance, args.last):
            print(f"trace {group[0]['trace_id']}")
            for line in format_trace(group):
                print("  " + line)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
