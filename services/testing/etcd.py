"""A real etcd for tests: free loopback ports, its own data dir, stop / kill -9 / restart."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from mesos_stateful.state.embedded import EmbeddedEtcd


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdProcess:
    """One etcd member on 127.0.0.1; ``restart()`` keeps its data (and its ports)."""

    def __init__(self, data_dir: str | Path, name: str = "test") -> None:
        self.etcd = EmbeddedEtcd(data_dir, client_port=free_port(), peer_port=free_port(), name=name)

    @property
    def endpoint(self) -> str:
        return self.etcd.endpoint

    @property
    def running(self) -> bool:
        return self.etcd.running

    @property
    def pid(self) -> int | None:
        return self.etcd.process.pid if self.etcd.process is not None else None

    async def start(self, timeout: float = 30.0) -> None:
        await self.etcd.start(timeout)

    async def stop(self) -> None:
        await asyncio.to_thread(self.etcd.stop)

    async def kill(self) -> None:
        await asyncio.to_thread(self.etcd.kill)

    async def restart(self, timeout: float = 30.0) -> None:
        """Start it again with the same data dir and ports (after stop/kill; stops it first if running)."""
        if self.running:
            await self.stop()
        await self.start(timeout)
