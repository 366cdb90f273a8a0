"""The agent's clean-up of member containers by label (``localcluster.containers``), against the
real engine: only the containers of the given agent / executor go, live executors' stay, and
without an engine nothing is asked at all."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from mesos_stateful.common import images
from mesos_stateful.localcluster import containers as member_containers

BASE = images.BASE_IMAGE


@pytest.fixture
def agent_id(docker_client: docker.DockerClient) -> Iterator[str]:
    try:
        docker_client.images.get(BASE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {BASE} is missing: build it with `make images`", pytrace=False)
    agent = f"test-agent-containers-{uuid.uuid4().hex[:10]}"
    yield agent
    for container in docker_client.containers.list(
        all=True, filters={"label": f"{images.LABEL_AGENT}={agent}"}
    ):
        container.remove(force=True)


def member(client: docker.DockerClient, agent_id: str, framework_id: str, executor_id: str) -> Any:
    return client.containers.run(
        BASE,
        ["sleep", "600"],
        detach=True,
        init=True,
        labels={
            images.LABEL_AGENT: agent_id,
            images.LABEL_FRAMEWORK: framework_id,
            images.LABEL_EXECUTOR: executor_id,
            images.LABEL_TASK: executor_id,
        },
    )


def names(client: docker.DockerClient, agent_id: str) -> set[str]:
    found = client.containers.list(all=True, filters={"label": f"{images.LABEL_AGENT}={agent_id}"})
    return {c.labels[images.LABEL_FRAMEWORK] + "/" + c.labels[images.LABEL_EXECUTOR] for c in found}


async def test_an_ended_executor_loses_only_its_own_containers(
    docker_client: docker.DockerClient, agent_id: str
) -> None:
    other_agent = agent_id + "-other"
    try:
        gone = member(docker_client, agent_id, "fw1", "a.1")
        member(docker_client, agent_id, "fw1", "b.1")
        member(docker_client, agent_id, "fw2", "a.1")
        member(docker_client, other_agent, "fw1", "a.1")
        removed = await member_containers.remove_executor_containers(agent_id, "fw1", "a.1")
        assert removed == [gone.name]
        assert names(docker_client, agent_id) == {"fw1/b.1", "fw2/a.1"}
        assert names(docker_client, other_agent) == {"fw1/a.1"}
    finally:
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{images.LABEL_AGENT}={other_agent}"}
        ):
            container.remove(force=True)


async def test_the_agent_keeps_the_containers_of_live_executors(
    docker_client: docker.DockerClient, agent_id: str
) -> None:
    for executor in ("live.1", "dead.1", "dead.2"):
        member(docker_client, agent_id, "fw1", executor)
    removed = await member_containers.remove_agent_containers(agent_id, {("fw1", "live.1")})
    assert len(removed) == 2
    assert names(docker_client, agent_id) == {"fw1/live.1"}
    await member_containers.remove_agent_containers(agent_id)
    assert names(docker_client, agent_id) == set()


async def test_nothing_is_asked_without_an_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, docker_client: docker.DockerClient, agent_id: str
) -> None:
    member(docker_client, agent_id, "fw1", "a.1")
    # No socket at all: skipped at once, without a client.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'missing.sock'}")
    assert not member_containers.engine_configured()
    began = time.monotonic()
    assert await member_containers.remove_agent_containers(agent_id) == []
    assert time.monotonic() - began < 0.05
    # A socket nobody listens on: a warning, no exception (a clean-up never breaks the agent).
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(path))
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        monkeypatch.setattr(member_containers, "_client", None)
        assert member_containers.engine_configured()
        assert await member_containers.remove_executor_containers(agent_id, "fw1", "a.1") == []
    monkeypatch.setattr(member_containers, "_client", None)
    monkeypatch.delenv("DOCKER_HOST")
    assert names(docker_client, agent_id) == {"fw1/a.1"}  # untouched by the failed attempts
    assert not await member_containers.remove_executor_containers("", "fw1", "a.1")  # no id yet
