"""The v1 operator API of the master, ``POST /api/v1`` (``Master::Http::api``, ``src/master/http.cpp``;
``docs/operator-http-api.md``): a subset of ``mesos.v1.master.Call``.

Also the master's older maintenance endpoints, which tools still use: ``/maintenance/schedule`` (GET
the ``Schedule`` JSON, POST one), ``/maintenance/status`` (GET the ``ClusterStatus``),
``/machine/down`` and ``/machine/up`` (POST a JSON array of ``MachineID``), as
``Master::Http::maintenanceSchedule`` / ``maintenanceStatus`` / ``machineDown`` / ``machineUp``.

Answered: GET_HEALTH, GET_VERSION, GET_MASTER, GET_STATE, GET_AGENTS, GET_FRAMEWORKS, GET_EXECUTORS,
GET_TASKS, SUBSCRIBE (the event stream, see :class:`EventWatch`), and the maintenance calls
GET_MAINTENANCE_SCHEDULE, UPDATE_MAINTENANCE_SCHEDULE, GET_MAINTENANCE_STATUS, START_MAINTENANCE,
STOP_MAINTENANCE (the master's schedule, see :mod:`~mesos_stateful.localcluster.maintenance`).
Every other call type is understood (validated as Mesos validates it) and answered 501
``Unsupported call type ...``.

As Mesos: non-POST 405; no ``Content-Type`` 400; a media type other than JSON / protobuf 415; a body
that does not parse or convert into ``mesos.v1.master.Call`` 400; a call that fails
``validation::master::call::validate`` 400 ``Failed to validate master::Call: ...``; an ``Accept``
allowing neither JSON nor protobuf 406; UNKNOWN 501. Answers are ``mesos.v1.master.Response`` in the
accepted media type (JSON first), 200; the maintenance updates answer 200 with no body, or 400 with
the master's reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.api.mesos.v1.maintenance import maintenance_pb2
from mesos_stateful.api.mesos.v1.master import master_pb2
from mesos_stateful.localcluster import encoding, views
from mesos_stateful.localcluster.master import CallError, Framework, Master, Task
from mesos_stateful.localcluster.recordio import EventStream, Json, method_not_allowed

if TYPE_CHECKING:
    from mesos_stateful.localcluster.cluster import LocalCluster

log = logging.getLogger(__name__)

# ``validation::master::call::validate``: the calls whose body must be present.
_BODY_REQUIRED = (
    "GET_METRICS",
    "SET_LOGGING_LEVEL",
    "LIST_FILES",
    "READ_FILE",
    "UPDATE_WEIGHTS",
    "RESERVE_RESOURCES",
    "UNRESERVE_RESOURCES",
    "CREATE_VOLUMES",
    "DESTROY_VOLUMES",
    "GROW_VOLUME",
    "SHRINK_VOLUME",
    "UPDATE_MAINTENANCE_SCHEDULE",
    "START_MAINTENANCE",
    "STOP_MAINTENANCE",
    "DRAIN_AGENT",
    "DEACTIVATE_AGENT",
    "REACTIVATE_AGENT",
    "UPDATE_QUOTA",
    "SET_QUOTA",
    "REMOVE_QUOTA",
    "TEARDOWN",
    "MARK_AGENT_GONE",
)


def validate_call(call: Json) -> str | None:
    """``validation::master::call::validate`` (``src/master/validation.cpp``) on a decoded call:
    Mesos's error text or None (the bodies' contents are the handlers' to check)."""
    kind = call.get("type")
    if not kind:
        return "Expecting 'type' to be present"
    if kind in _BODY_REQUIRED and kind.lower() not in call:
        return f"Expecting '{kind.lower()}' to be present"
    return None


def _response(kind: str, body: Json | None = None) -> Json:
    response: Json = {"type": kind}
    if body is not None:
        response[kind.lower()] = body
    return response


def _queries(master: Master) -> dict[str, Callable[[], Json]]:
    """The read-only calls: their ``Response`` (``Master::Http::getHealth`` and the others)."""
    return {
        "GET_HEALTH": lambda: _response("GET_HEALTH", {"healthy": True}),
        "GET_VERSION": lambda: _response("GET_VERSION", {"version_info": views.version_info()}),
        "GET_MASTER": lambda: _response("GET_MASTER", views.get_master(master)),
        "GET_STATE": lambda: _response("GET_STATE", views.get_state(master)),
        "GET_AGENTS": lambda: _response("GET_AGENTS", views.get_agents(master)),
        "GET_FRAMEWORKS": lambda: _response("GET_FRAMEWORKS", views.get_frameworks(master)),
        "GET_EXECUTORS": lambda: _response("GET_EXECUTORS", views.get_executors(master)),
        "GET_TASKS": lambda: _response("GET_TASKS", views.get_tasks(master)),
        "GET_MAINTENANCE_SCHEDULE": lambda: _response(
            "GET_MAINTENANCE_SCHEDULE", {"schedule": master.maintenance_schedule()}
        ),
        "GET_MAINTENANCE_STATUS": lambda: _response(
            "GET_MAINTENANCE_STATUS", {"status": master.maintenance_status()}
        ),
    }


def _update(master: Master, call: Json) -> bool:
    """The maintenance updates (``CallError`` as the master raises it); False: not one of them."""
    kind = call["type"]
    body = call.get(kind.lower()) or {}
    if kind == "UPDATE_MAINTENANCE_SCHEDULE":
        master.update_maintenance_schedule(body.get("schedule") or {})
    elif kind == "START_MAINTENANCE":
        master.start_maintenance(list(body.get("machines") or []))
    elif kind == "STOP_MAINTENANCE":
        master.stop_maintenance(list(body.get("machines") or []))
    else:
        return False
    return True


async def handle(cluster: LocalCluster, request: web.Request) -> web.StreamResponse:
    """``POST /api/v1``."""
    master = cluster.master
    if request.method != "POST":
        return method_not_allowed(request.method)
    try:
        call = encoding.decode(await request.read(), request.headers.get("Content-Type"), master_pb2.Call)
    except encoding.DecodeError as error:
        return web.Response(status=error.status, text=error.message)
    invalid = validate_call(call)
    if invalid is not None:
        return web.Response(status=400, text=f"Failed to validate master::Call: {invalid}")
    media_type = encoding.accepted_media_type(request.headers.get("Accept"))
    if media_type is None:
        return web.Response(status=406, text=encoding.NOT_ACCEPTABLE)
    kind = call["type"]
    log.info("Processing call %s", kind)
    if kind == "UNKNOWN":
        return web.Response(status=501, text="501 Not Implemented.")
    if kind == "SUBSCRIBE":
        return await subscribe(master, request, media_type)
    query = _queries(master).get(kind)
    if query is not None:
        try:
            body = encoding.encode(query(), master_pb2.Response, media_type)
        except ValueError as failure:  # a view the protos cannot hold: a bug here, said as such
            log.exception("cannot answer %s", kind)
            return web.Response(status=500, text=f"Failed to serialize the {kind} response: {failure}")
        return web.Response(status=200, body=body, content_type=media_type)
    try:
        if _update(master, call):
            return web.Response(status=200)
    except CallError as failure:
        return web.Response(status=failure.status, text=failure.message)
    return web.Response(
        status=501, text=f"Unsupported call type {kind}: not implemented by the local cluster"
    )


# --- SUBSCRIBE: the operator event stream ---------------------------------------------------------------

# ``DEFAULT_HEARTBEAT_INTERVAL`` (src/master/constants.hpp): HEARTBEAT events on operator streams.
HEARTBEAT_INTERVAL = 15.0
# How often a subscriber's view of the master is compared with the master (seconds).
WATCH_INTERVAL = 0.05


class EventWatch:
    """What an operator subscriber has been told, and the events that bring it up to date
    (``Master::Subscribers::send``): AGENT_ADDED for a newly registered agent, FRAMEWORK_ADDED /
    FRAMEWORK_UPDATED (connected or active changed, re-subscription) / FRAMEWORK_REMOVED, TASK_ADDED
    for a new task, TASK_UPDATED for every new state of a task (its statuses keep one per state,
    ``Master::updateTask``), AGENT_REMOVED for an agent no longer registered. The master has no
    subscriber hooks here: the watch compares every ``WATCH_INTERVAL`` (so an event comes up to that
    late; none is lost, transitions in between are all in the task's statuses)."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.agents: set[str] = set()
        self.frameworks: dict[str, tuple[bool, bool, float | None]] = {}
        self.statuses: dict[tuple[str, str], int] = {}
        self.sync()

    def _tasks(self) -> list[Task]:
        tasks: list[Task] = []
        for fw in self.master.frameworks.values():
            tasks += [*fw.tasks.values(), *fw.completed]
        return tasks

    def sync(self) -> None:
        """Take the master as it is now as told (the SUBSCRIBED event's ``get_state``)."""
        self.agents = {a.id for a in views.registered_agents(self.master)}
        self.frameworks = {fid: self._framework_key(fw) for fid, fw in self.master.frameworks.items()}
        self.statuses = {(t.framework_id, t.task_id): len(t.statuses) for t in self._tasks()}

    @staticmethod
    def _framework_key(fw: Framework) -> tuple[bool, bool, float | None]:
        return fw.connected, fw.recovered, fw.reregistered_time

    def events(self) -> list[Json]:
        master = self.master
        out: list[Json] = []
        agents = {a.id: a for a in views.registered_agents(master)}
        for aid in agents.keys() - self.agents:
            out.append({"type": "AGENT_ADDED", "agent_added": {"agent": views.agent_v1(master, agents[aid])}})
        for fid, fw in master.frameworks.items():
            key = self._framework_key(fw)
            if fid not in self.frameworks:
                out.append(
                    {
                        "type": "FRAMEWORK_ADDED",
                        "framework_added": {"framework": views.framework_v1(master, fw)},
                    }
                )
            elif self.frameworks[fid] != key:
                out.append(
                    {
                        "type": "FRAMEWORK_UPDATED",
                        "framework_updated": {"framework": views.framework_v1(master, fw)},
                    }
                )
            self.frameworks[fid] = key
        for task in self._tasks():
            task_key = (task.framework_id, task.task_id)
            seen = self.statuses.get(task_key)
            if seen is None:
                out.append({"type": "TASK_ADDED", "task_added": {"task": views.task_v1(task)}})
                seen = 0
            for status in task.statuses[seen:]:
                out.append(
                    {
                        "type": "TASK_UPDATED",
                        "task_updated": {
                            "framework_id": {"value": task.framework_id},
                            "status": views.prune(status, mesos_pb2.TaskStatus.DESCRIPTOR),
                            "state": task.state,
                        },
                    }
                )
            self.statuses[task_key] = len(task.statuses)
        for fid in list(self.frameworks):
            if fid not in master.frameworks:
                del self.frameworks[fid]
                removed = next((f for f in master.completed_frameworks if f.id == fid), None)
                info = views.prune(removed.info, mesos_pb2.FrameworkInfo.DESCRIPTOR) if removed else None
                if info is not None:
                    out.append({"type": "FRAMEWORK_REMOVED", "framework_removed": {"framework_info": info}})
        for aid in self.agents - agents.keys():
            out.append({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": aid}}})
        self.agents = set(agents)
        return out


async def subscribe(master: Master, request: web.Request, media_type: str) -> web.StreamResponse:
    """``SUBSCRIBE`` (``Master::ReadOnlyHandler::subscribe``): a stream of ``mesos.v1.master.Event``
    records in ``media_type``: SUBSCRIBED with the whole state and the heartbeat interval, then the
    events of :class:`EventWatch` and a HEARTBEAT every ``HEARTBEAT_INTERVAL``."""
    watch = EventWatch(master)
    subscribed = {
        "type": "SUBSCRIBED",
        "subscribed": {
            "get_state": views.get_state(master),
            "heartbeat_interval_seconds": HEARTBEAT_INTERVAL,
        },
    }
    stream = EventStream(media_type=media_type, message=master_pb2.Event)

    async def forward() -> None:
        while not stream.closed and not stream.gone:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                for event in watch.events():
                    stream.send(event)
            except Exception:  # a bug of the watch must not end the stream silently
                log.exception("operator event stream: cannot compute events")

    forwarder = asyncio.create_task(forward())
    try:
        return await stream.serve(request, subscribed, HEARTBEAT_INTERVAL)
    finally:
        forwarder.cancel()
        await asyncio.gather(forwarder, return_exceptions=True)


# --- the older maintenance endpoints ------------------------------------------------------------------


def _parse_json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as error:
        raise CallError(400, str(error)) from None


def _machine_ids(text: str) -> list[Json]:
    """A JSON array of ``MachineID`` (``protobuf::parse<RepeatedPtrField<MachineID>>``)."""
    value = _parse_json(text)
    if not isinstance(value, list):
        raise CallError(400, "Expecting a JSON array")
    for item in value:
        try:
            encoding.to_message(item, mesos_pb2.MachineID)
        except ValueError as error:
            raise CallError(400, str(error)) from None
    return [dict(item) for item in value]


def add_maintenance_routes(app: web.Application, master: Master) -> None:
    """``/maintenance/schedule``, ``/maintenance/status``, ``/machine/down``, ``/machine/up``."""

    async def schedule(request: web.Request) -> web.Response:
        if request.method not in ("GET", "POST"):
            return method_not_allowed(request.method, ("GET", "POST"))
        if request.method == "GET":
            return web.json_response(master.maintenance_schedule())
        try:
            value = _parse_json(await request.text())
            try:
                encoding.to_message(value, maintenance_pb2.Schedule)
            except ValueError as error:
                raise CallError(400, str(error)) from None
            assert isinstance(value, dict)
            master.update_maintenance_schedule(value)
        except CallError as failure:
            return web.Response(status=failure.status, text=failure.message)
        return web.Response(status=200)

    async def status(request: web.Request) -> web.Response:
        if request.method != "GET":
            return method_not_allowed(request.method, ("GET",))
        return web.json_response(master.maintenance_status())

    def machines(action: Callable[[list[Json]], None]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            if request.method != "POST":
                return method_not_allowed(request.method)
            try:
                action(_machine_ids(await request.text()))
            except CallError as failure:
                return web.Response(status=failure.status, text=failure.message)
            return web.Response(status=200)

        return handler

    app.router.add_route("*", "/maintenance/schedule", schedule)
    app.router.add_route("*", "/master/maintenance/schedule", schedule)
    app.router.add_route("*", "/maintenance/status", status)
    app.router.add_route("*", "/master/maintenance/status", status)
    app.router.add_route("*", "/machine/down", machines(master.start_maintenance))
    app.router.add_route("*", "/master/machine/down", machines(master.start_maintenance))
    app.router.add_route("*", "/machine/up", machines(master.stop_maintenance))
    app.router.add_route("*", "/master/machine/up", machines(master.stop_maintenance))
