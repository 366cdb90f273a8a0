"""The executor's Docker runtime against the real engine: the monitor runs members as containers.

Every container of a test carries the test's own agent-id label: the test finds (and finally
removes) exactly its own containers, never other people's.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container
from executor_helpers import RecordingSink, eventually, make_spec

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import images
from mesos_stateful.executor.docker_runtime import DockerOptions, DockerRuntime, mount_points, translate_path
from mesos_stateful.executor.launch import Launch, build_launch
from mesos_stateful.executor.monitor import Monitor
from mesos_stateful.executor.status import REASON_EXITED, StatusUpdate
from mesos_stateful.testing.ports import free_port

BASE = images.BASE_IMAGE
DEADLINE = 60.0
# A TCP server in the base image (perl-base has IO::Socket): answers every connection with the
# member id, on $HOST:$PORT_CLIENT.
SERVER = (
    "use IO::Socket::INET; $| = 1; my $s = IO::Socket::INET->new(LocalAddr => $ENV{HOST}, "
    'LocalPort => $ENV{PORT_CLIENT}, Listen => 5, ReuseAddr => 1) or die "listen: $!"; '
    'print "listening\\n"; while (my $c = $s->accept) { print $c $ENV{MEMBER_ID}; close $c }'
)


@dataclass
class Member:
    launch: Launch
    runtime: DockerRuntime
    sink: RecordingSink
    monitor: Monitor
    task: asyncio.Task[StatusUpdate]

    async def terminal(self, timeout: float = DEADLINE) -> StatusUpdate:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self.task)


class Harness:
    """Runs monitors on DockerRuntimes labelled with an agent id of the test's own."""

    def __init__(self, engine: docker.DockerClient, tmp_path: Path) -> None:
        self.engine = engine
        self.tmp = tmp_path
        self.agent_id = f"test-runtime-{uuid.uuid4().hex[:12]}"
        self.host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        self.members: list[Member] = []

    def options(self, **overrides: object) -> DockerOptions:
        values: dict[str, object] = {
            "agent_id": self.agent_id,
            "framework_id": "fw-test",
            "executor_id": "ex-test",
        }
        values.update(overrides)
        return DockerOptions(**values)  # type: ignore[arg-type]

    def launch(self, spec: types_pb2.LaunchSpec, *, sandbox: Path | None = None) -> Launch:
        sandbox = sandbox or self.tmp / f"sandbox-{len(self.members)}"
        sandbox.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port(self.host) for name in spec.port_names}
        return build_launch(
            spec,
            task_id=spec.task_id,
            host=self.host,
            ports=ports,
            sandbox=sandbox,
            environ={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        )

    def start(self, launch: Launch, options: DockerOptions | None = None) -> Member:
        runtime = DockerRuntime(options or self.options())
        sink = RecordingSink()
        monitor = Monitor(launch, runtime, sink)
        member = Member(launch, runtime, sink, monitor, asyncio.create_task(monitor.run()))
        self.members.append(member)
        return member

    def containers(self, **labels: str) -> list[Container]:
        wanted = {images.LABEL_AGENT: self.agent_id, **labels}
        filters: dict[str, str | list[str] | bool] = {"label": [f"{k}={v}" for k, v in wanted.items()]}
        return list(self.engine.containers.list(all=True, filters=filters))


@pytest.fixture
async def harness(engine: docker.DockerClient, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(engine, tmp_path)
    yield h
    for member in h.members:
        member.runtime.force_kill_sync()
        if not member.task.done():
            member.task.cancel()
        await asyncio.gather(member.task, return_exceptions=True)
    for container in h.containers():
        container.remove(force=True)


def docker_spec(task_id: str, argv: list[str], **fields: object) -> types_pb2.LaunchSpec:
    fields.setdefault("image", BASE)
    spec = make_spec(argv, runtime=types_pb2.RUNTIME_DOCKER, **fields)
    spec.task_id = task_id
    return spec


async def test_member_container_runs_with_the_launch(harness: Harness) -> None:
    # The persistent volume lives outside the sandbox; the agent links it in as "data".
    volume = harness.tmp / "volumes" / "roles" / "stateful" / "cache-0"
    volume.mkdir(parents=True)
    sandbox = harness.tmp / "sandbox"
    sandbox.mkdir()
    (sandbox / "data").symlink_to(volume)
    script = (
        'echo "$MEMBER_ID $ROLE $GREETING $HOME" > data/written; cat conf/member.conf; '
        'echo "to stderr" >&2; pwd; exec perl -e "$SERVER"'
    )
    spec = docker_spec(
        "cache-0.1",
        ["sh", "-c", script],
        port_names=["client"],
        env={"GREETING": "hello from ${MEMBER_ID}", "SERVER": SERVER},
        files=[types_pb2.FileSpec(path="conf/member.conf", content=b"port ${PORT_CLIENT}\n", expand=True)],
        resources=types_pb2.Resources(cpus=0.5, mem_mb=64),
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="client"), interval_ms=50),
        kill_grace_seconds=5,
    )
    launch = harness.launch(spec, sandbox=sandbox)
    member = harness.start(launch)
    await member.sink.wait_for("TASK_RUNNING", DEADLINE)
    assert member.sink.states == ["TASK_STARTING", "TASK_RUNNING"]
    assert member.sink.seen[0].update.message.startswith("started docker ")

    # Its port answers on the agent's address (the container shares the agent's network).
    port = launch.ports["client"]
    with socket.create_connection((harness.host, port), timeout=10) as conn:
        assert conn.recv(100) == b"cache-0"
    # It wrote into its volume through the link: the data is on the host.
    assert (volume / "written").read_text() == "cache-0 MASTER hello from cache-0 /root\n"  # the image's HOME
    # Labels, limits, mounts, network, as the contract says.
    [container] = harness.containers(**{images.LABEL_TASK: "cache-0.1"})
    labels = container.labels
    assert labels[images.LABEL_INSTANCE] == "cache" and labels[images.LABEL_MEMBER] == "cache-0"
    assert labels[images.LABEL_FRAMEWORK] == "fw-test" and labels[images.LABEL_EXECUTOR] == "ex-test"
    assert container.name is not None and container.name.startswith("mesos-stateful-cache-0.1-")
    host_config = container.attrs["HostConfig"]
    assert host_config["NanoCpus"] == 500_000_000 and host_config["Memory"] == 64 * 1024 * 1024
    assert host_config["NetworkMode"] == "host"
    mounts = {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}
    assert mounts == {str(launch.sandbox): str(launch.sandbox), str(volume): str(volume.resolve())}
    # Output lands in the sandbox files.
    await eventually(lambda: "to stderr" in (sandbox / "stderr").read_text())
    await eventually(lambda: "port " in (sandbox / "stdout").read_text())
    stdout = (sandbox / "stdout").read_text()
    assert f"port {port}\n" in stdout and f"{launch.sandbox}\n" in stdout and "listening" in stdout

    member.monitor.kill()
    killed = await member.terminal()
    assert killed.state == "TASK_KILLED"
    assert harness.containers() == []  # removed once it ended


async def test_term_then_kill_after_the_grace_through_the_engine_stop(harness: Harness) -> None:
    # The member ignores TERM (and its sleeps are no children of the init): it ends with the KILL.
    ignores = harness.start(
        harness.launch(
            docker_spec(
                "stubborn-0.1",
                ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.2; done"],
                kill_grace_seconds=2,
            )
        )
    )
    # A member with default TERM handling ends at once.
    polite = harness.start(harness.launch(docker_spec("polite-0.1", ["sleep", "600"], kill_grace_seconds=30)))
    for member in (ignores, polite):
        await member.sink.wait_for("TASK_RUNNING")
    await eventually(lambda: "up" in ignores.runtime.log_paths.stdout.read_text())

    began = time.monotonic()
    polite.monitor.kill()
    polite_end = await polite.terminal()
    assert polite_end.state == "TASK_KILLED" and "exited with code 143 (128 + SIGTERM)" in polite_end.message
    assert time.monotonic() - began < 10, "a member that does not ignore TERM ended only with the grace"

    began = time.monotonic()
    ignores.monitor.kill()
    end = await ignores.terminal()
    took = time.monotonic() - began
    assert end.state == "TASK_KILLED" and "exited with code 137 (128 + SIGKILL)" in end.message
    assert 1.9 <= took < 10, f"TERM -> KILL took {took:.1f}s with a grace of 2s"
    assert harness.containers() == []


async def test_missing_image_is_task_failed(harness: Harness) -> None:
    image = f"mesos-stateful/not-built-{uuid.uuid4().hex[:6]}:0"
    member = harness.start(harness.launch(docker_spec("ghost-0.1", ["true"], image=image)))
    end = await member.terminal()
    assert end.state == "TASK_FAILED" and end.reason == "REASON_CONTAINER_LAUNCH_FAILED"
    assert f"image {image} is not on this agent's Docker engine (nothing is pulled here)" in end.message
    assert "build or `docker load` it on the agent's engine" in end.message
    assert member.sink.states == ["TASK_FAILED"]


async def test_container_that_exits_at_once_is_failed_with_its_stderr(harness: Harness) -> None:
    script = "echo starting; echo 'fatal: cannot open data dir /nope' >&2; exit 3"
    member = harness.start(harness.launch(docker_spec("crash-0.1", ["sh", "-c", script])))
    end = await member.terminal()
    assert end.state == "TASK_FAILED" and end.reason == REASON_EXITED
    assert "exited with code 3" in end.message
    assert "last lines of stderr" in end.message and "fatal: cannot open data dir /nope" in end.message
    assert harness.containers() == []


async def test_a_command_missing_from_the_image_is_task_failed(harness: Harness) -> None:
    member = harness.start(harness.launch(docker_spec("nocmd-0.1", ["redis-server-not-here", "--port", "1"])))
    end = await member.terminal()
    assert end.state == "TASK_FAILED"
    # The init in the container cannot exec it: exit 127 (as a shell's "command not found").
    assert "exited with code 127" in end.message
    assert "redis-server-not-here" in end.message and "No such file or directory" in end.message
    assert harness.containers() == []


async def test_an_engine_that_does_not_answer_is_task_failed(harness: Harness) -> None:
    # A unix socket of our own that is bound but nobody listens on: connections are refused.
    path = harness.tmp / "engine.sock"
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(path))
    try:
        options = harness.options(environ={"DOCKER_HOST": f"unix://{path}"})
        member = harness.start(harness.launch(docker_spec("lonely-0.1", ["true"])), options)
        began = time.monotonic()
        end = await member.terminal()
        assert time.monotonic() - began < 30
    finally:
        silent.close()
    assert end.state == "TASK_FAILED" and end.reason == "REASON_CONTAINER_LAUNCH_FAILED"
    assert f"the Docker engine does not answer at unix://{path}" in end.message
    assert "start it with `make docker-engine`" in end.message


async def test_out_of_memory_is_reported(harness: Harness) -> None:
    # tail keeps the whole (endless) line in memory: the kernel's OOM killer ends it.
    spec = docker_spec(
        "hog-0.1",
        ["sh", "-c", "head -c 400000000 /dev/zero | tail"],
        resources=types_pb2.Resources(cpus=0.5, mem_mb=16),
    )
    member = harness.start(harness.launch(spec))
    end = await member.terminal()
    assert end.state == "TASK_FAILED"
    assert "OOMKilled: the container ran out of its memory limit of 16 MiB" in end.message


async def test_force_kill_removes_the_container_at_once(harness: Harness) -> None:
    member = harness.start(harness.launch(docker_spec("victim-0.1", ["sleep", "600"])))
    await member.sink.wait_for("TASK_RUNNING")
    assert len(harness.containers()) == 1
    await asyncio.to_thread(member.runtime.force_kill_sync)
    assert harness.containers() == []
    end = await member.terminal()
    assert end.state == "TASK_FAILED"


def test_mount_points_follow_the_sandbox_links(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    (sandbox / "deep").mkdir(parents=True)
    volume, other = tmp_path / "vol", tmp_path / "other"
    volume.mkdir()
    other.mkdir()
    (sandbox / "data").symlink_to(volume)
    (sandbox / "deep" / "more").symlink_to(other / ".." / "other")
    (sandbox / "inside").symlink_to(sandbox / "deep")  # within the sandbox: nothing more to mount
    (sandbox / "dangling").symlink_to(tmp_path / "missing")
    (volume / "nested").symlink_to(tmp_path / "missing")  # links are not followed into volumes
    assert mount_points(sandbox) == [(sandbox, sandbox), (volume, volume), (other, other)]


def test_host_paths_are_translated_through_the_deepest_mount(
    engine: docker.DockerClient, tmp_path: Path
) -> None:
    """With real inspect data: a bind mount and a named volume, one inside the other."""
    (tmp_path / "work").mkdir()
    name = f"mesos-stateful-test-vol-{uuid.uuid4().hex[:8]}"
    volume = engine.volumes.create(name)
    container = engine.containers.create(
        BASE,
        ["true"],
        labels={images.LABEL_AGENT: "test-runtime-translate"},
        volumes={
            str(tmp_path / "work"): {"bind": "/var/lib/agent", "mode": "rw"},
            name: {"bind": "/var/lib/agent/volumes", "mode": "rw"},
        },
    )
    try:
        mounts = container.attrs["Mounts"]
        assert (
            translate_path(Path("/var/lib/agent/slaves/s1/runs/r1"), mounts)
            == tmp_path / "work/slaves/s1/runs/r1"
        )
        volume_source = Path(volume.attrs["Mountpoint"])
        assert translate_path(Path("/var/lib/agent/volumes/roles/r/p"), mounts) == volume_source / "roles/r/p"
        with pytest.raises(Exception, match="not on a volume or bind mount of the executor's container"):
            translate_path(Path("/tmp/elsewhere"), mounts)
    finally:
        container.remove(force=True)
        volume.remove(force=True)
