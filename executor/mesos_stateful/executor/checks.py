"""Readiness and health checks: one attempt of a TCP or command check, with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_INTERVAL_MS = 1000
DEFAULT_TIMEOUT_MS = 2000
DEFAULT_MAX_FAILURES = 3


@dataclass(frozen=True)
class TcpTarget:
    """Connect to ``host:port`` (the port named ``port_name`` in the launch)."""

    host: str
    port: int
    port_name: str

    def describe(self) -> str:
        return f"tcp {self.port_name} ({self.host}:{self.port})"


@dataclass(frozen=True)
class CommandTarget:
    """Run ``argv`` (already expanded) with ``env`` in ``cwd``; exit 0 passes."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    cwd: Path

    def describe(self) -> str:
        # Short on purpose: it ends up in status messages and `statefulctl get` tables.
        program = Path(self.argv[0]).name if self.argv else "?"
        if len(self.argv) > 2 and self.argv[1] == "-m":
            program += f" -m {self.argv[2]}"
        return f"command {program}"


@dataclass(frozen=True)
class CheckSpec:
    """A validated ``stateful.v1.Check`` with its defaults applied, in seconds."""

    target: TcpTarget | CommandTarget
    interval: float = DEFAULT_INTERVAL_MS / 1000
    timeout: float = DEFAULT_TIMEOUT_MS / 1000
    grace_period: float = 0.0
    max_consecutive_failures: int = DEFAULT_MAX_FAILURES


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = ""


async def run_check(check: CheckSpec) -> CheckResult:
    """One attempt, bounded by the check's timeout. Never raises (except on cancellation)."""
    target = check.target
    if isinstance(target, TcpTarget):
        return await _tcp(target, check.timeout)
    return await _command(target, check.timeout)


async def _tcp(target: TcpTarget, timeout: float) -> CheckResult:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(target.host, target.port)
    except TimeoutError:
        return CheckResult(False, f"{target.describe()}: no connection within {timeout:g}s")
    except OSError as error:
        return CheckResult(False, f"{target.describe()}: {error.strerror or error}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return CheckResult(True)


async def _command(target: CommandTarget, timeout: float) -> CheckResult:
    try:
        # Its own process group, so a timeout kills whatever the check command started too.
        process = await asyncio.create_subprocess_exec(
            *target.argv,
            cwd=target.cwd,
            env=dict(target.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            process_group=0,
        )
    except OSError as error:
        return CheckResult(False, f"{target.describe()}: cannot start: {error.strerror or error}")
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        return CheckResult(False, f"{target.describe()}: timed out after {timeout:g}s")
    except BaseException:
        _kill_group(process.pid)
        raise
    if process.returncode == 0:
        return CheckResult(True)
    lines = output.decode(errors="replace").strip().splitlines()
    last = f": {lines[-1][:200]}" if lines else ""
    return CheckResult(False, f"{target.describe()}: exited with code {process.returncode}{last}")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
