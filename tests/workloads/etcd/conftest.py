"""Fixtures for the etcd workload tests: a served EtcdWorkload and real etcd peers."""

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
