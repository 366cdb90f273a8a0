"""``stateful-state``: the state service. Starts an embedded etcd when no endpoints are given, and
restarts it when it dies (``embedded.supervise``; settings ``etcd_restart_*``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from mesos_stateful.common import metrics
from mesos_stateful.common.logs import setup_logging
from mesos_stateful.common.metrics_server import serve_metrics
from mesos_stateful.common.server import serve_until_signal
from mesos_stateful.common.tracing import setup_tracing, shutdown_tracing
from mesos_stateful.state.embedded import EmbeddedEtcd, supervise
from mesos_stateful.state.server import build_state_server
from mesos_stateful.state.settings import StateSettings

log = logging.getLogger(__name__)


async def run(settings: StateSettings) -> None:
    serve_metrics(settings.metrics_listen, metrics.STATE)
    embedded: EmbeddedEtcd | None = None
    if not settings.endpoints:
        embedded = EmbeddedEtcd(
            Path(settings.data_dir) / "etcd",
            client_port=settings.embedded_client_port,
            peer_port=settings.embedded_peer_port,
            binary=settings.etcd_binary,
        )
    try:
        if embedded is not None:
            log.info("starting embedded etcd at %s (data %s)", embedded.endpoint, embedded.data_dir)
            await embedded.start(settings.etcd_start_timeout_seconds)
            settings = settings.model_copy(update={"etcd_endpoints": embedded.endpoint})
        served = await build_state_server(settings)
        log.info("state service listening on port %d, etcd %s", served.port, settings.etcd_endpoints)
        supervisor: asyncio.Task[None] | None = None
        if embedded is not None:
            # A crashed embedded etcd is restarted (same data dir and ports); health is
            # NOT_SERVING from the moment its exit is noticed until it answers again.
            supervisor = asyncio.create_task(
                supervise(
                    embedded, settings.restart_policy(), served.etcd_lost, lambda _: served.etcd_back()
                ),
                name="embedded-etcd-supervisor",
            )
        try:
            await serve_until_signal(served)
        finally:
            if supervisor is not None:
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
            await served.stop(grace_seconds=0)
    finally:
        if embedded is not None:
            log.info("stopping embedded etcd")
            await asyncio.to_thread(embedded.stop)


def main(argv: Sequence[str] | None = None) -> None:
    setup_tracing("state")
    settings = StateSettings.load(argv)
    setup_logging("state", settings.log_level)
    try:
        asyncio.run(run(settings))
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
