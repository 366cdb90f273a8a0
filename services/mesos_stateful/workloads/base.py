"""What every workload service written in Python shares.

- :class:`WorkloadSettings`: the settings base (subclass it with your own ``env_prefix``).
- :class:`WorkloadBase`: a ``WorkloadService`` servicer whose callbacks all have safe defaults
  (empty answers; ``SlaveLost`` / ``PeerLost`` answer ``replace=True``), so a workload implements
  only what its topology needs, plus helpers to find members and endpoints in a callback context.
  ``Config`` has no sensible default and fails until overridden.
- :func:`callback`: decorator for callbacks: domain errors become gRPC status, and a callback that
  takes longer than ``callback_timeout_seconds`` fails UNAVAILABLE (lifecycle retries it).
- :class:`Registration`: keeps ``Workload{name, endpoint, description}`` registered in the state
  service under a lease, registering again whenever the lease is lost.
- :func:`run_workload`: serve, register, wait for SIGTERM/SIGINT, deregister, stop.

Raise :class:`mesos_stateful.common.errors.Unavailable` when the workload's own server cannot be
reached: lifecycle retries UNAVAILABLE with backoff; other errors fail the step for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from pydantic import Field, model_validator

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2, workload_service_pb2, workload_service_pb2_grpc
from mesos_stateful.clients.endpoints import check_endpoint as check_state_endpoint
from mesos_stateful.common import errors, metrics
from mesos_stateful.common.grpc_errors import grpc_method, status_code_for
from mesos_stateful.common.metrics_server import METRICS_LISTEN_DESCRIPTION, check_listen, serve_metrics
from mesos_stateful.common.server import Served, build_server, wait_for_signal
from mesos_stateful.common.settings import ServiceSettings
from mesos_stateful.common.tracing import setup_tracing, shutdown_tracing

if TYPE_CHECKING:
    from mesos_stateful.clients.state import StateClient

log = logging.getLogger(__name__)

pb = workload_service_pb2
Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["WorkloadService"].full_name


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) -> (host, port); ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


class WorkloadSettings(ServiceSettings):
    """Settings every workload service has. Subclass with ``model_config =
    SettingsConfigDict(env_prefix="STATEFUL_<NAME>_")`` (pydantic merges it with the base config)."""

    state_endpoint: str = Field("127.0.0.1:7100", description="host:port of the state service")
    metrics_listen: str = Field("", description=METRICS_LISTEN_DESCRIPTION)
    advertise: str = Field(
        "",
        description="host:port other services use to reach this one; empty: the bound address "
        "(a wildcard listen host is replaced by this machine's hostname)",
    )
    register_in_state: bool = Field(
        True, description="register in the state service (off: only serve, e.g. for a manual test)"
    )
    lease_ttl_seconds: int = Field(
        10, description="TTL of the registration lease; it is kept alive every TTL/3 seconds"
    )
    callback_timeout_seconds: float = Field(
        20.0, description="most time one callback may take; past it the callback fails UNAVAILABLE"
    )
    connect_timeout_seconds: float = Field(
        3.0, description="timeout to connect to, and for one command on, the workload's own server"
    )
    grace_seconds: float = Field(5.0, description="time in-flight calls get to finish on SIGTERM")

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_listen(self.metrics_listen)
        split_host_port(self.listen)
        check_state_endpoint("state_endpoint", self.state_endpoint)  # one or several replicas
        if self.advertise:
            split_host_port(self.advertise)
        if self.lease_ttl_seconds < 3:
            raise ValueError("lease_ttl_seconds must be at least 3 (keepalive runs every TTL/3)")
        if self.callback_timeout_seconds <= 0 or self.connect_timeout_seconds <= 0:
            raise ValueError("timeouts must be > 0")
        if self.connect_timeout_seconds >= self.callback_timeout_seconds:
            raise ValueError("connect_timeout_seconds must be below callback_timeout_seconds")
        return self

    @property
    def keepalive_seconds(self) -> float:
        return self.lease_ttl_seconds / 3

    def advertised_endpoint(self, bound_port: int) -> str:
        """The endpoint to register: ``advertise`` if set, else the bound host and port."""
        if self.advertise:
            return self.advertise
        host, _ = split_host_port(self.listen)
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        return f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"


# --- helpers on a callback context -------------------------------------------------------------


def member(context: pb.CallbackContext) -> types_pb2.Member:
    """The member the callback is about."""
    for m in context.instance.members:
        if m.id == context.member_id:
            return m
    raise errors.InvalidArgument(
        f"member {context.member_id!r} is not in instance {context.instance.spec.name!r}",
        {"context.member_id": "not a member of context.instance"},
    )


def member_in_role(context: pb.CallbackContext, *roles: int) -> types_pb2.Member:
    """The member the callback is about, which must have one of ``roles`` (a Config guard)."""
    me = member(context)
    if me.role not in roles:
        names = " or ".join(types_pb2.Role.Name(r) for r in roles)
        workload = context.instance.spec.workload
        raise errors.InvalidArgument(
            f"member {me.id} has role {types_pb2.Role.Name(me.role)}; {workload} members are {names}",
            {"context.instance.members.role": f"must be {names}"},
        )
    return me


def master(context: pb.CallbackContext) -> types_pb2.Member:
    """The instance's ROLE_MASTER member."""
    for m in context.instance.members:
        if m.role == types_pb2.ROLE_MASTER:
            return m
    raise errors.FailedPrecondition(f"instance {context.instance.spec.name!r} has no master member")


def others(context: pb.CallbackContext) -> list[types_pb2.Member]:
    """Every member but the one the callback is about, by ordinal."""
    return sorted((m for m in context.instance.members if m.id != context.member_id), key=lambda m: m.ordinal)


# --- the member's persistent volume -------------------------------------------------------------

# Where a member's persistent volume appears in its task sandbox when the member record does not
# say (Volume.container_path): ``${MESOS_SANDBOX}/data``. The one place this default lives.
DATA_DIR = "data"


def volume_path(m: types_pb2.Member) -> str:
    """The member's volume, relative to its sandbox: ``Member.volume.container_path`` when set
    (lifecycle copies it into ``LaunchSpec.volume``), else :data:`DATA_DIR`. Everything that must
    outlive the task (the workload's data) goes there; files written fresh for each task
    (configuration, secrets, probes) stay in the sandbox."""
    path = m.volume.container_path or DATA_DIR
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise errors.InvalidArgument(
            f"member {m.id}: volume container_path {path!r} must be a relative path inside the sandbox",
            {"context.instance.members.volume.container_path": "a relative path without '..'"},
        )
    return path


def data_dir(m: types_pb2.Member) -> str:
    """The member's volume as the task sees it: ``${MESOS_SANDBOX}/<volume path>`` (expanded by
    the executor)."""
    return "${MESOS_SANDBOX}/" + volume_path(m)


def in_docker(context: pb.CallbackContext) -> bool:
    """Whether the instance's members run as Docker containers (``InstanceSpec.runtime``): their
    argv then names the image's binaries (Debian's paths) and the image's Python
    (``common.images.IMAGE_PYTHON``). Checks still run in the executor, outside the container, so
    they keep the executor's interpreter. RUNTIME_UNSPECIFIED (a record from before runtimes) is
    the process runtime."""
    return context.instance.spec.runtime == types_pb2.RUNTIME_DOCKER


def has_master(context: pb.CallbackContext) -> bool:
    """Whether the instance has a ROLE_MASTER member. A restart of every member (a cold start)
    launches them all as SLAVE with no master: each then starts as a read-only replica that
    follows nobody, until lifecycle asks MasterLost with the candidates and re-points them."""
    return any(m.role == types_pb2.ROLE_MASTER for m in context.instance.members)


def candidates(context: pb.CallbackContext, candidate_ids: Iterable[str]) -> list[types_pb2.Member]:
    """The members named by ``MasterLostRequest.candidate_ids`` (the context member included
    when named), by ordinal; InvalidArgument if one is not a member of the instance."""
    by_id = {m.id: m for m in context.instance.members}
    unknown = sorted(set(candidate_ids) - set(by_id))
    if unknown:
        raise errors.InvalidArgument(
            f"candidate(s) {', '.join(unknown)} are not members of {context.instance.spec.name!r}",
            {"candidate_ids": "must name members of context.instance"},
        )
    return sorted((by_id[i] for i in set(candidate_ids)), key=lambda m: m.ordinal)


def endpoint(m: types_pb2.Member, port_name: str) -> tuple[str, int]:
    """(host, port) of a member's named port; FailedPrecondition if it has none yet."""
    port = m.ports.get(port_name, 0)
    if not m.host or not port:
        raise errors.FailedPrecondition(f"member {m.id} has no address for port {port_name!r} yet")
    return m.host, port


_A = TypeVar("_A")


async def ask_members(
    members: Sequence[types_pb2.Member],
    port_name: str,
    ask: Callable[[types_pb2.Member], Awaitable[_A]],
) -> tuple[list[tuple[types_pb2.Member, _A]], list[str]]:
    """Ask every member at once (``ask`` runs concurrently): ``(answers, problems)``, the answers
    in member order and ``"<member id>: <why>"`` for each member that has no address for
    ``port_name`` yet or raised a ``StatefulError`` (e.g. Unavailable). Any other exception
    propagates. The rule of MasterLost and Fence: a member that does not answer is reported, so
    the caller can wait for it instead of skipping it."""

    async def one(m: types_pb2.Member) -> _A:
        if not (m.host and m.ports.get(port_name)):
            raise errors.Unavailable("no address yet")
        return await ask(m)

    results = await asyncio.gather(*(one(m) for m in members), return_exceptions=True)
    answers: list[tuple[types_pb2.Member, _A]] = []
    problems: list[str] = []
    for m, result in zip(members, results, strict=True):
        if isinstance(result, errors.StatefulError):
            problems.append(f"{m.id}: {result.message}")
        elif isinstance(result, BaseException):
            raise result
        else:
            answers.append((m, result))
    return answers, problems


# --- health checks (CheckMember) ----------------------------------------------------------------


def condition(kind: int, ok: bool, reason: str = "", message: str = "") -> types_pb2.MemberCondition:
    """One ``MemberCondition`` of a CheckMember answer: ``kind`` a ``ConditionType``, ``reason`` a
    CamelCase cause ("Chained", "IoThreadStopped", "Lagging", "Diverged"), ``message`` what a
    person reads. ``since`` is lifecycle's (it knows when ``ok`` last changed)."""
    return types_pb2.MemberCondition(type=kind, ok=ok, reason=reason, message=message)  # type: ignore[arg-type]


def health(
    *conditions: types_pb2.MemberCondition,
    observed_role: int = types_pb2.ROLE_UNSPECIFIED,
    following: str = "",
    lag_seconds: float = -1.0,
    lag: int = -1,
    position: str = "",
    repair: int = types_pb2.REPAIR_UNSPECIFIED,
) -> types_pb2.MemberHealth:
    """A CheckMember answer's ``MemberHealth`` (the fields a workload fills; see the proto)."""
    return types_pb2.MemberHealth(
        observed_role=observed_role,  # type: ignore[arg-type]
        following=following,
        lag_seconds=lag_seconds,
        lag=lag,
        position=position,
        conditions=list(conditions),
        repair=repair,  # type: ignore[arg-type]
    )


# --- the servicer base ---------------------------------------------------------------------------

_W = TypeVar("_W", bound="WorkloadBase")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def callback(
    method: Callable[[_W, _Req, Context], Awaitable[_Resp]],
) -> Callable[[_W, _Req, Context], Awaitable[_Resp]]:
    """Decorates a callback: domain errors become gRPC status; a callback running longer than
    ``settings.callback_timeout_seconds`` fails UNAVAILABLE (so lifecycle retries it). Each call is
    observed on the service's /metrics: ``stateful_workload_callback_duration_seconds`` (seconds, by
    workload, callback and outcome: ``ok`` or the status code name) and, for an error,
    ``stateful_workload_callback_errors_total`` (by code)."""

    @functools.wraps(method)
    async def timed(self: _W, request: _Req, context: Context) -> _Resp:
        timeout = self.settings.callback_timeout_seconds
        started = time.monotonic()
        outcome = "ok"
        try:
            async with asyncio.timeout(timeout):
                return await method(self, request, context)
        except TimeoutError:
            error: errors.StatefulError = errors.Unavailable(
                f"{method.__name__} did not finish within {timeout:.0f}s"
            )
            outcome = _observe_error(self, method.__name__, error)
            raise error from None
        except errors.StatefulError as raised:
            outcome = _observe_error(self, method.__name__, raised)
            raise
        except Exception:  # a bug: gRPC answers UNKNOWN
            outcome = _observe_error(self, method.__name__, None)
            raise
        finally:
            metrics.WORKLOAD_CALLBACK_SECONDS.labels(self.description.name, method.__name__, outcome).observe(
                time.monotonic() - started
            )

    return grpc_method(timed)


def _observe_error(servicer: WorkloadBase, name: str, error: errors.StatefulError | None) -> str:
    """Count a callback error; returns its outcome label (the status code name, lower case)."""
    code = status_code_for(error) if error is not None else grpc.StatusCode.UNKNOWN
    label = code.name.lower()
    metrics.WORKLOAD_CALLBACK_ERRORS_TOTAL.labels(servicer.description.name, name, label).inc()
    return label


class WorkloadBase(workload_service_pb2_grpc.WorkloadServiceServicer):
    """Base of a workload servicer: ``Describe`` answers ``description``; every other callback but
    ``Config`` has a safe default. Override with ``@callback``-decorated async methods."""

    def __init__(self, description: types_pb2.WorkloadDescription, settings: WorkloadSettings) -> None:
        self.description = description
        self.settings = settings

    # Helpers, also available as module functions.
    member = staticmethod(member)
    master = staticmethod(master)
    others = staticmethod(others)
    endpoint = staticmethod(endpoint)

    @callback
    async def Describe(self, request: pb.DescribeRequest, context: Context) -> pb.DescribeResponse:
        return pb.DescribeResponse(description=self.description)

    @callback
    async def Config(self, request: pb.ConfigRequest, context: Context) -> pb.ConfigResponse:
        raise errors.PermanentError(f"workload {self.description.name} does not implement Config")

    @callback
    async def Start(self, request: pb.StartRequest, context: Context) -> pb.StartResponse:
        return pb.StartResponse()

    @callback
    async def StartMaster(self, request: pb.StartMasterRequest, context: Context) -> pb.StartMasterResponse:
        return pb.StartMasterResponse()

    @callback
    async def StartSlave(self, request: pb.StartSlaveRequest, context: Context) -> pb.StartSlaveResponse:
        return pb.StartSlaveResponse()

    @callback
    async def MasterRunning(
        self, request: pb.MasterRunningRequest, context: Context
    ) -> pb.MasterRunningResponse:
        return pb.MasterRunningResponse()

    @callback
    async def SlaveRunning(
        self, request: pb.SlaveRunningRequest, context: Context
    ) -> pb.SlaveRunningResponse:
        return pb.SlaveRunningResponse()

    @callback
    async def MasterLost(self, request: pb.MasterLostRequest, context: Context) -> pb.MasterLostResponse:
        # Empty: nothing to promote now; lifecycle asks again later.
        return pb.MasterLostResponse()

    @callback
    async def SlaveLost(self, request: pb.SlaveLostRequest, context: Context) -> pb.SlaveLostResponse:
        return pb.SlaveLostResponse(replace=True)

    @callback
    async def PeerRunning(self, request: pb.PeerRunningRequest, context: Context) -> pb.PeerRunningResponse:
        return pb.PeerRunningResponse()

    @callback
    async def PeerLost(self, request: pb.PeerLostRequest, context: Context) -> pb.PeerLostResponse:
        return pb.PeerLostResponse(replace=True)

    @callback
    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Context
    ) -> pb.RemoveMemberResponse:
        return pb.RemoveMemberResponse()

    async def CheckMember(self, request: pb.CheckMemberRequest, context: Context) -> pb.CheckMemberResponse:
        """Default: UNIMPLEMENTED; lifecycle then watches this workload through Mesos alone."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"workload {self.description.name} does not implement CheckMember"
        )

    async def Fence(self, request: pb.FenceRequest, context: Context) -> pb.FenceResponse:
        """Default: UNIMPLEMENTED; lifecycle then promotes only once Mesos reports the old
        master's task ended (not safe for a cut-off agent: implement it)."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"workload {self.description.name} does not implement Fence"
        )


# --- registration --------------------------------------------------------------------------------


class Registration:
    """Keeps one ``Workload`` record in the state service under a lease.

    A background task grants a lease, puts the record on it and keeps the lease alive every
    ``ttl/3`` seconds. When the lease is gone (expired while the state service or etcd was down)
    it registers again; while the state service is unreachable it retries every ``ttl/3``.
    ``stop()`` revokes the lease so the record disappears at once.
    """

    def __init__(self, client: StateClient, workload: types_pb2.Workload, ttl_seconds: int) -> None:
        self._client = client
        self._workload = workload
        self._ttl = ttl_seconds
        self._lease_id = 0
        self._task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()
        # How many times the record was (re-)put, and how many attempts failed; for tests.
        self.registrations = 0
        self.failures = 0
        self.keepalives = 0

    @property
    def lease_id(self) -> int:
        return self._lease_id

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"register-{self._workload.name}")

    async def wait_registered(self) -> None:
        """Return once the record is stored (wrap in ``asyncio.timeout`` to bound the wait)."""
        await self.registered.wait()

    async def stop(self, revoke: bool = True) -> None:
        """Stop keeping the lease alive; revoke it unless ``revoke`` is False (then the record
        lasts until the lease expires)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if revoke and self._lease_id:
            try:
                async with asyncio.timeout(self._ttl):
                    await self._client.revoke_lease(self._lease_id)
                log.info("deregistered workload %s", self._workload.name)
            except (errors.StatefulError, TimeoutError) as error:
                log.warning("could not revoke registration lease (it will expire): %s", error)
        self._lease_id = 0
        self.registered.clear()

    async def _taken_by(self) -> str:
        """The endpoint of another service holding this workload's name ("" when the name is free
        or ours): a second copy of a service must never take a live registration over (stopping
        it would then delete the record of the one that stays)."""
        existing = await self._client.find(spb.KIND_WORKLOAD, self._workload.name)
        if existing is None or existing.workload.endpoint == self._workload.endpoint:
            return ""
        return existing.workload.endpoint

    async def _register(self) -> None:
        holder = await self._taken_by()
        if holder:
            raise errors.AlreadyExists(
                f"workload {self._workload.name!r} is registered by the service at {holder}: "
                f"not taking it over (registering once its lease ends; another name: set the "
                f"service's name setting)"
            )
        if not self._lease_id:
            self._lease_id = await self._client.grant_lease(self._ttl)
        record = types_pb2.Workload()
        record.CopyFrom(self._workload)
        record.registered_at.CopyFrom(_now())
        try:
            await self._client.put(record, lease_id=self._lease_id)
        except errors.StatefulError:
            # The lease may be what is wrong (expired meanwhile): take a new one next time; an
            # orphaned lease just expires.
            self._lease_id = 0
            raise
        self.registrations += 1
        self.registered.set()
        log.info(
            "registered workload %s at %s (lease %x, ttl %ss)",
            record.name,
            record.endpoint,
            self._lease_id,
            self._ttl,
        )

    async def _run(self) -> None:
        interval = self._ttl / 3
        failing = 0
        while True:
            try:
                if not self.registered.is_set():
                    await self._register()
                await asyncio.sleep(interval)
                if await self._client.keep_alive(self._lease_id) <= 0:
                    raise errors.NotFound(f"lease {self._lease_id:x} expired")
                self.keepalives += 1
                if await self._client.find(spb.KIND_WORKLOAD, self._workload.name) is None:
                    # The record went while our lease lives (deleted, or put on another lease
                    # that was revoked): put it again.
                    log.warning("registration of %s is gone; registering again", self._workload.name)
                    self.registered.clear()
            except errors.NotFound:
                self.failures += 1
                log.warning("registration lease of %s is gone; registering again", self._workload.name)
                self._lease_id = 0
                self.registered.clear()
            except errors.StatefulError as error:
                # Unreachable state service: keep the lease id (it may outlive the outage) and retry.
                self.failures += 1
                failing += 1
                level = logging.WARNING if failing == 1 else logging.DEBUG  # one line per outage
                log.log(
                    level,
                    "registration of %s: %s; retrying every %.1fs",
                    self._workload.name,
                    error,
                    interval,
                )
                await asyncio.sleep(interval)
                continue
            if failing:
                log.info("state service reachable again after %d failed attempt(s)", failing)
                failing = 0


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


# --- running a workload service ------------------------------------------------------------------


@dataclass
class RunningWorkload:
    """A started workload service: its server, the endpoint it registered and its registration."""

    served: Served
    endpoint: str
    registration: Registration | None
    client: StateClient | None

    @property
    def port(self) -> int:
        return self.served.port

    async def stop(self, grace_seconds: float = 5.0, revoke: bool = True) -> None:
        """Stop serving and deregister; ``revoke=False`` leaves the record to expire with its
        lease, as after a crash."""
        await self.served.set_serving(False)
        if self.registration is not None:
            await self.registration.stop(revoke=revoke)
        if self.client is not None:
            await self.client.close()
        await self.served.server.stop(grace_seconds)


async def start_workload(servicer: WorkloadBase, settings: WorkloadSettings) -> RunningWorkload:
    """Start the gRPC server and (if ``settings.register_in_state``) the registration in the background;
    the service serves even while the state service is unreachable."""
    served = await build_server(
        settings.listen,
        [functools.partial(workload_service_pb2_grpc.add_WorkloadServiceServicer_to_server, servicer)],
        [SERVICE_NAME],
    )
    advertised = settings.advertised_endpoint(served.port)
    log.info(
        "workload %s serving on port %d, advertised as %s", servicer.description.name, served.port, advertised
    )
    if not settings.register_in_state:
        return RunningWorkload(served=served, endpoint=advertised, registration=None, client=None)
    from mesos_stateful.clients.state import StateClient

    client = StateClient(settings.state_endpoint)
    registration = Registration(
        client,
        types_pb2.Workload(
            name=servicer.description.name, endpoint=advertised, description=servicer.description
        ),
        settings.lease_ttl_seconds,
    )
    registration.start()
    return RunningWorkload(served=served, endpoint=advertised, registration=registration, client=client)


async def run_workload(servicer: WorkloadBase, settings: WorkloadSettings) -> None:
    """Serve and stay registered until SIGTERM/SIGINT, then deregister and stop gracefully."""
    setup_tracing(f"workload-{servicer.description.name}")  # before the server and channels exist
    try:
        serve_metrics(settings.metrics_listen, metrics.WORKLOAD)
        running = await start_workload(servicer, settings)
        await wait_for_signal()
        log.info("stopping: deregistering and draining calls for up to %.0fs", settings.grace_seconds)
        await running.stop(settings.grace_seconds)
    finally:
        shutdown_tracing()
