"""Fixtures: real etcd + state service, the local cluster, and the offers service (real pymesos).

``local_cluster`` is overridden here to give the agents addresses of their own (127.R.R.2-4
instead of 127.0.0.2-4): the members listen on fixed port ranges, and a test suite running at the
same time on this machine must not answer our readiness checks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesos_stateful.testing.cluster import RunningCluster, start_local_cluster
from mesos_stateful.testing.offers import offers_service  # noqa: F401
from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    base = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.2"
    running = start_local_cluster(tmp_path / "cluster", agent_ip_base=base)
    try:
        yield running
    finally:
        running.stop()
    left = running.leftovers()
    assert not left, f"processes left behind by executor sessions: {left}"
