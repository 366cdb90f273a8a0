"""A simulated Mesos agent: its own loopback address, resources and port range, the v1 executor
HTTP API (``POST /api/v1/executor``) and executors as local processes, each in its own session.

The agent is in-process with the master: it hands status updates and messages to the master by
direct calls (a real agent would send them over the network); the master talks to it the same way.
Both directions go through the agent's *link* to the master: while the link is cut (``stop``, a
partition) messages wait on it, as in a TCP connection that has not given up yet (see ``cut`` and
``heal``); the executors' own connections to the agent are not affected.

The same class runs alone in an agent process (``agent_process.AgentProcess``, split mode): its
``master`` is then a ``MasterLink`` that carries the same calls as messages to a remote master.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from aiohttp import web

from mesos_stateful.api.mesos.v1.executor import executor_pb2
from mesos_stateful.localcluster import containers as member_containers
from mesos_stateful.localcluster import encoding
from mesos_stateful.localcluster.checkpoint import (
    MetaPaths,
    append_record,
    read_state,
    remove_tree,
    write_atomically,
    write_text_atomically,
)
from mesos_stateful.localcluster.files import Files
from mesos_stateful.localcluster.files import routes as files_routes
from mesos_stateful.localcluster.procs import (
    is_alive,
    kill_session,
    kill_session_now,
    session_members,
    spawn_blocked,
    start_time,
    wait_gone,
)
from mesos_stateful.localcluster.recordio import EventStream, Json, method_not_allowed
from mesos_stateful.localcluster.resources import Key, ResourceError, Resources

log = logging.getLogger(__name__)


class AgentTimings(Protocol):
    """The settings an agent reads: the cluster's (``LocalClusterSettings``, in-process agents) or
    its own process's (``AgentSettings``, ``python -m mesos_stateful.localcluster agent``)."""

    @property
    def executor_shutdown_grace(self) -> float: ...
    @property
    def kill_grace(self) -> float: ...
    @property
    def executor_registration_timeout(self) -> float: ...
    @property
    def executor_reregistration_timeout(self) -> float: ...
    @property
    def recovery_timeout(self) -> float: ...
    @property
    def crash_at(self) -> str: ...


class MasterSide(Protocol):
    """What an agent hands its messages to: the ``Master`` itself (in-process agents) or the agent
    process's link to a remote master (``agent_process.MasterLink``)."""

    @property
    def settings(self) -> AgentTimings: ...
    def status_update(self, agent: Agent, fid: str, status: Json) -> None: ...
    def executor_terminated(self, agent: Agent, ex: Executor, code: int | None) -> None: ...
    def executor_message(self, agent: Agent, ex: Executor, data: str) -> None: ...


TERMINAL = frozenset(
    {
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_ERROR",
        "TASK_LOST",
        "TASK_DROPPED",
        "TASK_GONE",
        "TASK_GONE_BY_OPERATOR",
    }
)


def new_uuid() -> str:
    return base64.b64encode(uuid.uuid4().bytes).decode()


@dataclass
class Executor:
    framework_id: str
    executor_id: str
    info: Json
    framework_info: Json
    container_id: str
    sandbox: Path
    resources: Resources
    proc: asyncio.subprocess.Process | None = None
    stream: EventStream | None = None
    queued: list[Json] = field(default_factory=list)  # LAUNCHes waiting for SUBSCRIBE
    kills: set[str] = field(default_factory=set)  # KILLs waiting for a (re-)SUBSCRIBE
    tasks: dict[str, str] = field(default_factory=dict)  # task id -> latest state seen by the agent
    from_executor: set[str] = field(default_factory=set)  # uuids of updates that came from it
    # LAUNCHING (not subscribed yet), RECOVERING (recovered after an agent restart, not
    # re-subscribed yet: Mesos' REGISTERING), RUNNING, TERMINATING, TERMINATED
    state: str = "LAUNCHING"
    killed_by_agent: bool = False
    # (state, reason, message) of a termination decided by the agent
    failure: tuple[str, str, str] | None = None
    watcher: asyncio.Task[None] | None = None
    pid: int | None = None  # the executor process; it leads its own session (sid == pid)
    started: int | None = None  # its /proc start time (the pid alone can be reused)
    checkpoint: bool = False  # FrameworkInfo.checkpoint: its tasks and updates are checkpointed
    task_infos: dict[str, Json] = field(default_factory=dict)  # task id -> TaskInfo
    statuses: dict[str, Json] = field(default_factory=dict)  # task id -> latest TaskStatus
    uuids: dict[str, str] = field(default_factory=dict)  # uuid of every update -> its task id
    unacked: dict[str, list[str]] = field(default_factory=dict)  # task id -> uuids not acknowledged

    @property
    def sid(self) -> int | None:
        return self.pid

    def pending(self) -> bool:
        """Some of its updates wait for the framework's acknowledgement."""
        return any(self.unacked.values())


class Agent:
    def __init__(
        self,
        master: MasterSide,
        index: int,
        ip: str,
        port: int,
        total: Resources,
        attributes: dict[str, str],
        work_dir: Path,
    ) -> None:
        self.master = master
        self.index = index
        self.ip = ip
        self.port = port
        self.base = total  # the agent's resources, all unreserved (its --resources)
        self.total = total  # with the checkpointed reservations and volumes applied
        self.attributes = attributes
        self.work_dir = work_dir / "agents" / ip  # the agent's own --work_dir
        self.id = ""
        # The master's view of the agent: STOPPED (never registered), ACTIVE, DISCONNECTED (its
        # connection closed: the process died; deactivated, not yet marked), UNREACHABLE (marked
        # after the ping timeouts). The agent's own condition is ``alive`` and ``partitioned``.
        self.state = "STOPPED"
        self.alive = True  # False once killed (a fresh Agent restarts from the work dir)
        self.partitioned = False  # the link to the master is cut (``stop``)
        self.silent_since: float | None = None  # loop time since which the agent answers no ping
        self.unreachable_time: float | None = None  # wall time the master marked it unreachable
        self.to_agent: list[Callable[[], None]] = []  # master -> agent messages held by the cut link
        self.to_master: list[tuple[bool, Callable[[], None]]] = []  # (reliable, message) held
        self.executors: dict[tuple[str, str], Executor] = {}
        # Recovery after a restart (``recover`` then ``finish_recovery``): while ``recovering``, the
        # agent has not re-registered and what it sends the master waits (as on a cut link).
        self.recovering = False
        self._dead: list[Executor] = []  # recovered executors whose process is gone
        self._resend: list[tuple[Executor, Json]] = []  # checkpointed unacknowledged updates
        self._recovery: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The sandboxes served by /files/read and /files/browse (files.py).
        self.files = Files()

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        return self.ip

    @property
    def endpoint(self) -> str:
        return f"{self.ip}:{self.port}"

    def info(self) -> Json:
        return {
            "id": {"value": self.id},
            "hostname": self.hostname,
            "port": self.port,
            "resources": self.base.to_json(),
            "attributes": self.attributes_json(),
        }

    def attributes_json(self) -> list[Json]:
        return [{"name": k, "type": "TEXT", "text": {"value": v}} for k, v in sorted(self.attributes.items())]

    async def serve(self) -> None:
        """Start (or restart, on the same address) the executor API server."""
        app = web.Application()
        app.router.add_route("*", "/api/v1/executor", self._handle)
        app.router.add_get("/health", _ok)
        app.add_routes(files_routes(self.files))
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.ip, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def unserve(self) -> None:
        for ex in self.executors.values():
            if ex.stream is not None:
                ex.stream.close()
                ex.stream = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def destroy(self) -> None:
        """The agent's host goes away (``kill``, or the cluster stopped): every executor session
        is killed at once, its server goes away, and the checkpointed executors are forgotten (as
        after a reboot, Mesos does not recover executors: their tasks are unknown to the agent when
        it comes back; its id, reservations and volumes stay)."""
        if self._recovery is not None:
            self._recovery.cancel()
        await self.unserve()
        if self.id:
            remove_tree(self.paths.root / "frameworks")
        remove_tree(self.containers_dir)
        for ex in list(self.executors.values()):
            ex.killed_by_agent = True
            if ex.sid is not None:
                await kill_session(ex.sid, 0.0)
        for ex in list(self.executors.values()):
            if ex.watcher is not None:
                await asyncio.wait([ex.watcher], timeout=10)
        await member_containers.remove_agent_containers(self.id)

    # --- the link to the master ------------------------------------------------------------------

    def send_to_master(self, reliable: bool, message: Callable[[], None]) -> None:
        """Hand a message to the master, or hold it while the link is cut. ``reliable``: a status
        update (its status update manager re-sends it until acknowledged, also after the agent
        re-registered); the others (executor messages, exited executors) are lost if the master
        tears the link down meanwhile."""
        if not self.alive:
            return
        if self.partitioned or self.recovering:
            self.to_master.append((reliable, message))
        else:
            message()

    def cut(self) -> None:
        """A partition between the master and this agent: nothing else changes on the agent."""
        self.partitioned = True
        self.silent_since = asyncio.get_running_loop().time()

    def heal(self, link_kept: bool) -> tuple[list[Callable[[], None]], list[Callable[[], None]]]:
        """The partition ends: returns the messages held for the master side and the agent side.
        ``link_kept``: the master had not given up on the link, so everything held is delivered
        now; otherwise only the reliable updates are (after re-registration)."""
        self.partitioned = False
        self.silent_since = None
        to_agent, self.to_agent = self.to_agent, []
        to_master, self.to_master = self.to_master, []
        if not link_kept:
            to_agent = []
        return [m for reliable, m in to_master if reliable or link_kept], to_agent

    def link_given_up(self) -> None:
        """The master gives up on its link to the agent (it marked it unreachable). Nothing to do
        in-process (the cut link holds nothing any more); a remote agent's link is closed
        (``remote.RemoteAgent``), so the agent re-registers when it is back."""

    def kill_all_now(self) -> None:
        for ex in self.executors.values():
            if ex.sid is not None:
                kill_session_now(ex.sid)

    def live_sessions(self) -> list[int]:
        return [ex.sid for ex in self.executors.values() if ex.sid is not None and session_members(ex.sid)]

    # --- checkpointed state: agent id, reservations, volumes ----------------------------------------

    @property
    def meta_dir(self) -> Path:
        return self.work_dir / "meta"

    @property
    def checkpointed(self) -> Resources:
        """Reservations and persistent volumes (Mesos' checkpointed resources)."""
        return self.total.reserved()

    @property
    def paths(self) -> MetaPaths:
        return MetaPaths(self.meta_dir, self.id)

    @property
    def containers_dir(self) -> Path:
        """Every executor process of this agent (the containerizer's runtime directory)."""
        return self.work_dir / "containers"

    def recover(self) -> None:
        """Read the checkpoint of a previous run (if any): the agent id, port, reservations and
        volumes, then the executors of frameworks that checkpoint (``recover_executors``)."""
        try:
            info = json.loads((self.meta_dir / "agent.json").read_text())
            resources = json.loads((self.meta_dir / "resources.json").read_text())
        except FileNotFoundError:
            return
        except ValueError as error:
            log.error(
                "agent %s: unreadable checkpoint in %s (%s): starting as a new agent",
                self.ip,
                self.meta_dir,
                error,
            )
            return
        try:
            reserved = Resources.from_json(resources)
        except ResourceError as error:
            log.error(
                "agent %s: invalid checkpointed resources (%s): starting as a new agent", self.ip, error
            )
            return
        unreserved = reserved.to_unreserved()
        if not self.base.contains(unreserved):
            # Mesos refuses an agent whose resources shrank below its reservations; here the
            # agent starts as a new one (its volume directories are left on disk).
            log.error(
                "agent %s: checkpointed resources %s do not fit its resources %s: starting as a new agent",
                self.ip,
                reserved,
                self.base,
            )
            return
        self.id = str(info["agent_id"])
        self.total = self.base - unreserved + reserved
        for key, _value in reserved.volumes().items():
            self.volume_path(key).mkdir(parents=True, exist_ok=True)
        port = int(info.get("port") or 0)
        if self.port == 0 and port:
            self.port = port  # the same address: recovered executors connect to it again
        elif port and port != self.port:
            log.error(
                "agent %s: configured on port %s, checkpointed on %s: its executors cannot reconnect",
                self.ip,
                self.port,
                port,
            )
        log.info("agent %s recovered as %s with %s", self.ip, self.id, reserved)
        self.recover_executors()

    def recover_executors(self) -> None:
        """``Slave::recover`` + ``Framework::recoverExecutor``: the latest run of every checkpointed
        executor comes back with its tasks, their latest states and their unacknowledged updates.
        A live executor process (same pid and start time) waits to re-subscribe (``RECOVERING``);
        a gone one is destroyed by ``finish_recovery``; a terminated one only re-sends its
        unacknowledged updates."""
        for fid, fw_state in read_state(self.paths).items():
            if not fw_state.info.get("checkpoint"):
                continue
            for eid, ex_state in fw_state.executors.items():
                run = ex_state.run
                info = dict(ex_state.info)
                try:
                    resources = Resources.from_json(info.get("resources"))
                except ResourceError as error:
                    log.error("agent %s: executor %s not recovered: %s", self.id, eid, error)
                    continue
                ex = Executor(
                    framework_id=fid,
                    executor_id=eid,
                    info=info,
                    framework_info=fw_state.info,
                    container_id=run.container_id,
                    sandbox=self._sandbox(fid, eid, run.container_id),
                    resources=resources,
                    pid=run.pid,
                    started=run.start_time,
                    checkpoint=True,
                )
                self._attach_sandbox(ex)
                for tid, task in run.tasks.items():
                    ex.task_infos[tid] = task.info
                    ex.tasks[tid] = "TASK_STAGING"
                    for status in task.updates:
                        uid = str(status.get("uuid", ""))
                        ex.uuids[uid] = tid
                        ex.tasks[tid] = str(status["state"])
                        ex.statuses[tid] = status
                        if uid not in task.acks:
                            ex.unacked.setdefault(tid, []).append(uid)
                            self._resend.append((ex, status))
                            if status.get("source") == "SOURCE_EXECUTOR":
                                ex.from_executor.add(uid)
                if run.completed:
                    ex.state = "TERMINATED"
                    if not ex.pending():
                        self._gc(ex)
                        continue
                elif run.pid is not None and is_alive(run.pid, run.start_time):
                    ex.state = "RECOVERING"
                    log.info(
                        "agent %s: recovered executor %s (pid %s) of framework %s; waiting for it to "
                        "subscribe",
                        self.id,
                        eid,
                        run.pid,
                        fid,
                    )
                else:
                    ex.state = "RECOVERING"
                    self._dead.append(ex)
                    log.info("agent %s: recovered executor %s of framework %s has exited", self.id, eid, fid)
                self.executors[(fid, eid)] = ex
        self.recovering = any(ex.state == "RECOVERING" for ex in self.executors.values()) or bool(
            self._resend
        )

    async def finish_recovery(self, reregistration_timeout: float, register: Callable[[], None]) -> None:
        """``Slave::_recover`` and ``reregisterExecutorTimeout``: orphan executor processes (not
        recovered: their framework does not checkpoint) are killed; executors that exited while the
        agent was down are destroyed (TASK_FAILED, REASON_EXECUTOR_TERMINATED); the live ones have
        ``reregistration_timeout`` seconds (Mesos' ``--executor_reregistration_timeout``) to
        re-subscribe, the others are then destroyed (TASK_LOST, or TASK_GONE for PARTITION_AWARE
        frameworks, REASON_EXECUTOR_REREGISTRATION_TIMEOUT). Then the agent re-registers
        (``register``) and sends what it holds: first the checkpointed unacknowledged updates, then
        those of the recovery (Mesos' status update manager)."""
        await self.kill_orphans()
        for ex in self._dead:
            ex.watcher = asyncio.create_task(self._watch(ex))
        for ex in self.executors.values():
            if ex.state == "RECOVERING" and ex not in self._dead:
                ex.watcher = asyncio.create_task(self._watch(ex))
        self._dead = []
        if self.recovering:
            await asyncio.sleep(reregistration_timeout)
        for ex in self.executors.values():
            if ex.state != "RECOVERING":
                continue
            log.info("agent %s: killing un-reregistered executor %s", self.id, ex.executor_id)
            gone = "TASK_GONE" if _partition_aware(ex.framework_info) else "TASK_LOST"
            ex.failure = (
                gone,
                "REASON_EXECUTOR_REREGISTRATION_TIMEOUT",
                f"Executor did not reregister within {_duration(reregistration_timeout)}",
            )
            ex.state = "TERMINATING"
            ex.killed_by_agent = True
            if ex.pid is not None:
                await kill_session(ex.pid, 0.0)
        self.recovering = False
        held, self.to_master = self.to_master, []
        resend, self._resend = self._resend, []
        register()
        for ex, status in resend:
            if status["uuid"] in ex.unacked.get(status["task_id"]["value"], []):
                self.master.status_update(self, ex.framework_id, status)
        for _reliable, message in held:
            message()

    def start_recovery(self, reregistration_timeout: float, register: Callable[[], None]) -> None:
        self._recovery = asyncio.get_running_loop().create_task(
            self.finish_recovery(reregistration_timeout, register)
        )

    async def kill_orphans(self) -> None:
        """Destroy the orphan containers (``MesosContainerizerProcess::recover``/``__recover``):
        every container of the runtime directory (``containers/*.json``) that is not a recovered
        executor with a checkpointed pid. A recorded pid that is still the same process (pid and
        start time) leads the session that is killed whole (SIGTERM, ``kill_grace``, SIGKILL). A
        record without a pid is a container whose process was forked but never released (the agent
        died before it checkpointed the pid): that process exits by itself when its pipe closes and
        never ran executor code, so there is nothing to kill (Mesos: "assume the child process will
        exit because of the pipe")."""
        known = {ex.container_id for ex in self.executors.values() if ex.pid is not None}
        for path in sorted(self.containers_dir.glob("*.json")):
            if path.stem in known:
                continue
            try:
                record = json.loads(path.read_text())
                recorded = record.get("pid")
                started = record.get("start_time")
                pid = None if recorded is None else int(recorded)
            except (OSError, ValueError, TypeError, AttributeError) as error:
                log.error("agent %s: unreadable container record %s (%s): removed", self.id, path, error)
                path.unlink(missing_ok=True)
                continue
            if pid is None:
                log.info(
                    "agent %s: orphan container %s of executor %s was never started (no pid checkpointed)",
                    self.id,
                    path.stem,
                    record.get("executor_id"),
                )
            elif is_alive(pid, started):
                log.info(
                    "agent %s: destroying orphan container %s of executor %s (pid %s)",
                    self.id,
                    path.stem,
                    record.get("executor_id"),
                    pid,
                )
                await kill_session(pid, self.master.settings.kill_grace)
            path.unlink(missing_ok=True)
        await member_containers.remove_orphans(self)

    def reported_tasks(self) -> list[tuple[Executor, str]]:
        """What the agent reports when it registers (``ReregisterSlaveMessage.tasks``): the tasks
        of its executors that are not terminal, or whose updates wait for an acknowledgement."""
        out = []
        for ex in self.executors.values():
            for tid, state in ex.tasks.items():
                if (state not in TERMINAL and ex.state != "TERMINATED") or ex.unacked.get(tid):
                    out.append((ex, tid))
        return out

    # --- checkpoint of executors, tasks and updates ------------------------------------------------

    def _ckpt_launch(self, ex: Executor, task: Json) -> None:
        if not ex.checkpoint:
            return
        paths = self.paths
        fid, eid, tid = ex.framework_id, ex.executor_id, task["task_id"]["value"]
        try:
            write_atomically(paths.framework_info(fid), ex.framework_info)
            if not paths.executor_info(fid, eid).exists() or ex.state == "LAUNCHING":
                write_atomically(paths.executor_info(fid, eid), ex.info)
            write_atomically(paths.task(fid, eid, ex.container_id, tid) / "task.info", task)
        except OSError as error:
            log.error("agent %s: cannot checkpoint task %s: %s", self.id, tid, error)

    def _ckpt_container(self, ex: Executor) -> None:
        """The container's record in the runtime directory, written (fsync'ed) before its process is
        forked (``pid`` null: Mesos creates the runtime dir in ``launch``) and again with the pid
        once ``forked.pid`` is checkpointed (``_ckpt_pid``). Raises OSError."""
        write_atomically(
            self.containers_dir / f"{ex.container_id}.json",
            {
                "pid": ex.pid,
                "start_time": ex.started,
                "framework_id": ex.framework_id,
                "executor_id": ex.executor_id,
                "sandbox": str(ex.sandbox),
            },
        )

    def _ckpt_pid(self, ex: Executor) -> None:
        """The forked executor's pid and start time, durably, before it may exec (Mesos
        ``_launch``): first ``forked.start``/``forked.pid`` in the meta dir (checkpointing
        frameworks), then the runtime record, so a pid in the runtime record is always in the meta
        dir too (a runtime pid without a meta pid is an orphan). Raises OSError."""
        assert ex.pid is not None
        if ex.checkpoint:
            pids = self.paths.run(ex.framework_id, ex.executor_id, ex.container_id) / "pids"
            write_text_atomically(pids / "forked.start", str(ex.started or ""))
            write_text_atomically(pids / "forked.pid", str(ex.pid))
        self._ckpt_container(ex)

    def _crash_point(self, point: str) -> None:
        """Fault injection (setting ``crash_at``, for tests that run the cluster as a process of its
        own): the cluster process dies here as with ``kill -9``."""
        if self.master.settings.crash_at == point:
            log.warning("agent %s: crash_at=%s: the cluster process kills itself (SIGKILL)", self.id, point)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def _ckpt_record(self, ex: Executor, tid: str, record: Json) -> None:
        if not ex.checkpoint:
            return
        path = self.paths.task(ex.framework_id, ex.executor_id, ex.container_id, tid) / "task.updates"
        try:
            append_record(path, record)
        except OSError as error:
            log.error("agent %s: cannot checkpoint an update of %s: %s", self.id, tid, error)

    def _record_update(self, ex: Executor, tid: str, status: Json) -> None:
        """A new update of one of the executor's tasks: checkpointed before it is forwarded."""
        uid = str(status["uuid"])
        ex.uuids[uid] = tid
        ex.tasks[tid] = status["state"]
        ex.statuses[tid] = status
        ex.unacked.setdefault(tid, []).append(uid)
        self._ckpt_record(ex, tid, {"type": "UPDATE", "update": status})

    def _executor_ended(self, ex: Executor) -> None:
        (self.containers_dir / f"{ex.container_id}.json").unlink(missing_ok=True)
        if ex.checkpoint and self.id:
            run = self.paths.run(ex.framework_id, ex.executor_id, ex.container_id)
            with contextlib.suppress(OSError):
                run.mkdir(parents=True, exist_ok=True)
                (run / "executor.sentinel").touch()
        self._gc(ex)

    def _gc(self, ex: Executor) -> None:
        """A terminated executor whose updates were all acknowledged leaves the checkpoint."""
        if ex.checkpoint and ex.state == "TERMINATED" and not ex.pending() and self.id:
            run = self.paths.run(ex.framework_id, ex.executor_id, ex.container_id)
            remove_tree(run)
            with contextlib.suppress(OSError):
                run.parent.rmdir()  # ``runs``: only when no later run of the executor id is there
                remove_tree(run.parent.parent)

    def _sandbox(self, fid: str, eid: str, container_id: str) -> Path:
        return (
            self.work_dir
            / "slaves"
            / self.id
            / "frameworks"
            / fid
            / "executors"
            / eid
            / "runs"
            / container_id
        )

    def checkpoint(self) -> None:
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        info = {"agent_id": self.id, "hostname": self.hostname, "port": self.port}
        write_atomically(self.meta_dir / "agent.json", info)
        write_atomically(self.meta_dir / "resources.json", self.checkpointed.to_json(refinement=True))

    def volume_path(self, key: Key) -> Path:
        """``<agent work dir>/volumes/roles/<role>/<persistence id>`` (as Mesos' paths)."""
        assert key.disk is not None
        return self.work_dir / "volumes" / "roles" / key.role.replace("/", " ") / key.disk.persistence_id

    def convert(self, consumed: Resources, converted: Resources) -> None:
        """Apply an operation (RESERVE, UNRESERVE, CREATE, DESTROY) to the agent's total resources:
        checkpoint it, create the new volumes' directories, remove the destroyed ones'."""
        self.total = self.total - consumed + converted
        for key, _value in converted.volumes().items():
            self.volume_path(key).mkdir(parents=True, exist_ok=True)
        for key, _value in consumed.volumes().items():
            path = self.volume_path(key)
            log.info("agent %s: deleting persistent volume %s", self.id, path)
            shutil.rmtree(path, ignore_errors=True)
        self.checkpoint()

    def _link_volumes(self, sandbox: Path, resources: Resources) -> None:
        """The filesystem/posix isolator: ``<sandbox>/<container_path>`` -> the volume."""
        for key, _value in resources.volumes().items():
            assert key.disk is not None
            target = self.volume_path(key)
            target.mkdir(parents=True, exist_ok=True)
            link = sandbox / key.disk.container_path
            if link.is_symlink():
                if link.resolve() == target.resolve():
                    continue
                link.unlink()
            elif link.exists():
                log.warning("agent %s: %s exists in the sandbox; volume not linked", self.id, link)
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)

    def used(self) -> Resources:
        """Resources of live executors (tasks are accounted by the master)."""
        out = Resources()
        for ex in self.executors.values():
            if ex.state != "TERMINATED":
                out = out + ex.resources
        return out

    # --- master -> agent -------------------------------------------------------------------------

    def launch(self, framework_info: Json, task: Json) -> None:
        """Deliver a task to its executor, starting the executor first if needed."""
        fid = framework_info["id"]["value"]
        info = dict(task["executor"])
        info["framework_id"] = {"value": fid}
        eid = info["executor_id"]["value"]
        task = dict(task)
        task["agent_id"] = {"value": self.id}
        key = (fid, eid)
        ex = self.executors.get(key)
        task_id = task["task_id"]["value"]
        if ex is not None and ex.state in ("LAUNCHING", "RUNNING"):
            ex.tasks[task_id] = "TASK_STAGING"
            ex.task_infos[task_id] = task
            self._ckpt_launch(ex, task)
            self._link_task_volumes(ex, task)
            if ex.state == "RUNNING" and ex.stream is not None:
                ex.stream.send({"type": "LAUNCH", "launch": {"task": task}})
            else:
                ex.queued.append(task)
            return
        container_id = str(uuid.uuid4())
        ex = Executor(
            framework_id=fid,
            executor_id=eid,
            info=info,
            framework_info=framework_info,
            container_id=container_id,
            sandbox=self._sandbox(fid, eid, container_id),
            resources=Resources.from_json(info.get("resources")),
            checkpoint=bool(framework_info.get("checkpoint")),
        )
        ex.tasks[task_id] = "TASK_STAGING"
        ex.task_infos[task_id] = task
        self._attach_sandbox(ex)
        self._ckpt_launch(ex, task)
        self._link_task_volumes(ex, task)
        ex.queued.append(task)
        self.executors[key] = ex
        starting = asyncio.get_running_loop().create_task(self._start(ex))
        self._tasks.add(starting)
        starting.add_done_callback(self._tasks.discard)

    def _attach_sandbox(self, ex: Executor) -> None:
        """Serve the run's sandbox through /files as a Mesos agent does (slave.cpp): under its
        real path and under ``/frameworks/<fid>/executors/<eid>/runs/latest``. It stays served
        after the executor ends (Mesos detaches it when the sandbox is garbage collected)."""
        self.files.attach(ex.sandbox, str(ex.sandbox))
        self.files.attach(ex.sandbox, f"/frameworks/{ex.framework_id}/executors/{ex.executor_id}/runs/latest")

    def _link_task_volumes(self, ex: Executor, task: Json) -> None:
        try:
            resources = Resources.from_json(task.get("resources")) + ex.resources
            self._link_volumes(ex.sandbox, resources)
        except (ResourceError, OSError) as error:
            log.warning("agent %s: cannot link the volumes of task %s: %s", self.id, task["task_id"], error)

    async def _start(self, ex: Executor) -> None:
        """Launch the executor's container as Mesos' containerizer does (``containerizer.cpp``
        ``launch``, ``_launch``, ``exec``): record the container, fork its process blocked on a
        pipe, checkpoint its pid and start time (fsync'ed), and only then release it to exec the
        executor's command. The executor never runs with its pid unrecorded: if the agent dies
        before the release, the child exits without exec'ing, and the restarted agent finds either
        no pid (nothing ran) or the pid (recovered, or destroyed as an orphan)."""
        eid, fid = ex.executor_id, ex.framework_id
        if not self.alive:
            return  # the agent died before the launch began: nothing of it exists
        try:
            self._ckpt_container(ex)
            file, argv, env = self._command(ex)
            stdout, stderr = _open_logs(ex.sandbox)
            try:
                launch = await spawn_blocked(ex.sandbox, env, stdout, stderr)
            finally:
                stdout.close()
                stderr.close()
        except OSError as error:
            self._launch_failed(ex, error)
            return
        ex.proc = launch.proc
        ex.pid = launch.pid
        ex.started = start_time(ex.pid)
        log.info("agent %s: forked executor %s (pid %s) of framework %s", self.id, eid, ex.pid, fid)
        self._crash_point("executor-forked")
        if self.alive and ex.state != "TERMINATING":
            try:
                self._ckpt_pid(ex)
            except OSError as error:
                # Mesos fails the launch ("Could not checkpoint container's pid").
                launch.abort()
                await ex.proc.wait()
                self._launch_failed(ex, OSError(f"Could not checkpoint container's pid: {error}"))
                return
            self._crash_point("executor-checkpointed")
        if not self.alive or ex.state == "TERMINATING":
            # Killed or shut down while it was being started: it never execs.
            launch.abort()
            ex.watcher = asyncio.create_task(self._watch(ex))
            await kill_session(ex.pid, 0.0)
            return
        failed = await launch.release(file, argv, env)
        if failed is not None:
            await ex.proc.wait()
            self._launch_failed(ex, failed)
            return
        ex.watcher = asyncio.create_task(self._watch(ex))
        if not self.alive or ex.state == "TERMINATING":
            await kill_session(ex.pid, 0.0)  # killed or shut down while it was being released
        log.info("agent %s: started executor %s (pid %s) of framework %s", self.id, eid, ex.pid, fid)

    def _launch_failed(self, ex: Executor, error: OSError) -> None:
        log.warning("agent %s: cannot start executor %s: %s", self.id, ex.executor_id, error)
        ex.state = "TERMINATED"
        self._fail_tasks(
            ex, "TASK_FAILED", "REASON_EXECUTOR_TERMINATED", f"Failed to launch executor: {error}"
        )
        self._executor_ended(ex)

    def _command(self, ex: Executor) -> tuple[str, list[str], dict[str, str]]:
        """What the executor's process execs: file, argv and environment (README "Executor
        environment"), as ``subprocess`` ran it before: a shell command as ``/bin/sh -c <value>``,
        otherwise ``value`` (searched on the environment's PATH) with ``arguments[1:]``."""
        command = ex.info.get("command") or {}
        settings = self.master.settings
        env = {k: v for k, v in os.environ.items() if k not in _AGENT_ONLY_ENV}
        env.update(
            {
                "MESOS_FRAMEWORK_ID": ex.framework_id,
                "MESOS_EXECUTOR_ID": ex.executor_id,
                "MESOS_AGENT_ENDPOINT": self.endpoint,
                "MESOS_DIRECTORY": str(ex.sandbox),
                "MESOS_SANDBOX": str(ex.sandbox),
                "MESOS_CHECKPOINT": "1" if ex.checkpoint else "0",
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": _duration(settings.executor_shutdown_grace),
                "MESOS_HTTP_COMMAND_EXECUTOR": "0",
            }
        )
        if ex.checkpoint:
            # As the Mesos agent (``executorEnvironment``): how long the executor waits for a
            # restarted agent, and its longest backoff between two SUBSCRIBE attempts (the
            # agent's --executor_reregistration_timeout, so it is back within that window).
            env["MESOS_RECOVERY_TIMEOUT"] = _duration(settings.recovery_timeout)
            env["MESOS_SUBSCRIPTION_BACKOFF_MAX"] = _duration(settings.executor_reregistration_timeout)
        for var in (command.get("environment") or {}).get("variables", []):
            env[str(var["name"])] = str(var.get("value", ""))
        if command.get("shell", True):
            return "/bin/sh", ["/bin/sh", "-c", str(command.get("value", ""))], env
        argv = [str(a) for a in command.get("arguments", [])] or [str(command.get("value", ""))]
        file = str(command.get("value", argv[0]))
        return file, [file, *argv[1:]], env

    async def _wait_exit(self, ex: Executor) -> int | None:
        """The executor's exit code; None for a recovered executor (not our child: only its
        disappearance can be seen, as with Mesos' reaper for non-children)."""
        if ex.proc is not None:
            return await ex.proc.wait()
        assert ex.pid is not None
        await wait_gone(ex.pid, ex.started)
        return None

    async def _watch(self, ex: Executor) -> None:
        if ex.pid is None:  # recovered without a pid: the agent died as it started it
            await self._terminated(ex, None)
            return
        if ex.proc is not None:
            timeout = self.master.settings.executor_registration_timeout
            try:
                await asyncio.wait_for(asyncio.shield(ex.proc.wait()), timeout)
            except TimeoutError:
                if ex.state == "LAUNCHING":
                    log.warning("agent %s: executor %s did not subscribe in time", self.id, ex.executor_id)
                    ex.failure = (
                        "TASK_FAILED",
                        "REASON_EXECUTOR_REGISTRATION_TIMEOUT",
                        "Executor did not register in time",
                    )
                    await kill_session(ex.pid, self.master.settings.kill_grace)
        code = await self._wait_exit(ex)
        await self._terminated(ex, code)

    async def _terminated(self, ex: Executor, code: int | None) -> None:
        """The executor process is gone: its container is destroyed (nothing of its session may
        survive it), its tasks that are not terminal get the agent's update, the master a FAILURE."""
        if ex.pid is not None:
            await kill_session(ex.pid, self.master.settings.kill_grace)
        await member_containers.remove_executor_containers(self.id, ex.framework_id, ex.executor_id)
        ex.state = "TERMINATED"
        if ex.stream is not None:
            ex.stream.close()
            ex.stream = None
        log.info("agent %s: executor %s exited with %s", self.id, ex.executor_id, code)
        if not self.alive:
            return
        if ex.failure is not None:
            self._fail_tasks(ex, *ex.failure)
        elif ex.killed_by_agent:
            self._fail_tasks(ex, "TASK_KILLED", "REASON_EXECUTOR_TERMINATED", "Executor terminated")
        else:
            self._fail_tasks(ex, "TASK_FAILED", "REASON_EXECUTOR_TERMINATED", "Executor terminated")
        self._executor_ended(ex)
        self.send_to_master(False, lambda: self.master.executor_terminated(self, ex, code))

    def _fail_tasks(self, ex: Executor, state: str, reason: str, message: str) -> None:
        for task_id, task_state in list(ex.tasks.items()):
            if task_state not in TERMINAL:
                self._agent_update(ex, task_id, state, reason, message)
        ex.queued.clear()

    def _agent_update(self, ex: Executor, task_id: str, state: str, reason: str, message: str) -> None:
        status = {
            "task_id": {"value": task_id},
            "state": state,
            "reason": reason,
            "message": message,
            "source": "SOURCE_AGENT",
            "agent_id": {"value": self.id},
            "executor_id": {"value": ex.executor_id},
            "uuid": new_uuid(),
            "timestamp": time.time(),
        }
        self._record_update(ex, task_id, status)
        self.send_to_master(True, lambda: self.master.status_update(self, ex.framework_id, status))

    def kill_task(self, framework_id: str, task_id: str, kill_policy: Json | None = None) -> None:
        log.info("agent %s: asked to kill task %s of framework %s", self.id, task_id, framework_id)
        for ex in self.executors.values():
            if ex.framework_id != framework_id or task_id not in ex.tasks or ex.state == "TERMINATED":
                continue
            queued = [t for t in ex.queued if t["task_id"]["value"] == task_id]
            if queued:
                ex.queued = [t for t in ex.queued if t["task_id"]["value"] != task_id]
                self._agent_update(
                    ex,
                    task_id,
                    "TASK_KILLED",
                    "REASON_TASK_KILLED_DURING_LAUNCH",
                    "Killed before delivery to the executor",
                )
                if not any(s not in TERMINAL for s in ex.tasks.values()):
                    task = asyncio.get_running_loop().create_task(self.shutdown_executor(ex))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            elif ex.stream is not None:
                kill: Json = {"task_id": {"value": task_id}}
                if kill_policy:
                    kill["kill_policy"] = kill_policy
                ex.stream.send({"type": "KILL", "kill": kill})
            else:
                # Not connected (re-subscribing after a partition): delivered when it is back.
                ex.kills.add(task_id)
            return

    async def shutdown_executor(self, ex: Executor) -> None:
        if ex.state in ("TERMINATING", "TERMINATED"):
            return
        ex.state = "TERMINATING"
        ex.killed_by_agent = True
        if ex.stream is not None:
            ex.stream.send({"type": "SHUTDOWN"})
        if ex.proc is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(ex.proc.wait()), self.master.settings.executor_shutdown_grace
            )
        await kill_session(ex.proc.pid, self.master.settings.kill_grace)

    async def shutdown_framework(self, framework_id: str) -> None:
        exs = [ex for ex in self.executors.values() if ex.framework_id == framework_id]
        await asyncio.gather(*(self.shutdown_executor(ex) for ex in exs))

    def acknowledged(self, framework_id: str, executor_id: str, task_id: str, update_uuid: str) -> None:
        ex = self.executors.get((framework_id, executor_id))
        if ex is None:
            return
        unacked = ex.unacked.get(task_id, [])
        if update_uuid in unacked:
            unacked.remove(update_uuid)
            self._ckpt_record(ex, task_id, {"type": "ACK", "uuid": update_uuid})
        if update_uuid in ex.from_executor:
            ex.from_executor.discard(update_uuid)
            if ex.stream is not None:
                ex.stream.send(
                    {
                        "type": "ACKNOWLEDGED",
                        "acknowledged": {"task_id": {"value": task_id}, "uuid": update_uuid},
                    }
                )
        self._gc(ex)

    def framework_message(self, framework_id: str, executor_id: str, data: str) -> bool:
        ex = self.executors.get((framework_id, executor_id))
        if ex is None or ex.stream is None:
            return False
        ex.stream.send({"type": "MESSAGE", "message": {"data": data}})
        return True

    def task_states(self) -> dict[str, str]:
        return {tid: st for ex in self.executors.values() for tid, st in ex.tasks.items()}

    # --- executor HTTP API -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/v1/executor`` as the agent's ``Http::executor`` (``src/slave/http.cpp``): the
        call decoded (JSON or protobuf, ``encoding.decode``), validated (``validate_executor_call``),
        HEARTBEAT accepted before any lookup; while the agent recovers (``recovering``: the
        executor re-registration window after a restart) other calls than SUBSCRIBE get 503; then
        the framework and executor are looked up; calls of an executor that has not subscribed yet
        are refused (403); SUBSCRIBE answers in the media type its ``Accept`` allows (JSON first)."""
        if request.method != "POST":
            return method_not_allowed(request.method)
        try:
            call = encoding.decode(
                await request.read(), request.headers.get("Content-Type"), executor_pb2.Call
            )
        except encoding.DecodeError as error:
            return web.Response(status=error.status, text=error.message)
        invalid = validate_executor_call(call)
        if invalid is not None:
            return web.Response(status=400, text=f"Failed to validate Executor::Call: {invalid}")
        kind = call.get("type")
        media_type = encoding.JSON
        if kind == "SUBSCRIBE":
            accepted = encoding.accepted_media_type(request.headers.get("Accept"))
            if accepted is None:
                return web.Response(status=406, text=encoding.NOT_ACCEPTABLE)
            media_type = accepted
        elif kind == "HEARTBEAT":
            # Accepted before any lookup: its framework and executor ids may be dummies.
            return web.Response(status=202)
        elif self.recovering:  # ``Slave::RECOVERING``: only (re-)subscriptions until it is over
            return web.Response(status=503, text="Agent has not finished recovery")
        fid = call["framework_id"]["value"]
        eid = call["executor_id"]["value"]
        if not any(ex.framework_id == fid and ex.state != "TERMINATED" for ex in self.executors.values()):
            return web.Response(status=400, text="Framework cannot be found")
        ex = self.executors.get((fid, eid))
        if ex is None or ex.state == "TERMINATED":
            return web.Response(status=400, text="Executor cannot be found")
        if ex.state == "LAUNCHING" and kind != "SUBSCRIBE":
            return web.Response(status=403, text="Executor is not subscribed")
        if kind == "SUBSCRIBE":
            return await self._subscribe(request, ex, call.get("subscribe") or {}, media_type)
        if kind == "UPDATE":
            return self._update(ex, call["update"])
        if kind == "MESSAGE":
            data = call["message"].get("data", "")
            self.send_to_master(False, lambda: self.master.executor_message(self, ex, data))
            return web.Response(status=202)
        log.warning("Received 'UNKNOWN' call")
        return web.Response(status=501, text="501 Not Implemented.")

    async def _subscribe(
        self, request: web.Request, ex: Executor, sub: Json, media_type: str = encoding.JSON
    ) -> web.StreamResponse:
        """``Slave::subscribe``: also a recovered executor's re-subscription after an agent
        restart; its unacknowledged updates are taken (once: duplicates by uuid are ignored), and
        a task still STAGING that it does not list among its unacknowledged tasks never reached it
        (TASK_LOST, or TASK_DROPPED for PARTITION_AWARE, REASON_AGENT_RESTARTED)."""
        if ex.stream is not None:
            ex.stream.close()
        stream = EventStream(media_type=media_type, message=executor_pb2.Event)
        ex.stream = stream
        if ex.state == "RECOVERING":
            log.info("agent %s: executor %s re-subscribed", self.id, ex.executor_id)
        if ex.state in ("LAUNCHING", "RECOVERING"):
            ex.state = "RUNNING"
        for update in sub.get("unacknowledged_updates") or []:
            status = update.get("status") if isinstance(update, dict) else None
            if isinstance(status, dict):
                error = self._take_update(ex, status)
                if error is not None:
                    log.warning(
                        "agent %s: unacknowledged update of %s ignored: %s", self.id, ex.executor_id, error
                    )
        known = {
            (t.get("task_id") or {}).get("value")
            for t in sub.get("unacknowledged_tasks") or []
            if isinstance(t, dict)
        }
        queued = {t["task_id"]["value"] for t in ex.queued}
        never_sent = False
        for tid, state in list(ex.tasks.items()):
            if state == "TASK_STAGING" and tid not in known and tid not in queued:
                dropped = "TASK_DROPPED" if _partition_aware(ex.framework_info) else "TASK_LOST"
                self._agent_update(
                    ex, tid, dropped, "REASON_AGENT_RESTARTED", "Task launched during agent restart"
                )
                never_sent = True
        if never_sent and not ex.queued and all(st in TERMINAL for st in ex.tasks.values()):
            # MESOS-8411: an executor that never got any of its tasks is shut down.
            log.warning("agent %s: shutting down executor %s: it has no task", self.id, ex.executor_id)
            shutdown = asyncio.get_running_loop().create_task(self.shutdown_executor(ex))
            self._tasks.add(shutdown)
            shutdown.add_done_callback(self._tasks.discard)
        subscribed = {
            "type": "SUBSCRIBED",
            "subscribed": {
                "executor_info": ex.info,
                "framework_info": ex.framework_info,
                "agent_info": self.info(),
                "container_id": {"value": ex.container_id},
            },
        }
        for task in ex.queued:
            stream.send({"type": "LAUNCH", "launch": {"task": task}})
        ex.queued.clear()
        for task_id in sorted(ex.kills):
            stream.send({"type": "KILL", "kill": {"task_id": {"value": task_id}}})
        ex.kills.clear()
        if ex.state == "TERMINATING":
            stream.send({"type": "SHUTDOWN"})
        resp = await stream.serve(request, subscribed, heartbeat=None)
        if ex.stream is stream:
            ex.stream = None
        return resp

    def _update(self, ex: Executor, update: Json) -> web.Response:
        status = update.get("status")
        if not isinstance(status, dict):
            return web.Response(status=400, text="Expecting 'update.status'")
        error = self._take_update(ex, status)
        if error is not None:
            return web.Response(status=400, text=error)
        return web.Response(status=202)

    def _take_update(self, ex: Executor, status: Json) -> str | None:
        """An update from the executor: validated, checkpointed, forwarded; None or the error."""
        try:
            task_id = status["task_id"]["value"]
            status["state"]
            raw = base64.b64decode(status["uuid"], validate=True)
        except (KeyError, TypeError, ValueError):
            return "Expecting 'status.task_id', 'status.state' and a base64 'status.uuid'"
        if len(raw) != 16:
            return "'status.uuid' must be 16 bytes"
        if status.get("source", "SOURCE_EXECUTOR") != "SOURCE_EXECUTOR":
            return "Received status update from executor with source not SOURCE_EXECUTOR"
        if task_id not in ex.tasks:
            return f"Task {task_id} is unknown to executor {ex.executor_id}"
        uid = str(status["uuid"])
        if uid in ex.uuids:
            # A duplicate (re-sent after a reconnection): the status update manager has it.
            if uid not in ex.unacked.get(task_id, []) and ex.stream is not None:
                ex.stream.send(
                    {"type": "ACKNOWLEDGED", "acknowledged": {"task_id": {"value": task_id}, "uuid": uid}}
                )
            return None
        if ex.tasks[task_id] in TERMINAL:
            # Mesos drops updates after a terminal one for the same task.
            return None
        status = dict(status)
        status["source"] = "SOURCE_EXECUTOR"
        status["agent_id"] = {"value": self.id}
        status["executor_id"] = {"value": ex.executor_id}
        status.setdefault("timestamp", time.time())
        self._record_update(ex, task_id, status)
        ex.from_executor.add(uid)
        self.send_to_master(True, lambda: self.master.status_update(self, ex.framework_id, status))
        return None


def validate_executor_call(call: Json) -> str | None:
    """``common::validation::validateExecutorCall`` (``src/common/validation.cpp``) on a decoded
    ``mesos.v1.executor.Call`` (required fields were checked by the decode): Mesos's error text, or
    None. UPDATE: a 16-byte UUID (``id::UUID::fromBytes``), the executor id of the call if the status
    names one, source SOURCE_EXECUTOR (unset reads as SOURCE_MASTER, the enum's default), never
    TASK_STAGING."""
    if not call.get("type"):
        return "Expecting 'type' to be present"
    if "executor_id" not in call:
        return "Expecting 'executor_id' to be present"
    if "framework_id" not in call:
        return "Expecting 'framework_id' to be present"
    kind = call["type"]
    eid = call["executor_id"].get("value", "")
    fid = call["framework_id"].get("value", "")
    if kind == "SUBSCRIBE" and "subscribe" not in call:
        return "Expecting 'subscribe' to be present"
    if kind == "MESSAGE" and "message" not in call:
        return "Expecting 'message' to be present"
    if kind != "UPDATE":
        return None
    if "update" not in call:
        return "Expecting 'update' to be present"
    status = call["update"].get("status") or {}
    if "uuid" not in status:
        return "Expecting 'uuid' to be present"
    try:
        raw = base64.b64decode(status["uuid"], validate=True)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 16 or not 1 <= raw[6] >> 4 <= 5:
        return "Not a valid UUID"
    named = (status.get("executor_id") or {}).get("value")
    if "executor_id" in status and named != eid:
        return f"ExecutorID in Call: {eid} does not match ExecutorID in TaskStatus: {named}"
    if status.get("source", "SOURCE_MASTER") != "SOURCE_EXECUTOR":
        return (
            f"Received Call from executor {eid} of framework {fid} with invalid source, "
            "expecting 'SOURCE_EXECUTOR'"
        )
    if status.get("state") == "TASK_STAGING":
        return f"Received TASK_STAGING from executor {eid} of framework {fid} which is not allowed"
    return None


def _partition_aware(framework_info: Json) -> bool:
    return any(c.get("type") == "PARTITION_AWARE" for c in framework_info.get("capabilities", []) or [])


def _duration(seconds: float) -> str:
    """A Mesos duration string (``stringify(Duration)``: ``2secs``, ``15mins``, ``500ms``)."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}mins"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}secs"


# Variables of the agent's own process that its executors must not inherit.
_AGENT_ONLY_ENV = frozenset({"MESOS_RECOVERY_TIMEOUT", "MESOS_SUBSCRIPTION_BACKOFF_MAX", "MESOS_CHECKPOINT"})


def _open_logs(sandbox: Path) -> tuple[BinaryIO, BinaryIO]:
    """The sandbox with the executor's stdout/stderr files (handed to the child, closed after)."""
    sandbox.mkdir(parents=True, exist_ok=True)
    return open(sandbox / "stdout", "ab"), open(sandbox / "stderr", "ab")


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(status=200)
