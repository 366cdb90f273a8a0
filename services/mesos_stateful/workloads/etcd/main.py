"""Entry point: ``stateful-workload-etcd`` / ``python -m mesos_stateful.workloads.etcd``."""

from __future__ import annotations

from mesos_stateful import sdk
from mesos_stateful.workloads.etcd.servicer import EtcdWorkload
from mesos_stateful.workloads.etcd.settings import EtcdSettings


def main() -> None:
    settings = EtcdSettings.load()
    sdk.run(EtcdWorkload(settings), settings)


if __name__ == "__main__":
    main()
