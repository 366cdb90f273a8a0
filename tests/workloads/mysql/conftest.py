"""Fixtures for the MySQL workload tests: a served MysqlWorkload and real mariadbd members."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mesos_stateful.testing.workloads import (  # noqa: F401
    MemberRunner,
    WorkloadServer,
    member_runner,  # a fixture
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
