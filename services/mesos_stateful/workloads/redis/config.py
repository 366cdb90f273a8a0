"""The launch of one Redis member (the Config answer). Pure: context in, LaunchSpec out.

The member runs ``redis-server <sandbox>/redis-auth.conf --port ${PORT_REDIS} --bind ${HOST} ...``:

- the password (``requirepass`` / ``masterauth``) lives only in ``redis-auth.conf``, written into
  the sandbox with mode 0600 and not expanded; it never appears on argv (``ps`` shows argv) or in
  the environment, and is never logged;
- data (RDB, append-only dir) goes to the member's persistent volume (``--dir
  ${MESOS_SANDBOX}/<volume>``, see ``base.volume_path``): a member restarted in place loads it.
  Files written fresh for every task (auth file, probe script) stay in the sandbox. A marker file
  in the volume (``.stateful-member``) makes the executor create the directory when no volume is
  mounted (``--dir`` must exist);
- ``appendonly yes`` / ``appendfsync always`` by default (``everysec`` on request). With
  ``everysec`` the AOF ``write()`` normally
  precedes the reply, so a crash of the process loses nothing it answered; but with ``everysec``
  Redis postpones that write (up to 2 s) while a background fsync is still running, and replies
  anyway: a kill -9 then loses those writes on that member (measured with Redis 7.0). An
  acknowledged write (``WAIT 1``) is also in a replica's memory, so one crash loses nothing;
  ``appendfsync always`` closes the window (write and fsync before any reply). A SIGTERM
  (Mesos kill) flushes and fsyncs the AOF before exiting;
- a replica starts with ``--replicaof <master host> <master port>`` from the instance's master;
- a SLAVE with no master in the instance (every member restarted on its volume: a cold start)
  starts as a read-only replica of ``127.0.0.1:0``, an address nothing can listen on: it refuses
  writes (``READONLY``), serves its data for reads, keeps its dataset (no sync can ever start)
  and its readiness only needs PING and ``role:slave``. StartSlave later re-points it.
  (``min-replicas-to-write`` is not the tool: that member would be a *master* refusing writes,
  expiring keys on its own and looking promoted to MasterLost);
- ``--repl-diskless-sync-delay 0``: the default 5 s delays every new replica's first full sync;
- self-fencing: when the instance's spec has more than one member, every member (a replica may
  be promoted) starts with ``--min-replicas-to-write 1 --min-replicas-max-lag <setting>``: as a
  master it refuses writes (``NOREPLICAS``) once no replica has acknowledged within that many
  seconds (Redis docs, replication, "Allow writes only with N attached replicas"). Inert on a
  replica. With a single member it is 0 (off). The running master is kept in step by the
  servicer (StartMaster, SlaveRunning, RemoveMember: :func:`min_replicas_to_write`).

With the Docker runtime (``InstanceSpec.runtime``) the member is the same command with the image's
binary (setting ``docker_redis_server``, Debian's ``/usr/bin/redis-server``) in the instance's image
or ``default_image`` (``common.images.REDIS_IMAGE``); the container shares the agent's network and
sees the sandbox and volume at their own paths, so every other argument is the same.

Readiness and health are command checks (setting ``probe``), run by the executor outside any
container:

- ``python`` (default): ``<probe_python> -m mesos_stateful.workloads.redis.probe``. For the
  process runtime the executor runs on the same machine and venv as this service, so this
  service's interpreter is used. It reads the password from ``redis-auth.conf`` in the sandbox.
- ``redis-cli``: ``sh <sandbox>/redis-probe.sh``, a script (mode 0700) that passes the password
  to redis-cli in ``REDISCLI_AUTH``; needs only sh, grep and redis-cli where the executor runs
  (an agent without the suite's venv).

Either way no secret is on the check's argv.
"""

from __future__ import annotations

from collections.abc import Mapping

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2, workload_service_pb2
from mesos_stateful.workloads.redis.description import CONFIG_KEYS, NAME, PASSWORD, PORT, VERSION
from mesos_stateful.workloads.redis.settings import RedisSettings

AUTH_FILE = "redis-auth.conf"
PROBE_SCRIPT = "redis-probe.sh"
PROBE_MODULE = "mesos_stateful.workloads.redis.probe"
PORT_VAR = "${PORT_" + PORT.upper().replace("-", "_") + "}"
VOLUME_MARKER = ".stateful-member"
# Where a replica with no master to follow points: nothing can listen on port 0, so it never
# connects (and never full-syncs over its data).
NOWHERE = ("127.0.0.1", 0)


def min_replicas_to_write(instance: types_pb2.Instance) -> int:
    """``min-replicas-to-write`` for the instance's master: 1 when its spec has more than one
    member (a master cut off from every replica must stop taking writes), else 0 (off: a single
    member has nobody to acknowledge)."""
    return 1 if instance.spec.replicas > 1 else 0


def effective_config(given: Mapping[str, str]) -> dict[str, str]:
    """The instance's settings over the defaults; InvalidArgument on unknown keys or values."""
    keys = {k.name: k for k in CONFIG_KEYS}
    bad: dict[str, str] = {}
    for name, value in given.items():
        key = keys.get(name)
        if key is None:
            bad[f"spec.config.{name}"] = f"unknown setting; known: {', '.join(sorted(keys))}"
        elif key.allowed_values and value not in key.allowed_values:
            bad[f"spec.config.{name}"] = f"must be one of {', '.join(key.allowed_values)}"
        elif "\n" in value or "\r" in value:
            bad[f"spec.config.{name}"] = "must be one line"
    if bad:
        raise sdk.InvalidArgument("invalid redis settings", bad)
    return {name: given.get(name, key.default_value) for name, key in keys.items()}


def quote(value: str) -> str:
    """A redis.conf double-quoted string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def auth_file(password: str) -> types_pb2.FileSpec:
    content = f"requirepass {quote(password)}\nmasterauth {quote(password)}\n"
    return types_pb2.FileSpec(path=AUTH_FILE, content=content.encode(), mode=0o600, expand=False)


def probe_script(password: str) -> types_pb2.FileSpec:
    """The redis-cli probe: a sh script with the password inside (mode 0700, not expanded); the
    check runs it with the task's environment (HOST, PORT_REDIS)."""
    quoted = "'" + password.replace("'", "'\\''") + "'"
    script = f"""#!/bin/sh
# Readiness/health probe of this redis member: PING; with --replica, also an up-to-date link;
# with --standby, a replica (read-only) that follows nobody yet.
REDISCLI_AUTH={quoted}
export REDISCLI_AUTH
cli() {{ redis-cli -h "$HOST" -p "${PORT_VAR[2:-1]}" "$@"; }}
[ "$(cli ping)" = "PONG" ] || exit 1
[ "$1" = "--replica" ] || [ "$1" = "--standby" ] || exit 0
info="$(cli info replication | tr -d '\\r')"
printf '%s\\n' "$info" | grep -qx 'role:slave' || exit 1
[ "$1" = "--standby" ] && exit 0
printf '%s\\n' "$info" | grep -qx 'master_link_status:up' || exit 1
printf '%s\\n' "$info" | grep -qx 'master_sync_in_progress:0' || exit 1
aof="$(cli info persistence | tr -d '\\r')"
printf '%s\\n' "$aof" | grep -qx 'aof_rewrite_in_progress:0' || exit 1
printf '%s\\n' "$aof" | grep -qx 'aof_rewrite_scheduled:0'
"""
    return types_pb2.FileSpec(path=PROBE_SCRIPT, content=script.encode(), mode=0o700, expand=False)


#: Timeout of one readiness or health probe (ms), as MySQL's and etcd's readiness checks.
PROBE_TIMEOUT_MS = 10_000


def probe_check(settings: RedisSettings, *, mode: str = "", grace_ms: int = 0) -> types_pb2.Check:
    """``mode``: "" (PING), "replica" (also an up-to-date link to the master) or "standby" (also
    ``role:slave``; no master needed)."""
    if settings.probe == "redis-cli":
        argv = ["sh", "${MESOS_SANDBOX}/" + PROBE_SCRIPT]
    else:
        argv = [
            settings.probe_python,
            "-m",
            PROBE_MODULE,
            "--host",
            "${HOST}",
            "--port",
            PORT_VAR,
            "--auth-file",
            "${MESOS_SANDBOX}/" + AUTH_FILE,
        ]
    if mode:
        argv.append("--" + mode)
    return types_pb2.Check(
        command=types_pb2.CommandCheck(argv=argv),
        interval_ms=settings.check_interval_ms,
        # The probe is a Python process: on a loaded machine (load average 20+ on 2 cores seen) its
        # start alone took over 3 s, and 3 such timeouts killed healthy members in a loop.
        timeout_ms=PROBE_TIMEOUT_MS,
        grace_period_ms=grace_ms,
    )


def server_binary(config: Mapping[str, str], settings: RedisSettings) -> str:
    """The redis-server the process runtime runs: the build named by config ``version`` (one of
    ``redis_server_versions``), else ``redis_server``. An unknown name: InvalidArgument."""
    version = config.get(VERSION, "")
    if not version:
        return settings.redis_server
    binary = settings.redis_server_versions.get(version)
    if binary is None:
        known = ", ".join(sorted(settings.redis_server_versions)) or "none configured"
        problem = f"unknown version {version!r} (known: {known})"
        raise sdk.InvalidArgument("invalid redis settings", {f"spec.config.{VERSION}": problem})
    return binary


def build_launch(
    context: workload_service_pb2.CallbackContext, settings: RedisSettings
) -> types_pb2.LaunchSpec:
    """The LaunchSpec of ``context.member_id`` in its role (identity and resources are added by
    lifecycle)."""
    me = sdk.member_in_role(context, types_pb2.ROLE_MASTER, types_pb2.ROLE_SLAVE)
    password = context.secrets.get(PASSWORD, "")
    if not password:
        raise sdk.InvalidArgument(
            f"secret {PASSWORD!r} is missing", {f"context.secrets.{PASSWORD}": "required"}
        )
    config = effective_config(context.instance.spec.config)
    docker = sdk.in_docker(context)
    argv = [
        settings.docker_redis_server if docker else server_binary(config, settings),
        "${MESOS_SANDBOX}/" + AUTH_FILE,
        "--port",
        PORT_VAR,
        "--bind",
        "${HOST}",
        "--dir",
        sdk.data_dir(me),
        "--daemonize",
        "no",
        "--replica-announce-ip",
        "${HOST}",
        "--repl-diskless-sync-delay",
        "0",
        # A replica never takes writes (the default, stated: a demoted master must not either).
        "--replica-read-only",
        "yes",
        "--appendonly",
        config["appendonly"],
        "--appendfsync",
        config["appendfsync"],
        "--save",
        config["save"],
        "--maxmemory",
        config["maxmemory"],
        "--maxmemory-policy",
        config["maxmemory-policy"],
        "--min-replicas-to-write",
        str(min_replicas_to_write(context.instance)),
        "--min-replicas-max-lag",
        str(settings.min_replicas_max_lag),
    ]
    mode = ""
    if me.role == types_pb2.ROLE_SLAVE:
        if sdk.has_master(context):
            master = sdk.master(context)
            if master.id == me.id:
                raise sdk.FailedPrecondition(f"member {me.id} is both the replica and the master")
            host, port = sdk.endpoint(master, PORT)
            argv += ["--replicaof", host, str(port)]
            mode = "replica"
        else:
            argv += ["--replicaof", NOWHERE[0], str(NOWHERE[1])]
            mode = "standby"
    marker = types_pb2.FileSpec(
        path=f"{sdk.volume_path(me)}/{VOLUME_MARKER}", content=f"{me.id}\n".encode(), mode=0o644
    )
    return types_pb2.LaunchSpec(
        instance=context.instance.spec.name,
        member_id=me.id,
        workload=NAME,
        role=me.role,
        port_names=[PORT],
        argv=argv,
        files=[auth_file(password), marker]
        + ([probe_script(password)] if settings.probe == "redis-cli" else []),
        runtime=types_pb2.RUNTIME_DOCKER if docker else types_pb2.RUNTIME_PROCESS,
        image=context.instance.spec.image or settings.default_image,
        readiness=probe_check(settings, mode=mode),
        health=probe_check(settings, grace_ms=settings.health_grace_period_ms),
        kill_grace_seconds=10,
        placement=context.instance.spec.placement,
    )
