"""The launch of one MariaDB member (the Config answer). Pure: context in, LaunchSpec out.

The member runs ``<member_python> -m mesos_stateful.workloads.mysql.bootstrap ${MESOS_SANDBOX}``,
which initialises the data directory on first start, writes an init file creating the admin and
replication accounts (and, on a new replica, pointing it at the master), then execs ``mariadbd
--defaults-file=my.cnf``. Files in the sandbox:

- ``my.cnf`` (expanded, 0600): the datadir in the member's persistent volume
  (``<volume>/datadir``: InnoDB, binary and relay logs, replication state), tmpdir /
  secure_file_priv / pid file in the sandbox, ``skip_slave_start``, ``bind-address
  ${HOST}``, ``port ${PORT_MYSQL}``, a ``server_id`` unique per member and launch, the binary log
  with row format and GTIDs (``gtid_strict_mode``, ``log_slave_updates`` so a promoted replica
  can serve every transaction to the others), ``read_only`` on replicas, the user's settings;
- ``mysql-member.json`` (0600, not expanded): binaries, accounts and passwords, the master to
  follow. Passwords are never on argv or in the environment.

With the Docker runtime (``InstanceSpec.runtime``) the member is the same bootstrap run by the image's
Python (setting ``image_python``, ``common.images.IMAGE_PYTHON``) with the image's binaries
(``docker_mariadbd``, ``docker_install_db``: Debian's paths) in the instance's image or
``default_image`` (``common.images.MARIADB_IMAGE``). The container shares the agent's network and
sees the sandbox and volume at their own paths; the checks run in the executor, outside the
container, with ``member_python`` as for processes.

Accounts (all created by the bootstrap on every member, never replicated): ``admin`` for people
(every privilege but READ_ONLY ADMIN, so it cannot write to a replica by mistake), ``stateful``
for the suite (promotion, re-pointing, checks) and ``replicator`` for replication. The first two
use the ``admin_password`` secret, the last ``replication_password``.

Readiness: the operator account can log in; on a replica also both replication threads run and
it has applied the master's GTID position as of its start; on a SLAVE with no master in the
instance (a cold start) only that it is read-only. Health: the port accepts connections.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2, workload_service_pb2
from mesos_stateful.workloads.mysql.description import (
    ADMIN_PASSWORD,
    CONFIG_KEYS,
    NAME,
    PORT,
    REPLICATION_PASSWORD,
    VERSION,
)
from mesos_stateful.workloads.mysql.member_file import DATADIR, DEFAULTS_FILE, FILE_NAME, MemberFile
from mesos_stateful.workloads.mysql.settings import MysqlSettings
from mesos_stateful.workloads.mysql.sql import SEMI_SYNC_TIMEOUT_MS

BOOTSTRAP_MODULE = "mesos_stateful.workloads.mysql.bootstrap"
CHECK_MODULE = "mesos_stateful.workloads.mysql.check"
PORT_VAR = "${PORT_" + PORT.upper().replace("-", "_") + "}"

_SIZE = re.compile(r"^[0-9]{1,12}[KMGkmg]?$")
_INT = re.compile(r"^[0-9]{1,6}$")
_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "innodb_buffer_pool_size": (_SIZE, 'a size such as "128M" or "1G"'),
    "max_allowed_packet": (_SIZE, 'a size such as "16M"'),
    "max_connections": (_INT, "a whole number"),
    "character_set_server": (_NAME, "a character set name such as utf8mb4"),
}


def effective_config(given: Mapping[str, str]) -> dict[str, str]:
    """The instance's settings over the defaults; InvalidArgument on unknown keys or bad values
    (values go into my.cnf, so only known shapes pass)."""
    keys = {k.name: k for k in CONFIG_KEYS}
    bad: dict[str, str] = {}
    for name, value in given.items():
        key = keys.get(name)
        field = f"spec.config.{name}"
        if key is None:
            bad[field] = f"unknown setting; known: {', '.join(sorted(keys))}"
        elif key.allowed_values and value not in key.allowed_values:
            bad[field] = f"must be one of {', '.join(key.allowed_values)}"
        elif name in _FORMATS and not _FORMATS[name][0].match(value):
            bad[field] = f"must be {_FORMATS[name][1]}"
        elif name == "max_connections" and not 1 <= int(value) <= 100000:
            bad[field] = "must be between 1 and 100000"
    if bad:
        raise sdk.InvalidArgument("invalid mysql settings", bad)
    return {name: given.get(name, key.default_value) for name, key in keys.items()}


def server_id(ordinal: int, incarnation: int) -> int:
    """Unique per member and per launch of it: a relaunched member never reuses the id of its
    earlier incarnations (their GTIDs stay distinguishable)."""
    return (ordinal + 1) * 100000 + incarnation % 100000


def my_cnf(
    *,
    member_id: str,
    server: int,
    replica: bool,
    config: Mapping[str, str],
    volume: str = sdk.DATA_DIR,
    semi_sync_master: bool = False,
) -> str:
    lines = [
        f"# {member_id}: generated by the mysql workload service (variables expanded at launch).",
        "[mariadbd]",
        # In the persistent volume: data, binary and relay logs, replication state.
        f"datadir=${{MESOS_SANDBOX}}/{volume}/{DATADIR}",
        "tmpdir=${MESOS_SANDBOX}/tmp",
        # LOAD DATA / SELECT ... INTO OUTFILE only inside the sandbox.
        "secure_file_priv=${MESOS_SANDBOX}/files",
        "pid_file=${MESOS_SANDBOX}/mariadbd.pid",
        # Relative: the server resolves it in the datadir (its working directory), which keeps the
        # path short whatever the sandbox path is (unix socket paths are limited to 107 bytes).
        "socket=mysqld.sock",
        "bind_address=${HOST}",
        f"port={PORT_VAR}",
        "skip_name_resolve=ON",
        "skip_symbolic_links=ON",
        f"server_id={server}",
        "log_bin=mysql-bin",
        "relay_log=relay-bin",
        "binlog_format=ROW",
        "gtid_strict_mode=ON",
        "log_slave_updates=ON",
        f"read_only={'ON' if replica else 'OFF'}",
        # Replication starts only when told (the init file or StartSlave): a member restarted on
        # its volume must not reconnect by itself to the master it followed before.
        "skip_slave_start=ON",
        # Replicas reconnect to a (new) master every second, not every 60 s.
        "slave_net_timeout=10",
        # Semi-synchronous replication (MariaDB docs, "Semisynchronous Replication"): every
        # member acknowledges as a replica; the master side waits AFTER_SYNC, with no timeout
        # that would fall back to asynchronous, even with no replica attached. It is on for a
        # master launched into an instance that has replicas holding data (restarted in place);
        # otherwise StartMaster / SlaveRunning turn it on once a replica exists.
        "rpl_semi_sync_slave_enabled=ON",
        "rpl_semi_sync_master_wait_point=AFTER_SYNC",
        "rpl_semi_sync_master_wait_no_slave=ON",
        f"rpl_semi_sync_master_timeout={SEMI_SYNC_TIMEOUT_MS}",
        f"rpl_semi_sync_master_enabled={'ON' if semi_sync_master and not replica else 'OFF'}",
    ]
    lines += [f"{name}={value}" for name, value in sorted(config.items())]
    return "\n".join(lines) + "\n"


def readiness(settings: MysqlSettings, *, replica: bool, standby: bool = False) -> types_pb2.Check:
    """Master: the operator logs in. Replica: also replicating and caught up. Standby (a replica
    with no master yet): also read-only; no master needed."""
    argv = [
        settings.member_python,
        "-m",
        CHECK_MODULE,
        "--sandbox",
        "${MESOS_SANDBOX}",
        "--host",
        "${HOST}",
        "--port",
        PORT_VAR,
    ]
    if standby:
        argv.append("--standby")
    elif replica:
        argv.append("--replica")
    # Generous timeout: a Python start plus a login can take seconds on a loaded agent.
    return types_pb2.Check(
        command=types_pb2.CommandCheck(argv=argv), interval_ms=settings.check_interval_ms, timeout_ms=10000
    )


def health(settings: MysqlSettings) -> types_pb2.Check:
    """A login (the readiness check's master mode), not a TCP connect: a stopped or hung mariadbd
    still completes TCP handshakes (the kernel answers from the listen backlog), so a connect
    check would keep a frozen replica "healthy" forever and a failover would wait on it for
    good. Three failed logins in a row (10 s timeout each) kill the task; a merely busy server
    answers a login well within that."""
    check = readiness(settings, replica=False)
    check.interval_ms = settings.health_interval_ms
    check.grace_period_ms = settings.health_grace_period_ms
    check.max_consecutive_failures = 3
    return check


def replicas_expected(context: workload_service_pb2.CallbackContext) -> bool:
    """Whether the instance has a replica (other than ``context.member_id``) that holds data or is
    running: then its master runs semi-sync (commits wait for a replica). Not on a new instance's
    first master, whose replicas are still pending: its own set-up must not wait for them."""
    return any(
        m.role == types_pb2.ROLE_SLAVE
        and (
            m.volume.has_data or m.state in (types_pb2.MEMBER_STATE_RUNNING, types_pb2.MEMBER_STATE_STARTING)
        )
        for m in sdk.others(context)
    )


def _secret(context: workload_service_pb2.CallbackContext, name: str) -> str:
    value = context.secrets.get(name, "")
    if not value:
        raise sdk.InvalidArgument(f"secret {name!r} is missing", {f"context.secrets.{name}": "required"})
    return value


def server_binary(config: Mapping[str, str], settings: MysqlSettings) -> str:
    """The mariadbd the process runtime runs: the build named by config ``version`` (one of
    ``mariadbd_versions``), else ``mariadbd``. An unknown name: InvalidArgument."""
    version = config.get(VERSION, "")
    if not version:
        return settings.mariadbd
    binary = settings.mariadbd_versions.get(version)
    if binary is None:
        known = ", ".join(sorted(settings.mariadbd_versions)) or "none configured"
        problem = f"unknown version {version!r} (known: {known})"
        raise sdk.InvalidArgument("invalid mysql settings", {f"spec.config.{VERSION}": problem})
    return binary


def build_launch(
    context: workload_service_pb2.CallbackContext, settings: MysqlSettings
) -> types_pb2.LaunchSpec:
    """The LaunchSpec of ``context.member_id`` in its role (identity and resources are added by
    lifecycle)."""
    me = sdk.member_in_role(context, types_pb2.ROLE_MASTER, types_pb2.ROLE_SLAVE)
    admin_password = _secret(context, ADMIN_PASSWORD)
    replication_password = _secret(context, REPLICATION_PASSWORD)
    config = effective_config(context.instance.spec.config)
    replica = me.role == types_pb2.ROLE_SLAVE
    master_host, master_port = "", 0
    # A SLAVE with no master in the instance (a cold start: every member restarted on its volume)
    # starts read-only, replicating from nobody, until MasterLost and StartSlave.
    standby = replica and not sdk.has_master(context)
    if replica and not standby:
        master = sdk.master(context)
        if master.id == me.id:
            raise sdk.FailedPrecondition(f"member {me.id} is both the replica and the master")
        if not master.host or not master.ports.get(PORT):
            # The master is being (re)launched: a replica can be configured once it has an address.
            raise sdk.Unavailable(f"master {master.id} has no address yet")
        master_host, master_port = master.host, master.ports[PORT]
    docker = sdk.in_docker(context)
    member_file = MemberFile(
        member_id=me.id,
        replica=replica,
        mariadbd=settings.docker_mariadbd if docker else server_binary(config, settings),
        install_db=settings.docker_install_db if docker else settings.install_db,
        admin_user=settings.admin_user,
        operator_user=settings.operator_user,
        admin_password=admin_password,
        replication_user=settings.replication_user,
        replication_password=replication_password,
        master_host=master_host,
        master_port=master_port,
        catchup_probe_seconds=settings.catchup_probe_seconds,
        connect_timeout_seconds=settings.connect_timeout_seconds,
        volume=sdk.volume_path(me),
    )
    cnf = my_cnf(
        member_id=me.id,
        server=server_id(me.ordinal, me.incarnation),
        replica=replica,
        config={k: v for k, v in config.items() if k != VERSION},
        volume=member_file.volume,
        semi_sync_master=not replica and replicas_expected(context),
    )
    return types_pb2.LaunchSpec(
        instance=context.instance.spec.name,
        member_id=me.id,
        workload=NAME,
        role=me.role,
        port_names=[PORT],
        argv=[
            settings.image_python if docker else settings.member_python,
            "-m",
            BOOTSTRAP_MODULE,
            "${MESOS_SANDBOX}",
        ],
        files=[
            types_pb2.FileSpec(path=DEFAULTS_FILE, content=cnf.encode(), mode=0o600, expand=True),
            types_pb2.FileSpec(path=FILE_NAME, content=member_file.to_json().encode(), mode=0o600),
        ],
        runtime=types_pb2.RUNTIME_DOCKER if docker else types_pb2.RUNTIME_PROCESS,
        image=context.instance.spec.image or settings.default_image,
        readiness=readiness(settings, replica=replica, standby=standby),
        health=health(settings),
        # InnoDB flushes on a clean shutdown; give it time before SIGKILL.
        kill_grace_seconds=30,
        placement=context.instance.spec.placement,
    )
