"""Serving the suite's Prometheus metrics (:mod:`mesos_stateful.common.metrics`) on ``/metrics``.

Every service has a ``metrics_listen`` setting (env ``STATEFUL_<SERVICE>_METRICS_LISTEN``,
``host:port``, port 0: any free port; empty, the default: no metrics endpoint). Its main calls
:func:`serve_metrics` once at start: prometheus_client's own HTTP server (a daemon thread, the
text exposition format of https://prometheus.io/docs/instrumenting/exposition_formats/), which
serves the service's own part of the catalogue (``metrics.LIFECYCLE``, ``metrics.OFFERS``, ...)
plus the client library's process, platform and garbage-collector collectors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    start_http_server,
)
from prometheus_client.registry import Collector

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


def registry_of(own: Iterable[Collector]) -> CollectorRegistry:
    """A registry of ``own`` (a service's metrics, also in the default registry) and the client
    library's process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in (*own, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def serve_metrics(listen: str, own: Iterable[Collector] | None = None) -> tuple[WSGIServer | None, int]:
    """Start ``/metrics`` on ``listen`` (``host:port``, port 0: any free one); ``(None, 0)``
    when ``listen`` is empty (metrics off). ``own``: the service's metrics (``metrics.OFFERS``...),
    None: the whole default registry. Returns the server (``shutdown()`` stops it; it is a
    daemon thread, so a service need not) and the port it bound. OSError when the port is taken:
    the service then exits, like for its gRPC port."""
    if not listen:
        return None, 0
    host, port = split_listen(listen)
    registry = REGISTRY if own is None else registry_of(own)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return server, bound
