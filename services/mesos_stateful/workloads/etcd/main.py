"""Entry point: ``stateful-workload-etcd`` / ``python -m mesos_stateful.workloads.etcd``."""

from __future__ import annotations

import asyncio

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.workloads.base import run_workload
from mesos_stateful.workloads.etcd.servicer import EtcdWorkload
from mesos_stateful.workloads.etcd.settings import EtcdSettings


def main() -> None:
    settings = EtcdSettings.load()
    setup_logging("workload-etcd", settings.log_level)
    asyncio.run(run_workload(EtcdWorkload(settings), settings))


if __name__ == "__main__":
    main()
