"""Fixtures of the executor tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import docker
import pytest
from executor_helpers import Runner

from mesos_stateful.common import images


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    r = Runner()
    yield r
    for running in r.started:
        running.runtime.force_kill_sync()
        if not running.task.done():
            running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)


@pytest.fixture(scope="module")
def engine(docker_client: docker.DockerClient) -> docker.DockerClient:
    """The shared engine fixture (fails when no engine answers), with the base image."""
    try:
        docker_client.images.get(images.BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {images.BASE_IMAGE} is missing: build it with `make images`", pytrace=False)
    return docker_client
