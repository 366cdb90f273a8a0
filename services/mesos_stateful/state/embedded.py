"""The embedded etcd: a child etcd process the state service starts and owns in local mode."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aetcd import rpc

from mesos_stateful.common import retry
from mesos_stateful.common.channels import etcd_channel_options

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
        initial_cluster: str = "",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.client_port = client_port
        self.peer_port = peer_port
        self.name = name
        self.binary = binary
        self.host = host
        # Keep this much watch history (resume window); older revisions are compacted away.
        self.history_retention = history_retention
        # name=http://host:peer_port,... of every member when this one is part of a cluster
        # (etcd --initial-cluster); empty: a cluster of this member alone.
        self.initial_cluster = initial_cluster
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
            f"--initial-cluster={self.initial_cluster or f'{self.name}={peer}'}",
            "--initial-cluster-state=new",
            "--auto-compaction-mode=periodic",
            f"--auto-compaction-retention={self.history_retention}",
            "--log-level=warn",
            "--logger=zap",
        ]

    def start_process(self) -> None:
        """Spawn etcd. Call it on the thread that will outlive etcd (the event loop's): the
        parent-death signal fires when the *thread* that forked exits, so a start from
        ``asyncio.to_thread`` would kill etcd when that worker thread ends."""
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
        async with grpc.aio.insecure_channel(self.endpoint, options=etcd_channel_options()) as channel:
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


@dataclass(frozen=True)
class RestartPolicy:
    """How :func:`supervise` restarts a crashed embedded etcd (state settings ``etcd_*``), seconds.

    A crash is noticed within ``check_interval_seconds``. The first restart is immediate; while
    etcd keeps crashing within ``reset_seconds`` of its last start, each restart waits twice as
    long as the previous one, from ``backoff_seconds`` up to ``backoff_max_seconds`` (supervisord's
    and systemd's ``Restart=`` crash-loop backoff). A start not healthy within
    ``start_timeout_seconds`` is killed and counts as a crash.
    """

    check_interval_seconds: float = 0.2
    backoff_seconds: float = 0.5
    backoff_max_seconds: float = 10.0
    reset_seconds: float = 30.0
    start_timeout_seconds: float = 30.0


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def supervise(
    etcd: EmbeddedEtcd,
    policy: RestartPolicy,
    on_down: Callable[[str], None] | None = None,
    on_up: Callable[[int], None] | None = None,
) -> None:
    """Keep ``etcd`` (already started) running until cancelled: when its process exits, start it
    again on the same data dir and ports, with backoff. ``on_down(reason)`` is called as soon as
    the exit is noticed, ``on_up(restarts)`` once the restarted etcd answers Status. Cancel this
    before ``etcd.stop()``."""
    restarts = 0
    # The first restart is at once; then retry.ETCD_RESTART with the policy's delays.
    backoff = retry.Backoff(
        retry.ETCD_RESTART.with_delays(policy.backoff_seconds, policy.backoff_max_seconds)
    )
    delay = 0.0
    started_at = time.monotonic()
    while True:
        # Polled: the exit of a Popen child has no asyncio event (a thread blocked in wait() could
        # not be cancelled at shutdown).
        while etcd.running:  # noqa: ASYNC110
            await asyncio.sleep(policy.check_interval_seconds)
        process = etcd.process
        reason = f"embedded etcd (pid {process.pid if process else '?'}) " + _describe_exit(
            process.returncode if process else None
        )
        if on_down is not None:
            on_down(reason)
        if time.monotonic() - started_at >= policy.reset_seconds:
            delay = 0.0  # it had been up long enough: not a crash loop
            backoff.reset()
        log.error(
            "%s; restarting it in %.1f s on %s (data %s; its log: %s.log)",
            reason,
            delay,
            etcd.endpoint,
            etcd.data_dir,
            etcd.data_dir,
        )
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            delay = backoff.next_delay()
            restarts += 1
            started_at = time.monotonic()
            etcd.process = None
            try:
                etcd.start_process()  # on the loop's thread: see start_process
                await etcd.wait_healthy(policy.start_timeout_seconds)
                break
            except (RuntimeError, TimeoutError, OSError) as error:  # OSError: could not exec
                log.error("embedded etcd restart #%d failed: %s; retrying in %.1f s", restarts, error, delay)
                await asyncio.to_thread(etcd.kill)
        log.warning(
            "embedded etcd restarted (restart #%d, pid %s) and healthy after %.1f s",
            restarts,
            etcd.process.pid if etcd.process else "?",
            time.monotonic() - started_at,
        )
        if on_up is not None:
            on_up(restarts)
