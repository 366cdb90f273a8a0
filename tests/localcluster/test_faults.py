"""Fault injection: a killed agent loses its tasks (TASK_LOST) and processes; a stopped agent's tasks
are unreachable and come back when it starts again."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

from localcluster.harness import Framework, task_info
from mesos_stateful.localcluster.procs import session_members
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
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mesos_stateful.localcluster",
            "fault",
            "kill-agent",
            hostname,
            "--master",
            local_cluster.master_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert '"REMOVED"' in out.stdout
    lost = framework.update(tid, "TASK_LOST")
    assert lost["reason"] == "REASON_AGENT_REMOVED" and lost["source"] == "SOURCE_MASTER"
    assert framework.wait("agent_lost") == agent.id
    assert not any(session_members(s) for s in sids if s)
    assert hostname not in [a["hostname"] for a in local_cluster.state()["slaves"]]
    # The agent restarts from its work dir: the same agent id, without its executors.
    fresh = local_cluster.start_agent(hostname)
    assert fresh.id == agent.id and fresh is not agent and not fresh.executors
    framework.driver.reviveOffers()
    framework.offer(lambda o: o["agent_id"]["value"] == fresh.id)


def test_stop_and_start_agent_partition_aware(local_cluster: RunningCluster) -> None:
    fw = Framework(local_cluster, partition_aware=True)
    fw.start()
    try:
        tid, offer = _launch(fw)
        hostname = str(offer["hostname"])
        req = urllib.request.Request(
            f"{local_cluster.master_url}/faults/agents/{hostname}/stop", method="POST"
        )
        urllib.request.urlopen(req, timeout=30).read()
        assert fw.update(tid, "TASK_UNREACHABLE")["reason"] == "REASON_AGENT_REMOVED"
        agent = next(a for a in local_cluster.agents if a.hostname == hostname)
        assert all(session_members(ex.sid) for ex in agent.executors.values() if ex.sid)  # still running
        local_cluster.start_agent(hostname)
        fw.driver.reconcileTasks([{"task_id": {"value": tid}}])
        assert fw.update(tid, "TASK_RUNNING")["reason"] == "REASON_RECONCILIATION"
        # The executor re-subscribes (pymesos reconnects with backoff) and can be killed again.
        deadline = time.monotonic() + 60
        while not all(ex.stream for ex in agent.executors.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        fw.driver.killTask({"value": tid})
        fw.update(tid, "TASK_KILLED", timeout=60)
    finally:
        fw.stop()


def test_stopped_agent_non_partition_aware_gets_task_lost(
    local_cluster: RunningCluster, framework: Framework
) -> None:
    tid, offer = _launch(framework)
    local_cluster.stop_agent(str(offer["hostname"]))
    assert framework.update(tid, "TASK_LOST")["reason"] == "REASON_AGENT_REMOVED"
    framework.driver.reconcileTasks([{"task_id": {"value": tid}, "agent_id": offer["agent_id"]}])
    framework.update(tid, "TASK_LOST")


def test_returning_agent_shuts_down_non_partition_aware_executors(
    local_cluster: RunningCluster, framework: Framework
) -> None:
    tid, offer = _launch(framework)
    hostname = str(offer["hostname"])
    agent = local_cluster.stop_agent(hostname)
    framework.update(tid, "TASK_LOST")
    sids = [ex.sid for ex in agent.executors.values() if ex.sid]
    assert sids and all(session_members(s) for s in sids)
    local_cluster.start_agent(hostname)
    deadline = time.monotonic() + 30
    while any(session_members(s) for s in sids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(session_members(s) for s in sids)
