"""Entry point: ``stateful-workload-redis`` / ``python -m mesos_stateful.workloads.redis``."""

from __future__ import annotations

import asyncio

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.workloads.base import run_workload
from mesos_stateful.workloads.redis.servicer import RedisWorkload
from mesos_stateful.workloads.redis.settings import RedisSettings


def main() -> None:
    settings = RedisSettings.load()
    setup_logging("workload-redis", settings.log_level)
    asyncio.run(run_workload(RedisWorkload(settings), settings))


if __name__ == "__main__":
    main()
