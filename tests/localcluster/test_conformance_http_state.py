"""``/master/state`` has the shape of the real endpoint (``Master::ReadOnlyHandler::state`` in
``src/master/readonly_handler.cpp``, the ``json(...)`` writers of ``src/common/http.cpp``), and the
SUBSCRIBED event's ``master_info.ip`` is the packed address, as Mesos sends it."""

from __future__ import annotations

import base64
import http.client
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from localcluster.harness import EXECUTOR
from localcluster.mesos_json import RawScheduler
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.poll import eventually_sync

Json = dict[str, Any]
ROLE = "stateful"
ZERO = {"cpus", "gpus", "mem", "disk"}


def master_state(cluster: RunningCluster) -> Json:
    """GET /master/state over HTTP (what an operator or a UI reads)."""
    host, port = cluster.master_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/master/state")
        resp = conn.getresponse()
        assert resp.status == 200
        state: Json = json.loads(resp.read())
        return state
    finally:
        conn.close()


def eventually(cluster: RunningCluster, pred: Callable[[Json], bool], timeout: float = 15.0) -> Json:
    def matching() -> Json | None:
        state = master_state(cluster)
        return state if pred(state) else None

    state = eventually_sync(matching, "the master's state to match", timeout, interval=0.05)
    assert state is not None
    return state


def flat_ok(resources: Json) -> None:
    """``json(writer, Resources)`` always writes cpus, gpus, mem and disk."""
    assert set(resources) >= ZERO, resources


@pytest.fixture
def sched(local_cluster: RunningCluster) -> Iterator[RawScheduler]:
    s = RawScheduler(local_cluster.master_address, role=ROLE, principal="ops")
    s.info.update(
        hostname="scheduler-host",
        webui_url="http://scheduler-host:8080",
        labels={"labels": [{"key": "team", "value": "data"}]},
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def launch(sched: RawScheduler, offer: Json) -> tuple[str, str]:
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    resources = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}, "allocation_info": {"role": ROLE}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}, "allocation_info": {"role": ROLE}},
    ]
    task = {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": offer["agent_id"],
        "resources": resources,
        "labels": {"labels": [{"key": "member", "value": "m-0"}]},
        "executor": {
            "executor_id": {"value": f"exec-{task_id}"},
            "name": "member executor",
            "command": {"value": f"{sys.executable} {EXECUTOR}", "shell": True},
        },
        "data": base64.b64encode(json.dumps({"child": True}).encode()).decode(),
    }
    sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [task]}}])
    sched.update(task_id, "TASK_RUNNING")
    return task_id, f"exec-{task_id}"


def executor_update(cluster: RunningCluster, agent_id: str, fid: str, eid: str, task_id: str) -> None:
    """One more TASK_RUNNING from the executor (through the agent's executor API)."""
    agent = next(a for a in cluster.agents if a.id == agent_id)
    status = {
        "task_id": {"value": task_id},
        "state": "TASK_RUNNING",
        "source": "SOURCE_EXECUTOR",
        "message": "still running",
        "uuid": base64.b64encode(uuid.uuid4().bytes).decode(),
    }
    call = {
        "type": "UPDATE",
        "framework_id": {"value": fid},
        "executor_id": {"value": eid},
        "update": {"status": status},
    }
    conn = http.client.HTTPConnection(agent.ip, agent.port, timeout=10)
    try:
        conn.request(
            "POST", "/api/v1/executor", body=json.dumps(call), headers={"Content-Type": "application/json"}
        )
        assert conn.getresponse().status == 202
    finally:
        conn.close()


def test_master_state_shape(local_cluster: RunningCluster, sched: RawScheduler) -> None:
    fid = sched.framework_id
    subscribed = next(e for e in sched.seen if e["type"] == "SUBSCRIBED")["subscribed"]["master_info"]
    host, port = local_cluster.master_address.rsplit(":", 1)
    if host == "127.0.0.1" and sys.byteorder == "little":
        assert subscribed["ip"] == 16777343
    assert subscribed["ip"] != 0 and subscribed["pid"] == f"master@{host}:{port}"

    offer = sched.offer()
    # An outstanding offer: json(writer, Offer).
    state = eventually(local_cluster, lambda s: bool(s["frameworks"] and s["frameworks"][0]["offers"]))
    (shown,) = [o for o in state["frameworks"][0]["offers"] if o["id"] == offer["id"]["value"]]
    assert set(shown) == {"id", "framework_id", "allocation_info", "slave_id", "resources"}
    assert shown["framework_id"] == fid and shown["slave_id"] == offer["agent_id"]["value"]
    assert shown["allocation_info"] == {"role": ROLE}
    flat_ok(shown["resources"])

    task_id, eid = launch(sched, offer)
    agent_id = offer["agent_id"]["value"]
    executor_update(local_cluster, agent_id, fid, eid, task_id)
    sched.wait("UPDATE", lambda e: e["update"]["status"].get("message") == "still running")
    state = eventually(
        local_cluster,
        lambda s: any(t["statuses"] and t["state"] == "TASK_RUNNING" for t in s["frameworks"][0]["tasks"]),
    )

    # Top level.
    assert state["pid"] == f"master@{host}:{port}" and state["leader"] == state["pid"]
    assert state["leader_info"]["id"] == state["id"] and state["leader_info"]["port"] == int(port)
    assert state["orphan_tasks"] == [] and state["unregistered_frameworks"] == []
    assert state["activated_slaves"] == 3 and state["deactivated_slaves"] == 0

    # Frameworks: FullFrameworkWriter.
    (fw,) = state["frameworks"]
    assert fw["id"] == fid and fw["name"] == "raw" and fw["user"] == "test"
    assert fw["hostname"] == "scheduler-host" and fw["webui_url"] == "http://scheduler-host:8080"
    assert fw["active"] and fw["connected"] and fw["recovered"] is False
    assert fw["unregistered_time"] == 0 and fw["registered_time"] > 0
    assert fw["principal"] == "ops" and fw["roles"] == [ROLE] and "role" not in fw  # MULTI_ROLE
    assert fw["capabilities"] == ["MULTI_ROLE", "RESERVATION_REFINEMENT"]
    assert fw["labels"] == [{"key": "team", "value": "data"}]
    assert fw["unreachable_tasks"] == [] and fw["completed_tasks"] == []
    for key in ("resources", "used_resources", "offered_resources"):
        flat_ok(fw[key])
    assert fw["used_resources"]["cpus"] == pytest.approx(0.5) and fw["used_resources"]["gpus"] == 0
    assert fw["resources"]["cpus"] >= fw["used_resources"]["cpus"]
    (executor,) = fw["executors"]
    assert executor["executor_id"] == eid and executor["slave_id"] == agent_id
    assert executor["framework_id"] == fid and executor["name"] == "member executor"
    assert executor["command"]["shell"] is True and executor["command"]["argv"] == []
    flat_ok(executor["resources"])

    # Tasks: json(writer, Task); one status per state (Master::updateTask).
    (task,) = fw["tasks"]
    assert task["id"] == task_id and task["slave_id"] == agent_id and task["executor_id"] == eid
    assert task["role"] == ROLE and task["labels"] == [{"key": "member", "value": "m-0"}]
    flat_ok(task["resources"])
    states = [s["state"] for s in task["statuses"]]
    assert states[-1] == "TASK_RUNNING" and len(states) == len(set(states)), states
    assert all(
        set(s) <= {"state", "timestamp", "labels", "container_status", "healthy"} for s in task["statuses"]
    )

    # Agents: SlaveWriter.
    agent = next(a for a in state["slaves"] if a["id"] == agent_id)
    assert agent["registered_time"] > 0 and agent["deactivated"] is False and agent["active"] is True
    assert agent["version"] == state["version"] and "RESERVATION_REFINEMENT" in agent["capabilities"]
    assert agent["reserved_resources"] == {} and agent["pid"].startswith("slave(1)@")
    for key in ("resources", "used_resources", "offered_resources", "unreserved_resources"):
        flat_ok(agent[key])
    assert agent["resources"]["gpus"] == 0

    # A removed framework is shown in full under completed_frameworks.
    sched.stop()
    state = eventually(local_cluster, lambda s: bool(s["completed_frameworks"]))
    (done,) = state["completed_frameworks"]
    assert done["id"] == fid and done["active"] is False and done["connected"] is False
    assert done["unregistered_time"] >= fw["registered_time"] and done["hostname"] == "scheduler-host"
    assert task_id in [t["id"] for t in done["completed_tasks"]] and done["tasks"] == []
    assert not state["frameworks"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_master_state_answers_any_method(local_cluster: RunningCluster, method: str) -> None:
    """`Master::Http::state` checks no method (unlike the v1 APIs' 405): a POST reads the state too."""
    host, port = local_cluster.master_address.rsplit(":", 1)
    for path in ("/master/state", "/state"):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            assert resp.status == 200, (method, path, resp.status)
            assert "slaves" in json.loads(resp.read())
        finally:
            conn.close()
