"""Fault injection: a killed agent loses its processes at once; the master disconnects it at once
and reports its tasks TASK_LOST only after the ping timeouts (the partition tests are in
test_partition.py)."""

from __future__ import annotations

import subprocess
import sys
import time

from localcluster.harness import Framework, task_info
from localcluster.mesos_json import parse_strict
from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.localcluster.settings import LocalClusterSettings
from mesos_stateful.testing.cluster import RunningCluster


def _launch(fw: Framework) -> tuple[str, dict[str, object]]:
    offer = fw.offer()
    task = task_info(offer, spec={"child": True})
    tid = task["task_id"]["value"]
    fw.driver.launchTasks(offer["id"], [task])
    fw.update(tid, "TASK_RUNNING")
    return tid, offer


def test_kill_agent_loses_tasks_and_processes(local_cluster: RunningCluster, framework: Framework) -> None:
    tid, offer = _launch(framework)
    hostname = str(offer["hostname"])
    agent = next(a for a in local_cluster.agents if a.hostname == hostname)
    sids = [ex.sid for ex in agent.executors.values()]
    assert sids and all(session_members(s) for s in sids if s)
    settings = agent.master.settings
    assert isinstance(settings, LocalClusterSettings)  # an in-process agent: the cluster's settings
    noticed_after = settings.agent_ping_timeout * settings.max_agent_ping_timeouts
    killed_wall = time.time()  # before: the kill itself may take a while (sessions killed)
    local_cluster.kill_agent(hostname)
    # Its connection closed: the master deactivated it at once (it is still registered).
    view = [a for a in local_cluster.state()["slaves"] if a["id"] == agent.id]
    assert view and not view[0]["active"]
    lost = parse_strict(dict(framework.update(tid, "TASK_LOST", timeout=30)), mesos_pb2.TaskStatus())
    assert lost.reason == mesos_pb2.TaskStatus.REASON_AGENT_REMOVED
    assert lost.source == mesos_pb2.TaskStatus.SOURCE_MASTER
    assert lost.message == "health check timed out" and lost.HasField("unreachable_time")
    assert lost.timestamp - killed_wall >= noticed_after - 0.01
    assert framework.wait("agent_lost") == agent.id
    assert not any(session_members(s) for s in sids if s)
    assert hostname not in [a["hostname"] for a in local_cluster.state()["slaves"]]
    # The agent restarts from its work dir: the same agent id, without its executors.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mesos_stateful.localcluster",
            "fault",
            "start-agent",
            hostname,
            "--master",
            local_cluster.master_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert '"RUNNING"' in out.stdout and '"ACTIVE"' in out.stdout
    fresh = next(a for a in local_cluster.agents if a.hostname == hostname)
    assert fresh.id == agent.id and fresh is not agent and not fresh.executors
    framework.driver.reviveOffers()
    framework.offer(lambda o: o["agent_id"]["value"] == fresh.id)
