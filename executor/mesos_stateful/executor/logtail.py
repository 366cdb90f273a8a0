"""The end of a member's output, for the message of a failed task."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mesos_stateful.executor.runtime import LogPaths

MAX_LINES = 20
MAX_CHARS = 3000
_READ_BYTES = 64 * 1024
# The agent sends the executor's own log to the same files: its lines are not the member's.
_EXECUTOR_LINE = re.compile(r"^\d\d:\d\d:\d\d executor [A-Z]+ ")


def tail_lines(path: Path, lines: int = MAX_LINES) -> list[str]:
    """The last ``lines`` lines of a file ([] if it is missing or empty)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _READ_BYTES))
            data = f.read()
    except OSError:
        return []
    text = data.decode(errors="replace").rstrip("\n")
    return [line for line in text.splitlines() if not _EXECUTOR_LINE.match(line)][-lines:]


def log_tail(logs: LogPaths, lines: int = MAX_LINES) -> str:
    """The member's stderr tail, or its stdout tail when stderr is empty; labelled, bounded."""
    for label, path in (("stderr", logs.stderr), ("stdout", logs.stdout)):
        tail = tail_lines(path, lines)
        if tail:
            text = "\n".join(tail)
            if len(text) > MAX_CHARS:
                text = "..." + text[-MAX_CHARS:]
            return f"last lines of {label}:\n{text}"
    return ""
