"""Fixtures for the MySQL workload tests: a served MysqlWorkload and real mariadbd members; for the
end-to-end tests, the whole suite with the MySQL workload service registered in it."""

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
    member_runner,  # a fixture
    mysql_test_settings,
    serve_workload,
)
from mesos_stateful.workloads.mysql.servicer import MysqlWorkload
from mesos_stateful.workloads.mysql.settings import MysqlSettings


@pytest.fixture
def settings() -> MysqlSettings:
    return MysqlSettings(
        listen="127.0.0.1:0",
        register_in_state=False,
        connect_timeout_seconds=2.0,
        check_interval_ms=300,
        catchup_probe_seconds=3.0,
    )


@pytest_asyncio.fixture
async def workload(settings: MysqlSettings) -> AsyncIterator[WorkloadServer]:
    async with serve_workload(MysqlWorkload(settings)) as served:
        yield served


@pytest_asyncio.fixture
async def mysql_suite(suite: Suite) -> AsyncIterator[Suite]:  # noqa: F811
    """The whole suite plus the MySQL workload service, registered in its state service."""
    settings = mysql_test_settings(suite.state.endpoint)
    async with workload_in_suite(suite, MysqlWorkload(settings)) as running:
        yield running
