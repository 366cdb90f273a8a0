"""Rate limit of the tracing exporters' log lines: when the OTLP collector is away, the
OpenTelemetry exporter logs an error per batch (every few seconds, per service) and would drown
the suite's output. :class:`RateLimitFilter` lets the first record of each kind through, then at
most one per ``interval_seconds``, with how many like it were held back since the last one shown:

    ... ERROR opentelemetry.exporter.otlp.proto.grpc.exporter: Failed to export span batch to
    localhost:4317, error code: StatusCode.UNAVAILABLE ... (+41 more like it in the last 60 s)

A kind is the logger's name, the level and the message's format string (``record.msg``), so a
"Transient error ... retrying" warning and a "Failed to export" error are limited apart, and
records of other loggers are never touched. Installed on the handler of
:func:`mesos_stateful.common.logs.setup_logging` for the loggers under ``opentelemetry``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Loggers whose records are limited: the OTLP exporters and the SDK's span processors.
LIMITED_LOGGERS = ("opentelemetry",)
INTERVAL_ENV = "STATEFUL_EXPORTER_LOG_INTERVAL_SECONDS"
DEFAULT_INTERVAL_SECONDS = 60.0


@dataclass
class _Kind:
    shown_at: float  # clock() of the last record let through
    held: int = 0  # records held back since


def interval_from_env() -> float:
    """``$STATEFUL_EXPORTER_LOG_INTERVAL_SECONDS`` (seconds, > 0), else 60; a bad value: 60."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, "") or DEFAULT_INTERVAL_SECONDS)
    except ValueError:
        return DEFAULT_INTERVAL_SECONDS
    return value if value > 0 else DEFAULT_INTERVAL_SECONDS


class RateLimitFilter(logging.Filter):
    """At most one record per kind (logger, level, format string) per ``interval_seconds`` from
    loggers under ``prefixes``; the one let through after others were held back says how many
    (appended to its message). ``clock``: seconds, monotonic (a test may pass its own). Thread-safe:
    the exporters log from their own threads."""

    def __init__(
        self,
        interval_seconds: float,
        prefixes: Iterable[str] = LIMITED_LOGGERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be > 0")
        self.interval = interval_seconds
        self.prefixes = tuple(prefixes)
        self.clock = clock
        self._kinds: dict[tuple[str, int, str], _Kind] = {}
        self._lock = threading.Lock()

    def _limited(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._limited(record.name):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            kind = self._kinds.get(key)
            if kind is None:
                self._kinds[key] = _Kind(now)
                return True
            if now - kind.shown_at < self.interval:
                kind.held += 1
                return False
            held, since = kind.held, now - kind.shown_at
            kind.shown_at, kind.held = now, 0
        if held:
            # Formatted here once, so the note follows the message (and any args stay right).
            record.msg = f"{record.getMessage()} (+{held} more like it in the last {since:.0f} s)"
            record.args = None
        return True
