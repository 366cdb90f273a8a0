"""Serving the suite's Prometheus metrics (:mod:`mesos_stateful.common.metrics`) on ``/metrics``.

Every service has a ``metrics_listen`` setting (env ``STATEFUL_<SERVICE>_METRICS_LISTEN``,
``host:port``, port 0: any free port; empty, the default: no metrics endpoint). Its main calls
:func:`serve_metrics` once at start: prometheus_client's own HTTP server (a daemon thread, the
text exposition format of https://prometheus.io/docs/instrumenting/exposition_formats/), which
serves the process's default registry: the catalogue's metrics this service touched plus the
client library's process and Python collectors.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

log = logging.getLogger(__name__)

METRICS_LISTEN_DESCRIPTION = (
    "host:port of the Prometheus /metrics endpoint (port 0: any free port); empty (the default): "
    "no metrics endpoint. `make run` gives every service one (STATEFUL_SUITE_METRICS_BASE_PORT)"
)


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:9100``) -> (host, port); ValueError naming the value."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics_listen must be host:port, got {listen!r}")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port)


def check_listen(listen: str) -> str:
    """A settings validator: empty (off) or a valid ``host:port``."""
    if listen:
        split_listen(listen)
    return listen


def serve_metrics(listen: str) -> tuple[WSGIServer | None, int]:
    """Start ``/metrics`` on ``listen`` (``host:port``, port 0: any free one); ``(None, 0)``
    when ``listen`` is empty (metrics off). Returns the server (``shutdown()`` stops it; it is a
    daemon thread, so a service need not) and the port it bound. OSError when the port is taken:
    the service then exits, like for its gRPC port."""
    if not listen:
        return None, 0
    host, port = split_listen(listen)
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return server, bound
