"""The master's side of agents that run in processes of their own (``python -m
mesos_stateful.localcluster agent``): the internal agent <-> master protocol and ``RemoteAgent``,
the master's proxy of such an agent.

The protocol mirrors Mesos's internal messages (``src/messages/messages.proto``; the agent's side in
``src/slave/slave.cpp``, the master's in ``src/master/master.cpp``) by name, in JSON (the project's,
not Mesos's libprocess wire format):

* The agent opens ``POST /master/mesos.internal.RegisterSlaveMessage`` (a new agent) or
  ``.../mesos.internal.ReregisterSlaveMessage`` (an agent with an id: restarted from its work dir,
  or reconnecting) with its ``slave`` (SlaveInfo: hostname, port, its unreserved ``resources``,
  attributes, ``id``), ``ip``, ``checkpointed_resources`` (reservations and volumes), and when
  re-registering its ``frameworks``, ``executors`` and ``tasks``. The answer is a 200 chunked
  RecordIO stream (as SUBSCRIBE) of the master's messages to the agent: first
  ``SlaveRegisteredMessage`` / ``SlaveReregisteredMessage`` (``slave_id``; ``stream_id``: the id the
  agent names in its own messages, also the ``Mesos-Stream-Id`` header; ``connection``:
  ``total_ping_timeout_seconds``, after which an agent that heard no ping re-registers), then
  ``RunTaskMessage``, ``KillTaskMessage``, ``StatusUpdateAcknowledgementMessage``,
  ``ShutdownExecutorMessage``, ``ShutdownFrameworkMessage``, ``CheckpointResourcesMessage`` (the
  agent's whole checkpointed resources after an offer operation), ``FrameworkToExecutorMessage``,
  ``PingSlaveMessage``, ``ShutdownMessage``. Each record is ``{"type": "<name>", ...fields}``.
* The agent sends its messages as ``POST /master/mesos.internal.<name>`` (JSON body, headers
  ``Mesos-Agent-Id`` and ``Mesos-Stream-Id``: 202, or 409 when that connection is not the agent's
  registered one any more): ``StatusUpdateMessage``, ``ExitedExecutorMessage``,
  ``ExecutorToFrameworkMessage``, ``PongSlaveMessage``.
* The stream closing is Mesos's ``exited`` event: the master disconnects the agent at once
  (``Master::exited``); an agent that stays connected but answers no ping is marked unreachable
  after the ping timeouts, and its stream is closed (the master gave up on the link): the agent
  re-registers when it hears the master again.

``RemoteAgent`` is an ``Agent`` to the master: its master -> agent calls (``launch``,
``kill_task``, ``acknowledged``, ``shutdown_executor``, ``convert``...) become messages on the
stream; the agent's messages are applied to the master as an in-process agent's direct calls are,
and keep a mirror of the agent's executors and tasks (what the Mesos master keeps of an agent's
executors: ``Slave::executors``, ``Slave::tasks``) up to date.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mesos_stateful.localcluster.agent import TERMINAL, Agent, Executor
from mesos_stateful.localcluster.checkpoint import write_atomically
from mesos_stateful.localcluster.recordio import EventStream, Json
from mesos_stateful.localcluster.resources import ResourceError, Resources

if TYPE_CHECKING:
    from mesos_stateful.localcluster.master import Master

log = logging.getLogger(__name__)

PREFIX = "mesos.internal."


class ProtocolError(ValueError):
    """A registration the master cannot take (400)."""


class RemoteAgent(Agent):
    """The master's proxy of an agent process connected by a registration stream."""

    def __init__(self, master: Master, registration: Json) -> None:
        try:
            slave = registration["slave"]
            ip = str(registration.get("ip") or slave["hostname"])
            port = int(slave.get("port") or 0)
            base = Resources.from_json(slave.get("resources") or [])
            reserved = Resources.from_json(registration.get("checkpointed_resources") or [])
            attributes = {
                str(a["name"]): str((a.get("text") or {}).get("value", ""))
                for a in slave.get("attributes") or []
            }
            hostname = str(slave["hostname"])
        except (KeyError, TypeError, ValueError, ResourceError) as error:
            raise ProtocolError(f"invalid registration: {error!r}") from None
        if not base.contains(reserved.to_unreserved()):
            raise ProtocolError(f"checkpointed resources {reserved} do not fit the agent's resources {base}")
        super().__init__(master, -1, ip, port, base, attributes, Path("/nonexistent"))
        self._master = master
        self._hostname = hostname
        self.id = str((slave.get("id") or {}).get("value") or "")
        self.total = base - reserved.to_unreserved() + reserved
        self.stream = EventStream(str(uuid.uuid4()))
        self._pinger: asyncio.Task[None] | None = None
        try:
            self._mirror(registration)
        except (KeyError, TypeError, ValueError, ResourceError) as error:
            raise ProtocolError(f"invalid executors or tasks in the registration: {error!r}") from None

    @property
    def hostname(self) -> str:
        return self._hostname

    def _mirror(self, registration: Json) -> None:
        """The executors and tasks a re-registering agent reports (``ReregisterSlaveMessage``)."""
        frameworks = {str(f["id"]["value"]): f for f in registration.get("frameworks") or []}
        for item in registration.get("executors") or []:
            fid = str(item["framework_id"]["value"])
            info = item["executor_info"]
            eid = str(info["executor_id"]["value"])
            ex = Executor(
                framework_id=fid,
                executor_id=eid,
                info=info,
                framework_info=frameworks.get(fid, {"id": {"value": fid}}),
                container_id=str((item.get("container_id") or {}).get("value", "")),
                sandbox=Path(str(item.get("directory", ""))),
                resources=Resources.from_json(info.get("resources")),
                state=str(item.get("state", "RUNNING")),
                checkpoint=bool(frameworks.get(fid, {}).get("checkpoint")),
            )
            self.executors[(fid, eid)] = ex
        for item in registration.get("tasks") or []:
            known = self.executors.get(
                (str(item["framework_id"]["value"]), str(item["executor_id"]["value"]))
            )
            if known is None:
                continue
            ex = known
            tid = str(item["task_id"]["value"])
            ex.tasks[tid] = str(item["state"])
            ex.task_infos[tid] = item.get("task_info") or {"task_id": {"value": tid}}
            if item.get("status"):
                ex.statuses[tid] = item["status"]
            if item.get("unacknowledged"):
                ex.unacked[tid] = [str(u) for u in item["unacknowledged"]]

    # --- the link ----------------------------------------------------------------------------------

    def send(self, name: str, **fields: Any) -> None:
        if name != "PingSlaveMessage":
            log.debug("to agent %s: %s", self.id, name)
        self.stream.send({"type": name, **fields})

    def start_pings(self) -> None:
        """Mesos' ``SlaveObserver`` pings: a ``PingSlaveMessage`` every ``agent_ping_timeout``;
        ``silent_since`` is when the oldest ping still unanswered went out (None once a pong came
        back), which the master's observer counts in timeouts."""
        self._pinger = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        loop = asyncio.get_running_loop()
        while self.alive and not self.stream.closed and not self.stream.gone:
            if self.silent_since is None:
                self.silent_since = loop.time()
            self.send("PingSlaveMessage", connected=True)
            await asyncio.sleep(self._master.settings.agent_ping_timeout)

    def pong(self) -> None:
        if self.alive:
            self.silent_since = None

    def closed(self) -> None:
        """The stream ended: the agent process died or its connection broke (``Master::exited``)
        -- unless the master closed it itself (unreachable, shut down, replaced)."""
        if self._pinger is not None:
            self._pinger.cancel()
        if not self.alive:
            return
        self.alive = False
        if self.silent_since is None:
            self.silent_since = asyncio.get_running_loop().time()
        if self._master.agents.get(self.id) is self:
            log.info("agent %s (%s): its connection closed", self.id, self.hostname)
            self._master.agent_exited(self)

    def drop(self) -> None:
        """The master closes the link (a newer connection of the same agent replaced it)."""
        self.alive = False
        self.stream.close()

    def link_given_up(self) -> None:
        self.drop()

    # --- master -> agent ---------------------------------------------------------------------------

    def launch(self, framework_info: Json, task: Json) -> None:
        """``RunTaskMessage``; the executor and task enter the mirror (``Master::addTask``)."""
        fid = framework_info["id"]["value"]
        info = dict(task["executor"])
        info["framework_id"] = {"value": fid}
        eid = info["executor_id"]["value"]
        task = dict(task)
        task["agent_id"] = {"value": self.id}
        tid = task["task_id"]["value"]
        ex = self.executors.get((fid, eid))
        if ex is None or ex.state in ("TERMINATING", "TERMINATED"):
            ex = Executor(
                framework_id=fid,
                executor_id=eid,
                info=info,
                framework_info=framework_info,
                container_id="",
                sandbox=Path(),
                resources=Resources.from_json(info.get("resources")),
                checkpoint=bool(framework_info.get("checkpoint")),
            )
            self.executors[(fid, eid)] = ex
        ex.tasks[tid] = "TASK_STAGING"
        ex.task_infos[tid] = task
        self.send("RunTaskMessage", framework=framework_info, framework_id={"value": fid}, task=task)

    def kill_task(self, framework_id: str, task_id: str, kill_policy: Json | None = None) -> None:
        fields: Json = {"framework_id": {"value": framework_id}, "task_id": {"value": task_id}}
        if kill_policy:
            fields["kill_policy"] = kill_policy
        self.send("KillTaskMessage", **fields)

    async def shutdown_executor(self, ex: Executor) -> None:
        self.send(
            "ShutdownExecutorMessage",
            framework_id={"value": ex.framework_id},
            executor_id={"value": ex.executor_id},
        )

    async def shutdown_framework(self, framework_id: str) -> None:
        self.send("ShutdownFrameworkMessage", framework_id={"value": framework_id})

    def acknowledged(self, framework_id: str, executor_id: str, task_id: str, update_uuid: str) -> None:
        self.send(
            "StatusUpdateAcknowledgementMessage",
            slave_id={"value": self.id},
            framework_id={"value": framework_id},
            executor_id={"value": executor_id},
            task_id={"value": task_id},
            uuid=update_uuid,
        )

    def framework_message(self, framework_id: str, executor_id: str, data: str) -> bool:
        ex = self.executors.get((framework_id, executor_id))
        if ex is None or ex.state == "TERMINATED":
            return False
        self.send(
            "FrameworkToExecutorMessage",
            slave_id={"value": self.id},
            framework_id={"value": framework_id},
            executor_id={"value": executor_id},
            data=data,
        )
        return True

    def convert(self, consumed: Resources, converted: Resources) -> None:
        """An offer operation: the agent gets its whole checkpointed resources
        (``CheckpointResourcesMessage``) and creates / deletes the volumes' directories."""
        self.total = self.total - consumed + converted
        self.send("CheckpointResourcesMessage", resources=self.checkpointed.to_json(refinement=True))

    def checkpoint(self) -> None:
        """The agent checkpoints itself when it hears ``SlaveRegisteredMessage``."""

    async def destroy(self) -> None:
        """``ShutdownMessage``: the agent shuts its executors down and exits."""
        self.send("ShutdownMessage", message="shut down by the master")
        self.alive = False
        self.stream.close()

    def kill_all_now(self) -> None:
        """The executors belong to the agent process."""

    def live_sessions(self) -> list[int]:
        return []

    # --- agent -> master ---------------------------------------------------------------------------

    def receive(self, message: Json) -> None:
        """Apply one of the agent's messages, as the master applies an in-process agent's calls."""
        kind = message.get("type")
        if kind == "PongSlaveMessage":
            self.pong()
        elif kind == "StatusUpdateMessage":
            update = message["update"]
            fid = str(update["framework_id"]["value"])
            status = update["status"]
            eid = str((status.get("executor_id") or update.get("executor_id") or {}).get("value", ""))
            ex = self.executors.get((fid, eid))
            tid = str(status["task_id"]["value"])
            if ex is not None and tid in ex.tasks and ex.tasks[tid] not in TERMINAL:
                ex.tasks[tid] = str(status["state"])
                ex.statuses[tid] = status
            self._master.status_update(self, fid, status)
        elif kind == "ExitedExecutorMessage":
            key = (str(message["framework_id"]["value"]), str(message["executor_id"]["value"]))
            ex = self.executors.get(key)
            if ex is None:
                return
            ex.state = "TERMINATED"
            status = message.get("status")
            self._master.executor_terminated(self, ex, None if status is None else int(status))
        elif kind == "ExecutorToFrameworkMessage":
            key = (str(message["framework_id"]["value"]), str(message["executor_id"]["value"]))
            ex = self.executors.get(key)
            if ex is not None:
                self._master.executor_message(self, ex, str(message.get("data", "")))
        else:
            raise ProtocolError(f"unknown message {kind!r}")


def add_routes(app: web.Application, master: Master) -> None:
    """``POST /master/mesos.internal.<message>``: registrations (streams) and agents' messages."""

    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expecting a JSON object")
        except ValueError as error:
            return web.Response(status=400, text=f"Failed to parse body into JSON: {error}")
        if name in ("RegisterSlaveMessage", "ReregisterSlaveMessage"):
            return await _register(master, request, name, body)
        aid = request.headers.get("Mesos-Agent-Id", "")
        agent = master.agents.get(aid)
        if (
            not isinstance(agent, RemoteAgent)
            or not agent.alive
            or agent.stream.stream_id != request.headers.get("Mesos-Stream-Id")
        ):
            return web.Response(status=409, text=f"Agent {aid} is not registered on this connection")
        body["type"] = name
        try:
            agent.receive(body)
        except (KeyError, TypeError, ValueError) as error:
            return web.Response(status=400, text=f"Invalid {name}: {error!r}")
        return web.Response(status=202)

    app.router.add_post("/master/mesos.internal.{name}", handle)


async def _register(master: Master, request: web.Request, name: str, body: Json) -> web.StreamResponse:
    """``Master::registerSlave`` / ``reregisterSlave``: the agent's proxy is registered (a new id,
    or the one it names) and its stream serves the master's messages until either side closes it."""
    try:
        agent = RemoteAgent(master, body)
    except ProtocolError as error:
        return web.Response(status=400, text=str(error))
    if name == "RegisterSlaveMessage" and agent.id:
        return web.Response(
            status=400, text="RegisterSlaveMessage with an agent id: use ReregisterSlaveMessage"
        )
    if name == "ReregisterSlaveMessage" and not agent.id:
        return web.Response(status=400, text="ReregisterSlaveMessage without an agent id")
    old = master.agents.get(agent.id) if agent.id else None
    if old is not None and old.alive:
        if not isinstance(old, RemoteAgent):
            return web.Response(status=409, text=f"agent {agent.id} runs in the master's process")
        # The same agent on a new connection (restarted, or it lost the old one first): the old
        # connection is dead for the master (Mesos takes the newest pid of an agent id).
        log.info("agent %s re-registers on a new connection: dropping the old one", agent.id)
        old.drop()
    taken = [
        a for a in master.agents.values() if a.alive and a.endpoint == agent.endpoint and a.id != agent.id
    ]
    if taken:
        return web.Response(
            status=409, text=f"agent {taken[0].id} is registered at {agent.endpoint}: a second agent there"
        )
    try:
        master.register_agent(agent)
    except ValueError as error:
        return web.Response(status=409, text=str(error))
    if agent.state == "REMOVED":  # refused: its machine is DOWN (``_refuse_down``)
        first: Json = {"type": "ShutdownMessage", "message": "Machine is `DOWN`"}
        agent.stream.close()
    else:
        kind = "SlaveRegisteredMessage" if name == "RegisterSlaveMessage" else "SlaveReregisteredMessage"
        timeouts = master.settings.agent_ping_timeout * master.settings.max_agent_ping_timeouts
        first = {
            "type": kind,
            "slave_id": {"value": agent.id},
            "stream_id": agent.stream.stream_id,
            # ``MasterSlaveConnection``: how long the agent may go without a ping before it takes
            # the master for lost and re-registers.
            "connection": {"total_ping_timeout_seconds": timeouts},
        }
        agent.start_pings()
        save_registry(master)
    log.info("agent %s (%s) connected at %s", agent.id, agent.hostname, agent.endpoint)
    try:
        return await agent.stream.serve(request, first, None, {"Mesos-Stream-Id": agent.stream.stream_id})
    finally:
        agent.closed()


# --- the master's registry of agent processes ---------------------------------------------------------


def registry_path(master: Master) -> Path:
    """``<work_dir>/master/registry.json``: the agent processes the master admitted (Mesos keeps
    them in its replicated registry, ``src/master/registry.proto``)."""
    return Path(master.settings.work_dir).absolute() / "master" / "registry.json"


def save_registry(master: Master) -> None:
    """Record every agent process the master knows (not removed), after each registration."""
    entries: list[Json] = [
        {
            "slave": agent.info(),
            "ip": agent.ip,
            "checkpointed_resources": agent.checkpointed.to_json(refinement=True),
        }
        for agent in master.agents.values()
        if isinstance(agent, RemoteAgent) and agent.id and agent.state != "REMOVED"
    ]
    try:
        write_atomically(registry_path(master), entries)
    except OSError as error:
        log.error("cannot write the registry of agents %s: %s", registry_path(master), error)


def recover_registry(master: Master) -> None:
    """``Master::_recover`` after a master (re)start: the agent processes of the registry are
    *recovered* (``/master/state`` ``recovered_slaves``: not offered; reconciliation of their tasks
    gets no answer) until they re-register; those that have not within ``agent_reregister_timeout``
    are marked unreachable (``Master::recoveredSlavesTimeout``). Nothing happens without a registry
    (a master that never had agent processes: in-process agents recover from their own work dirs)."""
    path = registry_path(master)
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as error:
        log.error("unreadable registry of agents %s (%s): ignored", path, error)
        return
    recovered = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            agent = RemoteAgent(master, entry)
        except ProtocolError as error:
            log.error("registry %s: agent not recovered: %s", path, error)
            continue
        if not agent.id or agent.id in master.agents:
            continue
        agent.alive = False  # no connection yet: the agent's own registration replaces it
        master.recovering_agent(agent)
        recovered.append(agent)
    if not recovered:
        return
    timeout = master.settings.agent_reregister_timeout
    log.info("%d agent processes recovered from %s; waiting %ss for them", len(recovered), path, timeout)

    def expired() -> None:
        for agent in recovered:
            if master.agents.get(agent.id) is agent and agent.state == "RECOVERED":
                master.mark_unreachable(
                    agent, f"did not reregister within {timeout:g}secs after master failover"
                )

    asyncio.get_running_loop().call_later(timeout, expired)


def registration(agent: Agent) -> Json:
    """The agent's ``RegisterSlaveMessage`` / ``ReregisterSlaveMessage`` body (see the module doc)."""
    slave: Json = {
        "hostname": agent.hostname,
        "port": agent.port,
        "resources": agent.base.to_json(refinement=True),
        "attributes": agent.attributes_json(),
    }
    if agent.id:
        slave["id"] = {"value": agent.id}
    body: Json = {
        "slave": slave,
        "ip": agent.ip,
        "checkpointed_resources": agent.checkpointed.to_json(refinement=True),
        "version": "1.11.0",
    }
    if not agent.id:
        return body
    frameworks: dict[str, Json] = {}
    executors: list[Json] = []
    tasks: list[Json] = []
    for ex in agent.executors.values():
        frameworks.setdefault(ex.framework_id, {**ex.framework_info, "id": {"value": ex.framework_id}})
        executors.append(
            {
                "framework_id": {"value": ex.framework_id},
                "executor_info": ex.info,
                "container_id": {"value": ex.container_id},
                "directory": str(ex.sandbox),
                "state": ex.state,
            }
        )
        for tid, state in ex.tasks.items():
            item: Json = {
                "task_id": {"value": tid},
                "framework_id": {"value": ex.framework_id},
                "executor_id": {"value": ex.executor_id},
                "state": state,
                "task_info": ex.task_infos.get(tid, {"task_id": {"value": tid}}),
            }
            if tid in ex.statuses:
                item["status"] = ex.statuses[tid]
            if ex.unacked.get(tid):
                item["unacknowledged"] = list(ex.unacked[tid])
            tasks.append(item)
    body.update(frameworks=list(frameworks.values()), executors=executors, tasks=tasks)
    return body
