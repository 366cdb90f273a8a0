from __future__ import annotations

import ipaddress

from localcluster.harness import Framework, scalar, task_info
from mesos_stateful.testing.cluster import RunningCluster


def test_subscribe_offers_launch_kill(local_cluster: RunningCluster, framework: Framework) -> None:
    offer = framework.offer()
    assert offer["framework_id"]["value"] == framework.framework_id
    assert ipaddress.ip_address(offer["hostname"]).is_loopback
    assert scalar(offer, "cpus") == 4.0 and scalar(offer, "mem") == 8192.0
    ports = next(r for r in offer["resources"] if r["name"] == "ports")["ranges"]["range"]
    assert len(ports) == 1 and ports[0]["end"] - ports[0]["begin"] == 999
    task = task_info(offer, spec={"child": True})
    framework.driver.launchTasks(offer["id"], [task])
    tid = task["task_id"]["value"]
    running = framework.update(tid, "TASK_RUNNING")
    assert running["agent_id"]["value"] == offer["agent_id"]["value"]
    assert running["source"] == "SOURCE_EXECUTOR"
    framework.driver.killTask({"value": tid})
    framework.update(tid, "TASK_KILLED")
