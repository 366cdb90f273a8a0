"""Describe and Config of the Redis workload (no redis-server needed)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from redis_helpers import MASTER, NAME, PASSWORD, SLAVE

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.common.images import REDIS_IMAGE
from mesos_stateful.testing.workloads import WorkloadServer, context, instance, pending_member, serve_workload
from mesos_stateful.workloads.redis.config import AUTH_FILE, PROBE_SCRIPT
from mesos_stateful.workloads.redis.probe import read_password
from mesos_stateful.workloads.redis.servicer import RedisWorkload
from mesos_stateful.workloads.redis.settings import RedisSettings


def master_running() -> types_pb2.Member:
    return types_pb2.Member(
        id=f"{NAME}-0",
        instance=NAME,
        ordinal=0,
        role=MASTER,
        state=types_pb2.MEMBER_STATE_RUNNING,
        host="127.0.0.2",
        ports={"redis": 31001},
    )


async def config(
    workload: WorkloadServer,
    members: list[types_pb2.Member],
    member_id: str,
    settings: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
) -> types_pb2.LaunchSpec:
    ctx = context(
        instance(NAME, "redis", members, settings),
        member_id,
        {"password": PASSWORD} if secrets is None else secrets,
    )
    return (await workload.stub.Config(pb.ConfigRequest(context=ctx))).launch


async def test_describe(workload: WorkloadServer) -> None:
    d = (await workload.stub.Describe(pb.DescribeRequest())).description
    assert d.name == "redis"
    assert d.topology == types_pb2.TOPOLOGY_MASTER_REPLICA
    assert list(d.port_names) == ["redis"]
    assert list(d.secret_names) == ["password"]
    assert d.default_image == REDIS_IMAGE
    assert (d.default_resources.cpus, d.default_resources.mem_mb, d.default_resources.disk_mb) == (
        0.5,
        256,
        1024,
    )
    keys = {k.name: k for k in d.config_keys}
    assert set(keys) >= {"appendonly", "maxmemory", "maxmemory-policy", "save"}
    assert list(keys["appendonly"].allowed_values) == ["yes", "no"]
    assert keys["maxmemory-policy"].default_value == "noeviction"


async def test_config_master(workload: WorkloadServer) -> None:
    members = [pending_member(NAME, 0, MASTER), pending_member(NAME, 1, SLAVE)]
    launch = await config(workload, members, f"{NAME}-0", {"appendonly": "no", "maxmemory": "100mb"})
    argv = list(launch.argv)
    assert launch.member_id == f"{NAME}-0" and launch.role == MASTER and launch.workload == "redis"
    assert list(launch.port_names) == ["redis"]
    assert argv[0] == "redis-server"
    assert argv[argv.index("--port") + 1] == "${PORT_REDIS}"
    assert argv[argv.index("--bind") + 1] == "${HOST}"
    # Data in the member's persistent volume; the marker makes the directory exist without one.
    assert argv[argv.index("--dir") + 1] == "${MESOS_SANDBOX}/data"
    assert any(f.path == "data/.stateful-member" for f in launch.files)
    assert argv[argv.index("--appendonly") + 1] == "no"  # as given
    assert argv[argv.index("--repl-diskless-sync-delay") + 1] == "0"
    assert argv[argv.index("--maxmemory") + 1] == "100mb"
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"  # the default
    assert "--replicaof" not in argv
    # The password is only in the 0600 config file, never on argv or in the environment.
    assert not any(PASSWORD in a or "w0rd" in a for a in argv)
    assert not any("w0rd" in v for v in launch.env.values())
    assert "requirepass" not in argv and "--requirepass" not in argv
    (auth,) = [f for f in launch.files if f.path == AUTH_FILE]
    assert auth.mode == 0o600 and not auth.expand
    assert f"${{MESOS_SANDBOX}}/{AUTH_FILE}" in argv
    assert "--replica" not in launch.readiness.command.argv
    assert launch.health.WhichOneof("kind") == "command"
    assert not any("w0rd" in a for a in launch.readiness.command.argv)


async def test_auth_file_round_trips(workload: WorkloadServer, tmp_path: Path) -> None:
    launch = await config(workload, [pending_member(NAME, 0, MASTER)], f"{NAME}-0")
    (auth,) = [f for f in launch.files if f.path == AUTH_FILE]
    content = auth.content.decode()
    assert "requirepass" in content and "masterauth" in content
    path = tmp_path / "auth.conf"
    path.write_text(content)
    assert read_password(path) == PASSWORD


async def test_config_replica_follows_master(workload: WorkloadServer) -> None:
    members = [master_running(), pending_member(NAME, 1, SLAVE)]
    launch = await config(workload, members, f"{NAME}-1")
    argv = list(launch.argv)
    assert launch.role == SLAVE
    i = argv.index("--replicaof")
    assert argv[i + 1 : i + 3] == ["127.0.0.2", "31001"]
    assert "--replica" in launch.readiness.command.argv
    assert not any("w0rd" in a for a in argv)


async def test_config_rejects_bad_settings(workload: WorkloadServer) -> None:
    members = [pending_member(NAME, 0, MASTER)]
    for bad in ({"appendonly": "maybe"}, {"no-such-key": "1"}):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await config(workload, members, f"{NAME}-0", bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config(workload, members, f"{NAME}-0", secrets={})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_config_replica_without_master_address_fails(workload: WorkloadServer) -> None:
    members = [pending_member(NAME, 0, MASTER), pending_member(NAME, 1, SLAVE)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config(workload, members, f"{NAME}-1")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_unimplemented_defaults(workload: WorkloadServer) -> None:
    ctx = context(instance(NAME, "redis", [master_running()]), f"{NAME}-0", {"password": PASSWORD})
    assert (await workload.stub.SlaveLost(pb.SlaveLostRequest(context=ctx))).replace
    assert (await workload.stub.PeerLost(pb.PeerLostRequest(context=ctx))).replace
    await workload.stub.RemoveMember(pb.RemoveMemberRequest(context=ctx))


async def test_config_redis_cli_probe_keeps_password_off_argv(settings: RedisSettings) -> None:
    settings = settings.model_copy(update={"probe": "redis-cli"})
    async with serve_workload(RedisWorkload(settings)) as workload:
        launch = await config(workload, [master_running(), pending_member(NAME, 1, SLAVE)], f"{NAME}-1")
    (script,) = [f for f in launch.files if f.path == PROBE_SCRIPT]
    assert script.mode == 0o700 and not script.expand
    assert launch.readiness.command.argv[:2] == ["sh", f"${{MESOS_SANDBOX}}/{PROBE_SCRIPT}"]
    assert list(launch.readiness.command.argv[2:]) == ["--replica"]
    assert not any("w0rd" in a for a in [*launch.readiness.command.argv, *launch.health.command.argv])


def test_settings_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEFUL_REDIS_REDIS_SERVER", "/opt/redis/bin/redis-server")
    monkeypatch.setenv("STATEFUL_REDIS_LEASE_TTL_SECONDS", "30")
    s = RedisSettings.load(["--probe", "redis-cli", "--advertise", "10.0.0.5:7401"])
    assert s.redis_server == "/opt/redis/bin/redis-server"
    assert s.lease_ttl_seconds == 30 and s.keepalive_seconds == 10
    assert s.probe == "redis-cli"
    assert s.listen == "127.0.0.1:7401" and s.state_endpoint == "127.0.0.1:7100"
    assert s.advertised_endpoint(1234) == "10.0.0.5:7401"
    assert RedisSettings.load(["--listen", "127.0.0.1:0"]).advertised_endpoint(4321) == "127.0.0.1:4321"
    for bad in (["--lease-ttl-seconds", "1"], ["--advertise", "nohost"], ["--probe", "curl"]):
        with pytest.raises(SystemExit):
            RedisSettings.load(bad)


async def test_config_defaults_are_durable(workload: WorkloadServer) -> None:
    launch = await config(workload, [pending_member(NAME, 0, MASTER)], f"{NAME}-0")
    argv = list(launch.argv)
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--appendfsync") + 1] == "always"
    assert argv[argv.index("--replica-read-only") + 1] == "yes"
    # Files written fresh for each task stay in the sandbox, not in the volume.
    (auth,) = [f for f in launch.files if f.path == AUTH_FILE]
    assert "/" not in auth.path


async def test_config_uses_the_volume_container_path(workload: WorkloadServer) -> None:
    m = pending_member(NAME, 0, MASTER)
    m.volume.CopyFrom(types_pb2.Volume(persistence_id=f"{NAME}-0.v1", container_path="vol/redis"))
    argv = list((await config(workload, [m], f"{NAME}-0")).argv)
    assert argv[argv.index("--dir") + 1] == "${MESOS_SANDBOX}/vol/redis"
    m.volume.container_path = "../escape"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config(workload, [m], f"{NAME}-0")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_config_slave_without_master_is_a_standby_replica(workload: WorkloadServer) -> None:
    # A cold start: every member relaunched on its volume as SLAVE; nobody is MASTER.
    members = [pending_member(NAME, o, SLAVE) for o in range(3)]
    launch = await config(workload, members, f"{NAME}-0")
    argv = list(launch.argv)
    assert launch.role == SLAVE
    i = argv.index("--replicaof")
    assert argv[i + 1 : i + 3] == ["127.0.0.1", "0"]  # nowhere: never connects, never syncs
    assert argv[argv.index("--replica-read-only") + 1] == "yes"
    assert argv[argv.index("--dir") + 1] == "${MESOS_SANDBOX}/data"
    readiness = list(launch.readiness.command.argv)
    assert "--standby" in readiness and "--replica" not in readiness
