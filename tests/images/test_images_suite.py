"""The suite image (real engine): Debian's Python 3.11 with the suite in IMAGE_VENV, first on PATH;
every service, the executor and the local cluster run with ``python -m``."""

from __future__ import annotations

import docker
import pytest
from images_helpers import run, shell

from mesos_stateful.common.images import ALL_IMAGES, IMAGE_PYTHON, IMAGE_VENV, LABEL_PREFIX, SUITE_IMAGE

pytestmark = pytest.mark.usefixtures("docker_images")

SERVICES = [
    "mesos_stateful.localcluster",
    "mesos_stateful.state",
    "mesos_stateful.gateway",
    "mesos_stateful.offers",
    "mesos_stateful.lifecycle",
    "mesos_stateful.suite",
    "mesos_stateful.cli",
]


def test_python_is_the_image_venv_on_path(docker_client: docker.DockerClient) -> None:
    code, out = shell(
        docker_client,
        SUITE_IMAGE,
        'command -v python; python -c "import sys; print(sys.prefix, sys.version_info[:2])"',
    )
    assert code == 0, out
    assert out.split() == [IMAGE_PYTHON, IMAGE_VENV, "(3,", "11)"], out


def test_services_answer_help(docker_client: docker.DockerClient) -> None:
    # One container for all: each module's --help must exit 0 and print its usage.
    script = "; ".join(
        f"python -m {module} --help >/tmp/out 2>&1 && grep -qi usage /tmp/out"
        f' || {{ echo "FAILED {module}"; cat /tmp/out; }}'
        for module in SERVICES
    )
    code, out = shell(docker_client, SUITE_IMAGE, script)
    assert code == 0 and "FAILED" not in out, out


def test_executor_starts_and_asks_for_its_agent(docker_client: docker.DockerClient) -> None:
    # Without the agent's environment the executor imports everything, starts, and stops on the
    # first variable Mesos would have given it (no ImportError: pymesos and http-parser work).
    code, out = run(docker_client, SUITE_IMAGE, ["python", "-m", "mesos_stateful.executor"])
    assert code == 1, out
    assert "MESOS_AGENT_ENDPOINT" in out, out
    assert "Error: No module" not in out and "ImportError" not in out, out


def test_http_parser_extension_and_docker_sdk_import(docker_client: docker.DockerClient) -> None:
    code, out = run(
        docker_client,
        SUITE_IMAGE,
        ["python", "-c", "import http_parser.parser, pymesos, docker, aetcd, grpc; print('ok')"],
    )
    assert (code, out.strip()) == (0, "ok"), out


def test_images_are_labelled_and_share_the_dependency_layers(docker_client: docker.DockerClient) -> None:
    suite = docker_client.images.get(SUITE_IMAGE)
    suite_layers = suite.attrs["RootFS"]["Layers"]
    for name in ALL_IMAGES:
        image = docker_client.images.get(name)
        assert (image.labels or {}).get(LABEL_PREFIX + "image") == name.split("/")[1].split(":")[0]
        layers = image.attrs["RootFS"]["Layers"]
        # base + python + venv + the dependency wheels (copied, installed) are the suite's own ...
        assert layers[: len(suite_layers) - 2] == suite_layers[:-2], name
        # ... and the project is the last layer pair (a code change rebuilds only that).
        created = [h["CreatedBy"] for h in image.history() if h["Size"] > 0]
        assert "wheels/project" in created[0] and "wheels/project" in created[1], created[:2]
