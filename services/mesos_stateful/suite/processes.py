"""Child processes of the suite with prefixed output, and their supervision.

A :class:`Child` is one service: how to run it and how to tell it is up. A :class:`Supervisor`
keeps one child running: when it exits for any reason other than the suite stopping (a crash, a
``kill -9``), it is started again after a backoff from :class:`RestartPolicy`, and the restart is
logged and counted. A restart never touches other services or any member: members belong to the
local cluster's agents, whose executors run in sessions of their own.

Every child runs in its own session (a Ctrl-C reaches only the runner, which stops the children in
order) and dies with the runner: it is started through ``setpriv --pdeathsig`` (util-linux), so a
``kill -9`` of the runner leaves no service holding a port. Services get SIGTERM and stop
gracefully; the local cluster gets SIGKILL, so its members keep running as they would when a
Mesos agent crashes (agent recovery re-adopts them when the suite comes back).

A child that hangs (SIGSTOP, a blocked event loop) does not exit, so the supervisor also probes
every running child for liveness, as a Kubernetes liveness probe does (``periodSeconds``,
``timeoutSeconds``, ``failureThreshold``: :class:`LivenessPolicy`). Probing starts once the child
was healthy after its (re)start (Kubernetes' start-up probe plays that part); a child that then
leaves ``failures`` probes in a row unanswered has its process group killed with SIGKILL (which
also ends a stopped process) and goes through the normal restart path. Any answer counts as alive:
a gRPC health Check answered NOT_SERVING (the state service while its etcd restarts) or any HTTP
status of the local cluster's ``/health``; only silence (a timeout) or a refused connection counts
against it. Killing the local cluster is safe: its members run in sessions of their own and its
agents recover their executors when it comes back (agent recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesos_stateful.common.channels import channel_options

log = logging.getLogger("suite")

COLORS = ["36", "32", "33", "35", "34", "31", "96", "92", "93", "95"]


class Probe(Enum):
    """What one health check of a child found."""

    SERVING = "serving"  # gRPC SERVING / HTTP 200: alive and healthy
    ANSWERED = "answered"  # any other answer (NOT_SERVING, an HTTP error status): alive, not healthy
    SILENT = "silent"  # no answer within the timeout, or the connection refused: not alive

    @property
    def alive(self) -> bool:
        return self is not Probe.SILENT


# gRPC codes that mean the server did not answer (the call timed out, or no connection to it).
_NO_ANSWER = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)


def _probe_options(timeout: float) -> list[tuple[str, int | str]]:
    """The suite's channel options, but a connection attempt may take the whole probe timeout:
    gRPC core gives a connection attempt max(``grpc.min_reconnect_backoff_ms``, current backoff) to
    receive the server's SETTINGS frame (``connection attempt timed out before receiving SETTINGS
    frame``), 0.2 s with the suite's quick reconnect, which a busy but live service can miss. A
    subchannel pool of its own: from the global pool, a probe would inherit the failed connection
    of the previous probe and fail at once."""
    ms = max(int(timeout * 1000), 1)
    replaced = {
        "grpc.min_reconnect_backoff_ms",
        "grpc.initial_reconnect_backoff_ms",
        "grpc.max_reconnect_backoff_ms",
    }
    options = [(k, v) for k, v in channel_options() if k not in replaced]
    return [
        *options,
        ("grpc.min_reconnect_backoff_ms", ms),
        ("grpc.initial_reconnect_backoff_ms", ms),
        ("grpc.max_reconnect_backoff_ms", ms),
        ("grpc.use_local_subchannel_pool", 1),
    ]


@dataclass
class Child:
    """One service of the suite: how to run it and how to tell it is up."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    grpc_address: str | None = None
    http_health_url: str | None = None
    # host:port of its Prometheus /metrics endpoint (None: it serves none).
    metrics_address: str | None = None
    process: asyncio.subprocess.Process | None = None
    color: str = "37"
    # Sent to the child when the runner dies (prctl PR_SET_PDEATHSIG): TERM stops a service
    # gracefully; the local cluster gets KILL so that its members are left running.
    parent_death_signal: str = "TERM"
    # File descriptors the child inherits (the data dir's lock: held until every child is gone).
    pass_fds: tuple[int, ...] = ()

    async def start(self) -> None:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        argv = self.argv
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", self.parent_death_signal, "--", *argv]
        # Its own session: Ctrl-C reaches only the runner, which stops the children in order.
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            pass_fds=self.pass_fds,
        )
        asyncio.get_running_loop().create_task(self._pump(self.process))

    async def _pump(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        label = f"{self.name:>11} |"
        prefix = f"\x1b[{self.color}m{label}\x1b[0m " if sys.stdout.isatty() else f"{label} "
        async for raw in process.stdout:
            sys.stdout.write(prefix + raw.decode(errors="replace"))
            sys.stdout.flush()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def listen_address(self) -> str | None:
        """host:port the child binds, from its health address."""
        if self.grpc_address:
            return self.grpc_address
        if self.http_health_url:
            return self.http_health_url.split("://", 1)[-1].split("/", 1)[0]
        return None

    async def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited with code {self.process and self.process.returncode}")
            if await self.healthy():
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy within {timeout:.0f}s")

    async def healthy(self) -> bool:
        return await self.probe(1.0) is Probe.SERVING

    async def probe(self, timeout: float) -> Probe:
        """One health check, answered within ``timeout`` seconds or :attr:`Probe.SILENT`: a
        grpc.health.v1 Check of a gRPC service, a GET of the HTTP health URL otherwise."""
        try:
            # The outer bound also covers closing the channel / session.
            return await asyncio.wait_for(self._probe(timeout), timeout + 1.0)
        except TimeoutError:
            return Probe.SILENT

    async def _probe(self, timeout: float) -> Probe:
        if self.grpc_address:
            async with grpc.aio.insecure_channel(
                self.grpc_address, options=_probe_options(timeout)
            ) as channel:
                # The typeshed stubs of HealthStub declare no methods.
                stub: Any = health_pb2_grpc.HealthStub(channel)
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
                except grpc.aio.AioRpcError as error:
                    return Probe.SILENT if error.code() in _NO_ANSWER else Probe.ANSWERED
                serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                return Probe.SERVING if serving else Probe.ANSWERED
        if self.http_health_url:
            import aiohttp

            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(self.http_health_url, timeout=aiohttp.ClientTimeout(total=timeout)) as reply,
                ):
                    return Probe.SERVING if reply.status == 200 else Probe.ANSWERED
            except (aiohttp.ClientError, TimeoutError):
                return Probe.SILENT
        return Probe.SERVING

    async def stop(self, grace: float) -> None:
        if not self.running:
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()

    def kill(self) -> None:
        """SIGKILL the child's process group (it ends a stopped process too). Executors and
        members are never in it: they run in sessions of their own."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def kill_leftovers(self) -> None:
        """SIGKILL what is left of an exited child's process group (a helper it started without a
        session of its own could hold its port). Executors and members are never in it: they run
        in sessions of their own."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between restarts of an exited service, in seconds.

    The n-th exit within ``window_seconds`` waits ``initial_seconds * 2**(n-1)``, at most
    ``max_seconds``; from ``burst`` exits within the window on, the service is reported as
    restarting too often and retried every ``max_seconds``, never abandoned (systemd's
    ``StartLimitBurst``/``StartLimitIntervalSec`` count the same way, but give up; a suite whose
    members' controllers are down must keep trying). Exits older than the window are forgotten, so
    a service that stayed up that long starts again from ``initial_seconds``."""

    initial_seconds: float = 0.25
    max_seconds: float = 10.0
    burst: int = 5
    window_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_seconds <= self.max_seconds:
            raise ValueError("restart backoff: need 0 < initial_seconds <= max_seconds")
        if self.burst < 1 or self.window_seconds <= 0:
            raise ValueError("restart backoff: need burst >= 1 and window_seconds > 0")

    def delay(self, recent_exits: int) -> float:
        """Seconds to wait before the next start after ``recent_exits`` exits within the window."""
        if recent_exits >= self.burst:
            return self.max_seconds
        return float(min(self.initial_seconds * 2 ** max(recent_exits - 1, 0), self.max_seconds))


@dataclass(frozen=True)
class LivenessPolicy:
    """Liveness probing of a running child, as a Kubernetes liveness probe: a probe every
    ``interval_seconds`` (``periodSeconds``; counted from one probe's start to the next, and a
    probe that takes longer is followed at once), each given ``timeout_seconds`` to be answered
    (``timeoutSeconds``); ``failures`` unanswered probes in a row (``failureThreshold``) and the
    child is killed and restarted. A hung child is so killed within about
    ``failures * max(interval_seconds, timeout_seconds)`` seconds. Source: Kubernetes "Configure
    Liveness, Readiness and Startup Probes" (defaults there: 10 s, 1 s, 3)."""

    interval_seconds: float = 1.0
    timeout_seconds: float = 2.0
    failures: int = 5

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0 or self.timeout_seconds <= 0:
            raise ValueError("liveness: need interval_seconds > 0 and timeout_seconds > 0")
        if self.failures < 1:
            raise ValueError("liveness: need failures >= 1")

    @property
    def bound_seconds(self) -> float:
        """Longest time, in seconds, from a child's hang to its kill (one period of slack)."""
        return (self.failures + 1) * max(self.interval_seconds, self.timeout_seconds)


@dataclass
class Supervisor:
    """Keeps one child running until the suite stops."""

    child: Child
    policy: RestartPolicy
    stopping: asyncio.Event
    on_change: Callable[[], None] = lambda: None
    liveness: LivenessPolicy = field(default_factory=LivenessPolicy)
    restarts: int = 0
    last_exit: int | None = None
    # Set while the latest health check answered SERVING (cleared by any other result).
    healthy: asyncio.Event = field(default_factory=asyncio.Event)
    # Kills of a child that stopped answering its liveness probes; unanswered probes in a row.
    liveness_kills: int = 0
    failed_probes: int = 0
    _exits: deque[float] = field(default_factory=deque)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"supervise {self.child.name}")

    async def _run(self) -> None:
        while True:
            async with self._lock:
                if self.stopping.is_set():
                    return
                try:
                    await self.child.start()
                except OSError as error:
                    log.error("%s could not be started: %s", self.child.name, error)
                    await self._backoff(-1)
                    continue
            self.on_change()
            process = self.child.process
            assert process is not None
            watch = asyncio.create_task(self._watch_health(first=self.restarts == 0))
            code = await process.wait()
            watch.cancel()
            self.healthy.clear()
            self.failed_probes = 0
            if self.stopping.is_set():
                return
            self.child.kill_leftovers()
            await self._backoff(code)

    async def _backoff(self, code: int) -> None:
        now = time.monotonic()
        self._exits.append(now)
        while self._exits and self._exits[0] < now - self.policy.window_seconds:
            self._exits.popleft()
        self.restarts += 1
        self.last_exit = code
        delay = self.policy.delay(len(self._exits))
        log.warning("%s exited with %s; restart %d in %.2g s", self.child.name, code, self.restarts, delay)
        if len(self._exits) >= self.policy.burst:
            log.error(
                "%s is restarting too often (%d exits within %.0f s); "
                "retrying every %.0f s until it stays up",
                self.child.name,
                len(self._exits),
                self.policy.window_seconds,
                self.policy.max_seconds,
            )
        self.on_change()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)

    async def _watch_health(self, first: bool) -> None:
        """Set ``healthy`` once the started child answers its health check, then probe it for
        liveness until it exits (:class:`LivenessPolicy`)."""
        started = time.monotonic()
        self.failed_probes = 0
        # A health check is a call to the child: there is no event to wait for.
        while not await self.child.healthy():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        self.healthy.set()
        self.on_change()
        if not first:
            log.info(
                "%s is serving again (restart %d, %.1f s after its start)",
                self.child.name,
                self.restarts,
                time.monotonic() - started,
            )
        await self._probe_liveness()

    async def _probe_liveness(self) -> None:
        """Probe the child every ``interval_seconds``; ``healthy`` follows the latest probe, and
        after ``failures`` unanswered probes in a row the child's process group is SIGKILLed (the
        caller sees it exit and restarts it as any exited child)."""
        policy = self.liveness
        first_failure = 0.0
        next_probe = time.monotonic() + policy.interval_seconds
        while True:
            await asyncio.sleep(max(0.0, next_probe - time.monotonic()))
            begun = time.monotonic()
            next_probe = begun + policy.interval_seconds
            result = await self.child.probe(policy.timeout_seconds)
            serving = result is Probe.SERVING
            failed = 0 if result.alive else self.failed_probes + 1
            changed = serving != self.healthy.is_set() or failed != self.failed_probes
            if serving:
                self.healthy.set()
            else:
                self.healthy.clear()
            if failed == 1:
                first_failure = begun
            if failed == 0 and self.failed_probes:
                log.info("%s answers its health check again", self.child.name)
            self.failed_probes = failed
            if changed:
                self.on_change()
            if failed < policy.failures:
                continue
            if self.stopping.is_set() or not self.child.running:
                return
            self.liveness_kills += 1
            log.error(
                "%s stopped answering its health check (%d probes in %.1f s); killing it (restart %d)",
                self.child.name,
                failed,
                time.monotonic() - first_failure,
                self.restarts + 1,
            )
            self.child.kill()
            self.on_change()
            return

    async def stop(self, grace: float) -> None:
        """Stop the child for good (``stopping`` must be set first)."""
        async with self._lock:
            await self.child.stop(grace)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def status(self) -> dict[str, object]:
        return {
            "pid": self.child.pid if self.child.running else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "healthy": self.healthy.is_set(),
            "failed_probes": self.failed_probes,
            "liveness_kills": self.liveness_kills,
            "metrics": self.child.metrics_address,
        }
