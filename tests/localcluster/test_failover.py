"""Framework failover: tasks survive a scheduler disconnection for failover_timeout, not longer."""

from __future__ import annotations

import time

from localcluster.harness import Framework, task_info
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.cluster import RunningCluster


def _launch(fw: Framework) -> tuple[str, int]:
    offer = fw.offer()
    task = task_info(offer, spec={"child": True})
    tid = task["task_id"]["value"]
    fw.driver.launchTasks(offer["id"], [task])
    fw.update(tid, "TASK_RUNNING")
    return tid, 0


def _sessions(cluster: RunningCluster) -> list[int]:
    return [sid for sid in cluster.sessions() if session_members(sid)]


def test_failover_within_timeout_keeps_tasks(local_cluster: RunningCluster) -> None:
    fw = Framework(local_cluster, failover_timeout=60)
    fid = fw.start()
    tid, _ = _launch(fw)
    fw.stop(failover=True)
    again = Framework(local_cluster, failover_timeout=60, framework_id=fid)
    again.driver.start()
    again.wait("reregistered")
    again.driver.reconcileTasks([{"task_id": {"value": tid}}])
    assert again.update(tid, "TASK_RUNNING")["reason"] == "REASON_RECONCILIATION"
    assert _sessions(local_cluster)
    again.stop()  # tears the framework down: its tasks are killed
    deadline = time.monotonic() + 30
    while _sessions(local_cluster) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _sessions(local_cluster)


def test_failover_timeout_kills_tasks(local_cluster: RunningCluster) -> None:
    fw = Framework(local_cluster, failover_timeout=1.0)
    fid = fw.start()
    _launch(fw)
    assert _sessions(local_cluster)
    fw.stop(failover=True)
    deadline = time.monotonic() + 30
    while (_sessions(local_cluster) or local_cluster.state()["frameworks"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _sessions(local_cluster)
    assert fid in [f["id"] for f in local_cluster.state()["completed_frameworks"]]
