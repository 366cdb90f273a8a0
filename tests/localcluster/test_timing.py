"""Heartbeats and the executor registration timeout (clusters with short intervals)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.harness import Framework, task_info
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.cluster import RunningCluster, start_local_cluster


@pytest.fixture
def quick_cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    running = start_local_cluster(
        tmp_path / "cluster", agents=1, heartbeat_interval=0.3, executor_registration_timeout=1.0
    )
    try:
        yield running
    finally:
        running.stop()
    assert not running.leftovers()


def test_heartbeats(quick_cluster: RunningCluster) -> None:
    fw = Framework(quick_cluster)
    fw.start()
    try:
        for _ in range(3):
            fw.wait("heartbeat", timeout=10)
    finally:
        fw.stop()


def test_executor_that_never_subscribes_is_killed(quick_cluster: RunningCluster) -> None:
    fw = Framework(quick_cluster)
    fw.start()
    try:
        offer = fw.offer()
        task = task_info(offer)
        task["executor"]["command"]["value"] = "sleep 1000 & sleep 1000"
        tid = task["task_id"]["value"]
        fw.driver.launchTasks(offer["id"], [task])
        failed = fw.update(tid, "TASK_FAILED", timeout=30)
        assert failed["reason"] == "REASON_EXECUTOR_REGISTRATION_TIMEOUT"
        deadline = time.monotonic() + 10
        while any(session_members(s) for s in quick_cluster.sessions()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(session_members(s) for s in quick_cluster.sessions())
    finally:
        fw.stop()
