"""What the etcd workload is: its Describe answer."""

from __future__ import annotations

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2

NAME = "etcd"
# Named ports; the task sees them as ${PORT_CLIENT} and ${PORT_PEER}.
CLIENT_PORT = "client"
PEER_PORT = "peer"
# The suite's etcd image (``make images``): etcd at Debian's /usr/bin/etcd and the suite's venv (the
# member's bootstrap module).
DEFAULT_IMAGE = sdk.suite_image("etcd")
MAX_PEERS = 7

CONFIG_KEYS = [
    types_pb2.ConfigKey(
        name="snapshot-count",
        description="committed transactions that trigger a snapshot to disk",
        default_value="10000",
    ),
    types_pb2.ConfigKey(
        name="quota-backend-bytes",
        description="backend size that raises an alarm (0: etcd's default, 2 GiB)",
        default_value="0",
    ),
    types_pb2.ConfigKey(
        name="auto-compaction-mode",
        description="how auto-compaction-retention is read",
        default_value="periodic",
        allowed_values=["periodic", "revision"],
    ),
    types_pb2.ConfigKey(
        name="auto-compaction-retention",
        description='history kept: a duration such as "1h" (periodic) or a revision count; "0": off',
        default_value="0",
    ),
    types_pb2.ConfigKey(
        name="heartbeat-interval", description="raft heartbeat interval in ms", default_value="100"
    ),
    types_pb2.ConfigKey(
        name="election-timeout",
        description="raft election timeout in ms (about 10x the heartbeat interval)",
        default_value="1000",
    ),
]


def description(default_image: str = DEFAULT_IMAGE) -> types_pb2.WorkloadDescription:
    return types_pb2.WorkloadDescription(
        name=NAME,
        topology=types_pb2.TOPOLOGY_PEERS,
        default_image=default_image,
        port_names=[CLIENT_PORT, PEER_PORT],
        default_resources=types_pb2.Resources(cpus=0.5, mem_mb=512, disk_mb=1024),
        secret_names=[],
        min_replicas=1,
        max_replicas=MAX_PEERS,
        config_keys=CONFIG_KEYS,
        summary="etcd: a raft cluster of peers (3 or 5 recommended) grown and shrunk one member at a "
        "time; a lost peer is removed from the cluster and replaced",
    )
