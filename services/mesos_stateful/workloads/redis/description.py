"""What the Redis workload is: its Describe answer."""

from __future__ import annotations

from collections.abc import Sequence

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2

NAME = "redis"
# The one named port every member needs; the task sees it as ${PORT_REDIS}.
PORT = "redis"
PASSWORD = "password"
# The suite's Redis image (``make images``): redis-server at Debian's /usr/bin/redis-server.
DEFAULT_IMAGE = sdk.suite_image("redis")

# The config key choosing the redis-server build (RedisSettings.redis_server_versions).
VERSION = "version"

EVICTION_POLICIES = [
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]

CONFIG_KEYS = [
    types_pb2.ConfigKey(
        name="appendonly",
        description="append-only file persistence (every write logged in the sandbox)",
        default_value="yes",
        allowed_values=["yes", "no"],
    ),
    types_pb2.ConfigKey(
        name="appendfsync",
        description="when the append-only file is fsynced; always (default): written and fsynced "
        "before any reply, so even a crash of every member at once loses nothing acknowledged; "
        "everysec is faster but a kill -9 can lose up to ~2 s of answered writes on that member",
        default_value="always",
        allowed_values=["always", "everysec", "no"],
    ),
    types_pb2.ConfigKey(
        name="save",
        description='RDB snapshot rules, "<seconds> <changes> ..."; empty: no snapshots',
        default_value="3600 1 300 100 60 10000",
    ),
    types_pb2.ConfigKey(
        name="maxmemory",
        description='memory limit for data, e.g. "200mb"; "0": no limit',
        default_value="0",
    ),
    types_pb2.ConfigKey(
        name="maxmemory-policy",
        description="what to evict when maxmemory is reached",
        default_value="noeviction",
        allowed_values=EVICTION_POLICIES,
    ),
    types_pb2.ConfigKey(
        name=VERSION,
        description="which redis-server build the members run (process runtime): one of the workload "
        "service's redis_server_versions (name -> binary); empty: its redis_server. Changing it rolls "
        "the instance to that build (statefulctl update NAME --set version=<name>)",
        default_value="",
    ),
]


def config_keys(versions: Sequence[str] = ()) -> list[types_pb2.ConfigKey]:
    """CONFIG_KEYS with the ``version`` key's allowed values: "" and the names of ``versions``."""
    keys = [types_pb2.ConfigKey(name=k.name) for k in CONFIG_KEYS]
    for key, given in zip(keys, CONFIG_KEYS, strict=True):
        key.CopyFrom(given)
        if key.name == VERSION:
            key.allowed_values.extend(["", *sorted(versions)])
    return keys


def description(
    default_image: str = DEFAULT_IMAGE, versions: Sequence[str] = ()
) -> types_pb2.WorkloadDescription:
    return types_pb2.WorkloadDescription(
        name=NAME,
        topology=types_pb2.TOPOLOGY_MASTER_REPLICA,
        default_image=default_image,
        port_names=[PORT],
        default_resources=types_pb2.Resources(cpus=0.5, mem_mb=256, disk_mb=1024),
        secret_names=[PASSWORD],
        min_replicas=1,
        max_replicas=0,
        config_keys=config_keys(versions),
        summary="Redis: one master, asynchronous replicas, the most advanced replica promoted on master loss",
    )
