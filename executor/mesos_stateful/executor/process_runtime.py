"""The process runtime: the member is a local process in the sandbox, in its own process group.

Its own group, so a kill reaches everything it started; the executor's session, so the agent
still kills it with the executor's session if the agent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as signals

from mesos_stateful.executor.files import write_files
from mesos_stateful.executor.launch import Launch
from mesos_stateful.executor.runtime import ExitStatus, MemberHandle, Runtime, RuntimeFailure

log = logging.getLogger(__name__)


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self) -> None:
        super().__init__()
        self._process: asyncio.subprocess.Process | None = None

    async def prepare(self, launch: Launch) -> None:
        self._take_launch(launch)
        try:
            launch.sandbox.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(write_files, launch.files)
        except OSError as error:
            raise RuntimeFailure(f"cannot write the task's files: {error}") from error

    async def start(self) -> MemberHandle:
        launch = self._launch
        if launch is None or self._logs is None:
            raise RuntimeFailure("start() before prepare()")
        if self._process is not None:
            raise RuntimeFailure("the member was already started")
        fds: list[int] = []
        try:
            # O_APPEND: the agent may point the executor's own output at the same files.
            for path in (self._logs.stdout, self._logs.stderr):
                fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
            self._process = await asyncio.create_subprocess_exec(
                *launch.argv,
                cwd=launch.sandbox,
                env=dict(launch.env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fds[0],
                stderr=fds[1],
                process_group=0,
            )
        except OSError as error:
            raise RuntimeFailure(f"cannot start {launch.argv[0]!r}: {error.strerror or error}") from error
        finally:
            for fd in fds:
                os.close(fd)
        pid = self._process.pid
        self._handle = MemberHandle(id=str(pid), pid=pid)
        log.info("started %s as pid %d (process group %d)", launch.argv[0], pid, pid)
        return self._handle

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """The started process (its pid leads the member's process group), or None before start."""
        return self._process

    async def wait(self) -> ExitStatus:
        if self._process is None:
            raise RuntimeFailure("wait() before start()")
        returncode = await self._process.wait()
        if self._exit is None:
            self._exit = ExitStatus.from_returncode(returncode)
            # Whatever the member left behind in its group goes with it.
            self._kill_group(signals.SIGKILL)
        return self._exit

    async def signal(self, sig: int) -> None:
        if self._exit is None:
            self._kill_group(sig)

    def force_kill_sync(self) -> None:
        self._kill_group(signals.SIGKILL)

    def _kill_group(self, sig: int) -> None:
        if self._handle is None or self._handle.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._handle.pid, sig)
