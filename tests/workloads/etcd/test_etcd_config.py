"""Config answers of the etcd workload (pure), its settings, and the initial-cluster builder."""

from __future__ import annotations

import json

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.testing.workloads import context, expand, instance, pending_member
from mesos_stateful.workloads.etcd import members
from mesos_stateful.workloads.etcd.bootstrap import etcd_argv
from mesos_stateful.workloads.etcd.config import build_launch, effective_config
from mesos_stateful.workloads.etcd.description import description
from mesos_stateful.workloads.etcd.member_file import FILE_NAME, MemberFile
from mesos_stateful.workloads.etcd.servicer import belongs_to
from mesos_stateful.workloads.etcd.settings import EtcdSettings

PEER = types_pb2.ROLE_PEER
ENV = {"HOST": "10.0.0.9", "PORT_CLIENT": "31001", "PORT_PEER": "31002", "MESOS_SANDBOX": "/sb"}


def peer(
    ordinal: int,
    state: types_pb2.MemberState = types_pb2.MEMBER_STATE_RUNNING,
    incarnation: int = 1,
) -> types_pb2.Member:
    m = pending_member("kv", ordinal, PEER)
    m.state, m.incarnation = state, incarnation
    if state != types_pb2.MEMBER_STATE_PENDING:
        m.host = f"10.0.0.{ordinal + 1}"
        m.ports["client"], m.ports["peer"] = 2379, 2380
    return m


def launch_of(
    ordinal: int, ms: list[types_pb2.Member], config: dict[str, str] | None = None
) -> types_pb2.LaunchSpec:
    return build_launch(context(instance("kv", "etcd", ms, config), f"kv-{ordinal}"), EtcdSettings())


def member_file(launch: types_pb2.LaunchSpec) -> MemberFile:
    (f,) = launch.files
    assert f.path == FILE_NAME and f.expand
    return MemberFile.from_json(expand(f.content.decode(), ENV))


def test_description() -> None:
    d = description()
    assert d.name == "etcd" and d.topology == types_pb2.TOPOLOGY_PEERS
    assert list(d.port_names) == ["client", "peer"]
    assert (d.min_replicas, d.max_replicas) == (1, 7)
    assert not d.secret_names


def test_first_peer_starts_a_new_cluster() -> None:
    launch = launch_of(0, [peer(0, types_pb2.MEMBER_STATE_PENDING), peer(1, types_pb2.MEMBER_STATE_PENDING)])
    assert launch.role == PEER and list(launch.port_names) == ["client", "peer"]
    assert launch.argv[1:] == [
        "-m",
        "mesos_stateful.workloads.etcd.bootstrap",
        "${MESOS_SANDBOX}/" + FILE_NAME,
    ]
    spec = member_file(launch)
    assert spec.name == "kv-0.1" and spec.endpoints == []
    assert (spec.peer_url, spec.client_url, spec.data_dir) == (
        "http://10.0.0.9:31002",
        "http://10.0.0.9:31001",
        "/sb/data",
    )
    assert spec.cluster_token == "kv"
    argv = etcd_argv(spec, f"{spec.name}={spec.peer_url}", "new")
    assert "--initial-cluster=kv-0.1=http://10.0.0.9:31002" in argv
    assert "--initial-cluster-state=new" in argv and "--snapshot-count=10000" in argv
    assert launch.readiness.command.argv[-2:] == ["--name", "kv-0.1"]
    assert launch.health.tcp.port_name == "client"


def test_later_peers_get_the_running_peers() -> None:
    ms = [peer(0), peer(1, types_pb2.MEMBER_STATE_LOST), peer(2), peer(3, types_pb2.MEMBER_STATE_PENDING, 4)]
    spec = member_file(launch_of(3, ms))
    assert spec.endpoints == ["http://10.0.0.1:2379", "http://10.0.0.3:2379"]
    assert spec.name == "kv-3.4"  # unique per launch


def test_settings_become_flags() -> None:
    spec = member_file(
        launch_of(0, [peer(0)], {"heartbeat-interval": "50", "auto-compaction-retention": "1h"})
    )
    assert spec.flags["heartbeat-interval"] == "50" and spec.flags["auto-compaction-retention"] == "1h"
    assert json.loads(json.dumps(spec.flags))["election-timeout"] == "1000"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"nope": "1"}, "spec.config.nope"),
        ({"snapshot-count": "-1"}, "spec.config.snapshot-count"),
        ({"auto-compaction-mode": "never"}, "spec.config.auto-compaction-mode"),
        ({"auto-compaction-retention": "1h --foo"}, "spec.config.auto-compaction-retention"),
        ({"election-timeout": "200"}, "spec.config.election-timeout"),
    ],
)
def test_bad_settings_rejected(config: dict[str, str], field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as error:
        effective_config(config)
    assert field in error.value.fields


def test_non_peer_role_rejected() -> None:
    m = peer(0)
    m.role = types_pb2.ROLE_MASTER
    with pytest.raises(errors.InvalidArgument):
        launch_of(0, [m])


def test_initial_cluster_lists_every_member() -> None:
    listed = [
        members.Member(1, "kv-0.1", ("http://a:1",), ("http://a:2",)),
        members.Member(2, "", ("http://b:1",), ()),
        members.Member(3, "", ("http://c:1",), ()),
    ]
    assert members.initial_cluster(listed, 2, "kv-1.2") == (
        "kv-0.1=http://a:1,kv-1.2=http://b:1,unstarted-3=http://c:1"
    )


def test_belongs_to_matches_every_launch_of_the_member() -> None:
    target = peer(1)
    assert belongs_to(members.Member(1, "kv-1.1", (), ()), target)
    assert belongs_to(members.Member(2, "kv-1.7", (), ()), target)
    assert belongs_to(members.Member(3, "", ("http://10.0.0.2:2380",), ()), target)
    assert not belongs_to(members.Member(4, "kv-10.1", (), ()), target)
    assert not belongs_to(members.Member(5, "kv-0.1", ("http://10.0.0.1:2380",), ()), target)


def test_settings_validation() -> None:
    assert EtcdSettings.load([]).listen == "127.0.0.1:7403"
    with pytest.raises(SystemExit):
        EtcdSettings.load(["--request-timeout-seconds", "30"])
