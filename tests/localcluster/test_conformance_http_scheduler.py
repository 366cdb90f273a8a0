"""The v1 scheduler API in protobuf (``application/x-protobuf``) beside JSON, as
``Master::Http::scheduler`` (``src/master/http.cpp``): protobuf calls, a SUBSCRIBE stream of RecordIO
records holding serialized ``mesos.v1.scheduler.Event`` messages when ``Accept`` allows protobuf
(JSON first otherwise), and Mesos's answers to malformed requests."""

from __future__ import annotations

import http.client
import json
import queue
import sys
import threading
import uuid
from typing import Any

from google.protobuf import json_format

from localcluster.harness import EXECUTOR
from localcluster.mesos_json import missing_fields
from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.api.mesos.v1.scheduler import scheduler_pb2
from mesos_stateful.testing.cluster import RunningCluster

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
Json = dict[str, Any]
Event = scheduler_pb2.Event


def _connection(cluster: RunningCluster) -> http.client.HTTPConnection:
    host, port = cluster.master_address.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def read_record(resp: http.client.HTTPResponse) -> bytes | None:
    size = b""
    while not size.endswith(b"\n"):
        byte = resp.read(1)
        if not byte:
            return None
        size += byte
    return resp.read(int(size))


class ProtobufScheduler:
    """A scheduler that speaks protobuf both ways; every record must parse as a complete Event."""

    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        self.events: queue.Queue[Event | BaseException] = queue.Queue()
        self.framework_id = ""
        self.stream_id = ""
        self._conn = _connection(cluster)

    def start(self, accept: str = PROTOBUF) -> http.client.HTTPResponse:
        call = self.message(
            {
                "type": "SUBSCRIBE",
                "subscribe": {
                    "framework_info": {
                        "user": "test",
                        "name": "protobuf",
                        "roles": ["stateful"],
                        "capabilities": [{"type": "MULTI_ROLE"}],
                        "failover_timeout": 60.0,
                    }
                },
            }
        )
        self._conn.request(
            "POST",
            "/api/v1/scheduler",
            body=call.SerializeToString(),
            headers={"Content-Type": PROTOBUF, "Accept": accept},
        )
        resp = self._conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read())
        self.stream_id = resp.headers["Mesos-Stream-Id"]
        return resp

    def read(self, resp: http.client.HTTPResponse) -> None:
        threading.Thread(target=self._read, args=(resp,), daemon=True).start()
        subscribed = self.wait(Event.SUBSCRIBED)
        self.framework_id = subscribed.subscribed.framework_id.value

    def _read(self, resp: http.client.HTTPResponse) -> None:
        try:
            while (record := read_record(resp)) is not None:
                event = Event.FromString(record)
                missing = missing_fields(event)
                assert not missing, f"event lacks {missing}: {event}"
                self.events.put(event)
        except BaseException as error:  # handed to the test thread
            self.events.put(error)

    def wait(self, kind: int, timeout: float = 30.0) -> Event:
        while True:
            item = self.events.get(timeout=timeout)
            if isinstance(item, BaseException):
                raise item
            if item.type == kind:
                return item

    @staticmethod
    def message(call: Json) -> scheduler_pb2.Call:
        return json_format.ParseDict(call, scheduler_pb2.Call(), ignore_unknown_fields=False)

    def call(self, kind: str, body: Json | None = None) -> tuple[int, bytes]:
        payload: Json = {"type": kind, "framework_id": {"value": self.framework_id}}
        if body is not None:
            payload[kind.lower()] = body
        call = self.message(payload)
        conn = _connection(self.cluster)
        try:
            conn.request(
                "POST",
                "/api/v1/scheduler",
                body=call.SerializeToString(),
                headers={"Content-Type": PROTOBUF, "Mesos-Stream-Id": self.stream_id},
            )
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def close(self) -> None:
        self._conn.close()


def test_protobuf_scheduler_launches_and_acknowledges(local_cluster: RunningCluster) -> None:
    sched = ProtobufScheduler(local_cluster)
    resp = sched.start()
    assert resp.headers["Content-Type"] == PROTOBUF
    sched.read(resp)
    try:
        offers = sched.wait(Event.OFFERS).offers.offers
        offer = offers[0]
        assert offer.allocation_info.role == "stateful" and offer.resources
        task_id = f"task-{uuid.uuid4().hex[:8]}"
        task = {
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": offer.agent_id.value},
            "resources": [
                {
                    "name": "cpus",
                    "type": "SCALAR",
                    "scalar": {"value": 0.5},
                    "allocation_info": {"role": "stateful"},
                }
            ],
            "executor": {
                "executor_id": {"value": f"exec-{task_id}"},
                "command": {"value": f"{sys.executable} {EXECUTOR}", "shell": True},
            },
            "data": "eyJjaGlsZCI6IHRydWV9",  # {"child": true}
        }
        accept = {
            "offer_ids": [{"value": offer.id.value}],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
        }
        assert sched.call("ACCEPT", accept) == (202, b"")
        decline = {"offer_ids": [{"value": o.id.value} for o in offers[1:]]}
        assert sched.call("DECLINE", decline) == (202, b"")
        while True:
            status = sched.wait(Event.UPDATE).update.status
            assert status.task_id.value == task_id
            acknowledge = {
                "agent_id": {"value": status.agent_id.value},
                "task_id": {"value": task_id},
                "uuid": json_format.MessageToDict(status)["uuid"],
            }
            assert sched.call("ACKNOWLEDGE", acknowledge) == (202, b"")
            if status.state == mesos_pb2.TASK_RUNNING:
                break
        assert sched.call("RECONCILE", {"tasks": [{"task_id": {"value": task_id}}]}) == (202, b"")
        reconciled = sched.wait(Event.UPDATE).update.status
        assert reconciled.reason == reconciled.REASON_RECONCILIATION and not reconciled.uuid
    finally:
        if sched.framework_id:
            assert sched.call("TEARDOWN") == (202, b"")
        sched.close()


def test_subscribe_media_type_negotiation(local_cluster: RunningCluster) -> None:
    """JSON when ``Accept`` allows it (it comes first), else protobuf; neither: 406."""
    for accept, expected in ((f"{PROTOBUF}, {JSON}", JSON), ("*/*", JSON), (f"{PROTOBUF}", PROTOBUF)):
        sched = ProtobufScheduler(local_cluster)
        resp = sched.start(accept)
        try:
            assert resp.headers["Content-Type"] == expected
            record = read_record(resp)
            assert record is not None
            if expected == JSON:
                assert json.loads(record)["type"] == "SUBSCRIBED"
            else:
                assert Event.FromString(record).type == Event.SUBSCRIBED
        finally:
            sched.close()
    sched = ProtobufScheduler(local_cluster)
    try:
        sched.start(f"{PROTOBUF};q=0, {JSON};q=0")
        raise AssertionError("SUBSCRIBE without an acceptable media type was answered 200")
    except AssertionError as error:
        assert "406" in str(error) and "Expecting 'Accept' to allow" in str(error), error
    finally:
        sched.close()


def test_scheduler_request_errors(local_cluster: RunningCluster) -> None:
    def post(body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[int, bytes]:
        conn = _connection(local_cluster)
        try:
            conn.request(
                method, "/api/v1/scheduler", body=body if method == "POST" else None, headers=headers
            )
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    assert post(b"", {}, method="GET") == (
        405,
        b"405 Method Not Allowed. Expecting one of { 'POST' }, but received 'GET'.",
    )
    assert post(b"\xff\xff", {"Content-Type": PROTOBUF}) == (400, b"Failed to parse body into Call protobuf")
    # Content-Type compared exactly, as Mesos does.
    assert post(b"{}", {"Content-Type": "application/json; charset=utf-8"}) == (
        415,
        b"Expecting 'Content-Type' of application/json or application/x-protobuf",
    )
    status, text = post(json.dumps({"type": "REVIVE", "bogus": 1}).encode(), {"Content-Type": JSON})
    assert status == 400 and text.startswith(b"Failed to convert JSON into Call protobuf: "), text
