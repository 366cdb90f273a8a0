"""Running one command in a container of the suite's images, labelled and always removed."""

from __future__ import annotations

import uuid

import docker

from mesos_stateful.testing.docker import TEST_LABEL, remove_containers


def run(client: docker.DockerClient, image: str, argv: list[str], timeout: float = 180) -> tuple[int, str]:
    """Run ``argv`` in a new container of ``image``; its exit code and its stdout+stderr."""
    label = f"images-{uuid.uuid4().hex[:12]}"
    container = client.containers.run(image, argv, detach=True, labels={TEST_LABEL: label})
    try:
        code = int(container.wait(timeout=timeout)["StatusCode"])
        return code, container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        remove_containers(client, [f"{TEST_LABEL}={label}"])


def shell(client: docker.DockerClient, image: str, script: str, timeout: float = 180) -> tuple[int, str]:
    return run(client, image, ["bash", "-euo", "pipefail", "-c", script], timeout)
