"""Entry point: ``stateful-workload-redis`` / ``python -m mesos_stateful.workloads.redis``."""

from __future__ import annotations

from mesos_stateful import sdk
from mesos_stateful.workloads.redis.servicer import RedisWorkload
from mesos_stateful.workloads.redis.settings import RedisSettings


def main() -> None:
    settings = RedisSettings.load()
    sdk.run(RedisWorkload(settings), settings)


if __name__ == "__main__":
    main()
