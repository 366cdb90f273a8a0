"""The Docker runtime when the executor itself runs in a container (the Compose deployment): the
executor runs in the suite image with the engine's socket mounted, its work directory on a bind
mount at another path than the host's; members join its network (``container:self``) and their
mounts are translated to the host's paths (``auto``)."""

from __future__ import annotations

import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from mesos_stateful.common import images

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, socket, sys
    from pathlib import Path
    from mesos_stateful.api.stateful.v1 import types_pb2
    from mesos_stateful.executor.docker_runtime import DockerOptions, DockerRuntime
    from mesos_stateful.executor.launch import build_launch
    from mesos_stateful.executor.monitor import Monitor

    SERVER = (
        'use IO::Socket::INET; $| = 1; open(my $f, ">", "data/written"); print $f $ENV{MEMBER_ID}; '
        'close $f; my $s = IO::Socket::INET->new(LocalAddr => $ENV{HOST}, LocalPort => $ENV{PORT_CLIENT}, '
        'Listen => 5, ReuseAddr => 1) or die "listen: $!"; '
        'while (my $c = $s->accept) { print $c $ENV{MEMBER_ID}; close $c }'
    )

    class Sink:
        def __init__(self, name):
            self.name = name
            self.running = asyncio.Event()
        def send(self, update):
            print(self.name, update.state, (update.message.splitlines() or [""])[0], flush=True)
            if update.state == "TASK_RUNNING":
                self.running.set()

    def launch(member, port):
        work = Path("/var/lib/agent")
        sandbox, volume = work / "sandbox" / member, work / "volumes" / member
        sandbox.mkdir(parents=True, exist_ok=True)
        if not (sandbox / "data").is_dir():  # cache-2: a bind mount of its own, as on a real agent
            volume.mkdir(parents=True)
            (sandbox / "data").symlink_to(volume)
        spec = types_pb2.LaunchSpec(
            instance="cache", member_id=member, task_id=member + ".1", workload="test",
            argv=["perl", "-e", SERVER], runtime=types_pb2.RUNTIME_DOCKER, image=sys.argv[2],
            port_names=["client"], kill_grace_seconds=5,
            readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="client"), interval_ms=50),
        )
        return build_launch(spec, task_id=spec.task_id, host="127.0.0.1", ports={"client": port},
                            sandbox=sandbox, environ={})

    async def main():
        options = DockerOptions(agent_id=sys.argv[1], framework_id="fw", executor_id="ex",
                                network="container:self", host_paths="auto")
        monitors = {}
        for member, port in (("cache-0", 7001), ("cache-1", 7002), ("cache-2", 7003)):
            sink = Sink(member)
            monitor = Monitor(launch(member, port), DockerRuntime(options), sink)
            monitors[member] = (monitor, asyncio.create_task(monitor.run()), sink)
            await asyncio.wait_for(sink.running.wait(), 60)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                print(member, "reply", conn.recv(100).decode(), flush=True)
        monitor, task, _ = monitors["cache-0"]
        monitor.kill()
        await task
        print("cache-1 left running", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


@pytest.fixture
def labels(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    own = {images.LABEL_AGENT: f"test-runtime-in-container-{uuid.uuid4().hex[:10]}"}
    yield own
    selector = [f"{k}={v}" for k, v in own.items()]
    for container in docker_client.containers.list(all=True, filters={"label": selector}):
        container.remove(force=True)


def logs_until(container: Any, text: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        output: str = container.logs().decode(errors="replace")
        if text in output:
            return output
        assert container.status in ("created", "running"), f"the executor container ended:\n{output}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{output}"
        time.sleep(0.1)


def test_members_join_the_executor_container_and_see_the_host_paths(
    docker_client: docker.DockerClient, docker_images: None, labels: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "agent-work"
    work.mkdir()
    # cache-2's volume is a second bind mount below its sandbox (what Mesos's Docker containerizer
    # does with ContainerInfo.volumes), not a link: the member must get it too.
    nested = tmp_path / "nested-volume"
    nested.mkdir()
    agent_id = labels[images.LABEL_AGENT]
    executor = docker_client.containers.run(
        images.SUITE_IMAGE,
        [images.IMAGE_PYTHON, "-c", SCRIPT, agent_id, images.BASE_IMAGE],
        detach=True,
        labels=labels,
        volumes={
            str(work): {"bind": "/var/lib/agent", "mode": "rw"},
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
            str(nested): {"bind": "/var/lib/agent/sandbox/cache-2/data", "mode": "rw"},
        },
    )
    output = logs_until(executor, "cache-1 left running")
    # Both members answered on the executor container's own loopback: they share its network.
    assert all(f"cache-{i} reply cache-{i}" in output for i in range(3)), output
    assert "cache-0 TASK_KILLED killed on request (exited with code 143 (128 + SIGTERM))" in output, output
    # Their volumes were mounted from the host's paths (the executor's mount translated).
    assert (work / "volumes" / "cache-0" / "written").read_text() == "cache-0"
    assert (work / "volumes" / "cache-1" / "written").read_text() == "cache-1"
    assert (nested / "written").read_text() == "cache-2"
    members = docker_client.containers.list(all=True, filters={"label": f"{images.LABEL_AGENT}={agent_id}"})
    assert sorted(c.labels[images.LABEL_MEMBER] for c in members if images.LABEL_MEMBER in c.labels) == [
        "cache-1",
        "cache-2",
    ]
    [member] = [c for c in members if c.labels.get(images.LABEL_MEMBER) == "cache-1"]
    assert member.attrs["HostConfig"]["NetworkMode"] == f"container:{executor.id}"
    assert member.attrs["HostConfig"]["PidMode"] == f"container:{executor.id}"

    # The executor's container goes (an agent container stopped): its member ends with it and
    # the engine removes it; nothing of the member is left.
    executor.kill()
    deadline = time.monotonic() + 30
    while any(
        images.LABEL_MEMBER in c.labels
        for c in docker_client.containers.list(
            all=True, filters={"label": f"{images.LABEL_AGENT}={agent_id}"}
        )
    ):
        assert time.monotonic() < deadline, "the member container outlived its executor's container"
        time.sleep(0.1)
