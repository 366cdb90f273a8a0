"""Entry point: ``stateful-workload-mysql`` / ``python -m mesos_stateful.workloads.mysql``."""

from __future__ import annotations

from mesos_stateful import sdk
from mesos_stateful.workloads.mysql.servicer import MysqlWorkload
from mesos_stateful.workloads.mysql.settings import MysqlSettings


def main() -> None:
    settings = MysqlSettings.load()
    sdk.run(MysqlWorkload(settings), settings)


if __name__ == "__main__":
    main()
