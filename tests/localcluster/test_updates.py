"""Status updates: re-sent until acknowledged, in order; reconciliation; executor loss; messages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pymesos import decode_data, encode_data

from localcluster.harness import Framework, task_info
from mesos_stateful.testing.cluster import RunningCluster


@pytest.fixture
def manual_acks(local_cluster: RunningCluster) -> Iterator[Framework]:
    fw = Framework(local_cluster, implicit_acks=False)
    fw.start()
    try:
        yield fw
    finally:
        fw.stop()


def test_updates_resent_until_acknowledged(manual_acks: Framework) -> None:
    fw = manual_acks
    offer = fw.offer()
    task = task_info(offer)
    tid = task["task_id"]["value"]
    fw.driver.launchTasks(offer["id"], [task])
    first = fw.update(tid, "TASK_STARTING")
    again = fw.update(tid, "TASK_STARTING", timeout=15)  # retried after update_retry_interval (2 s)
    assert again["uuid"] == first["uuid"]
    # The next update of the task waits for the acknowledgement of this one.
    assert not any(e[0] == "update" and e[1]["state"] == "TASK_RUNNING" for e in fw.seen)
    fw.driver.acknowledgeStatusUpdate(first)
    running = fw.update(tid, "TASK_RUNNING")
    fw.driver.acknowledgeStatusUpdate(running)
    fw.none("update", lambda s: s["task_id"]["value"] == tid, within=3.0)


def test_reconcile_explicit_and_implicit(framework: Framework) -> None:
    offer = framework.offer()
    task = task_info(offer)
    tid = task["task_id"]["value"]
    framework.driver.launchTasks(offer["id"], [task])
    framework.update(tid, "TASK_RUNNING")
    framework.driver.reconcileTasks([{"task_id": {"value": tid}}, {"task_id": {"value": "nope"}}])
    known = framework.update(tid, "TASK_RUNNING")
    assert known["reason"] == "REASON_RECONCILIATION" and "uuid" not in known
    unknown = framework.update("nope", "TASK_LOST")
    assert unknown["reason"] == "REASON_RECONCILIATION"
    framework.driver.reconcileTasks([])
    implicit = framework.update(tid, "TASK_RUNNING")
    assert implicit["reason"] == "REASON_RECONCILIATION"


def test_executor_death_fails_its_tasks(local_cluster: RunningCluster, framework: Framework) -> None:
    offer = framework.offer()
    task = task_info(offer, spec={"exit": 3})
    tid = task["task_id"]["value"]
    framework.driver.launchTasks(offer["id"], [task])
    failed = framework.update(tid, "TASK_FAILED")
    assert failed["source"] == "SOURCE_AGENT" and failed["reason"] == "REASON_EXECUTOR_TERMINATED"
    assert framework.wait("executor_lost") == f"exec-{tid}"


def test_framework_message_round_trip(framework: Framework) -> None:
    offer = framework.offer()
    task = task_info(offer)
    tid = task["task_id"]["value"]
    framework.driver.launchTasks(offer["id"], [task])
    framework.update(tid, "TASK_RUNNING")
    framework.driver.sendFrameworkMessage({"value": f"exec-{tid}"}, offer["agent_id"], encode_data(b"hi"))
    assert decode_data(framework.wait("message")) == b"echo:hi"


def test_several_tasks_share_an_executor(local_cluster: RunningCluster, framework: Framework) -> None:
    offer = framework.offer()
    tasks = [task_info(offer, executor_id="shared", executor_cpus=0.1) for _ in range(2)]
    framework.driver.launchTasks(offer["id"], tasks)
    for t in tasks:
        framework.update(t["task_id"]["value"], "TASK_RUNNING")
    agent = next(a for a in local_cluster.state()["slaves"] if a["id"] == offer["agent_id"]["value"])
    assert agent["used_resources"]["cpus"] == pytest.approx(1.1)
