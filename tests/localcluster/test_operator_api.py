"""The master's v1 operator API (``POST /api/v1``, ``Master::Http::api`` in ``src/master/http.cpp``)
over real HTTP, in JSON and in protobuf: every answer is a ``mesos.v1.master.Response`` parsed
strictly (unknown fields and missing required fields fail); status codes and texts as Mesos."""

from __future__ import annotations

import http.client
import json
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format

from localcluster.harness import Framework, task_info
from localcluster.mesos_json import missing_fields, parse_strict
from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.api.mesos.v1.maintenance import maintenance_pb2
from mesos_stateful.api.mesos.v1.master import master_pb2
from mesos_stateful.testing.cluster import RunningCluster

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
Json = dict[str, Any]
Response = master_pb2.Response


def post(
    cluster: RunningCluster, body: bytes | None, headers: dict[str, str], method: str = "POST"
) -> tuple[int, str, bytes]:
    host, port = cluster.master_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, "/api/v1", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    finally:
        conn.close()


def operator(cluster: RunningCluster, call: Json, media_type: str) -> tuple[int, str, Response | None]:
    """``call`` sent in ``media_type`` (answers accepted in the same); a 200 with a body is parsed
    strictly into ``Response``, and its JSON form parsed strictly again (both encodings agree)."""
    if media_type == PROTOBUF:
        body = json_format.ParseDict(call, master_pb2.Call(), ignore_unknown_fields=False).SerializeToString()
    else:
        body = json.dumps(call).encode()
    status, ctype, data = post(cluster, body, {"Content-Type": media_type, "Accept": media_type})
    if status != 200 or not data:
        return status, data.decode(errors="replace"), None
    assert ctype == media_type
    if media_type == PROTOBUF:
        response = Response.FromString(data)
        assert not missing_fields(response), missing_fields(response)
    else:
        response = parse_strict(data.decode(), Response())
    parse_strict(json_format.MessageToJson(response), Response())
    return status, "", response


def query(cluster: RunningCluster, kind: str, media_type: str) -> Response:
    status, text, response = operator(cluster, {"type": kind}, media_type)
    assert status == 200 and response is not None, (status, text)
    assert response.type == getattr(Response, kind)
    return response


@pytest.fixture
def running_task(local_cluster: RunningCluster, framework: Framework) -> Iterator[tuple[str, str]]:
    offer = framework.offer()
    task = task_info(offer, spec={"child": True})
    task["labels"] = {"labels": [{"key": "member", "value": "m-0"}]}
    framework.driver.launchTasks(offer["id"], [task])
    framework.update(task["task_id"]["value"], "TASK_RUNNING")
    yield task["task_id"]["value"], offer["agent_id"]["value"]


@pytest.mark.parametrize("media_type", [JSON, PROTOBUF], ids=["json", "protobuf"])
def test_operator_queries(
    local_cluster: RunningCluster, framework: Framework, running_task: tuple[str, str], media_type: str
) -> None:
    task_id, agent_id = running_task
    assert query(local_cluster, "GET_HEALTH", media_type).get_health.healthy

    version = query(local_cluster, "GET_VERSION", media_type).get_version.version_info
    assert version.version == "1.11.0"

    master = query(local_cluster, "GET_MASTER", media_type).get_master
    host, port = local_cluster.master_address.rsplit(":", 1)
    assert master.master_info.port == int(port) and master.master_info.address.ip == host
    assert master.master_info.pid == f"master@{host}:{port}"
    if host == "127.0.0.1" and sys.byteorder == "little":
        assert master.master_info.ip == 16777343  # s_addr of 127.0.0.1 read as a host uint32

    agents = query(local_cluster, "GET_AGENTS", media_type).get_agents
    assert sorted(a.agent_info.id.value for a in agents.agents) == sorted(a.id for a in local_cluster.agents)
    mine = next(a for a in agents.agents if a.agent_info.id.value == agent_id)
    assert mine.active and mine.version == "1.11.0" and mine.registered_time.nanoseconds > 0
    assert {r.name for r in mine.total_resources} >= {"cpus", "mem", "disk", "ports"}
    assert sum(r.scalar.value for r in mine.allocated_resources if r.name == "cpus") == pytest.approx(0.5)

    frameworks = query(local_cluster, "GET_FRAMEWORKS", media_type).get_frameworks
    (fw,) = [f for f in frameworks.frameworks if f.framework_info.id.value == framework.framework_id]
    assert fw.active and fw.connected and not fw.recovered and fw.framework_info.name == "test"
    assert sum(r.scalar.value for r in fw.allocated_resources if r.name == "cpus") == pytest.approx(0.5)

    tasks = query(local_cluster, "GET_TASKS", media_type).get_tasks
    (task,) = [t for t in tasks.tasks if t.task_id.value == task_id]
    assert task.state == mesos_pb2.TASK_RUNNING
    assert task.agent_id.value == agent_id and task.framework_id.value == framework.framework_id
    assert [s.state for s in task.statuses][-1:] == [task.state]
    assert [(label.key, label.value) for label in task.labels.labels] == [("member", "m-0")]

    executors = query(local_cluster, "GET_EXECUTORS", media_type).get_executors
    assert [e.executor_info.executor_id.value for e in executors.executors] == [f"exec-{task_id}"]
    assert executors.executors[0].agent_id.value == agent_id

    state = query(local_cluster, "GET_STATE", media_type).get_state
    assert [t.task_id.value for t in state.get_tasks.tasks] == [task_id]
    assert len(state.get_agents.agents) == 3 and len(state.get_frameworks.frameworks) == 1
    assert len(state.get_executors.executors) == 1


def test_operator_request_errors(local_cluster: RunningCluster) -> None:
    health = json.dumps({"type": "GET_HEALTH"}).encode()
    assert post(local_cluster, None, {}, method="GET")[::2] == (
        405,
        b"405 Method Not Allowed. Expecting one of { 'POST' }, but received 'GET'.",
    )
    assert post(local_cluster, health, {})[::2] == (400, b"Expecting 'Content-Type' to be present")
    assert post(local_cluster, health, {"Content-Type": "text/plain"})[::2] == (
        415,
        b"Expecting 'Content-Type' of application/json or application/x-protobuf",
    )
    status, _, text = post(local_cluster, b"{", {"Content-Type": JSON})
    assert status == 400 and text.startswith(b"Failed to parse body into JSON: ")
    status, _, text = post(local_cluster, json.dumps({"type": "NOPE"}).encode(), {"Content-Type": JSON})
    assert status == 400 and text.startswith(b"Failed to convert JSON into Call protobuf: ")
    assert post(local_cluster, b"\xff\xff", {"Content-Type": PROTOBUF})[::2] == (
        400,
        b"Failed to parse body into Call protobuf",
    )
    assert post(local_cluster, health, {"Content-Type": JSON, "Accept": "text/html"})[::2] == (
        406,
        b"Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'",
    )
    for media_type in (JSON, PROTOBUF):
        assert operator(local_cluster, {"type": "START_MAINTENANCE"}, media_type)[:2] == (
            400,
            "Failed to validate master::Call: Expecting 'start_maintenance' to be present",
        )
        assert operator(local_cluster, {"type": "UNKNOWN"}, media_type)[:2] == (501, "501 Not Implemented.")
        status, message, _ = operator(local_cluster, {"type": "GET_FLAGS"}, media_type)
        assert status == 501 and message.startswith("Unsupported call type GET_FLAGS")
    # No Accept header: JSON (libprocess accepts everything).
    status, ctype, body = post(local_cluster, health, {"Content-Type": JSON})
    assert (status, ctype) == (200, JSON)
    assert parse_strict(body.decode(), Response()).get_health.healthy


def _machine(agent_hostname: str, agent_ip: str) -> Json:
    return {"hostname": agent_hostname, "ip": agent_ip}


@pytest.mark.parametrize("media_type", [JSON, PROTOBUF], ids=["json", "protobuf"])
def test_operator_maintenance(
    local_cluster: RunningCluster, framework: Framework, running_task: tuple[str, str], media_type: str
) -> None:
    """Schedule a window for the task's agent (DRAINING), see it in the schedule and the status, take
    the machine DOWN (its agent leaves GET_AGENTS, its task is lost), bring it UP again."""
    task_id, agent_id = running_task
    agent = next(a for a in local_cluster.agents if a.id == agent_id)
    machine = _machine(agent.hostname, agent.ip)
    start_ns = int((time.time() + 3600) * 1e9)
    window = {
        "machine_ids": [machine],
        "unavailability": {"start": {"nanoseconds": start_ns}, "duration": {"nanoseconds": int(3600e9)}},
    }
    update = {
        "type": "UPDATE_MAINTENANCE_SCHEDULE",
        "update_maintenance_schedule": {"schedule": {"windows": [window]}},
    }
    assert operator(local_cluster, update, media_type)[:2] == (200, "")

    schedule = query(local_cluster, "GET_MAINTENANCE_SCHEDULE", media_type).get_maintenance_schedule.schedule
    assert [(m.hostname, m.ip) for w in schedule.windows for m in w.machine_ids] == [
        (agent.hostname, agent.ip)
    ]
    assert schedule.windows[0].unavailability.start.nanoseconds == start_ns

    status = query(local_cluster, "GET_MAINTENANCE_STATUS", media_type).get_maintenance_status.status
    assert [(m.id.hostname, m.id.ip) for m in status.draining_machines] == [(agent.hostname, agent.ip)]
    assert not status.down_machines

    # A machine that is not scheduled cannot go down.
    other = next(a for a in local_cluster.agents if a.id != agent_id)
    start_other = {
        "type": "START_MAINTENANCE",
        "start_maintenance": {"machines": [_machine(other.hostname, other.ip)]},
    }
    status_code, text, _ = operator(local_cluster, start_other, media_type)
    assert status_code == 400 and text, text

    start = {"type": "START_MAINTENANCE", "start_maintenance": {"machines": [machine]}}
    assert operator(local_cluster, start, media_type)[:2] == (200, "")
    agents = query(local_cluster, "GET_AGENTS", media_type).get_agents.agents
    assert agent_id not in [a.agent_info.id.value for a in agents]
    lost = framework.wait(
        "update",
        lambda s: s["task_id"]["value"] == task_id and s["state"] in ("TASK_LOST", "TASK_GONE_BY_OPERATOR"),
    )
    assert lost["source"] == "SOURCE_MASTER", lost
    tasks = query(local_cluster, "GET_TASKS", media_type).get_tasks
    assert task_id not in [t.task_id.value for t in tasks.tasks]
    status = query(local_cluster, "GET_MAINTENANCE_STATUS", media_type).get_maintenance_status.status
    assert [(m.hostname, m.ip) for m in status.down_machines] == [(agent.hostname, agent.ip)]

    stop = {"type": "STOP_MAINTENANCE", "stop_maintenance": {"machines": [machine]}}
    assert operator(local_cluster, stop, media_type)[:2] == (200, "")
    status = query(local_cluster, "GET_MAINTENANCE_STATUS", media_type).get_maintenance_status.status
    assert not status.down_machines and not status.draining_machines
    schedule = query(local_cluster, "GET_MAINTENANCE_SCHEDULE", media_type).get_maintenance_schedule.schedule
    assert not schedule.windows


def test_legacy_maintenance_endpoints(local_cluster: RunningCluster) -> None:
    """``/maintenance/schedule``, ``/maintenance/status``, ``/machine/down``, ``/machine/up`` (JSON
    bodies: a ``Schedule``, an array of ``MachineID``), as the real master's older endpoints."""
    host, port = local_cluster.master_address.rsplit(":", 1)

    def request(method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            conn.request(method, path, body=data)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    agent = local_cluster.agents[2]
    machine = {"hostname": agent.hostname, "ip": agent.ip}
    window = {
        "machine_ids": [machine],
        "unavailability": {"start": {"nanoseconds": int(time.time() * 1e9)}},
    }
    assert request("POST", "/maintenance/schedule", {"windows": [window]}) == (200, b"")
    status, body = request("GET", "/master/maintenance/schedule")
    assert status == 200
    schedule = parse_strict(body.decode(), maintenance_pb2.Schedule())
    assert [(m.hostname, m.ip) for m in schedule.windows[0].machine_ids] == [(agent.hostname, agent.ip)]
    status, body = request("GET", "/maintenance/status")
    cluster_status = parse_strict(body.decode(), maintenance_pb2.ClusterStatus())
    assert [m.id.ip for m in cluster_status.draining_machines] == [agent.ip]

    assert request("PUT", "/maintenance/schedule", {})[0] == 405
    assert request("POST", "/maintenance/schedule", b"{")[0] == 400
    assert request("POST", "/maintenance/schedule", {"windows": [{"bogus": 1}]})[0] == 400
    assert request("POST", "/machine/down", {"hostname": agent.hostname})[0] == 400  # not an array

    assert request("POST", "/machine/down", [machine]) == (200, b"")
    assert agent.id not in [a["id"] for a in local_cluster.state()["slaves"]]
    cluster_status = parse_strict(
        request("GET", "/maintenance/status")[1].decode(), maintenance_pb2.ClusterStatus()
    )
    assert [m.ip for m in cluster_status.down_machines] == [agent.ip]
    assert request("POST", "/machine/up", [machine]) == (200, b"")
    cluster_status = parse_strict(
        request("GET", "/maintenance/status")[1].decode(), maintenance_pb2.ClusterStatus()
    )
    assert not cluster_status.down_machines and not cluster_status.draining_machines


class OperatorStream:
    """``SUBSCRIBE`` to the operator API: every record parsed strictly as ``mesos.v1.master.Event``."""

    def __init__(self, cluster: RunningCluster, media_type: str) -> None:
        host, port = cluster.master_address.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        call = {"type": "SUBSCRIBE"}
        if media_type == PROTOBUF:
            body = json_format.ParseDict(call, master_pb2.Call()).SerializeToString()
        else:
            body = json.dumps(call).encode()
        self.conn.request(
            "POST", "/api/v1", body=body, headers={"Content-Type": media_type, "Accept": media_type}
        )
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200 and self.resp.headers["Content-Type"] == media_type
        self.media_type = media_type
        self.events: queue.Queue[master_pb2.Event | BaseException] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                size = b""
                while not size.endswith(b"\n"):
                    byte = self.resp.read(1)
                    if not byte:
                        return
                    size += byte
                record = self.resp.read(int(size))
                if self.media_type == PROTOBUF:
                    event = master_pb2.Event.FromString(record)
                    assert not missing_fields(event), missing_fields(event)
                else:
                    event = parse_strict(record.decode(), master_pb2.Event())
                self.events.put(event)
        except BaseException as error:  # handed to the test thread
            self.events.put(error)

    def wait(self, kind: int, pred: Any = lambda _e: True, timeout: float = 30.0) -> master_pb2.Event:
        deadline = time.monotonic() + timeout
        while True:
            item = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(item, BaseException):
                raise item
            if item.type == kind and pred(item):
                return item

    def close(self) -> None:
        if self.conn.sock is not None:  # unblocks the reader (a plain close waits for its read)
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


@pytest.mark.parametrize("media_type", [JSON, PROTOBUF], ids=["json", "protobuf"])
def test_operator_subscribe_events(local_cluster: RunningCluster, media_type: str) -> None:
    """SUBSCRIBED with the whole state, then FRAMEWORK_ADDED, TASK_ADDED, TASK_UPDATED for each new
    state, AGENT_REMOVED (machine DOWN), FRAMEWORK_REMOVED (teardown)."""
    Event = master_pb2.Event
    stream = OperatorStream(local_cluster, media_type)
    framework = Framework(local_cluster)
    stopped = False
    try:
        subscribed = stream.wait(Event.SUBSCRIBED).subscribed
        assert subscribed.heartbeat_interval_seconds == 15
        assert len(subscribed.get_state.get_agents.agents) == 3
        assert not subscribed.get_state.get_frameworks.frameworks

        framework.start()
        added = stream.wait(Event.FRAMEWORK_ADDED).framework_added.framework
        assert added.framework_info.id.value == framework.framework_id and added.connected

        offer = framework.offer()
        task = task_info(offer, spec={"child": True})
        task_id = task["task_id"]["value"]
        framework.driver.launchTasks(offer["id"], [task])
        framework.update(task_id, "TASK_RUNNING")
        assert stream.wait(Event.TASK_ADDED).task_added.task.task_id.value == task_id
        running = stream.wait(
            Event.TASK_UPDATED, lambda e: e.task_updated.status.state == mesos_pb2.TASK_RUNNING
        )
        assert running.task_updated.framework_id.value == framework.framework_id
        assert running.task_updated.status.task_id.value == task_id
        assert running.task_updated.state == mesos_pb2.TASK_RUNNING

        agent = next(a for a in local_cluster.agents if a.id == offer["agent_id"]["value"])
        machine = _machine(agent.hostname, agent.ip)
        window = {
            "machine_ids": [machine],
            "unavailability": {"start": {"nanoseconds": int(time.time() * 1e9)}},
        }
        schedule = {
            "type": "UPDATE_MAINTENANCE_SCHEDULE",
            "update_maintenance_schedule": {"schedule": {"windows": [window]}},
        }
        assert operator(local_cluster, schedule, JSON)[0] == 200
        start = {"type": "START_MAINTENANCE", "start_maintenance": {"machines": [machine]}}
        assert operator(local_cluster, start, JSON)[0] == 200
        # As Master::__removeSlave: the task's update first, then AGENT_REMOVED.
        lost = stream.wait(Event.TASK_UPDATED, lambda e: e.task_updated.status.task_id.value == task_id)
        assert lost.task_updated.state in (mesos_pb2.TASK_LOST, mesos_pb2.TASK_GONE_BY_OPERATOR)
        removed = stream.wait(Event.AGENT_REMOVED).agent_removed
        assert removed.agent_id.value == agent.id

        framework.stop()
        stopped = True
        gone = stream.wait(Event.FRAMEWORK_REMOVED).framework_removed
        assert gone.framework_info.id.value == framework.framework_id
    finally:
        if framework.framework_id and not stopped:
            framework.stop()
        stream.close()
