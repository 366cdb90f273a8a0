"""A simulated Mesos agent: its own loopback address, resources and port range, the v1 executor
HTTP API (``POST /api/v1/executor``) and executors as local processes, each in its own session.

The agent is in-process with the master: it hands status updates and messages to the master by
direct calls (a real agent would send them over the network); the master talks to it the same way.
Both directions go through the agent's *link* to the master: while the link is cut (``stop``, a
partition) messages wait on it, as in a TCP connection that has not given up yet (see ``cut`` and
``heal``); the executors' own connections to the agent are not affected.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from aiohttp import web

from mesos_stateful.localcluster.procs import kill_session, kill_session_now, session_members
from mesos_stateful.localcluster.recordio import EventStream, Json
from mesos_stateful.localcluster.resources import Key, ResourceError, Resources

if TYPE_CHECKING:
    from mesos_stateful.localcluster.master import Master

log = logging.getLogger(__name__)

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
    state: str = "LAUNCHING"  # LAUNCHING, RUNNING, TERMINATING, TERMINATED
    killed_by_agent: bool = False
    failure: tuple[str, str] | None = None  # (reason, message) of a termination decided by the agent
    watcher: asyncio.Task[None] | None = None

    @property
    def sid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Agent:
    def __init__(
        self,
        master: Master,
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
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

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
        """The agent dies: every executor session is killed at once, its server goes away."""
        await self.unserve()
        for ex in list(self.executors.values()):
            ex.killed_by_agent = True
            if ex.sid is not None:
                await kill_session(ex.sid, 0.0)
        for ex in list(self.executors.values()):
            if ex.watcher is not None:
                await asyncio.wait([ex.watcher], timeout=10)

    # --- the link to the master ------------------------------------------------------------------

    def send_to_master(self, reliable: bool, message: Callable[[], None]) -> None:
        """Hand a message to the master, or hold it while the link is cut. ``reliable``: a status
        update (its status update manager re-sends it until acknowledged, also after the agent
        re-registered); the others (executor messages, exited executors) are lost if the master
        tears the link down meanwhile."""
        if not self.alive:
            return
        if self.partitioned:
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

    def recover(self) -> None:
        """Read the checkpointed agent id, reservations and volumes of a previous run (if any)."""
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
        log.info("agent %s recovered as %s with %s", self.ip, self.id, reserved)

    def checkpoint(self) -> None:
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        info = {"agent_id": self.id, "hostname": self.hostname, "port": self.port}
        _write_atomically(self.meta_dir / "agent.json", info)
        _write_atomically(self.meta_dir / "resources.json", self.checkpointed.to_json(refinement=True))

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
            self._link_task_volumes(ex, task)
            if ex.state == "RUNNING" and ex.stream is not None:
                ex.stream.send({"type": "LAUNCH", "launch": {"task": task}})
            else:
                ex.queued.append(task)
            return
        container_id = str(uuid.uuid4())
        sandbox = (
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
        ex = Executor(
            framework_id=fid,
            executor_id=eid,
            info=info,
            framework_info=framework_info,
            container_id=container_id,
            sandbox=sandbox,
            resources=Resources.from_json(info.get("resources")),
        )
        ex.tasks[task_id] = "TASK_STAGING"
        self._link_task_volumes(ex, task)
        ex.queued.append(task)
        self.executors[key] = ex
        starting = asyncio.get_running_loop().create_task(self._start(ex))
        self._tasks.add(starting)
        starting.add_done_callback(self._tasks.discard)

    def _link_task_volumes(self, ex: Executor, task: Json) -> None:
        try:
            resources = Resources.from_json(task.get("resources")) + ex.resources
            self._link_volumes(ex.sandbox, resources)
        except (ResourceError, OSError) as error:
            log.warning("agent %s: cannot link the volumes of task %s: %s", self.id, task["task_id"], error)

    async def _start(self, ex: Executor) -> None:
        eid, fid = ex.executor_id, ex.framework_id
        try:
            ex.proc = await self._spawn(ex)
        except OSError as error:
            log.warning("agent %s: cannot start executor %s: %s", self.id, eid, error)
            ex.state = "TERMINATED"
            self._fail_tasks(
                ex, "TASK_FAILED", "REASON_EXECUTOR_TERMINATED", f"Failed to launch executor: {error}"
            )
            return
        ex.watcher = asyncio.create_task(self._watch(ex))
        if not self.alive or ex.state == "TERMINATING":
            # Killed or shut down while it was being started.
            await kill_session(ex.proc.pid, 0.0)
        log.info("agent %s: started executor %s (pid %s) of framework %s", self.id, eid, ex.proc.pid, fid)

    async def _spawn(self, ex: Executor) -> asyncio.subprocess.Process:
        command = ex.info.get("command") or {}
        env = dict(os.environ)
        env.update(
            {
                "MESOS_FRAMEWORK_ID": ex.framework_id,
                "MESOS_EXECUTOR_ID": ex.executor_id,
                "MESOS_AGENT_ENDPOINT": self.endpoint,
                "MESOS_DIRECTORY": str(ex.sandbox),
                "MESOS_SANDBOX": str(ex.sandbox),
                "MESOS_CHECKPOINT": "1" if ex.framework_info.get("checkpoint") else "0",
                "MESOS_RECOVERY_TIMEOUT": "15mins",
                "MESOS_SUBSCRIPTION_BACKOFF_MAX": "2secs",
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": f"{self.master.settings.executor_shutdown_grace}secs",
                "MESOS_HTTP_COMMAND_EXECUTOR": "0",
            }
        )
        for var in (command.get("environment") or {}).get("variables", []):
            env[str(var["name"])] = str(var.get("value", ""))
        stdout, stderr = _open_logs(ex.sandbox)
        try:
            if command.get("shell", True):
                return await asyncio.create_subprocess_shell(
                    command.get("value", ""),
                    cwd=ex.sandbox,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                )
            argv = [str(a) for a in command.get("arguments", [])] or [command.get("value", "")]
            return await asyncio.create_subprocess_exec(
                command.get("value", argv[0]),
                *argv[1:],
                cwd=ex.sandbox,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stdout.close()
            stderr.close()

    async def _watch(self, ex: Executor) -> None:
        assert ex.proc is not None
        timeout = self.master.settings.executor_registration_timeout
        try:
            await asyncio.wait_for(asyncio.shield(ex.proc.wait()), timeout)
        except TimeoutError:
            if ex.state == "LAUNCHING":
                log.warning("agent %s: executor %s did not subscribe in time", self.id, ex.executor_id)
                ex.failure = ("REASON_EXECUTOR_REGISTRATION_TIMEOUT", "Executor did not register in time")
                await kill_session(ex.proc.pid, self.master.settings.kill_grace)
        code = await ex.proc.wait()
        # The container is destroyed with its executor: nothing of the session may survive it.
        await kill_session(ex.proc.pid, self.master.settings.kill_grace)
        ex.state = "TERMINATED"
        if ex.stream is not None:
            ex.stream.close()
            ex.stream = None
        log.info("agent %s: executor %s exited with %s", self.id, ex.executor_id, code)
        if not self.alive:
            return
        if ex.failure is not None:
            self._fail_tasks(ex, "TASK_FAILED", *ex.failure)
        elif ex.killed_by_agent:
            self._fail_tasks(ex, "TASK_KILLED", "REASON_EXECUTOR_TERMINATED", "Executor terminated")
        else:
            self._fail_tasks(ex, "TASK_FAILED", "REASON_EXECUTOR_TERMINATED", "Executor terminated")
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
        ex.tasks[task_id] = state
        self.send_to_master(True, lambda: self.master.status_update(self, ex.framework_id, status))

    def kill_task(self, framework_id: str, task_id: str, kill_policy: Json | None = None) -> None:
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
        if ex is None or update_uuid not in ex.from_executor:
            return
        ex.from_executor.discard(update_uuid)
        if ex.stream is not None:
            ex.stream.send(
                {"type": "ACKNOWLEDGED", "acknowledged": {"task_id": {"value": task_id}, "uuid": update_uuid}}
            )

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
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"}, text="Expecting a 'POST' request")
        ctype = request.headers.get("Content-Type")
        if not ctype:
            return web.Response(status=400, text="Expecting 'Content-Type' to be present")
        if ctype.split(";")[0].strip() != "application/json":
            return web.Response(status=415, text=f"Expecting 'Content-Type' of application/json; got {ctype}")
        try:
            call = json.loads(await request.text())
            if not isinstance(call, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            return web.Response(status=400, text=f"Failed to parse body into JSON: {error}")
        try:
            fid = call["framework_id"]["value"]
            eid = call["executor_id"]["value"]
            kind = call["type"]
        except (KeyError, TypeError):
            return web.Response(status=400, text="Expecting 'type', 'framework_id' and 'executor_id'")
        ex = self.executors.get((fid, eid))
        if ex is None or ex.state == "TERMINATED":
            return web.Response(status=400, text=f"Executor {eid} of framework {fid} is unknown")
        if kind == "SUBSCRIBE":
            accept = request.headers.get("Accept", "application/json")
            if "application/json" not in accept and "*/*" not in accept:
                return web.Response(status=406, text="Expecting 'Accept' to allow application/json")
            return await self._subscribe(request, ex)
        if kind == "UPDATE":
            return self._update(ex, call.get("update") or {})
        if kind == "MESSAGE":
            data = (call.get("message") or {}).get("data")
            if data is None:
                return web.Response(status=400, text="Expecting 'message.data'")
            self.send_to_master(False, lambda: self.master.executor_message(self, ex, data))
            return web.Response(status=202)
        return web.Response(status=400, text=f"Unsupported executor call {kind}")

    async def _subscribe(self, request: web.Request, ex: Executor) -> web.StreamResponse:
        if ex.stream is not None:
            ex.stream.close()
        stream = EventStream()
        ex.stream = stream
        if ex.state == "LAUNCHING":
            ex.state = "RUNNING"
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
        try:
            task_id = status["task_id"]["value"]
            state = status["state"]
            raw = base64.b64decode(status["uuid"], validate=True)
        except (KeyError, TypeError, ValueError):
            return web.Response(
                status=400, text="Expecting 'status.task_id', 'status.state' and a base64 'status.uuid'"
            )
        if len(raw) != 16:
            return web.Response(status=400, text="'status.uuid' must be 16 bytes")
        if status.get("source", "SOURCE_EXECUTOR") != "SOURCE_EXECUTOR":
            return web.Response(
                status=400, text="Received status update from executor with source not SOURCE_EXECUTOR"
            )
        if task_id not in ex.tasks:
            return web.Response(status=400, text=f"Task {task_id} is unknown to executor {ex.executor_id}")
        if ex.tasks[task_id] in TERMINAL:
            # Mesos drops updates after a terminal one for the same task.
            return web.Response(status=202)
        status = dict(status)
        status["source"] = "SOURCE_EXECUTOR"
        status["agent_id"] = {"value": self.id}
        status["executor_id"] = {"value": ex.executor_id}
        status.setdefault("timestamp", time.time())
        ex.tasks[task_id] = state
        ex.from_executor.add(status["uuid"])
        self.send_to_master(True, lambda: self.master.status_update(self, ex.framework_id, status))
        return web.Response(status=202)


def _write_atomically(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _open_logs(sandbox: Path) -> tuple[BinaryIO, BinaryIO]:
    """The sandbox with the executor's stdout/stderr files (handed to the child, closed after)."""
    sandbox.mkdir(parents=True, exist_ok=True)
    return open(sandbox / "stdout", "ab"), open(sandbox / "stderr", "ab")


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(status=200)
