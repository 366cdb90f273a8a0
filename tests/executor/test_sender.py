"""The status sender: order, retries while the agent is away, terminal acknowledgement."""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from typing import Any

from executor_helpers import eventually

from mesos_stateful.executor.sender import StatusSender
from mesos_stateful.executor.status import StatusUpdate


async def test_updates_go_out_in_order_with_retries_and_the_terminal_ack_is_tracked() -> None:
    sent: list[dict[str, Any]] = []
    failures = [2]  # the first two calls fail, as while the driver is not connected yet
    lock = threading.Lock()

    def send(status: dict[str, Any]) -> None:  # called on a worker thread, like pymesos' HTTP call
        with lock:
            if failures[0]:
                failures[0] -= 1
                raise RuntimeError("Not connected yet")
            sent.append(status)

    sender = StatusSender(send, "cache-0.1")
    sink = sender.for_task("cache-0.1")
    try:
        sink.send(StatusUpdate("TASK_STARTING", "started"))
        sink.send(StatusUpdate("TASK_RUNNING", healthy=True, reason="REASON_X"))
        sink.send(StatusUpdate("TASK_FAILED", "exited with code 1"))
        await eventually(lambda: len(sent) == 3)
        assert [s["state"] for s in sent] == ["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"]
        assert sent[1]["healthy"] is True and "healthy" not in sent[0]
        assert all(s["source"] == "SOURCE_EXECUTOR" for s in sent)
        assert all(s["executor_id"]["value"] == "cache-0.1" for s in sent)

        assert not await sender.wait_terminal_acknowledged("cache-0.1", timeout=0.05)
        sender.acknowledged("cache-0.1", uuid.UUID(bytes=base64.b64decode(sent[1]["uuid"])))  # not the last
        assert not await sender.wait_terminal_acknowledged("cache-0.1", timeout=0.05)
        terminal = uuid.UUID(bytes=base64.b64decode(sent[2]["uuid"]))
        asyncio.get_running_loop().call_soon(sender.acknowledged, "cache-0.1", terminal)
        assert await sender.wait_terminal_acknowledged("cache-0.1", timeout=10)
    finally:
        await sender.close()


async def test_updates_carry_the_launch_traceparent_as_a_label() -> None:
    """The TaskInfo's ``traceparent`` label goes on every update of its task (Mesos
    TaskStatus.labels), none on another task's; a malformed one is ignored."""
    from mesos_stateful.executor.launch import task_traceparent

    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    task = {"task_id": {"value": "cache-0.1"}, "labels": {"labels": [
        {"key": "instance", "value": "cache"}, {"key": "traceparent", "value": traceparent}]}}
    assert task_traceparent(task) == traceparent
    assert task_traceparent({"labels": {"labels": [{"key": "traceparent", "value": "00-zz-1-01"}]}}) == ""
    assert task_traceparent({"task_id": {"value": "x"}}) == ""

    sent: list[dict[str, Any]] = []
    sender = StatusSender(sent.append, "cache-0.1")
    sender.set_trace_parent("cache-0.1", task_traceparent(task))
    try:
        sender.for_task("cache-0.1").send(StatusUpdate("TASK_RUNNING"))
        sender.for_task("cache-0.1").send(StatusUpdate("TASK_FAILED", "killed by signal 9"))
        sender.for_task("other-0.1").send(StatusUpdate("TASK_ERROR"))
        await eventually(lambda: len(sent) == 3)
        labels = [s.get("labels") for s in sent]
        assert labels[:2] == [{"labels": [{"key": "traceparent", "value": traceparent}]}] * 2
        assert labels[2] is None
    finally:
        await sender.close()
