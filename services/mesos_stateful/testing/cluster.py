"""The ``local_cluster`` fixture: an in-process LocalCluster (free ports, 3 agents, work dir in
tmp_path) on its own thread and event loop, so tests may block (pymesos' driver calls are
synchronous HTTP) without stalling the cluster. Stopped after the test; it then asserts that no
process of its executor sessions is left.

Use it from a conftest: ``from mesos_stateful.testing.cluster import local_cluster  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mesos_stateful.localcluster.agent import Agent
from mesos_stateful.localcluster.cluster import LocalCluster
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.localcluster.settings import LocalClusterSettings

T = TypeVar("T")


class RunningCluster:
    """A LocalCluster running on a background thread; its methods are safe to call from any thread."""

    def __init__(self, settings: LocalClusterSettings) -> None:
        self.cluster = LocalCluster(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-cluster", daemon=True)
        self._sessions: set[int] = set()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self.cluster.start())

    def stop(self) -> None:
        self._sessions.update(self.sessions())
        try:
            self.run(self.cluster.stop(), timeout=120)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def sessions(self) -> list[int]:
        """Session ids of every executor ever started (to check for leftovers)."""

        async def collect() -> list[int]:
            return [ex.sid for a in self.cluster.agents for ex in a.executors.values() if ex.sid is not None]

        return self.run(collect())

    def leftovers(self) -> dict[int, list[int]]:
        return {sid: pids for sid in self._sessions if (pids := session_members(sid))}

    @property
    def master_address(self) -> str:
        return self.cluster.master_address

    @property
    def master_url(self) -> str:
        return self.cluster.master_url

    @property
    def agents(self) -> list[Agent]:
        return self.cluster.agents

    def state(self) -> dict[str, Any]:
        async def get() -> dict[str, Any]:
            return self.cluster.master.state()

        return self.run(get())

    def kill_agent(self, key: str) -> Agent:
        self._sessions.update(self.sessions())
        return self.run(self.cluster.kill_agent(key))

    def stop_agent(self, key: str) -> Agent:
        return self.run(self.cluster.stop_agent(key))

    def start_agent(self, key: str) -> Agent:
        return self.run(self.cluster.start_agent(key))


def cluster_settings(work_dir: Path, **overrides: Any) -> LocalClusterSettings:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "agents": 3,
        "agent_port": 0,
        "work_dir": str(work_dir),
        "heartbeat_interval": 5.0,
        "update_retry_interval": 2.0,
        "allocation_interval": 0.2,
        "executor_shutdown_grace": 2.0,
        "kill_grace": 2.0,
        # A silent agent is noticed after 0.4-0.6 s instead of Mesos' 75-90 s (the same pings).
        "agent_ping_timeout": 0.2,
        "max_agent_ping_timeouts": 2,
        # Agents get addresses of their own (127.R.R.2-4) and a random port range, so members of test
        # runs that happen at the same time never answer each other's readiness checks.
        "agent_ip_base": f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.2",
        "agent_ports_begin": random.randrange(10000, 29001, 1000),
    }
    values.update(overrides)
    return LocalClusterSettings.model_validate(values)


def start_local_cluster(work_dir: Path, **overrides: Any) -> RunningCluster:
    running = RunningCluster(cluster_settings(work_dir, **overrides))
    running.start()
    return running


@pytest.fixture
def local_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningCluster]:
    """3 agents, or n with ``@pytest.mark.agents(n)``."""
    marker = request.node.get_closest_marker("agents")
    overrides = {"agents": int(marker.args[0])} if marker is not None else {}
    running = start_local_cluster(tmp_path / "cluster", **overrides)
    try:
        yield running
    finally:
        running.stop()
    left = running.leftovers()
    assert not left, f"processes left behind by executor sessions: {left}"
