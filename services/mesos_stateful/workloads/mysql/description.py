"""What the MySQL (MariaDB) workload is: its Describe answer."""

from __future__ import annotations

from collections.abc import Sequence

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2

NAME = "mysql"
# The one named port every member needs; the task sees it as ${PORT_MYSQL}.
PORT = "mysql"
ADMIN_PASSWORD = "admin_password"
REPLICATION_PASSWORD = "replication_password"
# The suite's MariaDB image (``make images``): mariadbd, mariadb-install-db at Debian's paths and the
# suite's venv (the member's bootstrap module).
DEFAULT_IMAGE = sdk.suite_image("mariadb")

# The config key choosing the mariadbd build (MysqlSettings.mariadbd_versions).
VERSION = "version"

CONFIG_KEYS = [
    types_pb2.ConfigKey(
        name="innodb_buffer_pool_size",
        description='InnoDB buffer pool size, e.g. "128M" or "1G" (keep it below the memory asked for)',
        default_value="128M",
    ),
    types_pb2.ConfigKey(
        name="max_connections", description="most client connections at once", default_value="151"
    ),
    types_pb2.ConfigKey(
        name="max_allowed_packet", description='largest packet / row, e.g. "16M"', default_value="16M"
    ),
    types_pb2.ConfigKey(
        name="character_set_server",
        description="default character set of new databases",
        default_value="utf8mb4",
    ),
    types_pb2.ConfigKey(
        name="sync_binlog",
        description="1: fsync the binary log at every commit (durable failover); 0: let the OS decide",
        default_value="1",
        allowed_values=["0", "1"],
    ),
    types_pb2.ConfigKey(
        name="innodb_flush_log_at_trx_commit",
        description="1: fsync the redo log at every commit; 2: write at commit, fsync every second; "
        "0: write and fsync every second",
        default_value="1",
        allowed_values=["0", "1", "2"],
    ),
    types_pb2.ConfigKey(
        name=VERSION,
        description="which mariadbd build the members run (process runtime): one of the workload "
        "service's mariadbd_versions (name -> binary); empty: its mariadbd. Changing it rolls the "
        "instance to that build (statefulctl update NAME --set version=<name>); not a my.cnf option",
        default_value="",
    ),
]


def config_keys(versions: Sequence[str] = ()) -> list[types_pb2.ConfigKey]:
    """CONFIG_KEYS with the ``version`` key's allowed values: "" and the names of ``versions``."""
    keys = []
    for given in CONFIG_KEYS:
        key = types_pb2.ConfigKey()
        key.CopyFrom(given)
        if key.name == VERSION:
            key.allowed_values.extend(["", *sorted(versions)])
        keys.append(key)
    return keys


def description(
    default_image: str = DEFAULT_IMAGE, versions: Sequence[str] = ()
) -> types_pb2.WorkloadDescription:
    return types_pb2.WorkloadDescription(
        name=NAME,
        topology=types_pb2.TOPOLOGY_MASTER_REPLICA,
        default_image=default_image,
        port_names=[PORT],
        default_resources=types_pb2.Resources(cpus=0.5, mem_mb=512, disk_mb=2048),
        secret_names=[ADMIN_PASSWORD, REPLICATION_PASSWORD],
        min_replicas=1,
        max_replicas=0,
        config_keys=config_keys(versions),
        summary="MariaDB: one writable master, read-only GTID replicas, the most advanced replica "
        "promoted on master loss",
    )
