"""``stateful-lifecycle``: run the lifecycle controller until SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mesos_stateful.common import metrics
from mesos_stateful.common.logs import setup_logging
from mesos_stateful.common.metrics_server import serve_metrics
from mesos_stateful.common.server import serve_until_signal
from mesos_stateful.common.tracing import setup_tracing, shutdown_tracing
from mesos_stateful.lifecycle.server import LifecycleService
from mesos_stateful.lifecycle.settings import LifecycleSettings


async def run(settings: LifecycleSettings) -> None:
    serve_metrics(settings.metrics_listen, metrics.LIFECYCLE)
    service = LifecycleService(settings)
    await service.start()
    assert service.served is not None
    await serve_until_signal(service.served, on_stop=service.stop_controller)


def main(argv: Sequence[str] | None = None) -> None:
    setup_tracing("lifecycle")
    settings = LifecycleSettings.load(argv)
    setup_logging("lifecycle", settings.log_level)
    try:
        asyncio.run(run(settings))
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
