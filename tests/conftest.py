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
from mesos_stateful.testing.state import shared_etcd, state_etcd  # noqa: F401


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Fixtures learn whether their test failed (mesos_stateful.testing.reports)."""
    report = yield
    reports.record(item, report)
    return report


# Fixtures that start servers or processes (etcd, services, the local cluster, Docker, a browser).
# A test that uses none of them, is not `slow` and is not marked `servers` (it starts servers in
# its body) is a pure-logic test: marked `unit`, run by `make test-fast` (`pytest -m unit`).
SERVER_FIXTURES = frozenset(
    {
        "browser", "chaos", "cluster", "docker_client", "docker_images", "docker_suite", "etcd",
        "etcd_drain_suite", "etcd_suite", "frozen_cluster", "frozen_suite", "gateway", "gateway_stub",
        "harness", "health_server", "lifecycle_service", "local_cluster", "member_runner",
        "mysql_drain_suite", "mysql_suite", "offers", "offers_service", "otlp_grpc", "otlp_http",
        "project", "projects", "quick_cluster", "recorded_offers_service", "recorder", "sched",
        "shared_etcd", "split", "stack", "standby_suite", "state_client", "state_process",
        "state_service", "suite", "services", "traced", "workload",
    }
)


# Under `make test` (pytest-xdist, `--dist loadgroup`) the tests of one file run in one worker, in
# order (their module fixtures are made once), and every test of the Docker engine in one worker:
# the engine is one for the machine, and an agent's recovery removes the containers it does not
# know (as a Mesos agent does), which would be another worker's.
DOCKER_GROUP = "docker-engine"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the pure-logic tests `unit` (see SERVER_FIXTURES), and give every test its xdist group
    (its file's, or DOCKER_GROUP for every file with a test of the engine)."""
    docker_files = {
        item.nodeid.split("::", 1)[0]
        for item in items
        if "docker_client" in getattr(item, "fixturenames", ())
    }
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        marked = item.get_closest_marker("slow") or item.get_closest_marker("servers")
        if not (uses & SERVER_FIXTURES or marked):
            item.add_marker(pytest.mark.unit)
        if not item.get_closest_marker("xdist_group"):
            file = item.nodeid.split("::", 1)[0]
            item.add_marker(pytest.mark.xdist_group(DOCKER_GROUP if file in docker_files else file))


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
