"""Local processes: free loopback ports, children in their own sessions (always stopped), and
finding the process that listens on host:port through /proc."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

TCP_LISTEN = "0A"


class Children:
    """Processes this benchmark started, each in its own session; ``stop_all`` ends them all."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        if proc in self._procs:
            self._procs.remove(proc)

    @staticmethod
    def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds (0: SIGKILL at once)."""
        if proc.poll() is None:
            self.signal_group(proc, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                proc.wait(timeout=grace if grace > 0 else 10)
            except subprocess.TimeoutExpired:
                self.signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        # The group may outlive its leader (a child of a child).
        self.signal_group(proc, signal.SIGKILL)
        self.forget(proc)

    def stop_all(self, grace: float = 0.0) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc, grace)


def _hex_ipv4(host: str) -> str:
    """An IPv4 address as /proc/net/tcp prints it (the 32-bit value in host byte order)."""
    return "{:08X}".format(struct.unpack("=I", socket.inet_aton(host))[0])


def listening_inodes(host: str, port: int) -> set[int]:
    """Socket inodes listening on host:port (or on the wildcard address and that port)."""
    wanted_port = f"{port:04X}"
    v4 = {_hex_ipv4(host), "00000000"}
    inodes: set[int] = set()
    for table, addresses in (("/proc/net/tcp", v4), ("/proc/net/tcp6", {"0" * 32})):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_LISTEN:
                continue
            address, _, hex_port = fields[1].partition(":")
            if hex_port == wanted_port and address in addresses:
                inodes.add(int(fields[9]))
    return inodes


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def listener_pids(host: str, port: int, name: str = "redis-server") -> list[int]:
    """Pids of processes called ``name`` holding a socket that listens on host:port, the
    listener itself first (a forked child, e.g. an RDB save, may hold the same socket)."""
    inodes = listening_inodes(host, port)
    if not inodes:
        return []
    targets = {f"socket:[{inode}]" for inode in inodes}
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if _process_name(pid) != name:
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    found.append(pid)
                    break
            except OSError:
                continue
    roots = [p for p in found if _parent(p) not in found]
    return sorted(roots) + sorted(p for p in found if p not in roots)


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Runnable(Protocol):
    """A bench: its children (stopped at exit whatever happens) and its async run."""

    children: Children

    async def run(self) -> int: ...


def run_main(bench: Runnable, verbose: bool) -> int:
    """The entry point of a bench script: logging, SIGTERM cancels the run (so what was measured
    is still reported), a last-resort SIGKILL of our children at exit; returns the exit code."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # Last resort if the loop dies before its own cleanup: SIGKILL what is still ours.
    atexit.register(bench.children.stop_all)

    async def runner() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench.run()

    started = time.monotonic()
    code = asyncio.run(runner())
    logging.getLogger("bench").info("done in %.0fs, exit code %d", time.monotonic() - started, code)
    return code
