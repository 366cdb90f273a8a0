"""The master's HTTP surface: ``POST /api/v1/scheduler`` (v1 scheduler API), ``POST /api/v1``
(the operator API subset of :mod:`~mesos_stateful.localcluster.operator`), ``GET /version``,
``GET /master/state``, ``GET /health``, fault injection ``POST /faults/agents/<agent>/<action>`` and
the internal agent protocol ``POST /master/mesos.internal.<message>`` (:mod:`.remote`).

Both APIs take JSON and protobuf bodies and answer in the media type the request accepts
(:mod:`~mesos_stateful.localcluster.encoding`), as ``Master::Http::scheduler`` / ``::api``
(``src/master/http.cpp``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from mesos_stateful.api.mesos.v1.scheduler import scheduler_pb2
from mesos_stateful.localcluster import encoding, operator, remote, views
from mesos_stateful.localcluster.master import CallError, FrameworkRemoved, Master
from mesos_stateful.localcluster.recordio import EventStream, Json, method_not_allowed

if TYPE_CHECKING:
    from mesos_stateful.localcluster.cluster import LocalCluster

log = logging.getLogger(__name__)


def build_app(cluster: LocalCluster) -> web.Application:
    master = cluster.master
    app = web.Application()

    async def scheduler(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return method_not_allowed(request.method)
        try:
            call = encoding.decode(
                await request.read(), request.headers.get("Content-Type"), scheduler_pb2.Call
            )
        except encoding.DecodeError as error:
            return web.Response(status=error.status, text=error.message)
        if not isinstance(call.get("type"), str):
            return web.Response(
                status=400, text="Failed to validate scheduler::Call: Expecting 'type' to be present"
            )
        try:
            if call["type"] == "SUBSCRIBE":
                return await _subscribe(master, request, call)
            fw = master.check_framework(call, request.headers.get("Mesos-Stream-Id"))
            status = master.handle(fw, call)  # 202, or 200 for UPDATE_FRAMEWORK
        except CallError as error:
            return web.Response(status=error.status, text=error.message)
        return web.Response(status=status)

    async def api(request: web.Request) -> web.StreamResponse:
        return await operator.handle(cluster, request)

    async def version(_request: web.Request) -> web.Response:
        return web.json_response({**views.version_info(), "git_sha": ""})

    async def state(_request: web.Request) -> web.Response:
        return web.json_response(master.state())

    async def health(_request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def fault(request: web.Request) -> web.Response:
        key, action = request.match_info["agent"], request.match_info["action"]
        try:
            agent = await cluster.fault(key, action)
        except KeyError as error:
            return web.json_response({"error": str(error.args[0])}, status=404)
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=409)
        condition = "KILLED" if not agent.alive else "PARTITIONED" if agent.partitioned else "RUNNING"
        # ``agent``: what the fault did to the agent; ``state``: how the master sees it (yet).
        return web.json_response(
            {"agent_id": agent.id, "hostname": agent.hostname, "agent": condition, "state": agent.state}
        )

    app.router.add_route("*", "/api/v1/scheduler", scheduler)
    app.router.add_route("*", "/api/v1", api)
    operator.add_maintenance_routes(app, master)
    app.router.add_get("/version", version)
    # Any method, as Mesos (`Master::Http::state` checks none).
    app.router.add_route("*", "/master/state", state)
    app.router.add_route("*", "/state", state)
    app.router.add_get("/health", health)
    app.router.add_post("/faults/agents/{agent}/{action}", fault)
    # Agents in processes of their own (``python -m mesos_stateful.localcluster agent``).
    remote.add_routes(app, master)
    return app


async def _subscribe(master: Master, request: web.Request, call: Json) -> web.StreamResponse:
    """SUBSCRIBE: a stream in the media type the ``Accept`` header allows (JSON first), records of
    ``mesos.v1.scheduler.Event``."""
    media_type = encoding.accepted_media_type(request.headers.get("Accept"))
    if media_type is None:
        return web.Response(status=406, text=encoding.NOT_ACCEPTABLE)
    if "Mesos-Stream-Id" in request.headers:
        return web.Response(
            status=400, text="Subscribe calls should not include the 'Mesos-Stream-Id' header"
        )
    try:
        fw, stream, subscribed = master.subscribe(call)
    except CallError as error:
        return web.Response(status=error.status, text=error.message)
    except FrameworkRemoved as error:
        closed = EventStream(media_type=media_type, message=scheduler_pb2.Event)
        closed.close()
        return await closed.serve(request, {"type": "ERROR", "error": {"message": str(error)}})
    stream.media_type = media_type
    stream.message = scheduler_pb2.Event
    try:
        return await stream.serve(
            request, subscribed, master.settings.heartbeat_interval, {"Mesos-Stream-Id": stream.stream_id}
        )
    finally:
        master.disconnected(fw, stream)
