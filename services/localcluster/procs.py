"""Finding and killing every process of a session (executors start in their own session; members
they start may create their own process groups, but keep the session)."""

from __future__ import annotations

import asyncio
import os
import signal
import time


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid`` (/proc/<pid>/stat field 6)."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is field 3 (state); field 6 (session) is fields[3].
        if len(fields) > 3 and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def signal_session(sid: int, sig: int) -> int:
    count = 0
    for pid in session_members(sid):
        try:
            os.kill(pid, sig)
            count += 1
        except ProcessLookupError:
            pass
    return count


async def kill_session(sid: int, grace: float) -> None:
    """SIGTERM every process of the session, SIGKILL what is left after ``grace`` seconds."""
    if signal_session(sid, signal.SIGTERM) == 0:
        return
    deadline = time.monotonic() + grace
    # Processes outside our children have no exit notification: poll /proc.
    while session_members(sid) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    deadline = time.monotonic() + 10
    while session_members(sid) and time.monotonic() < deadline:
        signal_session(sid, signal.SIGKILL)
        await asyncio.sleep(0.1)


def kill_session_now(sid: int) -> None:
    """Synchronous SIGKILL of a session (last resort at interpreter exit)."""
    for _ in range(20):
        if signal_session(sid, signal.SIGKILL) == 0:
            return
        time.sleep(0.05)
