"""What the master shows of itself: ``/master/state`` (Mesos' ``src/master/readonly_handler.cpp``
with the ``json(...)`` writers of ``src/common/http.cpp``) and the operator API's views of the same
objects (``mesos.v1.master.Response`` JSON, ``src/master/http.cpp``).

Pure functions of the :class:`~mesos_stateful.localcluster.master.Master`; nothing here changes it.
Times are seconds since the epoch (``/master/state``: a number; v1: ``TimeInfo.nanoseconds``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.localcluster.recordio import Json
from mesos_stateful.localcluster.resources import Resources

if TYPE_CHECKING:
    from mesos_stateful.localcluster.agent import Agent, Executor
    from mesos_stateful.localcluster.master import Framework, Master, Offer, Task

# Capabilities the simulated agents have (``SlaveInfo::Capability``): the resource formats and
# roles the local cluster models; none of the rest (resource providers, draining, ...).
AGENT_CAPABILITIES = ("MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT")

# ``json(JSON::ObjectWriter*, ResourceIterable...)`` always writes these scalars, even when 0.
_ALWAYS = ("cpus", "gpus", "mem", "disk")


# --- shared helpers --------------------------------------------------------------------------------


def packed_ip(host: str) -> int:
    """``MasterInfo.ip``: the IPv4 address as Mesos stores it, ``in_addr.s_addr`` (network byte
    order) read as a host ``uint32`` (``Master::initialize``: ``info_.set_ip(self().address.ip.in()
    ->s_addr)``): 127.0.0.1 is 16777343 on x86. A host name is resolved first."""
    try:
        packed = socket.inet_aton(host)
    except OSError:
        packed = socket.inet_aton(socket.gethostbyname(host))
    return int(struct.unpack("=I", packed)[0])


def _ip(host: str) -> str:
    try:
        socket.inet_aton(host)
        return host
    except OSError:
        return socket.gethostbyname(host)


def master_pid(master: Master) -> str:
    """The master's libprocess pid (``master@<ip>:<port>``)."""
    return f"master@{_ip(master.hostname)}:{master.port}"


def master_info(master: Master) -> Json:
    """``mesos.v1.MasterInfo`` (SUBSCRIBED, GET_MASTER)."""
    from mesos_stateful.localcluster.master import VERSION

    ip = _ip(master.hostname)
    return {
        "id": master.id,
        "ip": packed_ip(ip),
        "port": master.port,
        "pid": master_pid(master),
        "hostname": master.hostname,
        "version": VERSION,
        "address": {"hostname": master.hostname, "ip": ip, "port": master.port},
    }


def flat(resources: Resources) -> Json:
    """``json(writer, Resources)``: scalars by name (``cpus``, ``gpus``, ``mem``, ``disk`` always,
    0 when absent), ranges as ``"[31000-31999]"``, whatever their reservation."""
    out: Json = dict.fromkeys(_ALWAYS, 0.0)
    out.update(resources.to_state())
    return out


def prune(value: Json, descriptor: Any) -> Json:
    """A copy of proto JSON keeping only the fields ``descriptor`` (a message's ``DESCRIPTOR``) has,
    recursively: what a framework or executor sent may carry fields the project's ``mesos.v1`` protos
    leave out; the operator API answers with what its protos define."""
    out: Json = {}
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            continue
        sub = field.message_type
        if sub is None or sub.GetOptions().map_entry:
            out[key] = item
        elif isinstance(item, list):
            out[key] = [prune(i, sub) if isinstance(i, dict) else i for i in item]
        elif isinstance(item, dict):
            out[key] = prune(item, sub)
        else:
            out[key] = item
    return out


def _time_info(seconds: float) -> Json:
    """``mesos.v1.TimeInfo`` (int64 nanoseconds)."""
    return {"nanoseconds": int(seconds * 1e9)}


def _labels_array(labels: Any) -> list[Json]:
    """``json(JSON::ArrayWriter*, Labels)``: the labels as an array of ``Label``."""
    return list((labels or {}).get("labels") or []) if isinstance(labels, dict) else []


def _task_role(task: Task, default: str) -> str:
    """``json(writer, Task)``: the role of its first resource's ``allocation_info``."""
    for item in task.info.get("resources") or []:
        role = (item.get("allocation_info") or {}).get("role") if isinstance(item, dict) else None
        if role:
            return str(role)
    return default


def _live_executors(master: Master, fw_id: str) -> Iterator[tuple[Agent, Executor]]:
    """A framework's executors on registered agents (``Framework::executors``)."""
    for agent in master.agents.values():
        if agent.state not in ("ACTIVE", "DISCONNECTED") or not agent.id:
            continue
        for ex in agent.executors.values():
            if ex.framework_id == fw_id and ex.state != "TERMINATED":
                yield agent, ex


def registered_agents(master: Master) -> list[Agent]:
    """``slaves.registered``: an unreachable agent is removed, a recovering one not yet back."""
    return [a for a in master.agents.values() if a.state in ("ACTIVE", "DISCONNECTED")]


def _framework_offers(master: Master, fw_id: str) -> list[Offer]:
    return [o for o in master.offers.values() if o.framework_id == fw_id]


def _used(fw: Framework) -> Resources:
    used = Resources()
    for t in fw.tasks.values():
        if t.holds:
            used = used + t.resources
    return used


def _offered(master: Master, fw_id: str) -> Resources:
    return sum((o.resources for o in _framework_offers(master, fw_id)), Resources())


# --- /master/state ----------------------------------------------------------------------------------


def _status_state(status: Json) -> Json:
    """``json(writer, TaskStatus)``: state, timestamp, and labels / container_status / healthy
    when set."""
    out: Json = {"state": status.get("state"), "timestamp": float(status.get("timestamp") or 0.0)}
    if status.get("labels"):
        out["labels"] = _labels_array(status["labels"])
    if status.get("container_status"):
        out["container_status"] = status["container_status"]
    if "healthy" in status:
        out["healthy"] = bool(status["healthy"])
    return out


def _task_state(t: Task, default_role: str) -> Json:
    """``json(writer, Task)``."""
    out: Json = {
        "id": t.task_id,
        "name": t.info.get("name", ""),
        "framework_id": t.framework_id,
        "executor_id": t.executor_id,
        "slave_id": t.agent_id,
        "state": t.state,
        "resources": flat(t.resources),
        "role": _task_role(t, default_role),
        "statuses": [_status_state(s) for s in t.statuses],
    }
    if t.info.get("labels"):
        out["labels"] = _labels_array(t.info["labels"])
    for key in ("discovery", "container", "health_check"):
        if t.info.get(key):
            out[key] = t.info[key]
    return out


def _command_state(command: Json) -> Json:
    """``json(writer, CommandInfo)``."""
    out: Json = {}
    if "shell" in command:
        out["shell"] = bool(command["shell"])
    if "value" in command:
        out["value"] = command["value"]
    out["argv"] = list(command.get("arguments") or [])
    if command.get("environment"):
        out["environment"] = command["environment"]
    out["uris"] = [
        {"value": u.get("value", ""), "executable": bool(u.get("executable", False))}
        for u in command.get("uris") or []
    ]
    return out


def _executor_state(agent: Agent, ex: Executor) -> Json:
    """``json(writer, ExecutorInfo)`` + ``slave_id`` (``FullFrameworkWriter``)."""
    info = ex.info
    resources = info.get("resources") or []
    out: Json = {
        "executor_id": ex.executor_id,
        "name": info.get("name", ""),
        "framework_id": ex.framework_id,
        "command": _command_state(info.get("command") or {}),
        "resources": flat(Resources.from_json(resources)),
    }
    if resources:
        out["role"] = (resources[0].get("allocation_info") or {}).get("role", "")
    if info.get("labels"):
        out["labels"] = _labels_array(info["labels"])
    if info.get("type"):
        out["type"] = info["type"]
    out["slave_id"] = agent.id
    return out


def _offer_state(o: Offer, role: str) -> Json:
    """``json(writer, Offer)``."""
    return {
        "id": o.id,
        "framework_id": o.framework_id,
        "allocation_info": {"role": role},
        "slave_id": o.agent_id,
        "resources": flat(o.resources),
    }


def _framework_state(master: Master, fw: Framework, active: bool) -> Json:
    """``FullFrameworkWriter`` (with ``json(writer, Summary<Framework>)``); HTTP frameworks have no
    ``pid``. Completed frameworks are written the same way (their tasks: ``completed_tasks``)."""
    used = _used(fw) if active else Resources()
    offered = _offered(master, fw.id) if active else Resources()
    info = fw.info
    out: Json = {
        "id": fw.id,
        "name": info.get("name", ""),
        "used_resources": flat(used),
        "offered_resources": flat(offered),
        "capabilities": [c.get("type") for c in info.get("capabilities", []) or []],
        "hostname": info.get("hostname", ""),
        "webui_url": info.get("webui_url", ""),
        "active": active and fw.connected,
        "connected": active and fw.connected,
        "recovered": active and fw.recovered,
        "user": info.get("user", ""),
        "failover_timeout": float(info.get("failover_timeout", 0.0)),
        "checkpoint": bool(info.get("checkpoint", False)),
        "registered_time": fw.registered_time,
        "unregistered_time": fw.unregistered_time,
    }
    if fw.principal is not None:
        out["principal"] = fw.principal
    out["resources"] = flat(used + offered)
    if fw.reregistered_time is not None:
        out["reregistered_time"] = fw.reregistered_time
    # For MULTI_ROLE frameworks ``roles``, for the others ``role`` (as the FrameworkInfo).
    if fw.has("MULTI_ROLE"):
        out["roles"] = fw.roles
    else:
        out["role"] = fw.role
    live = [t for t in fw.tasks.values() if t.state != "TASK_UNREACHABLE"] if active else []
    out["tasks"] = [_task_state(t, fw.role) for t in live]
    out["unreachable_tasks"] = [
        _task_state(t, fw.role) for t in fw.tasks.values() if active and t.state == "TASK_UNREACHABLE"
    ]
    completed = list(fw.completed)
    if not active:  # ``Master::removeFramework``: every task of a removed framework is completed
        completed += [t for t in fw.tasks.values() if t not in completed]
    out["completed_tasks"] = [_task_state(t, fw.role) for t in completed]
    out["offers"] = [_offer_state(o, fw.role) for o in _framework_offers(master, fw.id)] if active else []
    out["executors"] = [_executor_state(a, ex) for a, ex in _live_executors(master, fw.id)] if active else []
    if info.get("labels"):
        out["labels"] = _labels_array(info["labels"])
    out["offer_constraints"] = {}
    return out


def _agent_info_state(agent: Agent) -> Json:
    """``json(writer, SlaveInfo)``: id, hostname, port and the attributes as an object."""
    return {
        "id": agent.id,
        "hostname": agent.hostname,
        "port": agent.port,
        "attributes": dict(agent.attributes),
    }


def _agent_state(master: Master, agent: Agent) -> Json:
    """``SlaveWriter`` + the ``*_full`` resources of ``SlavesWriter::writeSlave``."""
    from mesos_stateful.localcluster.master import VERSION

    total = agent.total
    used = master.used(agent)
    offered = master.offered(agent)
    registered, reregistered = master.agent_times.get(agent.id, (master.start_time, None))
    out = _agent_info_state(agent)
    out.update(
        {
            "pid": f"slave(1)@{agent.endpoint}",
            "registered_time": registered,
        }
    )
    if reregistered is not None:
        out["reregistered_time"] = reregistered
    out.update(
        {
            "resources": flat(total),
            "used_resources": flat(used),
            "offered_resources": flat(offered),
            "reserved_resources": {r: flat(res) for r, res in total.reserved().by_role().items()},
            "unreserved_resources": flat(total.unreserved()),
            "active": agent.state == "ACTIVE",
            # Deactivated by an operator (DEACTIVATE_AGENT / DRAIN_AGENT): not modelled.
            "deactivated": False,
            "version": VERSION,
            "capabilities": list(AGENT_CAPABILITIES),
            "reserved_resources_full": {
                r: res.to_json(refinement=True) for r, res in total.reserved().by_role().items()
            },
            "unreserved_resources_full": total.unreserved().to_json(refinement=True),
            "used_resources_full": used.to_json(refinement=True),
            "offered_resources_full": offered.to_json(refinement=True),
            # Not in Mesos: the master's view of the agent (ACTIVE / DISCONNECTED).
            "state": agent.state,
        }
    )
    return out


def master_state(master: Master) -> Json:
    """``/master/state`` as Mesos renders it (``Master::ReadOnlyHandler::state``)."""
    from mesos_stateful.localcluster.master import VERSION

    agents = [_agent_state(master, a) for a in registered_agents(master)]
    leader = master_info(master)
    return {
        "version": VERSION,
        "build_date": "",
        "build_time": master.start_time,
        "build_user": "localcluster",
        "start_time": master.start_time,
        "elected_time": master.start_time,
        "id": master.id,
        "pid": master_pid(master),
        "hostname": master.hostname,
        "capabilities": [],
        "activated_slaves": sum(1 for a in agents if a["active"]),
        "deactivated_slaves": sum(1 for a in agents if not a["active"]),
        "unreachable_slaves": sum(1 for a in master.agents.values() if a.state == "UNREACHABLE"),
        "leader": leader["pid"],
        "leader_info": {k: leader[k] for k in ("id", "pid", "port", "hostname")},
        "slaves": agents,
        # Agents of the previous run still recovering (not re-registered yet).
        "recovered_slaves": [_agent_info_state(a) for a in master.agents.values() if a.state == "RECOVERED"],
        "frameworks": [_framework_state(master, fw, True) for fw in master.frameworks.values()],
        "completed_frameworks": [_framework_state(master, fw, False) for fw in master.completed_frameworks],
        "orphan_tasks": [],
        "unregistered_frameworks": [],
        # Not in Mesos' /master/state: the same list as ``slaves``, this master's port, and the last
        # offer operations it dropped, and why.
        "agents": agents,
        "port": master.port,
        "dropped_operations": list(master.dropped),
    }


def master_version() -> str:
    from mesos_stateful.localcluster.master import VERSION

    return VERSION


# --- operator API (mesos.v1.master.Response JSON) -----------------------------------------------------


def version_info() -> Json:
    """``mesos.v1.VersionInfo`` (``GET_VERSION``, ``/version``)."""
    return {"version": master_version(), "build_user": "localcluster"}


def task_v1(t: Task) -> Json:
    """``mesos.v1.Task`` (``protobuf::createTask`` + ``Master::updateTask``)."""
    out: Json = {
        "name": t.info.get("name", ""),
        "task_id": {"value": t.task_id},
        "framework_id": {"value": t.framework_id},
        "agent_id": {"value": t.agent_id},
        "state": t.state,
        "resources": t.resources.to_json(role=_task_role(t, "*"), refinement=True),
        "statuses": [prune(s, mesos_pb2.TaskStatus.DESCRIPTOR) for s in t.statuses],
    }
    if t.executor_id:
        out["executor_id"] = {"value": t.executor_id}
    if t.pending:  # the update the master is delivering (``status_update_state`` / ``_uuid``)
        head = t.pending[0]
        out["status_update_state"] = head.get("state")
        if head.get("uuid"):
            out["status_update_uuid"] = head["uuid"]
    for key in ("labels", "discovery", "kill_policy"):
        if t.info.get(key):
            field = mesos_pb2.Task.DESCRIPTOR.fields_by_name[key]
            out[key] = prune(t.info[key], field.message_type)
    return out


def get_tasks(master: Master) -> Json:
    """``GetTasks``: tasks, unreachable tasks and completed ones (of live and completed frameworks)."""
    tasks: list[Json] = []
    unreachable: list[Json] = []
    completed: list[Json] = []
    for fw in master.frameworks.values():
        for t in fw.tasks.values():
            (unreachable if t.state == "TASK_UNREACHABLE" else tasks).append(task_v1(t))
        completed += [task_v1(t) for t in fw.completed]
    for fw in master.completed_frameworks:
        completed += [task_v1(t) for t in [*fw.completed, *fw.tasks.values()]]
    return {"tasks": tasks, "unreachable_tasks": unreachable, "completed_tasks": completed}


def get_executors(master: Master) -> Json:
    """``GetExecutors``: every live executor with its agent."""
    return {
        "executors": [
            {
                "executor_info": prune(ex.info, mesos_pb2.ExecutorInfo.DESCRIPTOR),
                "agent_id": {"value": agent.id},
            }
            for fid in master.frameworks
            for agent, ex in _live_executors(master, fid)
        ]
    }


def _agent_info_v1(agent: Agent) -> Json:
    return prune(agent.info(), mesos_pb2.AgentInfo.DESCRIPTOR)


def agent_v1(master: Master, agent: Agent) -> Json:
    """``GetAgents.Agent`` (``Master::Http::_getAgents`` / ``model(Slave)``)."""
    from mesos_stateful.localcluster.master import VERSION

    registered, reregistered = master.agent_times.get(agent.id, (master.start_time, None))
    entry: Json = {
        "agent_info": _agent_info_v1(agent),
        "active": agent.state == "ACTIVE",
        "deactivated": False,
        "version": VERSION,
        "pid": f"slave(1)@{agent.endpoint}",
        "registered_time": _time_info(registered),
        "total_resources": agent.total.to_json(refinement=True),
        "allocated_resources": _allocated_v1(master, agent),
        "offered_resources": _offered_v1(master, agent),
        "capabilities": [{"type": c} for c in AGENT_CAPABILITIES],
    }
    if reregistered is not None:
        entry["reregistered_time"] = _time_info(reregistered)
    return entry


def get_agents(master: Master) -> Json:
    """``GetAgents``: registered agents (``Master::Http::_getAgents``) and recovered ones."""
    agents = [agent_v1(master, agent) for agent in registered_agents(master)]
    recovered = [_agent_info_v1(a) for a in master.agents.values() if a.state == "RECOVERED"]
    return {"agents": agents, "recovered_agents": recovered}


def _allocated_v1(master: Master, agent: Agent) -> list[Json]:
    """Resources of live tasks on ``agent``, each with its framework's ``allocation_info``."""
    out: list[Json] = []
    for fw in master.frameworks.values():
        used = Resources()
        for t in fw.tasks.values():
            if t.holds and t.agent_id == agent.id:
                used = used + t.resources
        out += used.to_json(role=fw.role, refinement=True)
    return out


def _offered_v1(master: Master, agent: Agent) -> list[Json]:
    out: list[Json] = []
    for o in master.offers.values():
        fw = master.frameworks.get(o.framework_id)
        if o.agent_id == agent.id and fw is not None:
            out += o.resources.to_json(role=fw.role, refinement=True)
    return out


def _offer_v1(master: Master, o: Offer, fw: Framework) -> Json:
    agent = master.agents.get(o.agent_id)
    out: Json = {
        "id": {"value": o.id},
        "framework_id": {"value": o.framework_id},
        "agent_id": {"value": o.agent_id},
        "hostname": agent.hostname if agent is not None else "",
        "resources": o.resources.to_json(role=fw.role, refinement=True),
        "allocation_info": {"role": fw.role},
    }
    if agent is not None:
        out["url"] = {
            "scheme": "http",
            "address": {"hostname": agent.hostname, "ip": agent.ip, "port": agent.port},
            "path": "/slave(1)",
        }
        out["attributes"] = agent.attributes_json()
        executors = [
            {"value": ex.executor_id} for a, ex in _live_executors(master, fw.id) if a.id == agent.id
        ]
        if executors:
            out["executor_ids"] = executors
        unavailability = getattr(master, "unavailability", None)
        window = unavailability(agent) if callable(unavailability) else None
        if window:
            out["unavailability"] = window
    return out


def _inverse_offers_v1(master: Master, fw_id: str) -> list[Json]:
    out: list[Json] = []
    for io in dict(getattr(master, "inverse_offers", {}) or {}).values():
        if getattr(io, "framework_id", None) != fw_id:
            continue
        out.append(
            {
                "id": {"value": io.id},
                "framework_id": {"value": io.framework_id},
                "agent_id": {"value": io.agent_id},
                "unavailability": io.unavailability,
            }
        )
    return out


def framework_v1(master: Master, fw: Framework, active: bool = True) -> Json:
    """``GetFrameworks.Framework`` (``Master::Http::_getFrameworks`` / ``model(Framework)``)."""
    out: Json = {
        "framework_info": prune(fw.info, mesos_pb2.FrameworkInfo.DESCRIPTOR),
        "active": active and fw.connected,
        "connected": active and fw.connected,
        "recovered": active and fw.recovered,
        "registered_time": _time_info(fw.registered_time),
    }
    if fw.reregistered_time is not None:
        out["reregistered_time"] = _time_info(fw.reregistered_time)
    if not active:
        out["unregistered_time"] = _time_info(fw.unregistered_time)
        return out
    offers = _framework_offers(master, fw.id)
    out["offers"] = [_offer_v1(master, o, fw) for o in offers]
    out["inverse_offers"] = _inverse_offers_v1(master, fw.id)
    out["allocated_resources"] = _used(fw).to_json(role=fw.role, refinement=True)
    out["offered_resources"] = _offered(master, fw.id).to_json(role=fw.role, refinement=True)
    return out


def get_frameworks(master: Master) -> Json:
    """``GetFrameworks``: subscribed (and recovered) frameworks and completed ones."""
    return {
        "frameworks": [framework_v1(master, fw, True) for fw in master.frameworks.values()],
        "completed_frameworks": [framework_v1(master, fw, False) for fw in master.completed_frameworks],
    }


def get_state(master: Master) -> Json:
    """``GetState``: the four views above together (``Master::Http::_getState``)."""
    return {
        "get_tasks": get_tasks(master),
        "get_executors": get_executors(master),
        "get_frameworks": get_frameworks(master),
        "get_agents": get_agents(master),
    }


def get_master(master: Master) -> Json:
    """``GetMaster``: MasterInfo, start and election times."""
    return {
        "master_info": master_info(master),
        "start_time": master.start_time,
        "elected_time": master.start_time,
    }
