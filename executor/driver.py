"""pymesos' executor driver with what the executor needs on top.

Import this module on the main thread: importing pymesos installs a SIGINT handler.
"""

from __future__ import annotations

import os
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
      its own process group, out of reach of pymesos' ``killpg(0)``) and exits within the grace.
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
