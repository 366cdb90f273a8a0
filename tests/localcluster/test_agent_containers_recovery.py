"""Agent recovery with a member container: the local cluster process is killed with SIGKILL and
started again; the executor (the real one, RUNTIME_DOCKER) re-subscribes and its container is never
touched, while a container labelled with the agent's id that no executor owns is removed as an
orphan. Stopping the cluster leaves no container of its agents."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from pymesos import encode_data

from localcluster.cluster_process import ClusterProcess
from localcluster.harness import Framework
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import images

pytestmark = pytest.mark.slow

BASE = images.BASE_IMAGE
SERVER = (
    "use IO::Socket::INET; $| = 1; my $s = IO::Socket::INET->new(LocalAddr => $ENV{HOST}, "
    'LocalPort => $ENV{PORT_CLIENT}, Listen => 5, ReuseAddr => 1) or die "listen: $!"; '
    "while (my $c = $s->accept) { print $c $ENV{MEMBER_ID}; close $c }"
)


@pytest.fixture
def cluster(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[ClusterProcess]:
    try:
        docker_client.images.get(BASE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {BASE} is missing: build it with `make images`", pytrace=False)
    proc = ClusterProcess(tmp_path, agents=1, executor_reregistration_timeout=5.0)
    proc.start()
    agent_ids: list[str] = []
    try:
        agent_ids = [a["id"] for a in proc.wait_agents()["slaves"]]
        yield proc
    finally:
        proc.stop()
        left = agent_containers(docker_client, *agent_ids)
        for container in left:
            container.remove(force=True)
        assert not left, f"containers left behind by the cluster's agents: {[c.name for c in left]}"


def agent_containers(client: docker.DockerClient, *agent_ids: str) -> list[Any]:
    found: list[Any] = []
    for agent_id in agent_ids:
        found += client.containers.list(all=True, filters={"label": f"{images.LABEL_AGENT}={agent_id}"})
    return found


def docker_task(offer: Any, task_id: str) -> dict[str, Any]:
    spec = types_pb2.LaunchSpec(
        instance="rec", member_id=task_id.split(".")[0], task_id=task_id, workload="test",
        role=types_pb2.ROLE_MASTER, argv=["perl", "-e", SERVER], runtime=types_pb2.RUNTIME_DOCKER,
        image=BASE, port_names=["client"], kill_grace_seconds=2,
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="client"), interval_ms=100),
    )  # fmt: skip
    ranges = [r for res in offer["resources"] if res["name"] == "ports" for r in res["ranges"]["range"]]
    port = ranges[0]["begin"]
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": offer["agent_id"]["value"]},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}},
        ],
        "executor": {
            "executor_id": {"value": task_id},
            "command": {"value": f"{sys.executable} -m mesos_stateful.executor", "shell": True},
        },
        "discovery": {
            "visibility": "FRAMEWORK",
            "name": task_id,
            "ports": {"ports": [{"number": port, "name": "client", "protocol": "tcp"}]},
        },
        "data": encode_data(spec.SerializeToString()),
    }


def answers(host: str, port: int, member: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5) as conn:
            return conn.recv(100) == member.encode()
    except OSError:
        return False


def test_recovery_keeps_the_live_executor_container_and_removes_orphans(
    cluster: ClusterProcess, docker_client: docker.DockerClient
) -> None:
    fw = Framework(cluster.address, failover_timeout=3600)
    fw.start()
    offer = fw.offer()
    agent_id = offer["agent_id"]["value"]
    task = docker_task(offer, "rec-0.1")
    fw.driver.launchTasks(offer["id"], [task])
    fw.update("rec-0.1", "TASK_RUNNING", timeout=60)
    port = task["discovery"]["ports"]["ports"][0]["number"]
    [member] = agent_containers(docker_client, agent_id)
    fw.stop(failover=True)

    cluster.kill9()
    stray = docker_client.containers.run(
        BASE, ["sleep", "600"], detach=True, init=True,
        labels={images.LABEL_AGENT: agent_id, images.LABEL_FRAMEWORK: fw.framework_id,
                images.LABEL_EXECUTOR: "stray-0.1", images.LABEL_TASK: "stray-0.1"},
    )  # fmt: skip
    assert answers(offer["hostname"], port, "rec-0")

    cluster.start()
    cluster.wait_agents()
    again = Framework(cluster.address, failover_timeout=3600, framework_id=fw.framework_id)
    again.start()
    try:
        deadline = time.monotonic() + 30
        while stray.id in {c.id for c in agent_containers(docker_client, agent_id)}:
            assert time.monotonic() < deadline, "the orphan container was not removed on recovery"
            time.sleep(0.1)
        # The recovered executor's member is untouched: the same container, still serving.
        assert [c.id for c in agent_containers(docker_client, agent_id)] == [member.id]
        assert answers(offer["hostname"], port, "rec-0")
        again.driver.killTask({"value": "rec-0.1"})
        killed = again.update("rec-0.1", "TASK_KILLED", timeout=60)
        assert killed["source"] == "SOURCE_EXECUTOR"
        assert agent_containers(docker_client, agent_id) == []
    finally:
        again.stop(failover=True)
