"""The executor: pymesos callbacks in, one monitored member, status updates out.

pymesos calls the callbacks on its own I/O thread; each one only hands its event to the asyncio
loop (``call_soon_threadsafe``), where all the work happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pymesos import Executor
from pymesos.utils import parse_duration

from mesos_stateful.executor.driver import ExecutorDriver
from mesos_stateful.executor.launch import (
    InvalidTask,
    Launch,
    grace_from_kill_policy,
    launch_from_task,
    task_traceparent,
)
from mesos_stateful.executor.monitor import Monitor
from mesos_stateful.executor.runtime import Runtime
from mesos_stateful.executor.runtimes import runtime_for
from mesos_stateful.executor.sender import StatusSender
from mesos_stateful.executor.settings import ExecutorSettings
from mesos_stateful.executor.status import REASON_INVALID, TASK_ERROR, StatusUpdate

log = logging.getLogger(__name__)


class ExecutorApp(Executor):  # type: ignore[misc]
    def __init__(self, settings: ExecutorSettings, environ: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._environ = dict(os.environ if environ is None else environ)
        self._sandbox = Path(
            self._environ.get("MESOS_SANDBOX") or self._environ.get("MESOS_DIRECTORY") or os.getcwd()
        )
        endpoint = self._environ.get("MESOS_AGENT_ENDPOINT", "")
        self._host = endpoint.rsplit(":", 1)[0] if endpoint else "127.0.0.1"
        grace = self._environ.get("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD")
        self._shutdown_grace = parse_duration(grace) if grace else settings.default_shutdown_grace_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[int] | None = None
        self._sender: StatusSender | None = None
        self._monitor: Monitor | None = None
        self._runtime: Runtime | None = None
        self._task_id: str | None = None
        self._announce_killing = False
        self._shutting_down = False
        self._shutdown_deadline: float | None = None  # loop time
        self._exiting = False
        self._driver: ExecutorDriver | None = None

    # -- pymesos callbacks: the driver's thread; hand over and return -----------------------------

    def registered(self, driver: Any, executor_info: Any, framework_info: Any, agent_info: Any) -> None:
        self._post(self._on_registered, dict(framework_info), dict(agent_info))

    def reregistered(self, driver: Any, agent_info: Any) -> None:
        self._post(log.info, "re-registered with agent %s", dict(agent_info).get("hostname"))

    def disconnected(self, driver: Any) -> None:
        if not self._exiting:
            self._post(log.warning, "disconnected from the agent")

    def launchTask(self, driver: Any, task: Any) -> None:
        self._post(self._on_launch, dict(task))

    def killTask(self, driver: Any, taskId: Any, kill_policy: Any = None) -> None:
        self._post(self._on_kill, str(taskId["value"]), kill_policy)

    def frameworkMessage(self, driver: Any, message: Any) -> None:
        self._post(log.info, "framework message ignored (%d characters)", len(message or ""))

    def shutdown(self, driver: Any) -> None:
        self._post(self._on_shutdown)

    def error(self, driver: Any, message: Any) -> None:
        self._post(self._on_error, str(message))

    def acknowledged(self, task_id: str, update_uuid: uuid.UUID) -> None:
        self._post(self._on_acknowledged, task_id, update_uuid)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting anyway
            self._loop.call_soon_threadsafe(callback, *args)

    # -- the loop's side ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Subscribe, run until the task ended and its terminal update was acknowledged (bounded),
        or a shutdown; returns the process exit code."""
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        self._loop.add_signal_handler(signal.SIGTERM, self._on_shutdown)
        driver = ExecutorDriver(self)
        self._driver = driver
        self._sender = StatusSender(driver.sendStatusUpdate, driver.executor_id["value"])
        driver.start()
        try:
            return await self._done
        finally:
            self._exiting = True
            driver.stop()
            await self._sender.close()
            self._loop.remove_signal_handler(signal.SIGTERM)

    def force_kill_member(self) -> None:
        """Last resort (the driver died, or the shutdown deadline passed): SIGKILL the member."""
        if self._runtime is not None:
            self._runtime.force_kill_sync()

    def _on_registered(self, framework_info: dict[str, Any], agent_info: dict[str, Any]) -> None:
        self._host = str(agent_info.get("hostname") or self._host)
        if self._sender is not None and agent_info.get("id"):
            self._sender.agent_id = str(agent_info["id"].get("value", ""))
        capabilities = {c.get("type") for c in framework_info.get("capabilities", []) or []}
        self._announce_killing = "TASK_KILLING_STATE" in capabilities
        log.info("registered with agent %s (%s); sandbox %s", agent_info.get("id", {}).get("value"),
                 self._host, self._sandbox)

    def _on_launch(self, task: dict[str, Any]) -> None:
        assert self._sender is not None
        task_id = str((task.get("task_id") or {}).get("value") or "")
        sink = self._sender.for_task(task_id)
        if self._task_id is not None:
            message = f"this executor runs one task and already runs {self._task_id}"
            sink.send(StatusUpdate(TASK_ERROR, message, reason=REASON_INVALID))
            return
        self._task_id = task_id
        self._sender.set_trace_parent(task_id, task_traceparent(task))
        try:
            launch = launch_from_task(task, host=self._host, sandbox=self._sandbox, environ=self._environ,
                                      default_kill_grace=self._settings.default_kill_grace_seconds)
            agent_id = str((task.get("agent_id") or {}).get("value") or self._sender.agent_id or "")
            runtime = runtime_for(launch, self._settings, agent_id=agent_id, environ=self._environ)
        except InvalidTask as error:
            log.error("task %s is invalid: %s", task_id, error)
            sink.send(StatusUpdate(TASK_ERROR, f"invalid task: {error}", reason=REASON_INVALID))
            asyncio.get_running_loop().create_task(self._exit_after_ack(task_id))
            return
        self._runtime = runtime
        self._monitor = Monitor(launch, runtime, sink, announce_killing=self._announce_killing)
        if self._shutting_down:
            self._monitor.kill(0)
        log.info("launching %s: %s", task_id, " ".join(launch.argv))
        asyncio.get_running_loop().create_task(self._run_member(launch, self._monitor))

    async def _run_member(self, launch: Launch, monitor: Monitor) -> None:
        try:
            await monitor.run()
        except Exception:
            log.exception("the monitor of %s failed", launch.task_id)
            self.force_kill_member()
            self._exit(1)
            return
        await self._exit_after_ack(launch.task_id)

    async def _exit_after_ack(self, task_id: str) -> None:
        assert self._sender is not None
        timeout = self._settings.ack_timeout_seconds
        if self._shutdown_deadline is not None:
            # Exit before the agent's grace period runs out, acknowledged or not.
            remaining = self._shutdown_deadline - asyncio.get_running_loop().time()
            timeout = min(timeout, max(0.1, remaining - self._settings.shutdown_margin_seconds / 2))
        acknowledged = await self._sender.wait_terminal_acknowledged(task_id, timeout)
        while not acknowledged and self._agent_away() and self._shutdown_deadline is None:
            # The agent is away (restarting: with checkpointing it recovers this executor). The
            # terminal update goes with the next SUBSCRIBE: wait for it to be acknowledged, for up
            # to MESOS_RECOVERY_TIMEOUT (then the driver gives up and the executor exits).
            log.info("agent away: keeping the last update of %s until it is back", task_id)
            acknowledged = await self._sender.wait_terminal_acknowledged(task_id, timeout)
        if not acknowledged:
            log.warning("no acknowledgement of %s's last update in %.1fs; exiting anyway", task_id, timeout)
        self._exit(0)

    def _agent_away(self) -> bool:
        """Checkpointing, and not connected to the agent now."""
        driver = self._driver
        return driver is not None and bool(driver.checkpoint) and not driver.connected

    def _on_kill(self, task_id: str, kill_policy: Any) -> None:
        if self._monitor is None or task_id != self._task_id:
            log.warning("kill for unknown task %s ignored", task_id)
            return
        grace = grace_from_kill_policy(kill_policy if isinstance(kill_policy, dict) else None)
        log.info("kill %s (grace %s)", task_id, "default" if grace is None else f"{grace:g}s")
        self._monitor.kill(grace)

    def _on_shutdown(self) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        self._shutdown_deadline = asyncio.get_running_loop().time() + self._shutdown_grace
        budget = max(0.0, self._shutdown_grace - self._settings.shutdown_margin_seconds)
        log.info("shutdown: killing the member within %gs", budget)
        # Whatever happens on the loop, the member does not outlive the agent's grace period.
        watchdog = threading.Timer(self._shutdown_grace, self._force_exit)
        watchdog.daemon = True
        watchdog.start()
        if self._monitor is None:
            self._exit(0)
            return
        self._monitor.kill(budget)

    def _on_error(self, message: str) -> None:
        log.error("error from the agent: %s", message)
        self._on_shutdown()

    def _on_acknowledged(self, task_id: str, update_uuid: uuid.UUID) -> None:
        if self._sender is not None:
            self._sender.acknowledged(task_id, update_uuid)

    def _force_exit(self) -> None:
        log.error("shutdown deadline passed: killing the member and exiting")
        self.force_kill_member()
        os._exit(1)

    def _exit(self, code: int) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(code)
