"""The runtime interface: how the monitor runs one member, whatever runs it.

The monitor only uses this interface, so a Docker runtime (a container from ``LaunchSpec.image``
with the launch's env, the sandbox files mounted, the ports published on HOST, logs copied to the
sandbox's ``stdout`` / ``stderr``) fits in beside :class:`~.process_runtime.ProcessRuntime` without
changing the monitor.
"""

from __future__ import annotations

import abc
import asyncio
import signal as signals
from dataclasses import dataclass
from pathlib import Path

from mesos_stateful.executor.launch import Launch


class RuntimeFailure(Exception):
    """The member could not be prepared or started (reported as TASK_FAILED)."""


@dataclass(frozen=True)
class ExitStatus:
    """How the member ended: an exit code, or the signal that killed it."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        """From a subprocess return code (negative: killed by that signal)."""
        return cls(signal=-returncode) if returncode < 0 else cls(code=returncode)

    @property
    def success(self) -> bool:
        return self.code == 0

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signals.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by signal {self.signal} ({name})"
        return f"exited with code {self.code}"


@dataclass(frozen=True)
class MemberHandle:
    """What identifies the running member: a pid, or a container id (``pid`` may be None)."""

    id: str
    pid: int | None = None


@dataclass(frozen=True)
class LogPaths:
    """Where the member's output goes (files in the sandbox)."""

    stdout: Path
    stderr: Path


class Runtime(abc.ABC):
    """Runs one member. Lifecycle: ``prepare`` → ``start`` → ``wait`` (and ``signal``/``kill``)."""

    name: str = "runtime"

    def __init__(self) -> None:
        self._launch: Launch | None = None
        self._handle: MemberHandle | None = None
        self._exit: ExitStatus | None = None
        self._logs: LogPaths | None = None

    def _take_launch(self, launch: Launch) -> None:
        """Keep ``launch`` and name its log files (the sandbox's ``stdout`` / ``stderr``)."""
        self._launch = launch
        self._logs = LogPaths(stdout=launch.sandbox / "stdout", stderr=launch.sandbox / "stderr")

    @abc.abstractmethod
    async def prepare(self, launch: Launch) -> None:
        """Make everything ready to start (files in the sandbox, image present).

        Raises :class:`RuntimeFailure`."""

    @abc.abstractmethod
    async def start(self) -> MemberHandle:
        """Start the member. Raises :class:`RuntimeFailure` if it cannot start."""

    @abc.abstractmethod
    async def wait(self) -> ExitStatus:
        """Wait until the member has ended (may be called many times, concurrently)."""

    @abc.abstractmethod
    async def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole member (process group, container). No-op once it ended."""

    @abc.abstractmethod
    def force_kill_sync(self) -> None:
        """Last resort, synchronous and callable from any thread or a dying process: SIGKILL
        everything of the member now, without waiting."""

    @property
    def handle(self) -> MemberHandle | None:
        """The started member, or None before ``start``."""
        return self._handle

    @property
    def log_paths(self) -> LogPaths:
        """The member's stdout / stderr files."""
        if self._logs is None:
            raise RuntimeFailure("log_paths before prepare()")
        return self._logs

    @property
    def exit_status(self) -> ExitStatus | None:
        """How the member ended, or None while it runs (or before start)."""
        return self._exit

    @property
    def sandbox(self) -> Path | None:
        """The launch's sandbox, or None before ``prepare``."""
        return self._launch.sandbox if self._launch else None

    async def kill(self, grace: float) -> ExitStatus:
        """SIGTERM, up to ``grace`` seconds for the member to end, then SIGKILL. Returns how it
        ended. A runtime with its own stop primitive (``docker stop -t``) may override this.

        SIGCONT follows SIGTERM (as systemd's stop does): a stopped member (SIGSTOP, a frozen
        process) would otherwise leave SIGTERM pending for the whole grace period — a fence
        waiting on this kill then waits the grace too."""
        await self.signal(signals.SIGTERM)
        await self.signal(signals.SIGCONT)
        try:
            async with asyncio.timeout(grace):
                return await asyncio.shield(self.wait())
        except TimeoutError:
            pass
        await self.signal(signals.SIGKILL)
        return await self.wait()
