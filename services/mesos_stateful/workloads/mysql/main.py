"""Entry point: ``stateful-workload-mysql`` / ``python -m mesos_stateful.workloads.mysql``."""

from __future__ import annotations

import asyncio

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.workloads.base import run_workload
from mesos_stateful.workloads.mysql.servicer import MysqlWorkload
from mesos_stateful.workloads.mysql.settings import MysqlSettings


def main() -> None:
    settings = MysqlSettings.load()
    setup_logging("workload-mysql", settings.log_level)
    asyncio.run(run_workload(MysqlWorkload(settings), settings))


if __name__ == "__main__":
    main()
