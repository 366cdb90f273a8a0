"""Fixtures for the Redis workload tests: a served RedisWorkload and real redis-server members."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis_helpers import PASSWORD, Cluster, build

from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401
from mesos_stateful.testing.workloads import (  # noqa: F401
    MemberRunner,
    WorkloadServer,
    member_runner,  # a fixture
    serve_workload,
)
from mesos_stateful.workloads.redis.servicer import RedisWorkload
from mesos_stateful.workloads.redis.settings import RedisSettings


@pytest.fixture
def settings() -> RedisSettings:
    return RedisSettings(listen="127.0.0.1:0", register_in_state=False, connect_timeout_seconds=2.0)


@pytest_asyncio.fixture
async def workload(settings: RedisSettings) -> AsyncIterator[WorkloadServer]:
    async with serve_workload(RedisWorkload(settings)) as served:
        yield served


@pytest_asyncio.fixture
async def cluster(workload: WorkloadServer, member_runner: MemberRunner) -> Cluster:  # noqa: F811
    """A running master (ordinal 0) and two replicas in sync (ordinals 1 and 2)."""
    return await build(workload, member_runner, PASSWORD)
