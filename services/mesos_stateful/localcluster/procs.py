"""Starting an executor process blocked until its pid is checkpointed; finding and killing every
process of a session (executors start in their own session; members they start may create their own
process groups, but keep the session)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO


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


# The child side of ``spawn_blocked``: what Mesos' ``mesos-containerizer launch`` does before it execs
# the executor (``src/slave/containerizer/mesos/launch.cpp``: it waits on the pipe from the agent,
# and exits if the agent is gone). argv: <release fd> <error fd>. The release is one JSON object
# ``{"file", "argv", "env"}``, then EOF; EOF alone (or a torn object) means the agent died before it
# checkpointed the pid: exit without running anything. Python ignores SIGPIPE and SIGXFSZ at startup;
# they are restored (as subprocess' ``restore_signals``) so the executor inherits what it would have.
_LAUNCHER = r"""
import json, os, signal, sys
release, errors = int(sys.argv[1]), int(sys.argv[2])
data = b""
while True:
    chunk = os.read(release, 65536)
    if not chunk:
        break
    data += chunk
os.close(release)
try:
    spec = json.loads(data)
except ValueError:
    os._exit(1)
for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
os.set_inheritable(errors, False)
try:
    os.execvpe(spec["file"], spec["argv"], spec["env"])
except OSError as error:
    os.write(errors, json.dumps([error.errno, error.strerror]).encode())
os._exit(127)
"""


@dataclass
class BlockedProcess:
    """A process forked in its own session, blocked before it execs anything (``spawn_blocked``)."""

    proc: asyncio.subprocess.Process
    _release: int  # write end of the pipe the child waits on (-1 once closed)
    _errors: int  # read end of the pipe the child reports a failed exec on (-1 once closed)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def release(self, file: str, argv: list[str], env: dict[str, str]) -> OSError | None:
        """Let the child exec ``file`` with ``argv`` and exactly ``env`` (``PATH`` of ``env``
        searched when ``file`` has no ``/``, as ``subprocess``). Returns the exec error (as the
        ``OSError`` ``subprocess`` raises), or None once it exec'd or if the child is already gone
        (its exit is then seen by whoever waits for it)."""
        payload = json.dumps({"file": file, "argv": argv, "env": env}).encode()
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(self._release, view) :]
        except BrokenPipeError:
            pass
        finally:
            self._close_release()
        try:
            data = await _read_to_eof(self._errors)
        finally:
            self._close_errors()
        if not data:
            return None
        errno, strerror = json.loads(data)
        return OSError(errno, strerror, file)

    def abort(self) -> None:
        """Never release it: the child exits without exec'ing (its end of the pipe reads EOF)."""
        self._close_release()
        self._close_errors()

    def _close_release(self) -> None:
        if self._release >= 0:
            os.close(self._release)
            self._release = -1

    def _close_errors(self) -> None:
        if self._errors >= 0:
            os.close(self._errors)
            self._errors = -1


async def spawn_blocked(
    cwd: Path, env: dict[str, str], stdout: IO[bytes], stderr: IO[bytes]
) -> BlockedProcess:
    """Fork a process in a new session (pid == sid), stdin ``/dev/null``, cwd and stdio as given,
    that waits on a pipe before it execs anything: the caller checkpoints its pid, then
    ``release``s it (or ``abort``s). If the caller dies first, the child exits without running a
    line of the executor: there is no window in which an executor runs with its pid unrecorded
    (Mesos' ``launcher->fork`` + ``checkpoint`` + ``exec``, ``containerizer.cpp`` ``_launch``/``exec``).
    Only this process holds the write end of the pipe (``os.pipe`` fds are close-on-exec and
    ``subprocess`` closes the others in its children)."""
    release_r, release_w = os.pipe()
    errors_r, errors_w = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            _LAUNCHER,
            str(release_r),
            str(errors_w),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            pass_fds=(release_r, errors_w),
        )
    except BaseException:
        os.close(release_w)
        os.close(errors_r)
        raise
    finally:
        os.close(release_r)
        os.close(errors_w)
    return BlockedProcess(proc, release_w, errors_r)


async def _read_to_eof(fd: int) -> bytes:
    """Everything read from ``fd`` until EOF, without blocking the loop."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _set_done, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            continue
        if not chunk:
            return data
        data += chunk


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
