"""pymesos' executor driver with what the executor needs on top.

Import this module on the main thread: importing pymesos installs a SIGINT handler.
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any, Protocol

from pymesos import MesosExecutorDriver, decode_data, encode_data
from pymesos.utils import DAY, parse_duration


class AckListener(Protocol):
    """What the driver tells the executor beyond pymesos' Executor interface (driver thread)."""

    def acknowledged(self, task_id: str, update_uuid: uuid.UUID) -> None: ...

    def killTask(
        self, driver: Any, taskId: dict[str, Any], kill_policy: dict[str, Any] | None = None
    ) -> None: ...


class ExecutorDriver(MesosExecutorDriver):  # type: ignore[misc]
    """* remembers unacknowledged updates, so a re-subscription sends them again (pymesos keeps
      the dict but never fills it);
    * reports acknowledgements to the executor (pymesos drops them);
    * passes a KILL's ``kill_policy`` (pymesos passes only the task id);
    * never kills its own process group on shutdown: the executor kills the member (which is in
      its own process group, out of reach of pymesos' ``killpg(0)``) and exits within the grace;
    * retries SUBSCRIBE after a random backoff between 0 and half of
      ``MESOS_SUBSCRIPTION_BACKOFF_MAX`` (the Mesos executor library, ``src/executor/executor.cpp``
      ``backoff()``, takes up to the whole of it; the agent sets it to its
      ``--executor_reregistration_timeout``: a restarted agent destroys the executors it has not
      heard from within that window, so two attempts fall in it here, not one). pymesos doubles
      from 2 s up to 15 s, and would miss the window (2 s by default).
    """

    def __init__(self, executor: AckListener) -> None:
        env = os.environ
        # With checkpointing, the agent may come back: reconnect for up to its recovery timeout
        # (then pymesos gives up, interrupts the main thread and the executor kills the member).
        recovery = env.get("MESOS_RECOVERY_TIMEOUT")
        timeout = parse_duration(recovery) if recovery else DAY
        super().__init__(executor, use_addict=False, timeout=timeout)
        # Agents set MESOS_CHECKPOINT to "1" or "0"; pymesos takes any non-empty value as true.
        self.checkpoint = env.get("MESOS_CHECKPOINT", "0") not in ("", "0", "false")
        self.local = True
        backoff_max = env.get("MESOS_SUBSCRIPTION_BACKOFF_MAX")
        self.backoff_max: float | None = parse_duration(backoff_max) if backoff_max else None

    def _backoff(self, num_conn_retry: int) -> float:
        """Seconds to wait before the next connection attempt (pymesos' I/O thread)."""
        if self.backoff_max is None:
            return float(super()._backoff(num_conn_retry))
        return random.uniform(0.0, self.backoff_max / 2)

    def gen_request(self) -> bytes:
        """SUBSCRIBE with the unacknowledged tasks and updates (read under the lock: the
        executor's threads add updates while pymesos' I/O thread reconnects)."""
        with self._lock:
            return bytes(super().gen_request())

    def sendStatusUpdate(self, status: dict[str, Any]) -> None:
        """Blocking HTTP call: never call it on the event loop's thread."""
        if "uuid" not in status:
            status["uuid"] = encode_data(uuid.uuid4().bytes)
        key = uuid.UUID(bytes=decode_data(status["uuid"]))
        with self._lock:
            self.updates[key] = {"status": status}
        super().sendStatusUpdate(status)

    def on_acknowledged(self, event: dict[str, Any]) -> None:
        with self._lock:
            super().on_acknowledged(event)
        self.executor.acknowledged(event["task_id"]["value"], uuid.UUID(bytes=decode_data(event["uuid"])))

    def on_kill(self, event: dict[str, Any]) -> None:
        self.executor.killTask(self, event["task_id"], event.get("kill_policy"))
