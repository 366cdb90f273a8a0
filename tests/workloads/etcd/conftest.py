"""Fixtures for the etcd workload tests: a served EtcdWorkload and real etcd peers; for the
end-to-end tests, the whole suite with the etcd workload service registered in it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mesos_stateful.testing.cluster import local_cluster  # noqa: F401
from mesos_stateful.testing.gateway import gateway  # noqa: F401
from mesos_stateful.testing.lifecycle import Suite, suite, workload_in_suite  # noqa: F401
from mesos_stateful.testing.offers import offers_service  # noqa: F401
from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401
from mesos_stateful.testing.workloads import (  # noqa: F401
    MemberRunner,
    WorkloadServer,
    etcd_test_settings,
    member_runner,  # a fixture
    serve_workload,
)
from mesos_stateful.workloads.etcd.servicer import EtcdWorkload
from mesos_stateful.workloads.etcd.settings import EtcdSettings


@pytest.fixture
def settings() -> EtcdSettings:
    return EtcdSettings(
        listen="127.0.0.1:0",
        register_in_state=False,
        check_interval_ms=300,
        join_timeout_seconds=30,
        request_timeout_seconds=3,
    )


@pytest_asyncio.fixture
async def workload(settings: EtcdSettings) -> AsyncIterator[WorkloadServer]:
    async with serve_workload(EtcdWorkload(settings)) as served:
        yield served


@pytest_asyncio.fixture
async def etcd_suite(suite: Suite) -> AsyncIterator[Suite]:  # noqa: F811
    """The whole suite plus the etcd workload service, registered in its state service."""
    settings = etcd_test_settings(suite.state.endpoint)
    async with workload_in_suite(suite, EtcdWorkload(settings)) as running:
        yield running
