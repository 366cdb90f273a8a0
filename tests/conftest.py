"""Session fixtures every test area shares: the real Docker engine and the suite's images.

They FAIL (never skip) when no engine answers or the images cannot be built: the error carries the
output of scripts/docker_engine.sh or scripts/build_images.sh (`make docker-engine`, `make images`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import docker
import pytest

from mesos_stateful.testing import reports
from mesos_stateful.testing.docker import ensure_engine, ensure_images
from mesos_stateful.testing.state import shared_etcd  # noqa: F401


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Fixtures learn whether their test failed (mesos_stateful.testing.reports)."""
    report = yield
    reports.record(item, report)
    return report


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of a Docker engine that answers (started and Compose v2 linked if needed)."""
    try:
        client = ensure_engine()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_images(docker_client: docker.DockerClient) -> None:
    """The suite's images (mesos_stateful.common.images) are on the engine, built from this tree."""
    try:
        ensure_images()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
