"""Strict parsing of Mesos v1 JSON against the project's ``mesos.v1`` protos, and a bare v1 scheduler
HTTP client (SUBSCRIBE stream + calls) whose every received event and every sent call is parsed
strictly: unknown fields, wrong types and missing required fields fail the test."""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.api.mesos.v1.scheduler import scheduler_pb2

M = TypeVar("M", bound=Message)
Json = dict[str, Any]


def missing_fields(message: Message) -> list[str]:
    """``message.FindInitializationErrors()``: the paths of its unset required fields (proto2),
    e.g. ``["framework_id.value"]``; empty when it is complete."""
    # Every protobuf runtime (python, upb) has it; types-protobuf's Message stub lacks it.
    found: list[str] = message.FindInitializationErrors()  # type: ignore[attr-defined]
    return found


def parse_strict(data: str | Json, message: M) -> M:
    """``json_format.Parse(..., ignore_unknown_fields=False)`` plus the required-field check."""
    text = data if isinstance(data, str) else json.dumps(data)
    json_format.Parse(text, message, ignore_unknown_fields=False)
    missing = missing_fields(message)
    assert not missing, f"{type(message).__name__} lacks required fields {missing}: {text[:500]}"
    return message


def parse_event(data: str | Json) -> scheduler_pb2.Event:
    return parse_strict(data, scheduler_pb2.Event())


def parse_call(data: str | Json) -> scheduler_pb2.Call:
    return parse_strict(data, scheduler_pb2.Call())


def parse_resource(data: Json) -> mesos_pb2.Resource:
    return parse_strict(data, mesos_pb2.Resource())


class RawScheduler:
    """A v1 HTTP scheduler: events go to a queue (each parsed strictly); updates are acknowledged."""

    def __init__(
        self,
        master: str,
        role: str = "stateful",
        principal: str | None = "mesos-stateful",
        name: str = "raw",
        framework_id: str | None = None,
    ) -> None:
        self.master = master
        info: Json = {
            "user": "test",
            "name": name,
            "roles": [role],
            "failover_timeout": 60.0,
            "checkpoint": True,
            "capabilities": [{"type": "MULTI_ROLE"}, {"type": "RESERVATION_REFINEMENT"}],
        }
        if principal is not None:
            info["principal"] = principal
        if framework_id:
            info["id"] = {"value": framework_id}
        self.info = info
        self.role = role
        self.framework_id = framework_id or ""
        self.stream_id = ""
        self.events: queue.Queue[Json] = queue.Queue()
        self.backlog: list[Json] = []
        self.seen: list[Json] = []
        self.parsed: list[scheduler_pb2.Event] = []
        self.sent: list[scheduler_pb2.Call] = []
        self._conn: http.client.HTTPConnection | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- stream ----------------------------------------------------------------------------------

    def start(self) -> str:
        call: Json = {"type": "SUBSCRIBE", "subscribe": {"framework_info": self.info}}
        if self.framework_id:
            call["framework_id"] = {"value": self.framework_id}
        self.sent.append(parse_call(call))
        host, port = self.master.rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self._conn.request(
            "POST",
            "/api/v1/scheduler",
            body=json.dumps(call).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        resp = self._conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read())
        self.stream_id = resp.headers["Mesos-Stream-Id"]
        self._thread = threading.Thread(target=self._read, args=(resp,), daemon=True)
        self._thread.start()
        subscribed = self.wait("SUBSCRIBED")
        self.framework_id = subscribed["subscribed"]["framework_id"]["value"]
        return self.framework_id

    def _read(self, resp: http.client.HTTPResponse) -> None:
        try:
            while not self._closed:
                size = b""
                while not size.endswith(b"\n"):
                    byte = resp.read(1)
                    if not byte:
                        return
                    size += byte
                record = resp.read(int(size))
                event = json.loads(record)
                self.parsed.append(parse_event(record.decode()))
                self.events.put(event)
                if event.get("type") == "UPDATE" and event["update"]["status"].get("uuid"):
                    status = event["update"]["status"]
                    self.call(
                        "ACKNOWLEDGE",
                        {
                            "agent_id": status["agent_id"],
                            "task_id": status["task_id"],
                            "uuid": status["uuid"],
                        },
                    )
        except Exception as error:  # a parse failure must fail the test, not vanish in the thread
            self.events.put({"type": "_ERROR", "error": repr(error)})

    def stop(self) -> None:
        if self.stream_id and not self._closed:
            self.call("TEARDOWN")
        self._closed = True
        if self._conn is not None:
            self._conn.close()

    # --- calls -----------------------------------------------------------------------------------

    def call(self, kind: str, body: Json | None = None) -> int:
        call: Json = {"type": kind, "framework_id": {"value": self.framework_id}}
        if body is not None:
            call[kind.lower()] = body
        self.sent.append(parse_call(call))
        host, port = self.master.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(
                "POST",
                "/api/v1/scheduler",
                body=json.dumps(call).encode(),
                headers={"Content-Type": "application/json", "Mesos-Stream-Id": self.stream_id},
            )
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def accept(self, offer: Json, operations: list[Json], refuse: float = 0.0) -> None:
        status = self.call(
            "ACCEPT",
            {"offer_ids": [offer["id"]], "operations": operations, "filters": {"refuse_seconds": refuse}},
        )
        assert status == 202, status

    def decline(self, offer: Json, refuse: float = 0.0) -> None:
        assert (
            self.call("DECLINE", {"offer_ids": [offer["id"]], "filters": {"refuse_seconds": refuse}}) == 202
        )

    # --- events ----------------------------------------------------------------------------------

    def wait(self, kind: str, pred: Callable[[Json], bool] = lambda _e: True, timeout: float = 30.0) -> Json:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.backlog):
                if event.get("type") == kind and pred(event):
                    del self.backlog[i]
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {kind} event within {timeout}s; seen {[e.get('type') for e in self.seen]}"
                )
            try:
                event = self.events.get(timeout=min(0.2, remaining))
            except queue.Empty:
                continue
            assert event.get("type") != "_ERROR", event["error"]
            self.seen.append(event)
            self.backlog.append(event)

    def check(self) -> None:
        """Every event received so far parsed strictly (raises on the first that did not)."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            assert event.get("type") != "_ERROR", event["error"]
            self.seen.append(event)
            self.backlog.append(event)

    def offer(self, pred: Callable[[Json], bool] = lambda _o: True, timeout: float = 30.0) -> Json:
        """The next offer matching ``pred``; offers that do not match are declined (refuse 0 s)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.wait("OFFERS", timeout=max(0.1, deadline - time.monotonic()))
            found: Json | None = None
            for offer in event["offers"]["offers"]:
                if found is None and pred(offer):
                    found = offer
                else:
                    self.decline(offer)
            if found is not None:
                return found

    def update(self, task_id: str, state: str, timeout: float = 30.0) -> Json:
        event = self.wait(
            "UPDATE",
            lambda e: (
                e["update"]["status"]["task_id"]["value"] == task_id
                and e["update"]["status"]["state"] == state
            ),
            timeout,
        )
        status: Json = event["update"]["status"]
        return status
