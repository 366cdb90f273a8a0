"""The monitor: runs one member through a :class:`Runtime` and reports its task's states.

STARTING when the member starts; RUNNING once the readiness check passes (at once without one);
then health checks; the end is exactly one terminal update: FINISHED / FAILED (exit, health,
launch failure) or KILLED (a kill was asked for).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal as signals

from mesos_stateful.executor.checks import CheckSpec, run_check
from mesos_stateful.executor.launch import Launch
from mesos_stateful.executor.logtail import log_tail
from mesos_stateful.executor.runtime import ExitStatus, Runtime, RuntimeFailure
from mesos_stateful.executor.status import (
    REASON_EXITED,
    REASON_HEALTH,
    REASON_LAUNCH_FAILED,
    TASK_FAILED,
    TASK_FINISHED,
    TASK_KILLED,
    TASK_KILLING,
    TASK_RUNNING,
    TASK_STARTING,
    StatusSink,
    StatusUpdate,
)

log = logging.getLogger(__name__)


class Monitor:
    """Call :meth:`run` once; :meth:`kill` may be called any time (from the loop's thread)."""

    def __init__(
        self, launch: Launch, runtime: Runtime, sink: StatusSink, *, announce_killing: bool = False
    ) -> None:
        self._launch = launch
        self._runtime = runtime
        self._sink = sink
        self._announce_killing = announce_killing
        self._kill_requested = asyncio.Event()
        self._grace_changed = asyncio.Event()
        self._grace: float | None = None
        self._started_at = 0.0
        self.terminal: StatusUpdate | None = None

    def kill(self, grace: float | None = None) -> None:
        """Ask for the member to be killed: SIGTERM, ``grace`` seconds (default the launch's),
        SIGKILL, then TASK_KILLED. A second call can only shorten the grace period."""
        grace = self._launch.kill_grace if grace is None else max(0.0, grace)
        if self._grace is None or grace < self._grace:
            self._grace = grace
            self._grace_changed.set()
        self._kill_requested.set()

    async def run(self) -> StatusUpdate:
        """Run the member to its end; returns the terminal update (already sent)."""
        if self._kill_requested.is_set():
            return self._finish(TASK_KILLED, "killed before it started")
        try:
            await self._runtime.prepare(self._launch)
            if self._kill_requested.is_set():
                return self._finish(TASK_KILLED, "killed before it started")
            handle = await self._runtime.start()
        except RuntimeFailure as error:
            return self._finish(TASK_FAILED, str(error), reason=REASON_LAUNCH_FAILED)
        self._started_at = asyncio.get_running_loop().time()
        self._sink.send(StatusUpdate(TASK_STARTING, f"started {self._runtime.name} {handle.id}"))

        exited = asyncio.create_task(self._runtime.wait(), name="member-exit")
        checks = asyncio.create_task(self._checks(), name="member-checks")
        killed = asyncio.create_task(self._kill_requested.wait(), name="kill-requested")
        try:
            await asyncio.wait({exited, checks, killed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (checks, killed):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(checks, killed, return_exceptions=True)
        if self._kill_requested.is_set():
            if self._announce_killing and not exited.done():
                self._sink.send(StatusUpdate(TASK_KILLING, "killing"))
            status = await self._terminate()
            await exited
            return self._finish(TASK_KILLED, f"killed on request ({status.describe()})")
        if exited.done():
            return self._exited(exited.result())
        unhealthy = "health check failed"
        if checks.done() and not checks.cancelled():
            crash = checks.exception()
            unhealthy = f"checks failed: {crash!r}" if crash else checks.result()
        status = await self._terminate()
        await exited
        return self._finish(
            TASK_FAILED, f"{unhealthy}; the member was killed ({status.describe()})",
            healthy=False, reason=REASON_HEALTH,
        )

    def _exited(self, status: ExitStatus) -> StatusUpdate:
        if status.success:
            return self._finish(TASK_FINISHED, status.describe())
        message = status.describe()
        tail = log_tail(self._runtime.log_paths)
        if tail:
            message = f"{message}\n{tail}"
        return self._finish(TASK_FAILED, message, reason=REASON_EXITED)

    def _finish(self, state: str, message: str, *, healthy: bool | None = None,
                reason: str | None = None) -> StatusUpdate:
        update = StatusUpdate(state, message, healthy=healthy, reason=reason)
        self.terminal = update
        log.info("task %s: %s: %s", self._launch.task_id, state, message.splitlines()[0] if message else "")
        self._sink.send(update)
        return update

    async def _terminate(self) -> ExitStatus:
        """SIGTERM, the grace period, SIGKILL; a later :meth:`kill` may shorten the grace."""
        loop = asyncio.get_running_loop()
        if self._grace is None:
            self._grace = self._launch.kill_grace
        began = loop.time()
        stopping = asyncio.create_task(self._runtime.kill(self._grace), name="member-kill")
        while not stopping.done():
            self._grace_changed.clear()
            remaining = began + self._grace - loop.time()
            if remaining <= 0:
                await self._runtime.signal(signals.SIGKILL)
                break
            changed = asyncio.create_task(self._grace_changed.wait())
            await asyncio.wait({stopping, changed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
        return await stopping

    async def _checks(self) -> str:
        """Readiness, RUNNING, then health checks; returns only when the member is unhealthy."""
        readiness = self._launch.readiness
        if readiness is not None:
            attempts = 0
            while True:
                result = await run_check(readiness)
                if result.ok:
                    break
                attempts += 1
                if attempts % 30 == 1:
                    log.info("not ready yet (attempt %d): %s", attempts, result.detail)
                await asyncio.sleep(readiness.interval)
            self._sink.send(StatusUpdate(TASK_RUNNING, f"ready: {readiness.target.describe()} passed"))
        else:
            self._sink.send(StatusUpdate(TASK_RUNNING, "started (no readiness check)"))
        health = self._launch.health
        if health is None:
            await asyncio.Future()  # nothing more to do; cancelled when the member ends
        assert health is not None
        return await self._health(health)

    async def _health(self, health: CheckSpec) -> str:
        loop = asyncio.get_running_loop()
        failures = 0
        passed_once = False
        reported: bool | None = None
        while True:
            await asyncio.sleep(health.interval)
            result = await run_check(health)
            if result.ok:
                passed_once, failures = True, 0
                if reported is not True:
                    reported = True
                    self._sink.send(StatusUpdate(TASK_RUNNING, "healthy", healthy=True, reason=REASON_HEALTH))
                continue
            if not passed_once and loop.time() - self._started_at < health.grace_period:
                continue  # still starting up: failures in the grace period do not count
            failures += 1
            log.warning("health check failed (%d/%d): %s", failures, health.max_consecutive_failures,
                        result.detail)
            if failures >= health.max_consecutive_failures:
                return f"health check failed {failures} consecutive times: {result.detail}"
            if reported is not False:
                reported = False
                message = f"unhealthy: {result.detail}"
                self._sink.send(StatusUpdate(TASK_RUNNING, message, healthy=False, reason=REASON_HEALTH))
