"""``python -m mesos_stateful.console``: the read-only web console."""

from __future__ import annotations

import asyncio
import logging

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.common.server import wait_for_signal
from mesos_stateful.console.server import serve
from mesos_stateful.console.settings import ConsoleSettings

log = logging.getLogger("console")


async def run(settings: ConsoleSettings) -> None:
    console, runner, port = await serve(settings)
    host = settings.listen.rpartition(":")[0] or "127.0.0.1"
    log.info(
        "console serving http://%s:%d/ (gateway %s, %s)",
        host,
        port,
        settings.gateway_endpoint,
        "with a token" if settings.token else "no token",
    )
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()
        await console.close()


def main() -> None:
    settings = ConsoleSettings.load()
    setup_logging("console", settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
