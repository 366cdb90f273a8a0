"""The launch of one etcd peer (the Config answer). Pure: context in, LaunchSpec out.

A peer's URLs are only known at launch (its ports come from the offer), so the member runs
``<member_python> -m mesos_stateful.workloads.etcd.bootstrap ${MESOS_SANDBOX}/etcd-member.json``.
The file (expanded by the executor) names the peer (``<member id>.<incarnation>``, unique per
launch), its URLs ``http://${HOST}:${PORT_PEER}`` / ``http://${HOST}:${PORT_CLIENT}``, its data
directory (the member's persistent volume, ``${MESOS_SANDBOX}/<volume>``), the instance's
settings as etcd flags, and the client URLs of the peers RUNNING now. A data directory with a
member in it is restarted as that member. Otherwise, with no running peer, the bootstrap starts
a new one-member cluster; else it adds itself through the member API of a running peer and joins
it (``--initial-cluster-state existing``).

With the Docker runtime (``InstanceSpec.runtime``) the bootstrap runs with the image's Python
(setting ``image_python``, ``common.images.IMAGE_PYTHON``) and the image's etcd (``docker_etcd``,
Debian's ``/usr/bin/etcd``) in the instance's image or ``default_image``
(``common.images.ETCD_IMAGE``); the checks run in the executor, outside the container, with
``member_python`` as for processes.

Readiness: the peer is healthy (etcd's /health: leader, quorum read) and listed as a started
voting member. It needs a quorum of peers running: after a restart of every peer they must be
launched together (not one after another, each waiting for the previous one to be ready).
Health: the client port accepts connections (a cluster without quorum must not get its members
killed one by one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2, workload_service_pb2
from mesos_stateful.workloads.etcd.description import CLIENT_PORT as CLIENT
from mesos_stateful.workloads.etcd.description import CONFIG_KEYS, NAME, PEER_PORT
from mesos_stateful.workloads.etcd.member_file import FILE_NAME, MemberFile
from mesos_stateful.workloads.etcd.settings import EtcdSettings

BOOTSTRAP_MODULE = "mesos_stateful.workloads.etcd.bootstrap"
CHECK_MODULE = "mesos_stateful.workloads.etcd.check"
CLIENT_URL = "http://${HOST}:${PORT_CLIENT}"
PEER_URL = "http://${HOST}:${PORT_PEER}"

_INT = re.compile(r"^[0-9]{1,15}$")
_RETENTION = re.compile(r"^[0-9]{1,9}(\.[0-9]+)?[smh]?$")


def effective_config(given: Mapping[str, str]) -> dict[str, str]:
    """The instance's settings over the defaults; InvalidArgument on unknown keys or bad values."""
    keys = {k.name: k for k in CONFIG_KEYS}
    bad: dict[str, str] = {}
    for name, value in given.items():
        key = keys.get(name)
        field = f"spec.config.{name}"
        if key is None:
            bad[field] = f"unknown setting; known: {', '.join(sorted(keys))}"
        elif key.allowed_values and value not in key.allowed_values:
            bad[field] = f"must be one of {', '.join(key.allowed_values)}"
        elif name == "auto-compaction-retention" and not _RETENTION.match(value):
            bad[field] = 'must be a duration such as "1h" or a whole number'
        elif not key.allowed_values and name != "auto-compaction-retention" and not _INT.match(value):
            bad[field] = "must be a whole number"
    if bad:
        raise sdk.InvalidArgument("invalid etcd settings", bad)
    config = {name: given.get(name, key.default_value) for name, key in keys.items()}
    heartbeat, election = int(config["heartbeat-interval"]), int(config["election-timeout"])
    if heartbeat <= 0 or election < 5 * heartbeat:
        raise sdk.InvalidArgument(
            "invalid etcd settings",
            {"spec.config.election-timeout": "must be at least 5 times heartbeat-interval (both > 0)"},
        )
    return config


def member_name(member: types_pb2.Member) -> str:
    """etcd member name, unique per launch: a replacement never reuses its predecessor's."""
    return f"{member.id}.{member.incarnation}"


def client_url(member: types_pb2.Member) -> str | None:
    port = member.ports.get(CLIENT, 0)
    return f"http://{member.host}:{port}" if member.host and port else None


def peer_url(member: types_pb2.Member) -> str | None:
    port = member.ports.get(PEER_PORT, 0)
    return f"http://{member.host}:{port}" if member.host and port else None


def running_endpoints(context: workload_service_pb2.CallbackContext) -> list[str]:
    """Client URLs of the other peers that are RUNNING, by ordinal."""
    urls = []
    for m in sdk.others(context):
        url = client_url(m)
        if m.state == types_pb2.MEMBER_STATE_RUNNING and url:
            urls.append(url)
    return urls


def build_launch(
    context: workload_service_pb2.CallbackContext, settings: EtcdSettings
) -> types_pb2.LaunchSpec:
    """The LaunchSpec of ``context.member_id`` (identity and resources are added by lifecycle)."""
    me = sdk.member_in_role(context, types_pb2.ROLE_PEER)
    config = effective_config(context.instance.spec.config)
    name = member_name(me)
    docker = sdk.in_docker(context)
    member_file = MemberFile(
        name=name,
        etcd=settings.docker_etcd if docker else settings.etcd,
        # The member's persistent volume: a peer relaunched in place restarts on it as the same
        # etcd member (same id, same peer URL: its ports are kept).
        data_dir=sdk.data_dir(me),
        peer_url=PEER_URL,
        client_url=CLIENT_URL,
        cluster_token=context.instance.spec.name,
        endpoints=running_endpoints(context),
        flags=config,
        join_timeout_seconds=settings.join_timeout_seconds,
        request_timeout_seconds=settings.request_timeout_seconds,
    )
    readiness = types_pb2.Check(
        command=types_pb2.CommandCheck(
            argv=[settings.member_python, "-m", CHECK_MODULE, "--endpoint", CLIENT_URL, "--name", name]
        ),
        interval_ms=settings.check_interval_ms,
        # Generous: a Python start plus two HTTP calls can take seconds on a loaded agent.
        timeout_ms=10000,
    )
    health = types_pb2.Check(
        tcp=types_pb2.TcpCheck(port_name=CLIENT),
        interval_ms=settings.health_interval_ms,
        timeout_ms=5000,
        grace_period_ms=30000,
    )
    return types_pb2.LaunchSpec(
        instance=context.instance.spec.name,
        member_id=me.id,
        workload=NAME,
        role=me.role,
        port_names=[CLIENT, PEER_PORT],
        argv=[
            settings.image_python if docker else settings.member_python,
            "-m",
            BOOTSTRAP_MODULE,
            "${MESOS_SANDBOX}/" + FILE_NAME,
        ],
        files=[
            types_pb2.FileSpec(
                path=FILE_NAME, content=member_file.to_json().encode(), mode=0o644, expand=True
            )
        ],
        runtime=types_pb2.RUNTIME_DOCKER if docker else types_pb2.RUNTIME_PROCESS,
        image=context.instance.spec.image or settings.default_image,
        readiness=readiness,
        health=health,
        kill_grace_seconds=10,
        placement=context.instance.spec.placement,
    )
