"""``stateful-offers``: the Mesos framework and the OfferService."""

from __future__ import annotations

import asyncio
import logging

# pymesos installs a SIGINT handler when imported: import it here, on the main thread.
import mesos_stateful.offers.driver  # noqa: F401
from mesos_stateful.common import errors, metrics
from mesos_stateful.common.logs import setup_logging
from mesos_stateful.common.metrics_server import serve_metrics
from mesos_stateful.common.server import serve_until_signal
from mesos_stateful.common.tracing import setup_tracing, shutdown_tracing
from mesos_stateful.offers.server import build_offers_server
from mesos_stateful.offers.settings import OffersSettings

log = logging.getLogger(__name__)


async def run(settings: OffersSettings) -> None:
    serve_metrics(settings.metrics_listen, metrics.OFFERS)
    offers = await build_offers_server(settings)
    log.info(
        "offers serving stateful.v1.OfferService on port %d as %s (master %s, state %s); only the "
        "leader subscribes to Mesos",
        offers.port,
        offers.address,
        settings.master,
        settings.state_endpoint,
    )
    try:
        await serve_until_signal(offers, grace_seconds=settings.grace_seconds)
    finally:
        # Stop leading: disconnect with failover (Mesos keeps our tasks running for the next
        # leader) and release the lease so a standby takes over at once.
        await offers.stop_scheduler()


def main() -> None:
    setup_tracing("offers")
    settings = OffersSettings.load()
    setup_logging("offers", settings.log_level)
    logging.getLogger("pymesos").handlers.clear()  # it has its own; the root one is enough
    try:
        asyncio.run(run(settings))
    except errors.StatefulError as error:  # e.g. the state service never became ready
        raise SystemExit(f"offers: {error.message}") from None
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
