"""A real etcd for tests: free loopback ports, its own data dir, stop / kill -9 / restart."""

from __future__ import annotations

import asyncio
import shutil
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
        self.started_once = False

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
        """Start etcd; on its first start, a port another process took between ``free_port()``
        and etcd's bind (the ports come from the ephemeral range) is replaced and tried again."""
        for attempt in range(5):
            try:
                await self.etcd.start(timeout)
                return
            except RuntimeError:
                if self.started_once or attempt == 4 or not self._lost_a_port():
                    raise
                # Nothing was stored yet: start over with new ports and an empty data dir.
                shutil.rmtree(self.etcd.data_dir, ignore_errors=True)
                self.etcd.client_port, self.etcd.peer_port = free_port(), free_port()
            finally:
                if self.etcd.running:
                    self.started_once = True

    def _lost_a_port(self) -> bool:
        log = self.etcd.data_dir.parent / f"{self.etcd.data_dir.name}.log"
        return log.exists() and "address already in use" in log.read_text(errors="replace")

    async def stop(self) -> None:
        await asyncio.to_thread(self.etcd.stop)

    async def kill(self) -> None:
        await asyncio.to_thread(self.etcd.kill)

    async def restart(self, timeout: float = 30.0) -> None:
        """Start it again with the same data dir and ports (after stop/kill; stops it first if running)."""
        if self.running:
            await self.stop()
        await self.start(timeout)
