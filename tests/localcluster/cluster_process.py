"""The local cluster in a process of its own (``python -m mesos_stateful.localcluster serve``) with its
own work dir, free master port and agent addresses, so a test can ``kill -9`` it and start it again."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.ports import free_port


def session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[3])


def sessions_under(root: Path) -> set[int]:
    """Sessions of processes whose cwd is under ``root`` (executors and members run in sandboxes)."""
    out: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(root)):
            sid = session_of(int(entry))
            if sid:
                out.add(sid)
    return out


def kill_left_behind(sessions: set[int], timeout: float = 30.0) -> dict[int, list[int]]:
    """Wait up to ``timeout`` for every process of ``sessions`` to end; SIGKILL those still there and
    return them (session -> pids), empty when nothing was left behind."""
    deadline = time.monotonic() + timeout
    while any(session_members(s) for s in sessions) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {s: session_members(s) for s in sessions if session_members(s)}
    for pids in left.values():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    return left


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


class ClusterProcess:
    def __init__(self, work_dir: Path, agents: int = 2, **flags: Any) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.agents = agents
        self.flags: dict[str, Any] = {
            "allocation-interval": 0.2,
            "agent-ip-base": f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.2",
            "agent-ports-begin": random.randrange(10000, 29001, 1000),
            "executor-shutdown-grace": 2,
            "kill-grace": 2,
            **{k.replace("_", "-"): v for k, v in flags.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work_dir / "cluster.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "mesos_stateful.localcluster", "serve", "--listen", self.address]
        argv += ["--work-dir", str(self.work_dir / "cluster"), "--agents", str(self.agents)]
        for name, value in self.flags.items():
            argv += [f"--{name}", str(value)]
        env = dict(os.environ, STATEFUL_CLUSTER_AGENT_PORT="0")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.address}/master/state", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def wait_agents(self, timeout: float = 60.0) -> dict[str, Any]:
        """/master/state once every agent is registered (a recovering agent is not, yet)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                state = self.state()
                if len([a for a in state["slaves"] if a["active"]]) == self.agents:
                    return state
            except OSError:
                pass
            assert time.monotonic() < deadline, f"agents not registered: {self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
