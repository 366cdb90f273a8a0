"""End to end with RUNTIME_DOCKER: a pymesos scheduler launches members through the local cluster,
whose agent starts the real executor, which runs the member as a container on the real engine;
the agent removes member containers by label when the executor or the agent goes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from scheduler_helpers import E2EFramework, task_for

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import images
from mesos_stateful.testing.cluster import RunningCluster, local_cluster  # noqa: F401
from mesos_stateful.testing.poll import eventually_sync

pytestmark = pytest.mark.slow

BASE = images.BASE_IMAGE
SERVER = (
    "use IO::Socket::INET; $| = 1; my $s = IO::Socket::INET->new(LocalAddr => $ENV{HOST}, "
    'LocalPort => $ENV{PORT_CLIENT}, Listen => 5, ReuseAddr => 1) or die "listen: $!"; '
    "while (my $c = $s->accept) { print $c $ENV{MEMBER_ID}; close $c }"
)


@pytest.fixture
def framework(local_cluster: RunningCluster, engine: docker.DockerClient) -> Iterator[E2EFramework]:  # noqa: F811
    fw = E2EFramework(local_cluster.master_address)
    fw.start()
    agent_ids = [agent.id for agent in local_cluster.agents]
    try:
        yield fw
    finally:
        fw.stop()
        for container in containers(engine, *agent_ids):
            container.remove(force=True)


def containers(engine: docker.DockerClient, *agent_ids: str, **labels: str) -> list[Any]:
    """The containers labelled with one of these agent ids (and ``labels``)."""
    found = []
    for agent_id in agent_ids:
        wanted = {images.LABEL_AGENT: agent_id, **labels}
        filters: dict[str, str | list[str] | bool] = {"label": [f"{k}={v}" for k, v in wanted.items()]}
        found += engine.containers.list(all=True, filters=filters)
    return found


def wait_until(condition: Any, what: str, timeout: float = 30.0) -> None:
    eventually_sync(condition, what, timeout, interval=0.05)


def docker_spec(task_id: str, argv: list[str], **fields: Any) -> types_pb2.LaunchSpec:
    fields.setdefault("image", BASE)
    return types_pb2.LaunchSpec(
        instance="e2e",
        member_id=task_id.split(".")[0],
        task_id=task_id,
        workload="test",
        role=types_pb2.ROLE_MASTER,
        argv=argv,
        runtime=types_pb2.RUNTIME_DOCKER,
        **fields,
    )


def server_spec(task_id: str) -> types_pb2.LaunchSpec:
    return docker_spec(
        task_id,
        ["perl", "-e", SERVER],
        port_names=["client"],
        kill_grace_seconds=2,
        resources=types_pb2.Resources(cpus=0.25, mem_mb=64),
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="client"), interval_ms=100),
    )


def launch_running(framework: E2EFramework, spec: types_pb2.LaunchSpec) -> tuple[Any, dict[str, Any]]:
    offer = framework.wait("offer")
    task = task_for(offer, spec)
    framework.driver.launchTasks(offer["id"], [task])
    framework.update(spec.task_id, "TASK_RUNNING")
    return offer, task


def executor_of(cluster: RunningCluster, executor_id: str) -> Any:
    return next(
        ex for agent in cluster.agents for ex in agent.executors.values() if ex.executor_id == executor_id
    )


def launch_one_container(
    framework: E2EFramework, engine: docker.DockerClient, spec: types_pb2.LaunchSpec
) -> str:
    """Launch ``spec`` until RUNNING; checks its agent has exactly one member container. Returns the
    agent's id."""
    offer, _task = launch_running(framework, spec)
    agent_id: str = offer["agent_id"]["value"]
    assert len(containers(engine, agent_id)) == 1
    return agent_id


def test_a_docker_member_runs_answers_and_is_removed_after_its_kill(
    local_cluster: RunningCluster,  # noqa: F811
    framework: E2EFramework,
    engine: docker.DockerClient,
) -> None:
    offer, task = launch_running(framework, server_spec("dock-0.1"))
    assert framework.states("dock-0.1") == ["TASK_STARTING", "TASK_RUNNING"]
    agent_id = offer["agent_id"]["value"]
    [container] = containers(engine, agent_id, **{images.LABEL_TASK: "dock-0.1"})
    assert container.labels[images.LABEL_FRAMEWORK] == framework.framework_id
    assert container.labels[images.LABEL_EXECUTOR] == "dock-0.1"
    assert container.labels[images.LABEL_MEMBER] == "dock-0"
    # On the agent's own address and the port the task was given.
    port = task["discovery"]["ports"]["ports"][0]["number"]
    with socket.create_connection((offer["hostname"], port), timeout=10) as conn:
        assert conn.recv(100) == b"dock-0"

    # As an operator finds it.
    listed = subprocess.run(
        ["docker", "ps", "--filter", f"label={images.LABEL_AGENT}={agent_id}", "--filter",
         f"label={images.LABEL_MEMBER}=dock-0", "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert listed.stdout.split() == [container.name]

    framework.driver.killTask({"value": "dock-0.1"})
    killed = framework.update("dock-0.1", "TASK_KILLED")
    assert killed["source"] == "SOURCE_EXECUTOR"
    assert containers(engine, agent_id) == []  # the executor removed it before reporting


def test_a_missing_image_fails_the_task_with_what_to_do(framework: E2EFramework) -> None:
    offer = framework.wait("offer")
    spec = docker_spec("nope-0.1", ["true"], image="mesos-stateful/never-built:0")
    framework.driver.launchTasks(offer["id"], [task_for(offer, spec)])
    failed = framework.update("nope-0.1", "TASK_FAILED")
    assert failed["source"] == "SOURCE_EXECUTOR" and failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
    assert "image mesos-stateful/never-built:0 is not on this agent's Docker engine" in failed["message"]
    assert "`make images`" in failed["message"]


def test_the_agent_removes_the_container_of_a_killed_executor(
    local_cluster: RunningCluster,  # noqa: F811
    framework: E2EFramework,
    engine: docker.DockerClient,
) -> None:
    agent_id = launch_one_container(framework, engine, server_spec("orphan-0.1"))
    executor = executor_of(local_cluster, "orphan-0.1")
    # The executor's whole session (it leads it) dies at once: it cannot remove its container.
    os.killpg(executor.pid, signal.SIGKILL)

    failed = framework.update("orphan-0.1", "TASK_FAILED")
    assert failed["source"] == "SOURCE_AGENT" and failed["reason"] == "REASON_EXECUTOR_TERMINATED"
    wait_until(lambda: containers(engine, agent_id) == [], "the agent removes the member container")


def test_killing_the_agent_removes_its_containers_and_recovery_removes_orphans(
    local_cluster: RunningCluster,  # noqa: F811
    framework: E2EFramework,
    engine: docker.DockerClient,
) -> None:
    agent_id = launch_one_container(framework, engine, server_spec("gone-0.1"))
    local_cluster.kill_agent(agent_id)
    assert containers(engine, agent_id) == []  # gone with the agent (its destroy)

    # A container of the agent that no executor knows (left by a crash of the whole host's agent
    # process, say) is removed when the agent recovers.
    stray = engine.containers.run(
        BASE,
        ["sleep", "600"],
        detach=True,
        init=True,
        labels={
            images.LABEL_AGENT: agent_id,
            images.LABEL_FRAMEWORK: framework.framework_id,
            images.LABEL_EXECUTOR: "nobody-0.1",
            images.LABEL_TASK: "nobody-0.1",
        },
    )
    try:
        local_cluster.start_agent(agent_id)
        wait_until(lambda: containers(engine, agent_id) == [], "the recovered agent removes the orphan")
    finally:
        stray.remove(force=True) if containers(engine, agent_id) else None


def test_an_engine_that_does_not_answer_fails_the_task(framework: E2EFramework, tmp_path: Path) -> None:
    # The executor's DOCKER_HOST (from its ExecutorInfo) is a unix socket nobody listens on.
    path = tmp_path / "silent.sock"
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(path))
    try:
        offer = framework.wait("offer")
        task = task_for(offer, docker_spec("mute-0.1", ["true"]))
        task["executor"]["command"]["environment"] = {
            "variables": [{"name": "DOCKER_HOST", "value": f"unix://{path}"}]
        }
        framework.driver.launchTasks(offer["id"], [task])
        failed = framework.update("mute-0.1", "TASK_FAILED")
    finally:
        silent.close()
    assert failed["source"] == "SOURCE_EXECUTOR" and failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
    assert f"the Docker engine does not answer at unix://{path}" in failed["message"]
    assert "`make docker-engine`" in failed["message"]


def test_a_framework_teardown_stops_and_removes_the_container(
    local_cluster: RunningCluster,  # noqa: F811
    framework: E2EFramework,
    engine: docker.DockerClient,
) -> None:
    # The member ignores TERM: the engine's stop KILLs it within the agent's shutdown grace.
    ready = types_pb2.Check(command=types_pb2.CommandCheck(argv=["test", "-e", "ready"]), interval_ms=50)
    script = "trap '' TERM; touch ready; while :; do sleep 0.2; done"
    spec = docker_spec("teardown-0.1", ["sh", "-c", script], kill_grace_seconds=30, readiness=ready)
    agent_id = launch_one_container(framework, engine, spec)
    executor = executor_of(local_cluster, "teardown-0.1")
    assert executor.proc is not None

    framework.stop()
    wait_until(lambda: executor.proc.returncode is not None, "the executor exits after the shutdown")
    assert executor.proc.returncode == 0  # it exited by itself, after removing its container
    assert containers(engine, agent_id) == []
