"""The agent's v1 executor API answers as the Mesos agent (``Http::executor`` in
``src/slave/http.cpp``, ``validateExecutorCall`` in ``src/common/validation.cpp``), in JSON and in
protobuf: HEARTBEAT 202 before any lookup, UPDATE rules (uuid, source, TASK_STAGING, executor id),
missing bodies and required fields 400 with Mesos's text, unknown framework / executor 400, calls
before SUBSCRIBE 403, 503 while the agent recovers, a protobuf SUBSCRIBE stream of
``mesos.v1.executor.Event`` records."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from localcluster.cluster_process import ClusterProcess, sessions_under
from localcluster.harness import Framework, task_info
from localcluster.mesos_json import missing_fields, parse_strict
from mesos_stateful.api.mesos.v1.executor import executor_pb2
from mesos_stateful.localcluster.agent import Agent
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.cluster import RunningCluster

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
Json = dict[str, Any]


def post(agent: Agent, body: bytes | None, headers: dict[str, str], method: str = "POST") -> tuple[int, str]:
    conn = http.client.HTTPConnection(agent.ip, agent.port, timeout=10)
    try:
        conn.request(method, "/api/v1/executor", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def call_json(agent: Agent, call: Json) -> tuple[int, str]:
    return post(agent, json.dumps(call).encode(), {"Content-Type": JSON})


def call_protobuf(agent: Agent, call: Json) -> tuple[int, str]:
    message = json_format.ParseDict(call, executor_pb2.Call(), ignore_unknown_fields=False)
    return post(agent, message.SerializeToString(), {"Content-Type": PROTOBUF})


def new_uuid() -> str:
    return base64.b64encode(uuid.uuid4().bytes).decode()


class Running:
    """A task RUNNING under the suite's real pymesos executor, and its agent."""

    def __init__(self, cluster: RunningCluster, framework: Framework, command: str | None = None) -> None:
        offer = framework.offer()
        task = task_info(offer, spec={"child": True})
        if command is not None:  # an executor that never subscribes: the test speaks for it
            task["executor"]["command"] = {"value": command, "shell": True}
        framework.driver.launchTasks(offer["id"], [task])
        self.task_id = task["task_id"]["value"]
        self.executor_id = task["executor"]["executor_id"]["value"]
        self.framework_id = framework.framework_id
        self.agent = next(a for a in cluster.agents if a.id == offer["agent_id"]["value"])

    def call(self, kind: str, **body: Any) -> Json:
        out: Json = {
            "type": kind,
            "framework_id": {"value": self.framework_id},
            "executor_id": {"value": self.executor_id},
        }
        out.update(body)
        return out

    def status(self, state: str, **extra: Any) -> Json:
        status: Json = {
            "task_id": {"value": self.task_id},
            "state": state,
            "source": "SOURCE_EXECUTOR",
            "uuid": new_uuid(),
        }
        status.update(extra)
        return {k: v for k, v in status.items() if v is not None}


@pytest.fixture
def running(local_cluster: RunningCluster, framework: Framework) -> Iterator[Running]:
    task = Running(local_cluster, framework)
    framework.update(task.task_id, "TASK_RUNNING")
    yield task


@pytest.mark.parametrize("send", [call_json, call_protobuf], ids=["json", "protobuf"])
def test_executor_call_rules(running: Running, framework: Framework, send: Any) -> None:
    agent, eid, fid = running.agent, running.executor_id, running.framework_id
    prefix = "Failed to validate Executor::Call: "

    # HEARTBEAT: 202, before the framework and executor are looked up (they may be dummies).
    assert send(agent, running.call("HEARTBEAT")) == (202, "")
    dummy = {"type": "HEARTBEAT", "framework_id": {"value": "x"}, "executor_id": {"value": "y"}}
    assert send(agent, dummy) == (202, "")

    # UPDATE rules, in Mesos's order and words.
    staging = running.call("UPDATE", update={"status": running.status("TASK_STAGING")})
    assert send(agent, staging) == (
        400,
        f"{prefix}Received TASK_STAGING from executor {eid} of framework {fid} which is not allowed",
    )
    no_source = running.call("UPDATE", update={"status": running.status("TASK_RUNNING", source=None)})
    assert send(agent, no_source) == (
        400,
        f"{prefix}Received Call from executor {eid} of framework {fid} with invalid source, "
        "expecting 'SOURCE_EXECUTOR'",
    )
    from_agent = running.call(
        "UPDATE", update={"status": running.status("TASK_RUNNING", source="SOURCE_AGENT")}
    )
    assert send(agent, from_agent)[0] == 400
    no_uuid = running.call("UPDATE", update={"status": running.status("TASK_RUNNING", uuid=None)})
    assert send(agent, no_uuid) == (400, f"{prefix}Expecting 'uuid' to be present")
    short = base64.b64encode(b"12345678").decode()
    bad_uuid = running.call("UPDATE", update={"status": running.status("TASK_RUNNING", uuid=short)})
    assert send(agent, bad_uuid) == (400, f"{prefix}Not a valid UUID")
    other = running.call(
        "UPDATE", update={"status": running.status("TASK_RUNNING", executor_id={"value": "other"})}
    )
    assert send(agent, other) == (
        400,
        f"{prefix}ExecutorID in Call: {eid} does not match ExecutorID in TaskStatus: other",
    )

    # Missing bodies.
    assert send(agent, running.call("UPDATE")) == (400, f"{prefix}Expecting 'update' to be present")
    assert send(agent, running.call("MESSAGE")) == (400, f"{prefix}Expecting 'message' to be present")
    assert send(agent, running.call("SUBSCRIBE")) == (400, f"{prefix}Expecting 'subscribe' to be present")

    # Unknown framework / executor (looked up after validation).
    unknown_fw = dict(running.call("MESSAGE", message={"data": ""}), framework_id={"value": "nope"})
    assert send(agent, unknown_fw) == (400, "Framework cannot be found")
    unknown_ex = dict(running.call("MESSAGE", message={"data": ""}), executor_id={"value": "nope"})
    assert send(agent, unknown_ex) == (400, "Executor cannot be found")

    # A valid update from "the executor" reaches the framework; the real executor is undisturbed.
    valid = running.call("UPDATE", update={"status": running.status("TASK_RUNNING", message="via the test")})
    assert send(agent, valid) == (202, "")
    status = framework.wait(
        "update", lambda s: s["task_id"]["value"] == running.task_id and s.get("message") == "via the test"
    )
    assert status["state"] == "TASK_RUNNING" and status["source"] == "SOURCE_EXECUTOR"


def test_executor_request_format(running: Running) -> None:
    agent = running.agent
    heartbeat = json.dumps(running.call("HEARTBEAT")).encode()
    assert post(agent, None, {}, method="GET") == (
        405,
        "405 Method Not Allowed. Expecting one of { 'POST' }, but received 'GET'.",
    )
    assert post(agent, heartbeat, {}) == (400, "Expecting 'Content-Type' to be present")
    assert post(agent, heartbeat, {"Content-Type": "text/plain"}) == (
        415,
        "Expecting 'Content-Type' of application/json or application/x-protobuf",
    )
    status, text = post(agent, b"{nope", {"Content-Type": JSON})
    assert status == 400 and text.startswith("Failed to parse body into JSON: ")
    assert post(agent, b"\xff\xff\xff", {"Content-Type": PROTOBUF}) == (
        400,
        "Failed to parse body into Call protobuf",
    )
    # Required fields of mesos.v1.executor.Call (the JSON → protobuf conversion of stout).
    no_ids = json.dumps({"type": "HEARTBEAT"}).encode()
    assert post(agent, no_ids, {"Content-Type": JSON}) == (
        400,
        "Failed to convert JSON into Call protobuf: Missing required fields: executor_id, framework_id",
    )
    no_status = json.dumps(running.call("UPDATE", update={})).encode()
    assert post(agent, no_status, {"Content-Type": JSON}) == (
        400,
        "Failed to convert JSON into Call protobuf: Missing required fields: update.status",
    )
    subscribe = json.dumps(running.call("SUBSCRIBE", subscribe={})).encode()
    assert post(agent, subscribe, {"Content-Type": JSON, "Accept": "text/html"}) == (
        406,
        "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'",
    )


def read_record(resp: http.client.HTTPResponse) -> bytes:
    size = b""
    while not size.endswith(b"\n"):
        byte = resp.read(1)
        assert byte, "stream closed"
        size += byte
    return resp.read(int(size))


def test_protobuf_executor_subscribe_launch_update(
    local_cluster: RunningCluster, framework: Framework
) -> None:
    """An executor speaking protobuf: 403 before it subscribes; SUBSCRIBE with ``Accept:
    application/x-protobuf`` streams ``Event`` records (SUBSCRIBED, LAUNCH), each parsed strictly;
    its protobuf UPDATE reaches the framework."""
    task = Running(local_cluster, framework, command="sleep 120")
    agent = task.agent
    # The agent starts the executor process; it never subscribes on its own.
    early = task.call("UPDATE", update={"status": task.status("TASK_RUNNING")})
    deadline_status = call_protobuf(agent, early)
    assert deadline_status == (403, "Executor is not subscribed")

    message = json_format.ParseDict(
        task.call("SUBSCRIBE", subscribe={}), executor_pb2.Call(), ignore_unknown_fields=False
    )
    conn = http.client.HTTPConnection(agent.ip, agent.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/api/v1/executor",
            body=message.SerializeToString(),
            headers={"Content-Type": PROTOBUF, "Accept": PROTOBUF},
        )
        resp = conn.getresponse()
        assert resp.status == 200 and resp.headers["Content-Type"] == PROTOBUF
        subscribed = executor_pb2.Event.FromString(read_record(resp))
        assert subscribed.type == executor_pb2.Event.SUBSCRIBED
        assert not missing_fields(subscribed)
        assert subscribed.subscribed.executor_info.executor_id.value == task.executor_id
        assert subscribed.subscribed.agent_info.id.value == agent.id
        launch = executor_pb2.Event.FromString(read_record(resp))
        assert launch.type == executor_pb2.Event.LAUNCH and not missing_fields(launch)
        assert launch.launch.task.task_id.value == task.task_id
        # The same events in JSON parse strictly too (what a JSON executor gets).
        parse_strict(json_format.MessageToJson(launch), executor_pb2.Event())

        assert call_protobuf(agent, task.call("UPDATE", update={"status": task.status("TASK_RUNNING")})) == (
            202,
            "",
        )
        framework.update(task.task_id, "TASK_RUNNING")
        acknowledged = executor_pb2.Event.FromString(read_record(resp))
        assert acknowledged.type == executor_pb2.Event.ACKNOWLEDGED
        assert acknowledged.acknowledged.task_id.value == task.task_id
        finished = task.status("TASK_FINISHED")
        assert call_protobuf(agent, task.call("UPDATE", update={"status": finished})) == (202, "")
        framework.update(task.task_id, "TASK_FINISHED")
    finally:
        conn.close()


def test_calls_during_agent_recovery_are_503(tmp_path: Path) -> None:
    """After a restart, while the agent waits for its executors to re-subscribe (``Slave::RECOVERING``),
    an UPDATE is answered 503 "Agent has not finished recovery"; HEARTBEAT still 202; afterwards the
    executor that did not come back is gone and the agent answers as usual again."""
    window = 6.0
    cluster = ClusterProcess(tmp_path, agents=1, executor_reregistration_timeout=window)
    cluster.start()
    sessions: set[int] = set()
    try:
        agent_view = cluster.wait_agents()["slaves"][0]
        fw = Framework(cluster.address, failover_timeout=3600)
        fw.start()
        try:
            offer = fw.offer()
            task = task_info(offer)
            task["executor"]["command"] = {"value": "sleep 600", "shell": True}  # never subscribes
            fw.driver.launchTasks(offer["id"], [task])
            deadline = time.monotonic() + 30
            # Started, and its pid checkpointed (so the restarted agent recovers it).
            while not ((sessions := sessions_under(tmp_path)) and list(tmp_path.rglob("forked.pid"))):
                assert time.monotonic() < deadline, "the executor did not start"
                time.sleep(0.05)
        finally:
            fw.stop(failover=True)
        ip, port = agent_view["pid"].split("@", 1)[1].rsplit(":", 1)
        call = {
            "type": "UPDATE",
            "framework_id": {"value": fw.framework_id},
            "executor_id": task["executor"]["executor_id"],
            "update": {
                "status": {
                    "task_id": task["task_id"],
                    "state": "TASK_RUNNING",
                    "source": "SOURCE_EXECUTOR",
                    "uuid": new_uuid(),
                }
            },
        }
        heartbeat = {k: call[k] for k in ("framework_id", "executor_id")} | {"type": "HEARTBEAT"}

        def send(body: Json) -> tuple[int, str]:
            conn = http.client.HTTPConnection(ip, int(port), timeout=10)
            try:
                conn.request(
                    "POST", "/api/v1/executor", body=json.dumps(body), headers={"Content-Type": JSON}
                )
                resp = conn.getresponse()
                return resp.status, resp.read().decode()
            except OSError:
                return 0, "not listening"
            finally:
                conn.close()

        cluster.kill9()
        cluster.start()
        started = time.monotonic()
        while (answer := send(call))[0] == 0:
            assert time.monotonic() - started < 30, "the agent did not come back"
            time.sleep(0.02)
        assert answer == (503, "Agent has not finished recovery")
        assert time.monotonic() - started < window  # inside the re-registration window
        assert send(heartbeat) == (202, "")
        cluster.wait_agents()  # the window is over: the agent re-registered
        # The executor did not re-subscribe: destroyed; its framework and executor are unknown now.
        deadline = time.monotonic() + 30
        while any(session_members(s) for s in sessions):
            assert time.monotonic() < deadline, "the executor that did not come back is still alive"
            time.sleep(0.1)
        assert send(call)[0] == 400
    finally:
        sessions.update(sessions_under(tmp_path))
        cluster.stop()
        for sid in sessions:
            for pid in session_members(sid):
                os.kill(pid, signal.SIGKILL)
