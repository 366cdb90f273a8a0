"""Logging set-up: one line per record, prefixed with the service name, for `make run`'s output;
the tracing exporters' repeated errors (an OTLP collector away) at most once a minute per kind,
with a count (:mod:`mesos_stateful.common.log_limit`)."""

from __future__ import annotations

import logging
import os
import sys

from mesos_stateful.common.log_limit import RateLimitFilter, interval_from_env


def setup_logging(service: str, level: str | None = None) -> None:
    level = (level or os.environ.get("STATEFUL_LOG_LEVEL", "INFO")).upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler.addFilter(RateLimitFilter(interval_from_env()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
