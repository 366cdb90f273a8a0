"""The embedded etcd: a child etcd process the state service starts and owns in local mode."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
from aetcd import rpc

log = logging.getLogger(__name__)


def _die_with_parent(command: list[str]) -> list[str]:
    # etcd gets SIGKILL when the process that started it dies, so a crashed service or test run
    # leaves no etcd behind. setpriv (util-linux) sets it before exec; a preexec_fn would have to
    # run Python in a forked child of a multi-threaded process (grpc), which can crash or hang.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return command
    return [setpriv, "--pdeathsig", "KILL", "--", *command]


class EmbeddedEtcd:
    """A single-member etcd on 127.0.0.1 with its data in ``data_dir`` (kept across restarts)."""

    def __init__(
        self,
        data_dir: str | Path,
        client_port: int = 2379,
        peer_port: int = 2380,
        name: str = "stateful",
        binary: str = "etcd",
        host: str = "127.0.0.1",
        history_retention: str = "1h",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.client_port = client_port
        self.peer_port = peer_port
        self.name = name
        self.binary = binary
        self.host = host
        # Keep this much watch history (resume window); older revisions are compacted away.
        self.history_retention = history_retention
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    def command(self) -> list[str]:
        client = f"http://{self.host}:{self.client_port}"
        peer = f"http://{self.host}:{self.peer_port}"
        binary = shutil.which(self.binary) or self.binary
        return [
            binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--initial-cluster-state=new",
            "--auto-compaction-mode=periodic",
            f"--auto-compaction-retention={self.history_retention}",
            "--log-level=warn",
            "--logger=zap",
        ]

    def start_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        with open(log_path, "ab") as out:
            # Its own session: a Ctrl-C to the service does not kill etcd before we stop it cleanly.
            self.process = subprocess.Popen(
                _die_with_parent(self.command()),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, timeout: float = 30.0) -> None:
        """Start etcd and wait until it answers (polling Status)."""
        self.start_process()
        await self.wait_healthy(timeout)

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.endpoint) as channel:
            stub = rpc.MaintenanceStub(channel)
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.data_dir}.log")
                try:
                    await stub.Status(rpc.StatusRequest(), timeout=1.0)
                    return
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"etcd at {self.endpoint} not healthy after {timeout}s") from None
                    await asyncio.sleep(0.1)

    def _signal(self, sig: int, timeout: float) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout``)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        self._signal(signal.SIGKILL, 10.0)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
