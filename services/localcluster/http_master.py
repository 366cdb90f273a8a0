"""The master's HTTP surface: ``POST /api/v1/scheduler`` (v1 scheduler API), ``GET /version``,
``GET /master/state``, ``GET /health`` and fault injection ``POST /faults/agents/<agent>/<action>``."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from mesos_stateful.localcluster.master import VERSION, CallError, FrameworkRemoved, Master
from mesos_stateful.localcluster.recordio import EventStream

if TYPE_CHECKING:
    from mesos_stateful.localcluster.cluster import LocalCluster

log = logging.getLogger(__name__)


def build_app(cluster: LocalCluster) -> web.Application:
    master = cluster.master
    app = web.Application()

    async def scheduler(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(
                status=405,
                headers={"Allow": "POST"},
                text=f"Expecting one of {{ 'POST' }}, but received '{request.method}'",
            )
        ctype = request.headers.get("Content-Type")
        if not ctype:
            return web.Response(status=400, text="Expecting 'Content-Type' to be present")
        if ctype.split(";")[0].strip() != "application/json":
            return web.Response(
                status=415, text=f"Expecting 'Content-Type' of application/json; got '{ctype}'"
            )
        try:
            call = json.loads(await request.text())
        except ValueError as error:
            return web.Response(status=400, text=f"Failed to parse body into JSON: {error}")
        if not isinstance(call, dict) or not isinstance(call.get("type"), str):
            return web.Response(
                status=400, text="Failed to validate scheduler::Call: Expecting 'type' to be present"
            )
        try:
            if call["type"] == "SUBSCRIBE":
                return await _subscribe(master, request, call)
            fw = master.check_framework(call, request.headers.get("Mesos-Stream-Id"))
            master.handle(fw, call)
        except CallError as error:
            return web.Response(status=error.status, text=error.message)
        return web.Response(status=202)

    async def version(_request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION, "build_user": "localcluster", "git_sha": ""})

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
    app.router.add_get("/version", version)
    app.router.add_get("/master/state", state)
    app.router.add_get("/state", state)
    app.router.add_get("/health", health)
    app.router.add_post("/faults/agents/{agent}/{action}", fault)
    return app


async def _subscribe(master: Master, request: web.Request, call: dict[str, object]) -> web.StreamResponse:
    accept = request.headers.get("Accept", "application/json")
    if not any(a in accept for a in ("application/json", "*/*", "application/recordio")):
        return web.Response(status=406, text=f"Expecting 'Accept' to allow application/json; got '{accept}'")
    if request.headers.get("Mesos-Stream-Id"):
        return web.Response(
            status=400, text="Subscribe calls should not include the 'Mesos-Stream-Id' header"
        )
    try:
        fw, stream, subscribed = master.subscribe(call)
    except CallError as error:
        return web.Response(status=error.status, text=error.message)
    except FrameworkRemoved as error:
        closed = EventStream()
        closed.close()
        return await closed.serve(request, {"type": "ERROR", "error": {"message": str(error)}})
    try:
        return await stream.serve(
            request, subscribed, master.settings.heartbeat_interval, {"Mesos-Stream-Id": stream.stream_id}
        )
    finally:
        master.disconnected(fw, stream)
