"""``stateful-executor``: the Mesos executor of one member (started by the agent, not by people)."""

from __future__ import annotations

import asyncio
import logging
import sys

# pymesos installs a SIGINT handler when imported: import it here, on the main thread.
import pymesos  # noqa: F401

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.executor.app import ExecutorApp
from mesos_stateful.executor.settings import ExecutorSettings

log = logging.getLogger(__name__)


def main() -> None:
    settings = ExecutorSettings.load()
    setup_logging("executor", settings.log_level)
    logging.getLogger("pymesos").handlers.clear()  # it has its own; the root one is enough
    app = ExecutorApp(settings)
    try:
        code = asyncio.run(app.run())
    except BaseException as error:
        # pymesos' I/O thread died (it interrupts the main thread) or we were interrupted: the
        # agent can no longer hear from us, so the member must not stay behind.
        log.error("executor stopped unexpectedly: %r; killing the member", error)
        app.force_kill_member()
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
