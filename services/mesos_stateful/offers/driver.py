"""The pymesos scheduler driver behind an asyncio-friendly adapter.

pymesos runs its I/O and every callback on its own thread. The callbacks here never block: they
hand each event to the asyncio loop (``call_soon_threadsafe``) as a small dataclass on a queue.
Calls to the master (ACCEPT, DECLINE, KILL, ...) are blocking HTTP requests; they run one at a
time on a worker thread so the loop never waits on the network.

The loop must never wait on the master either indirectly: pymesos' ``_send`` holds the driver's
lock for the whole HTTP request, and its ``connected`` / ``master`` / ``stream_id`` / ``aborted``
properties take that same lock. With a frozen master (``kill -STOP``: the kernel still accepts the
connection, nothing answers) a call blocks, and a loop reading ``driver.connected`` would block
with it (measured: the offers leader's loop stopped ~25 s, its lease lapsed). So the loop reads
only lock-free copies here, and every call's HTTP request is bounded by ``call_timeout_seconds``
(pymesos' own default is a day).

pymesos quirks handled here:
- it installs a SIGINT handler at import time: import this module on the main thread;
- when its I/O thread dies it calls ``interrupt_main()``, which would stop the whole service: that
  call is replaced by a DriverAborted event, after which the scheduler starts a fresh driver;
- implicit acknowledgements are off: the scheduler acknowledges after storing each update.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pymesos
import pymesos.process
from pymesos import MesosSchedulerDriver, Scheduler

from mesos_stateful.common import errors

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Json = dict[str, Any]


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscribed:
    framework_id: str
    master: str


@dataclass(frozen=True)
class Disconnected:
    pass


@dataclass(frozen=True)
class OffersReceived:
    offers: list[Json]


@dataclass(frozen=True)
class OfferRescinded:
    offer_id: str


@dataclass(frozen=True)
class InverseOffersReceived:
    """An INVERSE_OFFERS event: the master asks for an agent back (maintenance scheduled)."""

    inverse_offers: list[Json]


@dataclass(frozen=True)
class InverseOfferRescinded:
    """A RESCIND_INVERSE_OFFER event (the schedule changed, the agent was removed, ...)."""

    inverse_offer_id: str


@dataclass(frozen=True)
class StatusReceived:
    status: Json


@dataclass(frozen=True)
class AgentLost:
    agent_id: str


@dataclass(frozen=True)
class DriverError:
    """An ERROR event from the master (e.g. "Framework has been removed")."""

    message: str


@dataclass(frozen=True)
class DriverAborted:
    """The pymesos I/O thread died (e.g. the master refused the subscription); the scheduler
    starts a fresh driver."""

    message: str


DriverEvent = (
    Subscribed
    | Disconnected
    | OffersReceived
    | OfferRescinded
    | InverseOffersReceived
    | InverseOfferRescinded
    | StatusReceived
    | AgentLost
    | DriverError
    | DriverAborted
)


# -- interrupt_main guard -------------------------------------------------------------------------

_adapters: weakref.WeakSet[MesosDriver] = weakref.WeakSet()
_adapters_lock = threading.Lock()


class _InterruptGuard:
    """Stands in for the ``_thread`` module inside pymesos.process, whose only use of it is
    ``interrupt_main()`` when its I/O thread dies."""

    @staticmethod
    def interrupt_main(*_args: object) -> None:
        exc_info = pymesos.process._exc_info
        pymesos.process._exc_info = None  # or a later SIGINT would re-raise it
        message = repr(exc_info[1]) if exc_info else "unknown error"
        log.error("pymesos I/O thread died: %s", message)
        with _adapters_lock:
            adapters = list(_adapters)
        for adapter in adapters:
            adapter._io_thread_died(message)


pymesos.process.thread = _InterruptGuard()


# -- the adapter ----------------------------------------------------------------------------------


class _Callbacks(Scheduler):  # type: ignore[misc]
    """pymesos callbacks: each turns into an event on the loop; nothing here may block or raise
    (an exception would kill pymesos' I/O thread)."""

    def __init__(self, adapter: MesosDriver, generation: int) -> None:
        self._adapter = adapter
        self._generation = generation

    def _post(self, event: DriverEvent) -> None:
        self._adapter._post(event, self._generation)

    def registered(self, driver: Any, framework_id: Any, master_info: Any) -> None:
        self._post(Subscribed(str(framework_id.get("value", "")), _master_of(master_info)))

    def reregistered(self, driver: Any, master_info: Any) -> None:
        self._post(Subscribed(str(driver.framework_id or ""), _master_of(master_info)))

    def disconnected(self, driver: Any) -> None:
        self._post(Disconnected())

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        self._post(OffersReceived([_plain(o) for o in offers]))

    def inverseOffers(self, driver: Any, offers: list[Any]) -> None:
        self._post(InverseOffersReceived([_plain(o) for o in offers]))

    def inverseOfferRescinded(self, driver: Any, offer_id: Any) -> None:
        self._post(InverseOfferRescinded(str(offer_id.get("value", ""))))

    def offerRescinded(self, driver: Any, offer_id: Any) -> None:
        self._post(OfferRescinded(str(offer_id.get("value", ""))))

    def statusUpdate(self, driver: Any, status: Any) -> None:
        self._post(StatusReceived(_plain(status)))

    def frameworkMessage(self, driver: Any, executor_id: Any, agent_id: Any, message: Any) -> None:
        pass

    def slaveLost(self, driver: Any, agent_id: Any) -> None:
        self._post(AgentLost(str(agent_id.get("value", ""))))

    def executorLost(self, driver: Any, executor_id: Any, agent_id: Any, status: Any) -> None:
        # Mesos sends TASK_* updates for the executor's tasks; nothing more to do here.
        log.info("executor %s on agent %s exited (%s)", executor_id, agent_id, status)

    def error(self, driver: Any, message: str) -> None:
        if "failed over" in str(message).lower():
            # Another scheduler subscribed as this framework (Mesos' Master::failoverFramework):
            # stop pymesos here, on its I/O thread, before it reconnects by itself and takes the
            # framework back (the master closes the stream right after this ERROR). With failover:
            # no TEARDOWN, the framework and its tasks stay with the other scheduler.
            with contextlib.suppress(Exception):
                driver.stop(failover=True)
        self._post(DriverError(str(message)))


def _plain(value: Any) -> Any:
    """A plain-dict deep copy (addict Dicts create keys on read; keep the loop's data inert)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _peek(driver: Any, name: str) -> Any:
    """A pymesos attribute read without its lock (a single attribute read is atomic in CPython;
    a stale value is fine for the checks it serves)."""
    return getattr(driver, name, None)


def _master_of(master_info: Any) -> str:
    try:
        return f"{master_info['hostname']}:{master_info['port']}"
    except (KeyError, TypeError):
        return ""


@dataclass(frozen=True)
class FrameworkConfig:
    name: str
    role: str
    user: str
    hostname: str
    failover_timeout_seconds: float
    principal: str = ""
    secret: str = ""

    # MULTI_ROLE: ``roles`` instead of ``role``; RESERVATION_REFINEMENT: resources in the
    # post-refinement format (a ``reservations`` list), which mesos.py reads and writes.
    # PARTITION_AWARE: Mesos tells a task surely gone (TASK_GONE, TASK_DROPPED: its process is
    # dead, a fence may count on it) from one it cannot reach (TASK_UNREACHABLE, TASK_UNKNOWN: it
    # may still run and take writes) instead of TASK_LOST for both (Mesos docs,
    # high-availability-framework-guide.md, "Dealing with Partitioned or Failed Agents").
    CAPABILITIES: ClassVar[tuple[str, ...]] = ("MULTI_ROLE", "RESERVATION_REFINEMENT", "PARTITION_AWARE")

    def info(self, framework_id: str | None) -> Json:
        info: Json = {
            "name": self.name,
            "user": self.user,
            "hostname": self.hostname,
            "failover_timeout": self.failover_timeout_seconds,
            "checkpoint": True,
            "roles": [self.role],
            "capabilities": [{"type": kind} for kind in self.CAPABILITIES],
        }
        if self.principal:
            info["principal"] = self.principal
        if framework_id:
            info["id"] = {"value": framework_id}
        return info


class _BoundedDriver(MesosSchedulerDriver):  # type: ignore[misc]
    """pymesos' driver whose calls to the master (one HTTP connection, see ``_get_conn``) time out
    after ``call_timeout`` seconds instead of pymesos' ``timeout`` (a day, which is also how long
    it keeps trying to reach a master, and stays so)."""

    call_timeout: float = 10.0

    def _get_conn(self) -> Any:
        conn = super()._get_conn()
        if conn is not None and conn.sock is None:
            conn.timeout = self.call_timeout  # applied to the socket when it connects
        return conn

    def _get_version(self, master: str | None) -> str | None:
        """pymesos' GET /version before subscribing (in ``start`` / ``change_master``), bounded
        like a call: with pymesos' day-long timeout a master frozen at that moment would hold the
        call worker thread, and every call queued behind it, for a day. None if not answered
        (pymesos then subscribes without knowing the version, as it does on its own errors)."""
        if master is None:
            return None
        host, _, port = master.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=self.call_timeout)
        try:
            conn.request("GET", "/version")
            resp = conn.getresponse()
            if not 200 <= resp.status < 300:
                return None
            return str(json.loads(resp.read().decode("utf-8"))["version"])
        except (OSError, ValueError, KeyError, http.client.HTTPException) as error:
            log.warning("GET http://%s/version: %s", master, error)
            return None
        finally:
            conn.close()


class MesosDriver:
    """One Mesos scheduler connection at a time, restarted when pymesos gives up.

    ``call_timeout_seconds``: the longest one call to the master (ACCEPT, KILL, ACKNOWLEDGE, ...)
    may take on the worker thread before it fails UNAVAILABLE (a frozen or unreachable master).
    Calls run one at a time, so it is also how long a stuck call holds up the next ones."""

    RESTART_DELAY_SECONDS = 2.0
    JOIN_TIMEOUT_SECONDS = 20.0
    CALL_TIMEOUT_SECONDS = 10.0

    def __init__(
        self, master: str, config: FrameworkConfig, call_timeout_seconds: float | None = None
    ) -> None:
        self.master = master
        self.config = config
        self.call_timeout_seconds = (
            self.CALL_TIMEOUT_SECONDS if call_timeout_seconds is None else call_timeout_seconds
        )
        if self.call_timeout_seconds <= 0:
            raise ValueError("call_timeout_seconds must be positive")
        self._events: asyncio.Queue[tuple[int, DriverEvent]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._driver: MesosSchedulerDriver | None = None
        self._generation = 0
        self._framework_id: str | None = None
        self._stopping = False
        self._calls = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mesos-call")
        self._subscribed = False
        self.aborts = 0  # times pymesos' I/O thread died (for tests and logs)
        # Set when the master said another scheduler subscribed as this framework.
        self.failed_over = asyncio.Event()
        with _adapters_lock:
            _adapters.add(self)

    # -- life cycle -------------------------------------------------------------------------------

    @property
    def subscribed(self) -> bool:
        """True from the SUBSCRIBED event until the connection drops. Lock-free: pymesos'
        ``connected`` takes the lock a call to a frozen master holds (see the module)."""
        driver = self._driver
        return self._subscribed and driver is not None and _peek(driver, "_stream_id") is not None

    @property
    def framework_id(self) -> str | None:
        driver = self._driver
        if driver is not None and driver.framework_id:
            return str(driver.framework_id)
        return self._framework_id

    @property
    def current_master(self) -> str:
        driver = self._driver
        master = _peek(driver, "_master") if driver is not None else None  # lock-free, as above
        return str(master) if master else self.master

    async def start(self, framework_id: str | None) -> None:
        """Subscribe (as ``framework_id`` when given, so that its tasks are kept)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._framework_id = framework_id or None
        await self._start_driver()

    async def _start_driver(self) -> None:
        self._generation += 1
        driver = _BoundedDriver(
            _Callbacks(self, self._generation),
            self.config.info(self._framework_id),
            self.master,
            use_addict=True,
            implicit_acknowledgements=False,
            principal=self.config.principal or None,
            secret=self.config.secret or None,
            failover=True,
        )
        driver.call_timeout = self.call_timeout_seconds
        self._driver = driver
        log.info("subscribing to %s as %s", self.master, self._framework_id or "a new framework")
        # start() asks the master for its version over blocking HTTP: not on the loop.
        await self._run(driver.start)

    async def next_event(self) -> DriverEvent:
        """The next event of the current driver (events of a driver since stopped are dropped)."""
        while True:
            generation, event = await self._events.get()
            if generation == self._generation:
                return event

    async def halt(self) -> None:
        """Drop the connection (with failover) until ``restart``. pymesos would otherwise keep
        reconnecting, e.g. after an ERROR event."""
        await self._stop_driver(failover=True)

    async def restart(self, framework_id: str | None) -> None:
        """Drop the connection and subscribe again (e.g. as a new framework after removal)."""
        await self._stop_driver(failover=True)
        self._framework_id = framework_id or None
        if not self._stopping:
            await self._start_driver()

    async def stop(self, failover: bool = True) -> None:
        """Disconnect. With failover (the default) Mesos keeps our tasks running for the failover
        timeout; without it the framework is torn down and its tasks killed."""
        self._stopping = True
        await self._stop_driver(failover)
        self._calls.shutdown(wait=False, cancel_futures=True)
        with _adapters_lock:
            _adapters.discard(self)

    async def _stop_driver(self, failover: bool) -> None:
        driver, self._driver = self._driver, None
        self._subscribed = False
        self._generation += 1  # late callbacks of the old driver are dropped
        if driver is None:
            return
        if driver.framework_id:
            self._framework_id = str(driver.framework_id)

        def stop_and_join() -> None:
            driver.stop(failover=failover)
            thread = driver._io_thread
            if thread is not None:
                thread.join(self.JOIN_TIMEOUT_SECONDS)

        await asyncio.get_running_loop().run_in_executor(None, stop_and_join)

    def _post(self, event: DriverEvent, generation: int) -> None:
        """From pymesos' thread: queue the event on the loop (dropped if from an old driver)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def put() -> None:
            if generation == self._generation:
                if isinstance(event, Subscribed):
                    self._subscribed = True
                elif isinstance(event, Disconnected | DriverError):
                    self._subscribed = False
                if isinstance(event, DriverError) and "failed over" in event.message.lower():
                    self.failed_over.set()
                self._events.put_nowait((generation, event))

        # RuntimeError: the loop closed meanwhile (we are shutting down).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(put)

    def _io_thread_died(self, message: str) -> None:
        """From the dying I/O thread (see _InterruptGuard)."""
        driver = self._driver
        if driver is None or not driver.aborted or self._stopping:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        generation = self._generation
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._schedule_restart, generation, message)

    def _schedule_restart(self, generation: int, message: str) -> None:
        if generation != self._generation or self._stopping:
            return
        self._subscribed = False
        self.aborts += 1
        # The scheduler decides how to come back (same framework id, or a new one if removed).
        self._events.put_nowait((generation, DriverAborted(message)))

    # -- calls ----------------------------------------------------------------------------------

    async def _run(self, call: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._calls, call)

    async def _call(self, name: str, call: Callable[[MesosSchedulerDriver], None]) -> None:
        driver = self._driver
        if driver is None or _peek(driver, "_stream_id") is None or not driver.framework_id:
            raise errors.Unavailable(f"cannot {name}: not subscribed to a Mesos master")
        try:
            await self._run(lambda: call(driver))
        except errors.StatefulError:
            raise
        except Exception as error:  # pymesos raises bare RuntimeError / OSError
            raise errors.Unavailable(f"{name} failed: {error}") from error

    def _body(self, driver: MesosSchedulerDriver, call_type: str, **fields: Any) -> Json:
        return {"type": call_type, "framework_id": {"value": driver.framework_id}, **fields}

    async def launch(self, offer_ids: Sequence[str], tasks: list[Json], refuse_seconds: float) -> None:
        """ACCEPT the offers with one LAUNCH of ``tasks`` (what is left over is declined with the
        filter)."""
        ids = [{"value": i} for i in offer_ids]
        await self._call(
            "launch",
            lambda d: d.launchTasks(ids, tasks, filters={"refuse_seconds": refuse_seconds}),
        )

    async def accept(self, offer_ids: Sequence[str], operations: list[Json], refuse_seconds: float) -> None:
        """ACCEPT the offers with these operations, applied in order (RESERVE, CREATE, LAUNCH,
        DESTROY, UNRESERVE); what is left over is declined with the filter."""
        ids = [{"value": i} for i in offer_ids]
        await self._call(
            "accept",
            lambda d: d.acceptOffers(ids, operations, filters={"refuse_seconds": refuse_seconds}),
        )

    async def decline(self, offer_ids: Sequence[str], refuse_seconds: float) -> None:
        ids = [{"value": i} for i in offer_ids]
        await self._call("decline", lambda d: d.declineOffer(ids, filters={"refuse_seconds": refuse_seconds}))

    async def accept_inverse_offers(self, inverse_offer_ids: Sequence[str], refuse_seconds: float) -> None:
        """ACCEPT_INVERSE_OFFERS: we will have freed the agents before their unavailability starts
        (docs/maintenance.md). The filter keeps the allocator from sending new inverse offers for
        those agents meanwhile (it would after each accept while we hold offers there:
        ``HierarchicalAllocatorProcess::generateInverseOffers``); a schedule change drops it."""
        ids = [{"value": i} for i in inverse_offer_ids]
        await self._call(
            "accept inverse offers",
            lambda d: d.acceptInverseOffers(ids, filters={"refuse_seconds": refuse_seconds}),
        )

    async def revive(self) -> None:
        await self._call("revive", lambda d: d.reviveOffers())

    async def suppress(self) -> None:
        await self._call("suppress", lambda d: d.suppressOffers())

    async def kill(self, task_id: str, agent_id: str) -> None:
        # pymesos' killTask leaves out the agent id, which the master needs for unreachable agents.
        kill: Json = {"task_id": {"value": task_id}}
        if agent_id:
            kill["agent_id"] = {"value": agent_id}
        await self._call("kill", lambda d: d._send(self._body(d, "KILL", kill=kill)))

    async def acknowledge(self, status: Json) -> None:
        if "uuid" not in status:
            return  # reconciliation and master-generated updates are not acknowledged
        await self._call("acknowledge", lambda d: d.acknowledgeStatusUpdate(status))

    async def reconcile(self, tasks: Sequence[tuple[str, str]]) -> None:
        """Ask for the state of these (task id, agent id); an empty list is an implicit
        reconciliation (every task the master knows of ours)."""
        entries: list[Json] = []
        for task_id, agent_id in tasks:
            entry: Json = {"task_id": {"value": task_id}}
            if agent_id:
                entry["agent_id"] = {"value": agent_id}
            entries.append(entry)
        await self._call(
            "reconcile", lambda d: d._send(self._body(d, "RECONCILE", reconcile={"tasks": entries}))
        )
