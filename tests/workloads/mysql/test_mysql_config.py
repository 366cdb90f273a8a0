"""Config answers of the MySQL workload (pure) and its settings and GTID helpers."""

from __future__ import annotations

import json

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.common.images import MARIADB_IMAGE
from mesos_stateful.executor.expand import Expander
from mesos_stateful.testing.workloads import context, instance, pending_member
from mesos_stateful.workloads import base
from mesos_stateful.workloads.mysql import gtid
from mesos_stateful.workloads.mysql.bootstrap import init_sql
from mesos_stateful.workloads.mysql.config import build_launch, effective_config, server_id
from mesos_stateful.workloads.mysql.description import description
from mesos_stateful.workloads.mysql.member_file import MemberFile
from mesos_stateful.workloads.mysql.settings import MysqlSettings

SECRETS = {"admin_password": "a'b\\c ${HOST}", "replication_password": "r$p"}
MASTER, SLAVE = types_pb2.ROLE_MASTER, types_pb2.ROLE_SLAVE


def settings(**kw: object) -> MysqlSettings:
    return MysqlSettings(register_in_state=False, **kw)  # type: ignore[arg-type]


def running(ordinal: int, role: types_pb2.Role, port: int) -> types_pb2.Member:
    m = pending_member("db", ordinal, role)
    m.state, m.host, m.ports["mysql"], m.incarnation = types_pb2.MEMBER_STATE_RUNNING, "10.0.0.1", port, 1
    return m


def launch_of(
    ordinal: int,
    members: list[types_pb2.Member],
    config: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
) -> types_pb2.LaunchSpec:
    ctx = context(
        instance("db", "mysql", members, config), f"db-{ordinal}", SECRETS if secrets is None else secrets
    )
    return build_launch(ctx, settings())


def files(launch: types_pb2.LaunchSpec) -> dict[str, types_pb2.FileSpec]:
    return {f.path: f for f in launch.files}


def test_description() -> None:
    d = description()
    assert d.name == "mysql" and d.topology == types_pb2.TOPOLOGY_MASTER_REPLICA
    assert list(d.port_names) == ["mysql"]
    assert list(d.secret_names) == ["admin_password", "replication_password"]
    assert {k.name for k in d.config_keys} >= {"innodb_buffer_pool_size", "max_connections"}


def test_master_launch() -> None:
    launch = launch_of(0, [pending_member("db", 0, MASTER)], {"max_connections": "50"})
    assert launch.member_id == "db-0" and launch.workload == "mysql" and launch.role == MASTER
    assert list(launch.port_names) == ["mysql"]
    assert launch.argv[1:] == ["-m", "mesos_stateful.workloads.mysql.bootstrap", "${MESOS_SANDBOX}"]
    cnf = files(launch)["my.cnf"]
    assert cnf.expand and cnf.mode == 0o600
    text = cnf.content.decode()
    for line in (
        "bind_address=${HOST}",
        "port=${PORT_MYSQL}",
        "datadir=${MESOS_SANDBOX}/data/datadir",  # in the persistent volume
        "skip_slave_start=ON",
        "log_bin=mysql-bin",
        "binlog_format=ROW",
        "gtid_strict_mode=ON",
        "log_slave_updates=ON",
        "read_only=OFF",
        "max_connections=50",
        "innodb_buffer_pool_size=128M",
    ):
        assert line in text.splitlines()
    # Every ${VAR} is one the executor provides.
    expander = Expander({"HOST": "h", "PORT_MYSQL": "1", "MESOS_SANDBOX": "/s"})
    expander(text)
    assert not expander.unknown
    member = files(launch)["mysql-member.json"]
    assert not member.expand and member.mode == 0o600
    spec = MemberFile.from_json(member.content.decode())
    assert spec.admin_password == SECRETS["admin_password"] and not spec.replica
    # Secrets only in that file: not on argv, env, checks or my.cnf.
    visible = json.dumps(
        [list(launch.argv), dict(launch.env), str(launch.readiness), str(launch.health), text]
    )
    assert "a'b" not in visible and "r$p" not in visible
    assert launch.readiness.command.argv[-1] != "--replica"
    assert launch.image == MARIADB_IMAGE


def test_replica_launch_follows_the_master() -> None:
    members = [running(0, MASTER, 3306), pending_member("db", 1, SLAVE)]
    launch = launch_of(1, members)
    assert "read_only=ON" in files(launch)["my.cnf"].content.decode().splitlines()
    spec = MemberFile.from_json(files(launch)["mysql-member.json"].content.decode())
    assert spec.replica and (spec.master_host, spec.master_port) == ("10.0.0.1", 3306)
    assert launch.readiness.command.argv[-1] == "--replica"
    # Health is a login (a stopped mariadbd still accepts TCP connections), never --replica.
    health = list(launch.health.command.argv)
    assert "mesos_stateful.workloads.mysql.check" in health and "--replica" not in health
    assert launch.health.max_consecutive_failures == 3


def test_slave_without_master_starts_read_only_and_follows_nobody() -> None:
    # A cold start: every member relaunched on its volume as SLAVE; nobody is MASTER.
    members = [pending_member("db", o, SLAVE) for o in range(3)]
    members[0].volume.CopyFrom(types_pb2.Volume(persistence_id="db-0.v1", container_path="vol"))
    launch = launch_of(0, members)
    text = files(launch)["my.cnf"].content.decode().splitlines()
    assert "read_only=ON" in text and "datadir=${MESOS_SANDBOX}/vol/datadir" in text
    spec = MemberFile.from_json(files(launch)["mysql-member.json"].content.decode())
    assert spec.replica and spec.standby and spec.master_host == "" and spec.volume == "vol"
    assert launch.readiness.command.argv[-1] == "--standby"


def test_member_file_volume_default_is_the_base_constant() -> None:
    assert MemberFile.__dataclass_fields__["volume"].default == base.DATA_DIR


def test_gtid_sets_compare_as_sets() -> None:
    a = gtid.GtidSet(["0-1-10"])
    ahead = gtid.GtidSet(["0-1-12"])
    # Promoted at 10, then wrote 11 and 12 itself: still holds a's history.
    promoted = gtid.GtidSet(["0-2-12", "0-1-10,0-2-12"])
    assert ahead.contains(a) and not a.contains(ahead)
    assert promoted.contains(a)
    # Same number, other transactions: diverged both ways.
    assert not promoted.contains(ahead) and not ahead.contains(promoted)
    assert not gtid.GtidSet(["0-2-10"]).contains(a)
    # Domains are independent; an empty member is held by everyone.
    two = gtid.GtidSet(["0-1-10,1-5-3"])
    assert two.contains(a) and not a.contains(two)
    assert a.contains(gtid.GtidSet([""])) and str(gtid.GtidSet([])) == ""


def test_replica_of_a_master_without_address_is_retried() -> None:
    with pytest.raises(errors.Unavailable):
        launch_of(1, [pending_member("db", 0, MASTER), pending_member("db", 1, SLAVE)])


def test_server_ids_unique_per_member_and_launch() -> None:
    ids = {server_id(o, i) for o in range(10) for i in range(1, 50)}
    assert len(ids) == 10 * 49 and all(0 < s < 2**32 for s in ids)
    m = pending_member("db", 2, MASTER)
    m.incarnation = 3
    text = files(launch_of(2, [m]))["my.cnf"].content.decode()
    assert f"server_id={server_id(2, 3)}" in text.splitlines()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"nope": "1"}, "spec.config.nope"),
        ({"max_connections": "ten"}, "spec.config.max_connections"),
        ({"max_connections": "0"}, "spec.config.max_connections"),
        ({"innodb_buffer_pool_size": "1G\ninit_file=/etc/x"}, "spec.config.innodb_buffer_pool_size"),
        ({"character_set_server": "${HOST}"}, "spec.config.character_set_server"),
        ({"sync_binlog": "2"}, "spec.config.sync_binlog"),
    ],
)
def test_bad_settings_rejected(config: dict[str, str], field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as error:
        effective_config(config)
    assert field in error.value.fields


def test_missing_secret_and_bad_role_rejected() -> None:
    with pytest.raises(errors.InvalidArgument):
        launch_of(0, [pending_member("db", 0, MASTER)], secrets={"admin_password": "x"})
    with pytest.raises(errors.InvalidArgument):
        launch_of(0, [pending_member("db", 0, types_pb2.ROLE_PEER)])


def test_settings_validation() -> None:
    with pytest.raises(SystemExit):
        MysqlSettings.load(["--admin-user", "bad name"])
    with pytest.raises(SystemExit):
        MysqlSettings.load(["--promote-timeout-seconds", "60"])
    assert MysqlSettings.load([]).listen == "127.0.0.1:7402"


def test_init_sql_quotes_passwords() -> None:
    spec = MemberFile.from_json(
        files(launch_of(1, [running(0, MASTER, 3306), pending_member("db", 1, SLAVE)]))[
            "mysql-member.json"
        ].content.decode()
    )
    text = init_sql(spec, hostname="h'x")
    assert "'a\\'b\\\\c ${HOST}'" in text
    assert text.startswith("SET sql_log_bin = 0;")
    # A replica is pointed at its master at every start (new, or restarted on its volume).
    assert "CHANGE MASTER TO MASTER_HOST='10.0.0.1', MASTER_PORT=3306" in text
    # A replica with no master (a cold start) replicates from nobody.
    standby = MemberFile.from_json(
        files(launch_of(1, [pending_member("db", 0, SLAVE), pending_member("db", 1, SLAVE)]))[
            "mysql-member.json"
        ].content.decode()
    )
    assert standby.standby and "CHANGE MASTER" not in init_sql(standby, hostname="h")


def test_gtid_positions() -> None:
    assert gtid.parse("0-1-42,1-7-3") == {0: 42, 1: 3}
    assert gtid.parse("") == {}
    assert gtid.reached({0: 5}, {0: 5}) and not gtid.reached({0: 4}, {0: 5})
    assert not gtid.reached({0: 9}, {1: 1}) and gtid.reached({0: 1}, {})
    assert gtid.merge({0: 1, 1: 5}, {0: 3}) == {0: 3, 1: 5}
    with pytest.raises(ValueError):
        gtid.parse("0-1")
