"""``stop-agent`` is a partition between the master and one agent, with Mesos' timing: the master
notices only after its ping timeouts (agent_ping_timeout x max_agent_ping_timeouts), then sends
TASK_UNREACHABLE (PARTITION_AWARE) / TASK_LOST with ``unreachable_time``; meanwhile the members keep
running and answering clients. A heal before that is invisible to the frameworks; a heal after it
re-registers the agent and its tasks come back (Mesos >= 1.5 kills none of them).

These tests run their own cluster with pings slow enough to watch the window (1 s x 2: the master
notices 2-3 s after the cut)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.harness import Framework, task_info
from localcluster.mesos_json import parse_strict
from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.cluster import RunningCluster, start_local_cluster

PING = 1.0  # agent_ping_timeout
MAX = 2  # max_agent_ping_timeouts
NOTICED_AFTER = PING * MAX  # the earliest the master can notice a silent agent
SLACK = 10.0  # generous upper bound on top of PING * (MAX + 1), for a loaded machine


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    running = start_local_cluster(tmp_path / "cluster", agent_ping_timeout=PING, max_agent_ping_timeouts=MAX)
    try:
        yield running
    finally:
        running.stop()
    assert not running.leftovers(), f"processes left behind: {running.leftovers()}"


@pytest.fixture
def aware(cluster: RunningCluster) -> Iterator[Framework]:
    fw = Framework(cluster, name="aware", partition_aware=True)
    fw.start()
    try:
        yield fw
    finally:
        fw.stop()


@pytest.fixture
def plain(cluster: RunningCluster) -> Iterator[Framework]:
    fw = Framework(cluster, name="plain")
    fw.start()
    try:
        yield fw
    finally:
        fw.stop()


def strict(status: Any) -> mesos_pb2.TaskStatus:
    return parse_strict(dict(status), mesos_pb2.TaskStatus())


def ports(offer: Any) -> list[int]:
    out: list[int] = []
    for r in offer["resources"]:
        if r["name"] == "ports":
            for rng in r["ranges"]["range"]:
                out += range(int(rng["begin"]), int(rng["end"]) + 1)
    return out


def launch(fw: Framework, offer: Any, spec: dict[str, Any], port: int | None = None) -> str:
    task = task_info(offer, spec=spec, cpus=0.5)
    if port is not None:
        task["resources"].append(
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}}
        )
    tid = str(task["task_id"]["value"])
    fw.driver.launchTasks(offer["id"], [task])
    strict(fw.update(tid, "TASK_RUNNING"))
    return tid


def answer(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as conn:
        return conn.recv(100)


def for_task(tid: str, *states: str) -> Any:
    return lambda s: s["task_id"]["value"] == tid and (not states or s["state"] in states)


def agent_view(cluster: RunningCluster, agent_id: str) -> dict[str, Any] | None:
    return next((a for a in cluster.state()["slaves"] if a["id"] == agent_id), None)


def task_states(cluster: RunningCluster) -> dict[str, str]:
    state = cluster.state()
    return {t["id"]: t["state"] for fw in state["frameworks"] for t in fw["tasks"]}


def test_partition_is_noticed_after_the_ping_timeouts_and_heals_with_the_tasks_back(
    cluster: RunningCluster, aware: Framework, plain: Framework
) -> None:
    offer = aware.offer()
    host, aid = str(offer["hostname"]), str(offer["agent_id"]["value"])
    port = ports(offer)[0]
    served = launch(aware, offer, {"serve": port}, port)
    other = launch(plain, plain.offer(lambda o: o["agent_id"]["value"] == aid), {"child": True})
    assert answer(host, port) == f"member {served}".encode()
    agent = next(a for a in cluster.agents if a.id == aid)
    sids = [ex.sid for ex in agent.executors.values() if ex.sid]

    before, cut_wall = time.monotonic(), time.time()  # lower bounds are measured from before the cut
    cluster.stop_agent(aid)
    cut = time.monotonic()

    # Until the ping timeouts have passed, the master shows the agent and its tasks as before, no
    # framework hears anything, and the member answers its clients.
    while time.monotonic() < cut + NOTICED_AFTER - 0.3:
        view = agent_view(cluster, aid)
        assert view is not None and view["active"], view
        assert task_states(cluster)[served] == "TASK_RUNNING"
        assert task_states(cluster)[other] == "TASK_RUNNING"
        assert answer(host, port) == f"member {served}".encode()
        aware.none("update", for_task(served), within=0.1)
        plain.none("update", for_task(other), within=0.1)

    unreachable = strict(aware.update(served, "TASK_UNREACHABLE", timeout=PING * (MAX + 1) + SLACK))
    lost = strict(plain.update(other, "TASK_LOST", timeout=SLACK))
    assert time.monotonic() - before < PING * (MAX + 1) + SLACK
    for status in (unreachable, lost):
        assert status.reason == mesos_pb2.TaskStatus.REASON_AGENT_REMOVED
        assert status.source == mesos_pb2.TaskStatus.SOURCE_MASTER
        assert status.message == "health check timed out"
        assert status.HasField("unreachable_time")
        noticed = status.unreachable_time.nanoseconds / 1e9
        assert noticed - cut_wall >= NOTICED_AFTER - 0.01, noticed - cut_wall
        assert status.timestamp - cut_wall >= NOTICED_AFTER - 0.01
    assert aware.wait("agent_lost") == aid and plain.wait("agent_lost") == aid
    state = cluster.state()
    assert aid not in [a["id"] for a in state["slaves"]] and state["unreachable_slaves"] == 1
    (mine,) = [f for f in state["frameworks"] if f["name"] == "aware"]
    assert [t["id"] for t in mine["unreachable_tasks"]] == [served]

    # Still running, still answering; a kill now cannot reach the agent (the master answers with
    # what it knows), reconciliation says unreachable / lost.
    assert answer(host, port) == f"member {served}".encode()
    assert all(session_members(s) for s in sids)
    plain.driver.killTask({"value": other})
    assert strict(plain.update(other, "TASK_LOST")).reason == mesos_pb2.TaskStatus.REASON_RECONCILIATION
    aware.driver.reconcileTasks([{"task_id": {"value": served}}])
    assert (
        strict(aware.update(served, "TASK_UNREACHABLE")).reason == mesos_pb2.TaskStatus.REASON_RECONCILIATION
    )

    # Heal: the agent re-registers; both frameworks get their tasks back (Mesos >= 1.5), nothing
    # was killed; the kill sent during the partition was lost: the framework kills again.
    cluster.start_agent(aid)
    for fw, tid in ((aware, served), (plain, other)):
        back = strict(fw.update(tid, "TASK_RUNNING", timeout=SLACK))
        assert back.reason == mesos_pb2.TaskStatus.REASON_AGENT_REREGISTERED
        assert back.source == mesos_pb2.TaskStatus.SOURCE_MASTER
        assert back.message == "Unreachable agent re-reregistered"
    view = agent_view(cluster, aid)
    assert view is not None and view["active"] and cluster.state()["unreachable_slaves"] == 0
    assert task_states(cluster) == {served: "TASK_RUNNING", other: "TASK_RUNNING"}
    assert answer(host, port) == f"member {served}".encode()
    assert all(session_members(s) for s in sids)
    aware.driver.reviveOffers()
    aware.offer(lambda o: o["agent_id"]["value"] == aid)

    plain.driver.killTask({"value": other})
    assert (
        strict(plain.update(other, "TASK_KILLED", timeout=SLACK)).source
        == mesos_pb2.TaskStatus.SOURCE_EXECUTOR
    )
    aware.driver.killTask({"value": served})
    aware.update(served, "TASK_KILLED", timeout=SLACK)
    with pytest.raises(OSError):
        answer(host, port)


def test_heal_before_the_ping_timeouts_is_invisible(cluster: RunningCluster, aware: Framework) -> None:
    offer = aware.offer()
    aid = str(offer["agent_id"]["value"])
    doomed = task_info(offer, spec={"child": True}, cpus=0.5)
    finishing = task_info(offer, spec={"finish_in": 1.0}, cpus=0.5)
    aware.driver.launchTasks(offer["id"], [doomed, finishing])
    killed, finished = str(doomed["task_id"]["value"]), str(finishing["task_id"]["value"])
    aware.update(killed, "TASK_RUNNING")
    aware.update(finished, "TASK_RUNNING")
    cluster.stop_agent(aid)
    cut = time.monotonic()
    agent = next(a for a in cluster.agents if a.id == aid)

    # The kill waits on the cut link; the executor's TASK_FINISHED waits at the agent.
    aware.driver.killTask({"value": killed})
    aware.none("update", for_task(killed), within=0.5)
    deadline = cut + 1.3
    while agent.task_states()[finished] != "TASK_FINISHED":
        assert time.monotonic() < deadline, "the executor did not finish its task"
        aware.none("update", for_task(finished), within=0.1)
    aware.none(
        "update", lambda s: s["task_id"]["value"] in (killed, finished), within=deadline - time.monotonic()
    )
    assert task_states(cluster) == {killed: "TASK_RUNNING", finished: "TASK_RUNNING"}

    cluster.start_agent(aid)
    assert time.monotonic() - cut < NOTICED_AFTER, "healed too late for this test"
    done = strict(aware.update(finished, "TASK_FINISHED", timeout=SLACK))
    assert done.source == mesos_pb2.TaskStatus.SOURCE_EXECUTOR
    assert (
        strict(aware.update(killed, "TASK_KILLED", timeout=SLACK)).source
        == mesos_pb2.TaskStatus.SOURCE_EXECUTOR
    )
    # Past the time the master would have noticed: nothing else happens.
    aware.none("update", lambda s: s["state"] in ("TASK_UNREACHABLE", "TASK_LOST"), within=PING * (MAX + 1))
    aware.none("agent_lost", within=0.1)
    view = agent_view(cluster, aid)
    assert view is not None and view["active"] and cluster.state()["unreachable_slaves"] == 0
