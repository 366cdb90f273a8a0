"""Fixtures: the local cluster and a framework (a real pymesos scheduler driver) subscribed to it."""

from __future__ import annotations

from collections.abc import Iterator

import pymesos  # noqa: F401 (imported on the main thread: it installs a SIGINT handler)
import pytest

from localcluster.harness import Framework
from mesos_stateful.testing.cluster import RunningCluster, local_cluster  # noqa: F401


@pytest.fixture
def framework(local_cluster: RunningCluster) -> Iterator[Framework]:  # noqa: F811
    fw = Framework(local_cluster)
    fw.start()
    try:
        yield fw
    finally:
        fw.stop()
