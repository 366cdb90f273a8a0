"""Sends status updates through the driver, in order, off the event loop, and tracks the
acknowledgement of each task's terminal update."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from pymesos import encode_data

from mesos_stateful.common import retry
from mesos_stateful.executor.launch import LABEL_TRACEPARENT
from mesos_stateful.executor.status import StatusSink, StatusUpdate

log = logging.getLogger(__name__)

SendFn = Callable[[dict[str, Any]], None]


class StatusSender:
    """``send`` is blocking (pymesos makes an HTTP call), so a single task hands each update to a
    worker thread, one at a time, retrying while the agent connection is down (``policy``,
    ``retry.STATUS_SEND`` by default: up to 30 s; an update not sent by then stays with the driver,
    which sends every unacknowledged update again in its next SUBSCRIBE)."""

    def __init__(self, send: SendFn, executor_id: str, policy: retry.Policy = retry.STATUS_SEND) -> None:
        self._send = send
        self._policy = policy
        self._executor_id = executor_id
        self.agent_id: str | None = None
        self._queue: asyncio.Queue[tuple[str, StatusUpdate]] = asyncio.Queue()
        self._terminal: dict[str, tuple[uuid.UUID, asyncio.Future[None]]] = {}
        # Task id -> the launch's traceparent, sent as the TaskStatus label "traceparent".
        self._trace_parents: dict[str, str] = {}
        self._worker = asyncio.create_task(self._run(), name="status-sender")

    def for_task(self, task_id: str) -> StatusSink:
        sender = self

        class _Sink:
            def send(self, update: StatusUpdate) -> None:
                sender.send(task_id, update)

        return _Sink()

    def set_trace_parent(self, task_id: str, traceparent: str) -> None:
        """Every later update of ``task_id`` carries ``traceparent`` (Mesos ``TaskStatus.labels``)."""
        if traceparent:
            self._trace_parents[task_id] = traceparent

    def send(self, task_id: str, update: StatusUpdate) -> None:
        if update.terminal and task_id not in self._terminal:
            self._terminal[task_id] = (uuid.uuid4(), asyncio.get_running_loop().create_future())
        self._queue.put_nowait((task_id, update))

    def acknowledged(self, task_id: str, update_uuid: uuid.UUID) -> None:
        entry = self._terminal.get(task_id)
        if entry and entry[0] == update_uuid and not entry[1].done():
            entry[1].set_result(None)

    async def wait_terminal_acknowledged(self, task_id: str, timeout: float) -> bool:
        """True when the task's terminal update was acknowledged within ``timeout`` seconds."""
        entry = self._terminal.get(task_id)
        if entry is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(entry[1])
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)

    def _status(self, task_id: str, update: StatusUpdate) -> dict[str, Any]:
        status: dict[str, Any] = {
            "task_id": {"value": task_id},
            "state": update.state,
            "source": "SOURCE_EXECUTOR",
            "executor_id": {"value": self._executor_id},
            "timestamp": time.time(),
        }
        if update.message:
            status["message"] = update.message
        if update.healthy is not None:
            status["healthy"] = update.healthy
        if update.reason:
            status["reason"] = update.reason
        if self.agent_id:
            status["agent_id"] = {"value": self.agent_id}
        traceparent = self._trace_parents.get(task_id)
        if traceparent:
            status["labels"] = {"labels": [{"key": LABEL_TRACEPARENT, "value": traceparent}]}
        entry = self._terminal.get(task_id)
        update_uuid = entry[0] if update.terminal and entry else uuid.uuid4()
        status["uuid"] = encode_data(update_uuid.bytes)
        return status

    async def _run(self) -> None:
        while True:
            task_id, update = await self._queue.get()
            await self._send_one(task_id, update)

    async def _send_one(self, task_id: str, update: StatusUpdate) -> None:
        """Send one update; while the agent is away, again per the policy (retry.STATUS_SEND).
        One not sent in the end stays with the driver, which sends every unacknowledged update
        again in its next SUBSCRIBE."""
        status = self._status(task_id, update)

        def failed(error: BaseException, delay: float) -> None:
            log.warning(
                "sending %s for %s failed (%s); retrying in %.1fs", update.state, task_id, error, delay
            )

        try:
            await retry.call(self._policy, lambda: asyncio.to_thread(self._send, status), on_retry=failed)
            log.debug("sent %s for %s", update.state, task_id)
        except Exception as error:
            log.error("giving up sending %s for %s: %s", update.state, task_id, error)
