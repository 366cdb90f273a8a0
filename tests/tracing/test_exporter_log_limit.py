"""The OTLP exporter's error per batch, when the collector is away, is rate limited by the
suite's logging set-up (``common.logs.setup_logging`` installs ``common.log_limit``): a real
``OTLPSpanExporter`` (OTLP/HTTP, ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``; its logger has no
de-duplication of its own) sends batches to a port where the collector refuses connections; the
service's stderr shows one "Failed to export" line per interval, the next one with the count of
those held back. Then the filter's rules on a clock of the test's."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesos_stateful.common.log_limit import INTERVAL_ENV, RateLimitFilter
from mesos_stateful.common.logs import setup_logging

FAILED = re.compile(r"ERROR opentelemetry\.exporter\S*: Failed to export spans? batch")


@pytest.fixture
def refused_endpoint() -> Iterator[str]:
    """An OTLP/HTTP endpoint whose port refuses connections: bound by the test (so no one else
    takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces"


@pytest.fixture
def service_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The root logger as a service sets it up, with a 1 s interval (restored afterwards)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    monkeypatch.setenv(INTERVAL_ENV, "1")
    try:
        yield
    finally:
        root.handlers[:], root.level = saved


def _spans(count: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for index in range(count):
        tracer.start_span(f"span {index}").end()
    return list(memory.get_finished_spans())


def test_a_collector_that_refuses_logs_one_line_per_interval_with_a_count(
    refused_endpoint: str, service_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("lifecycle", "INFO")  # after capsys: its handler writes to the captured stderr
    exporter = OTLPSpanExporter(endpoint=refused_endpoint, timeout=0.5)
    batch = _spans(3)
    try:
        started = time.monotonic()
        for _ in range(10):
            assert exporter.export(batch) == SpanExportResult.FAILURE
        quick = time.monotonic() - started < 1  # all ten inside one interval
        first = [line for line in capsys.readouterr().err.splitlines() if FAILED.search(line)]
        assert first and " lifecycle ERROR " in first[0] and "more like it" not in first[0], first
        if quick:
            assert len(first) == 1, first
        # Batches go on; after the interval one more line, with the count of those held back.
        exported = 10
        deadline = time.monotonic() + 10
        shown: list[str] = []
        while not shown:
            assert time.monotonic() < deadline, "no second line within 10 s"
            assert exporter.export(batch) == SpanExportResult.FAILURE
            exported += 1
            shown = [line for line in capsys.readouterr().err.splitlines() if FAILED.search(line)]
            time.sleep(0.02)  # a batch every 20 ms, as a busy service's processor sends them
        [noted] = shown
        counted = re.search(r"\(\+(\d+) more like it in the last 1 s\)$", noted)
        assert counted is not None, noted
        held = int(counted.group(1))
        # Every batch is either shown or counted: the first line, the held ones, the second line.
        assert len(first) + held + 1 == exported, (first, held, exported)
    finally:
        exporter.shutdown()


def _record(name: str, msg: str, level: int = logging.ERROR, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_the_filter_limits_per_kind_and_leaves_other_loggers_alone() -> None:
    now = [100.0]
    limit = RateLimitFilter(60, clock=lambda: now[0])
    failed = "opentelemetry.exporter.otlp.proto.grpc.exporter"
    assert limit.filter(_record(failed, "Failed to export %s", logging.ERROR, "spans"))
    assert not limit.filter(_record(failed, "Failed to export %s", logging.ERROR, "spans"))
    # Another kind (a warning of another format) and another logger: their own counts.
    assert limit.filter(_record(failed, "Transient error %s", logging.WARNING, "UNAVAILABLE"))
    for _ in range(5):
        assert limit.filter(_record("lifecycle", "plan made"))
        assert limit.filter(_record("opentelemetryx", "not under the prefix"))
    for _ in range(3):
        assert not limit.filter(_record(failed, "Failed to export %s", logging.ERROR, "spans"))
    now[0] += 59.9
    assert not limit.filter(_record(failed, "Failed to export %s", logging.ERROR, "spans"))
    now[0] += 0.2
    shown = _record(failed, "Failed to export %s", logging.ERROR, "spans")
    assert limit.filter(shown)
    assert shown.getMessage() == "Failed to export spans (+5 more like it in the last 60 s)"
    now[0] += 61
    again = _record(failed, "Failed to export %s", logging.ERROR, "spans")
    assert limit.filter(again) and again.getMessage() == "Failed to export spans"  # nothing held
    with pytest.raises(ValueError):
        RateLimitFilter(0)
