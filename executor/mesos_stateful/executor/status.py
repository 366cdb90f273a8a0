"""Task status updates as the monitor produces them, and where it sends them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

TASK_STARTING = "TASK_STARTING"
TASK_RUNNING = "TASK_RUNNING"
TASK_KILLING = "TASK_KILLING"
TASK_FINISHED = "TASK_FINISHED"
TASK_FAILED = "TASK_FAILED"
TASK_KILLED = "TASK_KILLED"
TASK_ERROR = "TASK_ERROR"
TERMINAL_STATES = frozenset({TASK_FINISHED, TASK_FAILED, TASK_KILLED, TASK_ERROR})

# Mesos TaskStatus.Reason values the executor uses.
REASON_HEALTH = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
REASON_LAUNCH_FAILED = "REASON_CONTAINER_LAUNCH_FAILED"
REASON_EXITED = "REASON_COMMAND_EXECUTOR_FAILED"
REASON_INVALID = "REASON_TASK_INVALID"


@dataclass(frozen=True)
class StatusUpdate:
    """One update about the task: a Mesos state name, a message for people, health if known."""

    state: str
    message: str = ""
    healthy: bool | None = None
    reason: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class StatusSink(Protocol):
    """Takes updates in order; must not block (the Mesos driver sends them from elsewhere)."""

    def send(self, update: StatusUpdate) -> None: ...
