"""The console's HTTP server (aiohttp) and its WatchInstances follower. Every page is a fresh
GetInstance / ListInstances through the gateway; recent events come from one WatchInstances
stream the console runs from its start (kept in memory, ``events_kept`` per instance). A gRPC
error becomes a page that says what happened (never a traceback): NOT_FOUND 404, a refused
token 401, an unreachable gateway 503."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
from aiohttp import web

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.common import retry
from mesos_stateful.common.channels import channel_options
from mesos_stateful.console import render
from mesos_stateful.console.settings import ConsoleSettings

if TYPE_CHECKING:
    from mesos_stateful.api.stateful.v1.instance_service_pb2_grpc import InstanceServiceAsyncStub

log = logging.getLogger("console")

WATCH_BACKOFF_SECONDS = (0.5, 5.0)  # first and longest wait before re-opening a broken watch


class GatewayError(Exception):
    """A gRPC error as the HTTP status and message a page shows."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def gateway_error(error: grpc.RpcError, endpoint: str, what: str) -> GatewayError:
    code = error.code() if isinstance(error, grpc.aio.AioRpcError | grpc.Call) else None
    details = (error.details() if isinstance(error, grpc.aio.AioRpcError | grpc.Call) else "") or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return GatewayError(
            404, "Not found", f"{what} does not exist (the gateway at {endpoint} says: {details})"
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return GatewayError(400, "Bad request", f"{what}: {details}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return GatewayError(
            401,
            "Token refused",
            f"the gateway at {endpoint} refused the console's token ({details}); "
            "set STATEFUL_CONSOLE_TOKEN to the gateway's STATEFUL_GATEWAY_AUTH_TOKEN",
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return GatewayError(
            503, "Gateway unavailable", f"cannot get {what} from the gateway at {endpoint}: {details or code}"
        )
    name = code.name if code is not None else "error"
    return GatewayError(502, "Gateway error", f"the gateway at {endpoint} answered {name}: {details}")


class Console:
    """The console's state: a channel to the gateway and the recent events per instance."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.channel = grpc.aio.insecure_channel(settings.gateway_endpoint, options=channel_options())
        self.stub: InstanceServiceAsyncStub = api_grpc.InstanceServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {settings.token}"),) if settings.token else ()
        self.events: dict[str, deque[render.Event]] = {}
        self.known: dict[str, T.Instance] = {}
        self.watch_problem = "the console has not yet connected its watch to the gateway"
        self._watch: asyncio.Task[None] | None = None

    # --- the watch --------------------------------------------------------------------------

    def start(self) -> None:
        self._watch = asyncio.create_task(self._follow(), name="console-watch")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self.channel.close()

    def note(self, kind: int, instance: T.Instance, at: float) -> None:
        """Record what changed in ``instance`` (a WatchInstances event)."""
        name = instance.spec.name
        kept = self.events.setdefault(name, deque(maxlen=self.settings.events_kept))
        if kind == ipb.INSTANCE_EVENT_TYPE_DELETED:
            kept.append(render.Event(at, "deleted"))
            self.known.pop(name, None)
            return
        for text in render.changes(self.known.get(name), instance):
            kept.append(render.Event(at, text))
        self.known[name] = instance

    async def _follow(self) -> None:
        """WatchInstances from the start, resumed after the last revision seen when it breaks
        (from the current state again when the gateway cannot resume, e.g. after a compaction)."""
        revision = 0
        backoff = retry.Backoff(retry.GATEWAY_WATCH.with_delays(*WATCH_BACKOFF_SECONDS))
        logged = ""  # the problem last logged as a warning
        while True:
            try:
                request = ipb.WatchInstancesRequest(start_revision=revision + 1 if revision else 0)
                stream = self.stub.WatchInstances(request, metadata=self.metadata)
                async for event in stream:
                    if logged:
                        log.info("recent events are live again")
                        logged = ""
                    self.watch_problem = ""
                    backoff.reset()
                    revision = max(revision, event.revision)
                    if event.HasField("event"):
                        continue  # an instance's history entry (ListEvents), not an instance change
                    self.note(event.type, event.instance, time.time())
                self.watch_problem = "the gateway ended the watch; reconnecting"
            except grpc.RpcError as error:
                problem = gateway_error(error, self.settings.gateway_endpoint, "the watch")
                self.watch_problem = f"recent events are not live: {problem.message}"
                code = error.code() if isinstance(error, grpc.aio.AioRpcError) else None
                if code in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION):
                    revision = 0
                # One line per outage (a gateway away would otherwise log at every retry).
                level = logging.WARNING if self.watch_problem != logged else logging.DEBUG
                log.log(level, "%s", self.watch_problem)
                logged = self.watch_problem
            await backoff.sleep()

    # --- calls ------------------------------------------------------------------------------

    async def list_instances(self) -> list[T.Instance]:
        found: list[T.Instance] = []
        token = ""
        while True:
            try:
                page = await self.stub.ListInstances(
                    ipb.ListInstancesRequest(page_token=token, page_size=500),
                    metadata=self.metadata,
                    timeout=self.settings.call_timeout_seconds,
                )
            except grpc.RpcError as error:
                raise gateway_error(error, self.settings.gateway_endpoint, "the instances") from None
            found.extend(page.instances)
            token = page.next_page_token
            if not token:
                return sorted(found, key=lambda i: i.spec.name)

    async def get_instance(self, name: str) -> T.Instance:
        try:
            reply = await self.stub.GetInstance(
                ipb.GetInstanceRequest(name=name),
                metadata=self.metadata,
                timeout=self.settings.call_timeout_seconds,
            )
        except grpc.RpcError as error:
            raise gateway_error(error, self.settings.gateway_endpoint, f"instance {name!r}") from None
        instance: T.Instance = reply.instance
        return instance

    # --- HTTP -------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        instances = await self.list_instances()
        return _html(render.instances_page(instances, self.watch_problem))

    async def instance(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = await self.get_instance(name)
        return _html(render.instance_page(found, self.events.get(name, ()), time.time()))

    async def api_instance(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            found = await self.get_instance(name)
        except GatewayError as error:
            return web.json_response({"error": error.message}, status=error.status)
        events = self.events.get(name, ())
        return web.json_response(
            {
                "name": name,
                "phase": render.phase(found.phase),
                "ready": list(render.ready_count(found)),
                "plan": render.plan_summary(found.plan),
                "watch_problem": self.watch_problem,
                "events": [{"at": ev.at, "text": ev.text} for ev in events],
                "html": render.instance_body(found, events, time.time()),
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A GatewayError, an unknown path or any other failure as a page (never a traceback)."""
    try:
        return await handler(request)
    except GatewayError as error:
        return _html(render.error_page(error.title, error.message), error.status)
    except web.HTTPException as error:
        if error.status == 404:
            return _html(render.error_page("Not found", f"no page at {request.path}"), 404)
        raise
    except Exception:
        log.exception("page %s failed", request.path)
        return _html(render.error_page("Console error", "the console failed on this page; see its log"), 500)


def build_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[errors_as_pages])
    app.router.add_get("/", console.index)
    app.router.add_get("/instances/{name}", console.instance)
    app.router.add_get("/api/instances/{name}", console.api_instance)
    app.router.add_get("/health", console.health)
    return app


async def serve(settings: ConsoleSettings) -> tuple[Console, web.AppRunner, int]:
    """Start the console on ``settings.listen``; returns it, its runner and the bound port."""
    console = Console(settings)
    console.start()
    runner = web.AppRunner(build_app(console), access_log=None)
    await runner.setup()
    host, _, port = settings.listen.rpartition(":")
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return console, runner, int(bound)
