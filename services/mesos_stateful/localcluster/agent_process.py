"""One agent in a process of its own (``python -m mesos_stateful.localcluster agent``): the same
``Agent`` as the in-process ones (executor API, executors, checkpoint and recovery), connected to a
remote master by the internal protocol of :mod:`~mesos_stateful.localcluster.remote`.

``MasterLink`` stands where an in-process agent has the ``Master``: the agent's status updates,
exited executors and executor messages become ``StatusUpdateMessage``, ``ExitedExecutorMessage`` and
``ExecutorToFrameworkMessage`` POSTs, in order, on the current connection. Status updates are
reliable (as Mesos's status update manager): kept until the master acknowledges them and sent
again after every (re-)registration; the other messages are lost when the connection is (Mesos
sends them once). The master's messages arrive on the registration stream and are applied to the
agent as the in-process master's direct calls are. The link re-registers (with backoff) whenever
the stream ends or no ping came within the master's ``total_ping_timeout_seconds``.

The process: ``recover`` from the work dir (id, reservations, volumes, executors), serve the
executor API at ``--ip:--port``, destroy orphan executors and give recovered ones
``executor_reregistration_timeout`` to re-subscribe, then register. SIGTERM / SIGINT: the agent
stops and leaves its executors running (a Mesos agent does: a restarted agent recovers them);
``ShutdownMessage`` (its machine went DOWN): it shuts every executor down, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from mesos_stateful.localcluster.agent import Agent, Executor
from mesos_stateful.localcluster.recordio import Json
from mesos_stateful.localcluster.remote import PREFIX, registration
from mesos_stateful.localcluster.resources import Key, ResourceError, Resources
from mesos_stateful.localcluster.settings import AgentSettings

log = logging.getLogger(__name__)

# How long a registration may wait for the master's first message.
REGISTRATION_TIMEOUT = 30.0


def resolve_ip(ip: str) -> str:
    """``auto``: the address the host's name resolves to (in a container: its own address)."""
    if ip != "auto":
        return ip
    address = socket.gethostbyname(socket.gethostname())
    log.info("agent address: %s (%s resolved)", address, socket.gethostname())
    return address


class AgentProcess(Agent):
    """An ``Agent`` whose master is a ``MasterLink``; its work dir is ``--work-dir`` itself."""

    def __init__(self, link: MasterLink, settings: AgentSettings, ip: str) -> None:
        begin, end = settings.port_range()
        total = Resources(
            scalars={Key("cpus"): settings.cpus, Key("mem"): settings.mem, Key("disk"): settings.disk},
            ranges={Key("ports"): frozenset(range(begin, end + 1))},
        )
        work_dir = Path(settings.work_dir).absolute()
        super().__init__(link, 0, ip, settings.port, total, settings.attribute_map(), work_dir)
        self.work_dir = work_dir
        self._hostname = settings.hostname or ip

    @property
    def hostname(self) -> str:
        return self._hostname

    def apply_checkpointed(self, reserved: Resources) -> None:
        """``CheckpointResourcesMessage`` (``Slave::checkpointResources``): the agent's reservations
        and volumes become ``reserved``; new volumes get their directory, destroyed ones lose it."""
        unreserved = reserved.to_unreserved()
        if not self.base.contains(unreserved):
            log.error(
                "agent %s: checkpointed resources %s do not fit %s: ignored", self.id, reserved, self.base
            )
            return
        before = {key for key, _v in self.checkpointed.volumes().items()}
        after = {key for key, _v in reserved.volumes().items()}
        self.total = self.base - unreserved + reserved
        for key in after - before:
            self.volume_path(key).mkdir(parents=True, exist_ok=True)
        for key in before - after:
            path = self.volume_path(key)
            log.info("agent %s: deleting persistent volume %s", self.id, path)
            shutil.rmtree(path, ignore_errors=True)
        self.checkpoint()

    def _launch_failed(self, ex: Executor, error: OSError) -> None:
        """As Mesos's ``Slave::executorTerminated``: the master also hears the executor ended
        (``ExitedExecutorMessage``), so it stops counting its resources."""
        super()._launch_failed(ex, error)
        self.send_to_master(False, lambda: self.master.executor_terminated(self, ex, None))

    async def shutdown_all(self) -> None:
        """``ShutdownMessage``: every executor is shut down (with its grace), then destroyed."""
        fids = {ex.framework_id for ex in self.executors.values() if ex.state != "TERMINATED"}
        await asyncio.gather(*(self.shutdown_framework(fid) for fid in fids), return_exceptions=True)
        self.alive = False
        await self.destroy()


class MasterLink:
    """The agent's connection to the master (see the module doc)."""

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings
        self.agent: AgentProcess | None = None
        self.url = f"http://{settings.master}/master/{PREFIX}"
        self.stream_id = ""  # the current registration; "" while not registered
        self.stopped = asyncio.Event()  # set when the master shut the agent down
        self._out: asyncio.Queue[tuple[str, str, Json]] = asyncio.Queue()
        self._unacked: dict[str, Json] = {}  # uuid -> StatusUpdateMessage, in the order sent
        self._session: aiohttp.ClientSession | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._read_timeout = REGISTRATION_TIMEOUT
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    @property
    def settings(self) -> AgentSettings:
        return self._settings

    @property
    def connected(self) -> bool:
        return bool(self.stream_id)

    # --- what the agent hands the master -----------------------------------------------------------

    def _send(self, name: str, body: Json) -> None:
        if self.connected:
            self._out.put_nowait((self.stream_id, name, body))

    def status_update(self, agent: Agent, fid: str, status: Json) -> None:
        update_uuid = str(status["uuid"])
        body: Json = {
            "update": {
                "framework_id": {"value": fid},
                "executor_id": status.get("executor_id") or {"value": ""},
                "slave_id": {"value": agent.id},
                "status": status,
                "timestamp": status.get("timestamp", 0.0),
                "uuid": update_uuid,
            }
        }
        self._unacked[update_uuid] = body
        self._send("StatusUpdateMessage", body)

    def executor_terminated(self, agent: Agent, ex: Executor, code: int | None) -> None:
        body: Json = {
            "slave_id": {"value": agent.id},
            "framework_id": {"value": ex.framework_id},
            "executor_id": {"value": ex.executor_id},
        }
        if code is not None:
            body["status"] = code
        self._send("ExitedExecutorMessage", body)

    def executor_message(self, agent: Agent, ex: Executor, data: str) -> None:
        self._send(
            "ExecutorToFrameworkMessage",
            {
                "slave_id": {"value": agent.id},
                "framework_id": {"value": ex.framework_id},
                "executor_id": {"value": ex.executor_id},
                "data": data,
            },
        )

    # --- the connection ----------------------------------------------------------------------------

    def start(self) -> None:
        """Register (called once the agent's recovery is over) and stay registered."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for task in list(self._tasks):
            task.cancel()

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            sender = asyncio.get_running_loop().create_task(self._sender())
            try:
                while not self.stopped.is_set():
                    try:
                        await self._connect_once(session)
                    except Exception:  # the link must outlive any bug: it registers again
                        log.exception("agent: the connection to the master failed")
                    if self.stopped.is_set():
                        break
                    await asyncio.sleep(random.uniform(0.1, self._settings.reconnect_interval))
            finally:
                sender.cancel()

    async def _connect_once(self, session: aiohttp.ClientSession) -> None:
        agent = self.agent
        assert agent is not None
        name = "ReregisterSlaveMessage" if agent.id else "RegisterSlaveMessage"
        self._read_timeout = REGISTRATION_TIMEOUT
        try:
            async with session.post(self.url + name, json=registration(agent)) as resp:
                if resp.status != 200:
                    log.warning(
                        "master %s refused %s: %s %s",
                        self._settings.master,
                        name,
                        resp.status,
                        await resp.text(),
                    )
                    return
                self._response = resp
                async for record in self._records(resp.content):
                    try:
                        self._dispatch(json.loads(record))
                    except (KeyError, TypeError, ValueError, ResourceError) as error:
                        log.error("agent %s: invalid message from the master ignored: %r", agent.id, error)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
            log.warning(
                "agent %s: connection to master %s: %r",
                agent.id or agent.endpoint,
                self._settings.master,
                error,
            )
        finally:
            if self.connected:
                log.info("agent %s: disconnected from master %s", agent.id, self._settings.master)
            self.stream_id = ""
            self._response = None

    async def _records(self, content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
        """RecordIO records until the stream ends; TimeoutError when the master is silent longer than
        its ping timeouts (it is lost: re-register)."""
        while True:
            async with asyncio.timeout(self._read_timeout):
                line = await content.readline()
                if not line:
                    return
                data = await content.readexactly(int(line.strip()))
            yield data

    def _abort(self) -> None:
        """Drop the current connection (the reader ends and the link re-registers)."""
        if self._response is not None:
            self._response.close()

    async def _sender(self) -> None:
        """POST the agent's messages one by one, in order, on the connection they were made for."""
        assert self._session is not None
        while True:
            stream_id, name, body = await self._out.get()
            if stream_id != self.stream_id:
                continue  # made for a connection that is gone: status updates are sent again
            headers = {"Mesos-Agent-Id": self.agent.id if self.agent else "", "Mesos-Stream-Id": stream_id}
            try:
                async with self._session.post(self.url + name, json=body, headers=headers) as resp:
                    if resp.status != 202:
                        log.warning("master answered %s %s: %s", name, resp.status, await resp.text())
                        if resp.status == 409 and stream_id == self.stream_id:
                            self._abort()
            except Exception as error:  # (aiohttp.ClientError, OSError, TimeoutError, or a bug)
                log.warning("cannot send %s to master %s: %r", name, self._settings.master, error)
                if stream_id == self.stream_id:
                    self._abort()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, message: Json) -> None:
        """A message of the master, as ``Slave``'s handlers (``src/slave/slave.cpp``)."""
        agent = self.agent
        assert agent is not None
        kind = message.get("type")
        if kind in ("SlaveRegisteredMessage", "SlaveReregisteredMessage"):
            aid = str(message["slave_id"]["value"])
            if agent.id and agent.id != aid:
                log.error("agent %s: the master registered it as %s", agent.id, aid)
            if not agent.id:
                agent.id = aid
            agent.checkpoint()
            timeouts = float((message.get("connection") or {}).get("total_ping_timeout_seconds") or 0.0)
            if timeouts > 0:
                self._read_timeout = timeouts * 1.5
            self.stream_id = str(message["stream_id"])
            log.info(
                "agent %s at %s %s with master %s",
                aid,
                agent.endpoint,
                kind[5:-7].lower(),
                self._settings.master,
            )
            for update in list(self._unacked.values()):
                self._send("StatusUpdateMessage", update)
        elif kind == "PingSlaveMessage":
            self._send("PongSlaveMessage", {})
        elif kind == "RunTaskMessage":
            agent.launch(message["framework"], message["task"])
        elif kind == "KillTaskMessage":
            agent.kill_task(
                message["framework_id"]["value"], message["task_id"]["value"], message.get("kill_policy")
            )
        elif kind == "StatusUpdateAcknowledgementMessage":
            update_uuid = str(message["uuid"])
            self._unacked.pop(update_uuid, None)
            agent.acknowledged(
                message["framework_id"]["value"],
                message["executor_id"]["value"],
                message["task_id"]["value"],
                update_uuid,
            )
        elif kind == "ShutdownExecutorMessage":
            ex = agent.executors.get((message["framework_id"]["value"], message["executor_id"]["value"]))
            if ex is not None:
                self._spawn(agent.shutdown_executor(ex))
        elif kind == "ShutdownFrameworkMessage":
            self._spawn(agent.shutdown_framework(message["framework_id"]["value"]))
        elif kind == "CheckpointResourcesMessage":
            try:
                agent.apply_checkpointed(Resources.from_json(message.get("resources") or []))
            except ResourceError as error:
                log.error("agent %s: invalid CheckpointResourcesMessage: %s", agent.id, error)
        elif kind == "FrameworkToExecutorMessage":
            fid, eid = message["framework_id"]["value"], message["executor_id"]["value"]
            if not agent.framework_message(fid, eid, str(message.get("data", ""))):
                log.warning("agent %s: message to executor %s of framework %s dropped", agent.id, eid, fid)
        elif kind == "ShutdownMessage":
            log.warning("agent %s: shut down by the master: %s", agent.id, message.get("message", ""))
            self._spawn(self._shutdown())
        else:
            log.warning("agent %s: unknown message from the master: %s", agent.id, kind)

    async def _shutdown(self) -> None:
        assert self.agent is not None
        await self.agent.shutdown_all()
        self.stopped.set()


async def run_agent(settings: AgentSettings, exit_process: bool = True) -> int:
    """Run one agent until SIGTERM / SIGINT (executors left running: recovered by a restart) or the
    master's ``ShutdownMessage`` (executors shut down). Returns the exit code."""
    ip = resolve_ip(settings.ip)
    link = MasterLink(settings)
    agent = AgentProcess(link, settings, ip)
    link.agent = agent
    agent.work_dir.mkdir(parents=True, exist_ok=True)
    agent.recover()
    try:
        await agent.serve()
    except OSError as error:
        raise SystemExit(
            f"agent: cannot serve the executor API at {agent.endpoint}: {error} (is --ip an address of "
            "this host, and --port free?)"
        ) from None
    log.info(
        "agent %s serving the executor API at %s (work dir %s)",
        agent.id or "(new)",
        agent.endpoint,
        agent.work_dir,
    )
    agent.start_recovery(settings.executor_reregistration_timeout if agent.recovering else 0.0, link.start)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(link.stopped.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    await link.close()
    await agent.unserve()
    log.info("agent %s stopped", agent.id)
    if exit_process:
        # Leave now: asyncio's teardown would kill the executor processes this process started
        # (their subprocess transports kill a child still running when they are closed), and a
        # stopped agent leaves its executors to its restart.
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(0)
    return 0
