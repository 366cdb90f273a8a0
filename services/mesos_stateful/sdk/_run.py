"""Serving a workload (private: import :func:`run` and :func:`serve` from :mod:`mesos_stateful.sdk`)."""

from __future__ import annotations

import asyncio

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.workloads.base import WorkloadBase, WorkloadSettings, run_workload

__all__ = ["run", "serve"]


async def serve(workload: WorkloadBase, settings: WorkloadSettings) -> None:
    """Serve ``workload`` on ``settings.listen``, keep it registered in the state service
    (``settings.state_endpoint``, under a lease of ``settings.lease_ttl_seconds``; unless
    ``register_in_state`` is off) until SIGTERM/SIGINT, then deregister and drain calls for up to
    ``settings.grace_seconds``. Also starts tracing (``OTEL_*``) and, when
    ``settings.metrics_listen`` is set, Prometheus ``/metrics``. The state service may be down at
    start: the service serves meanwhile and registers once it answers."""
    await run_workload(workload, settings)


def run(workload: WorkloadBase, settings: WorkloadSettings) -> None:
    """The whole ``main()`` of a workload service: log to stderr (one line per record, prefixed
    ``workload-<name>``, at ``settings.log_level``) and :func:`serve` until SIGTERM/SIGINT.
    Blocking; call it from the main thread."""
    setup_logging(f"workload-{workload.description.name}", settings.log_level)
    asyncio.run(serve(workload, settings))
