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


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 on (``fields[0]`` is the state), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time (``/proc/<pid>/stat`` field 22, clock ticks after boot): with the
    pid, it names one process (a pid can be reused, the pair cannot)."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def is_alive(pid: int, started: int | None) -> bool:
    """True if ``pid`` is a live (non-zombie) process started at ``started`` (when given)."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


async def wait_gone(pid: int, started: int | None, poll: float = 0.2) -> None:
    """Wait until a process that is not our child (a recovered executor) is gone: through a pidfd
    when the kernel has them (Linux >= 5.3), else by polling /proc every ``poll`` seconds."""
    if not is_alive(pid, started):
        return
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while is_alive(pid, started):  # noqa: ASYNC110 (not our child: no exit notification)
            await asyncio.sleep(poll)
        return
    try:
        if not is_alive(pid, started):  # the pid was reused between the check and the open
            return
        gone: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await gone
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
