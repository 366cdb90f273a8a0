"""The master: frameworks, offers (allocation with filters), tasks and their status updates
(reliable, re-sent until acknowledged), reconciliation, failover and agent loss.

The HTTP surface is in ``http_master``; this module holds the state machine. Everything runs on one
asyncio loop, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from mesos_stateful.localcluster import maintenance as mnt
from mesos_stateful.localcluster import validation
from mesos_stateful.localcluster.agent import TERMINAL, Agent, Executor, new_uuid
from mesos_stateful.localcluster.recordio import EventStream, Json
from mesos_stateful.localcluster.resources import (
    Key,
    ResourceError,
    Resources,
    allocation_roles,
    parse_resource,
)
from mesos_stateful.localcluster.settings import LocalClusterSettings

log = logging.getLogger(__name__)

VERSION = "1.11.0"


class FrameworkRemoved(Exception):
    """SUBSCRIBE of a removed framework: Mesos answers with an ERROR event on the stream."""


class SubscriptionRefused(FrameworkRemoved):
    """SUBSCRIBE refused after the call was validated (``Master::subscribe``'s
    ``refuseSubscription``: an invalid FrameworkInfo, ``validateUpdate``): an ERROR event carrying
    the message, then the stream closes."""


class CallError(Exception):
    """A call rejected with an HTTP status, as the Mesos master does."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Task:
    task_id: str
    framework_id: str
    agent_id: str
    executor_id: str
    info: Json
    resources: Resources
    state: str = "TASK_STAGING"
    status: Json | None = None
    holds: bool = True  # its resources are allocated until it reaches a terminal state
    pending: deque[Json] = field(default_factory=deque)  # reliable updates; the head is in flight
    last_sent: float = 0.0
    # One TaskStatus per state change, oldest first (/master/state and GET_TASKS); kept by
    # assigning ``status`` (see ``record_status``).
    statuses: list[Json] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status is not None:
            record_status(self.statuses, self.status)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "status" and value is not None and "statuses" in self.__dict__:
            record_status(self.statuses, value)


def record_status(statuses: list[Json], status: Json) -> None:
    """``Master::updateTask``: a status in the same state as the last one replaces it, and its
    ``data`` is dropped (MESOS-1746), so a task keeps one status per state it went through."""
    if statuses and statuses[-1].get("state") == status.get("state"):
        statuses.pop()
    statuses.append({k: v for k, v in status.items() if k != "data"})


@dataclass
class Offer:
    id: str
    framework_id: str
    agent_id: str
    resources: Resources
    role: str = "*"  # allocation_info.role


@dataclass
class Filter:
    expires: float
    resources: Resources


@dataclass
class InverseOffer:
    """``mesos.v1.InverseOffer`` for maintenance: a whole agent (no resources), its unavailability."""

    id: str
    framework_id: str
    agent_id: str
    unavailability: Json


@dataclass
class Framework:
    id: str
    info: Json
    stream: EventStream | None = None
    suppressed: bool = False
    filters: dict[str, list[Filter]] = field(default_factory=dict)
    # agent id -> monotonic time until which no inverse offer for that agent is sent (the allocator's
    # ``inverseOfferFilters``, set by ACCEPT/DECLINE_INVERSE_OFFERS ``filters.refuse_seconds``)
    inverse_filters: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    completed: deque[Task] = field(default_factory=lambda: deque(maxlen=1000))
    failover_timer: asyncio.TimerHandle | None = None
    registered_time: float = field(default_factory=time.time)
    reregistered_time: float | None = None  # its last re-subscription (/master/state)
    unregistered_time: float = 0.0  # when it was removed (``Master::removeFramework``)
    recovered: bool = False  # known from an agent only, not subscribed since (``recoverFramework``)

    @property
    def connected(self) -> bool:
        return self.stream is not None

    @property
    def partition_aware(self) -> bool:
        return any(c.get("type") == "PARTITION_AWARE" for c in self.info.get("capabilities", []))

    def has(self, capability: str) -> bool:
        return any(c.get("type") == capability for c in self.info.get("capabilities", []))

    @property
    def roles(self) -> list[str]:
        """``roles`` (MULTI_ROLE frameworks) or the old single ``role`` (default ``*``)."""
        roles = self.info.get("roles") or []
        return [str(r) for r in roles] if roles else [str(self.info.get("role") or "*")]

    @property
    def role(self) -> str:
        """The role offers are allocated to (the first of ``roles``)."""
        return self.roles[0]

    @property
    def principal(self) -> str | None:
        principal = self.info.get("principal")
        return None if principal is None else str(principal)

    @property
    def refinement(self) -> bool:
        """RESERVATION_REFINEMENT: resources in the post-refinement format (``reservations``)."""
        return self.has("RESERVATION_REFINEMENT")

    def send(self, event: Json) -> None:
        if self.stream is not None:
            self.stream.send(event)


class OperationError(Exception):
    """An offer operation the master drops, with the reason Mesos gives."""


DROPPED_KEPT = 100  # dropped operations kept for /master/state ("dropped_operations")


def _validate_volume(key: Key, on_agent: str) -> None:
    """``validatePersistentVolume``: CREATE and DESTROY take persistent volumes only."""
    if key.disk is None:
        raise OperationError(f"Not a persistent volume: Resource {key} does not have DiskInfo{on_agent}")
    if key.disk.mode == "RO":
        raise OperationError(f"Not a persistent volume: Read-only persistent volume not supported{on_agent}")


def validate_call(call: Json) -> None:
    """``validation::scheduler::call::validate`` (src/master/validation.cpp, ported in
    :mod:`~mesos_stateful.localcluster.validation`) for a call other than SUBSCRIBE: ``framework_id``,
    the body its type requires, the acknowledged uuid. Raises ``CallError(400, "Failed to validate
    scheduler::Call: ...")`` as ``Master::Http::scheduler`` answers."""
    error = validation.validate_call(call)
    if error is not None:
        raise CallError(400, f"Failed to validate scheduler::Call: {error}")


def validate_framework_info(info: Json) -> str | None:
    """``validation::framework::validate`` (role(s) against MULTI_ROLE, duplicate and invalid roles,
    the framework id, ``failover_timeout``), the part of ``Master::validateFramework`` that applies
    here; ``Master::subscribe`` answers an error with an ERROR event and closes the stream."""
    return validation.validate_framework(info)


def validate_framework_update(old: Json, new: Json, preserve: bool = True) -> str | None:
    """``validation::framework::validateUpdate``: the principal, user and checkpoint cannot change.
    SUBSCRIBE of a known framework first applies ``preserveImmutableFields`` (``preserve``: ``user``
    and ``checkpoint`` keep their old values, ``new`` is updated in place), so there only a new
    principal is an error; UPDATE_FRAMEWORK does not."""
    if preserve:
        for key in ("user", "checkpoint"):
            if key in old:
                new[key] = old[key]
            else:
                new.pop(key, None)
    if old.get("principal") != new.get("principal"):
        return "Changing framework's principal is not allowed."
    if new.get("user") != old.get("user"):
        return (
            "Updating 'FrameworkInfo.user' is unsupported; attempted to update from "
            f"'{old.get('user')}' to '{new.get('user')}'"
        )
    if bool(new.get("checkpoint")) != bool(old.get("checkpoint")):
        return (
            "Updating 'FrameworkInfo.checkpoint' is unsupported; attempted to update from "
            f"'{str(bool(old.get('checkpoint'))).lower()}' to '{str(bool(new.get('checkpoint'))).lower()}'"
        )
    return None


def validate_suppressed_roles(info: Json, suppressed: Any) -> str | None:
    """``validation::framework::validateSuppressedRoles``."""
    invalid = sorted(set(str(r) for r in suppressed or []) - set(validation.framework_roles(info)))
    if invalid:
        return f"Suppressed roles {{ {', '.join(invalid)} }} are not contained in the set of roles"
    return None


class Master:
    def __init__(self, settings: LocalClusterSettings) -> None:
        self.settings = settings
        self.id = str(uuid.uuid4())
        self.hostname = settings.listen.rsplit(":", 1)[0]
        self.port = 0
        self.agents: dict[str, Agent] = {}
        self.frameworks: dict[str, Framework] = {}
        self.removed_frameworks: set[str] = set()
        self.offers: dict[str, Offer] = {}
        self.inverse_offers: dict[str, InverseOffer] = {}
        self.maintenance = mnt.Maintenance()
        self.dropped: deque[Json] = deque(maxlen=DROPPED_KEPT)
        # Removed frameworks, shown in full (Mesos' --max_completed_frameworks, default 50).
        self.completed_frameworks: deque[Framework] = deque(maxlen=50)
        # agent id -> (registered time, last re-registration time or None), seconds since the epoch
        self.agent_times: dict[str, tuple[float, float | None]] = {}
        # agent id -> tasks the master transitioned when it marked the agent unreachable
        self.unreachable_tasks: dict[str, dict[tuple[str, str], Task]] = {}
        self._agent_seq = 0
        self._offer_seq = 0
        self._framework_seq = 0
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.start_time = time.time()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for fw in self.frameworks.values():
            if fw.failover_timer is not None:
                fw.failover_timer.cancel()
            if fw.stream is not None:
                fw.stream.close()
                fw.stream = None
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the wakeup fires, and stop() would wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.allocation_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                self._retry_updates()
                self._allocate()
            except Exception:
                log.exception("master loop failed")

    def wake(self) -> None:
        self._wakeup.set()

    # --- agents ----------------------------------------------------------------------------------

    def register_agent(self, agent: Agent) -> None:
        """A new agent gets a new id; one that recovered its id from its work dir re-registers with
        it, whether this master knows it (it was killed and restarted) or not (a master restart)."""
        if self._refuse_down(agent):
            return
        old = self.agents.get(agent.id) if agent.id else None
        if agent.id:
            if old is not None and old is not agent and old.alive:
                raise ValueError(f"agent {agent.id} is already registered")
            if old is not None and old.state == "UNREACHABLE":
                self.agent_reregistered(agent)
                return
            log.info("agent %s re-registered at %s with %s", agent.id, agent.endpoint, agent.checkpointed)
        else:
            agent.id = f"{self.id}-S{self._agent_seq}"
            self._agent_seq += 1
            log.info("agent %s registered at %s", agent.id, agent.endpoint)
        agent.state = "ACTIVE"
        self.agents[agent.id] = agent
        first = self.agent_times.get(agent.id)
        self.agent_times[agent.id] = (first[0], time.time()) if first else (time.time(), None)
        agent.checkpoint()
        if old is not None and old is not agent:
            self._reconcile_known_agent(agent)
        self._add_agent_tasks(agent)
        self._observe(agent)
        self.wake()

    def recovering_agent(self, agent: Agent) -> None:
        """An agent of the previous run (its id checkpointed, as in the master's registry) that is
        recovering its executors and has not re-registered yet (Mesos' ``slaves.recovered``): not
        offered, not pinged; reconciliation does not answer for its tasks (they are not known yet).
        ``register_agent`` follows when its recovery is over."""
        if self.machine_mode(agent) == mnt.DOWN:
            return  # refused when it registers (``register_agent``)
        log.info("agent %s at %s is recovering", agent.id, agent.endpoint)
        agent.state = "RECOVERED"
        self.agents[agent.id] = agent

    def _add_agent_tasks(self, agent: Agent) -> None:
        """``Master::__reregisterSlave`` after a master failover: the tasks the agent reports are
        added with the state it knows (no update is sent: the agent re-sends its unacknowledged
        ones); a framework the master does not know yet is recovered from the agent's FrameworkInfo
        (``Master::recoverFramework``: inactive until it re-subscribes, no failover timer);
        executors of frameworks removed meanwhile are shut down."""
        for ex, tid in agent.reported_tasks():
            fid = ex.framework_id
            if fid in self.removed_frameworks:
                continue
            fw = self.frameworks.get(fid)
            if fw is None:
                info = dict(ex.framework_info)
                info["id"] = {"value": fid}
                fw = Framework(id=fid, info=info, recovered=True)
                self.frameworks[fid] = fw
                log.info("framework %s (%s) recovered from agent %s", fid, info.get("name"), agent.id)
            if tid in fw.tasks:
                continue
            info = ex.task_infos.get(tid) or {"task_id": {"value": tid}}
            try:
                resources = Resources.from_json(info.get("resources"))
            except ResourceError:
                resources = Resources()
            state = ex.tasks[tid]
            fw.tasks[tid] = Task(
                task_id=tid,
                framework_id=fid,
                agent_id=agent.id,
                executor_id=ex.executor_id,
                info=info,
                resources=resources,
                state=state,
                status=ex.statuses.get(tid),
                holds=state not in TERMINAL,
            )
        for fid in {ex.framework_id for ex in agent.executors.values() if ex.state != "TERMINATED"}:
            if fid in self.removed_frameworks:
                log.info("Shutting down framework %s at re-registered agent %s", fid, agent.id)
                self._spawn(agent.shutdown_framework(fid))

    def _reconcile_known_agent(self, agent: Agent) -> None:
        """``Master::reconcileKnownSlave``: a registered agent comes back (restarted before the
        master marked it unreachable). Tasks the master knows there but the agent does not are
        reconciled by the agent: TASK_DROPPED (PARTITION_AWARE) / TASK_LOST, SOURCE_AGENT,
        REASON_RECONCILIATION, reliable (``Slave::reregistered``)."""
        known = agent.task_states()
        for fw in list(self.frameworks.values()):
            for task in [t for t in fw.tasks.values() if t.agent_id == agent.id]:
                if task.task_id in known or task.state in TERMINAL:
                    continue
                status = self._status(
                    task.task_id,
                    agent.id,
                    "TASK_DROPPED" if fw.partition_aware else "TASK_LOST",
                    "REASON_RECONCILIATION",
                    "Reconciliation: task unknown to the agent",
                    task.executor_id,
                )
                status.update(source="SOURCE_AGENT", uuid=new_uuid())
                self.status_update(agent, fw.id, status)

    # --- agent health: pings, disconnection, unreachability, re-registration ------------------------

    def _observe(self, agent: Agent) -> None:
        self._spawn(self._observer(agent))

    def _observed(self, agent: Agent) -> bool:
        return self.agents.get(agent.id) is agent and agent.state in ("ACTIVE", "DISCONNECTED")

    async def _observer(self, agent: Agent) -> None:
        """Mesos' ``SlaveObserver``: a ping every ``agent_ping_timeout``; a ping not answered before
        the next one is a timeout; ``max_agent_ping_timeouts`` in a row mark the agent unreachable.
        A pong comes back at once while the link works, or when a cut link heals in time (the ping
        waited in the connection). A silent agent is so noticed between timeout x max and
        timeout x (max + 1) after it went silent."""
        loop = asyncio.get_running_loop()
        timeouts = 0
        while self._observed(agent):
            pinged = loop.time()
            await asyncio.sleep(self.settings.agent_ping_timeout)
            if not self._observed(agent):
                return
            silent = agent.silent_since
            if silent is None or silent > pinged:
                timeouts = 0
                continue
            timeouts += 1
            if timeouts >= self.settings.max_agent_ping_timeouts:
                self.mark_unreachable(agent, "health check timed out")
                return

    def to_agent(self, agent: Agent, message: Any) -> None:
        """Send a message (a callable) to an agent over its link: held while the link is cut (and
        dropped if the master gives up on it), lost if the agent is dead or unreachable."""
        if not agent.alive or agent.state != "ACTIVE" or self.agents.get(agent.id) is not agent:
            log.info("agent %s is %s: message not delivered", agent.id, agent.state.lower())
            return
        if agent.partitioned:
            agent.to_agent.append(message)
        else:
            message()

    def agent_exited(self, agent: Agent) -> None:
        """``Master::exited``: the agent process died, its connection closed. The agent is
        disconnected and deactivated (offers rescinded); tasks of frameworks that do not checkpoint
        are lost now; the others wait for the agent to come back or for the ping timeouts."""
        if agent.state != "ACTIVE":
            return
        log.info("agent %s (%s) disconnected", agent.id, agent.hostname)
        agent.state = "DISCONNECTED"
        self._rescind_agent_offers(agent.id)
        self._remove_inverse_offers(lambda io: io.agent_id == agent.id, rescind=True)
        for fw in self.frameworks.values():
            if fw.info.get("checkpoint"):
                continue
            for task in [t for t in fw.tasks.values() if t.agent_id == agent.id]:
                if task.state in TERMINAL:
                    continue
                self._master_update(
                    fw, task, "TASK_LOST", "REASON_AGENT_DISCONNECTED", f"Agent {agent.hostname} disconnected"
                )
                task.holds = False
                task.pending.clear()
                self._complete(fw, task)
        self.wake()

    def mark_unreachable(self, agent: Agent, message: str) -> None:
        """``Master::markUnreachable`` + ``__removeSlave``: TASK_UNREACHABLE (PARTITION_AWARE) or
        TASK_LOST, REASON_AGENT_REMOVED, SOURCE_MASTER, ``unreachable_time``, the message; offers
        rescinded; FAILURE (agent lost) to every framework; the link is torn down."""
        log.info("Marking agent %s (%s) unreachable: %s", agent.id, agent.hostname, message)
        agent.state = "UNREACHABLE"
        agent.unreachable_time = time.time()
        agent.to_agent.clear()
        agent.link_given_up()
        unreachable_time = {"nanoseconds": int(agent.unreachable_time * 1e9)}
        self._rescind_agent_offers(agent.id)
        self._remove_inverse_offers(lambda io: io.agent_id == agent.id, rescind=True)
        self.maintenance.forget_agent(agent.hostname, agent.ip, agent.id)
        held = self.unreachable_tasks.setdefault(agent.id, {})
        for fw in self.frameworks.values():
            for task in [t for t in fw.tasks.values() if t.agent_id == agent.id]:
                if task.state in TERMINAL:
                    continue
                state = "TASK_UNREACHABLE" if fw.partition_aware else "TASK_LOST"
                self._master_update(fw, task, state, "REASON_AGENT_REMOVED", message, unreachable_time)
                task.holds = False
                held[(fw.id, task.task_id)] = task
                if not fw.partition_aware:
                    # TASK_LOST is terminal: the task is completed (a RECONCILE answers TASK_LOST);
                    # it comes back if the agent re-registers with it (Mesos >= 1.5).
                    self._complete(fw, task)
            fw.send({"type": "FAILURE", "failure": {"agent_id": {"value": agent.id}}})
        self.wake()

    def agent_healed(self, agent: Agent) -> None:
        """A cut link works again. If the master had not marked the agent unreachable yet nothing
        happened: what waited on the link is delivered (kills, launches to the agent; updates to
        the master). Otherwise the agent re-registers, then re-sends its unacknowledged updates."""
        if agent.state == "REMOVED":
            # Removed while cut off (START_MAINTENANCE): it re-registers, and is refused and shut
            # down while its machine is DOWN (``Master::reregisterSlave``).
            agent.heal(False)
            if not self._refuse_down(agent):
                agent.state = "ACTIVE"
                self.register_agent(agent)
            return
        if agent.state == "UNREACHABLE" and self._refuse_down(agent):
            agent.heal(False)  # it stays unreachable for the master, its tasks too
            return
        link_kept = agent.state == "ACTIVE"
        to_master, to_agent = agent.heal(link_kept)
        if link_kept:
            log.info("agent %s: link healed before the master noticed", agent.id)
            for message in to_agent:
                message()
        else:
            self.agent_reregistered(agent)
        for message in to_master:
            message()
        self.wake()

    def agent_reregistered(self, agent: Agent) -> None:
        """``Master::__reregisterSlave`` of an unreachable agent: every task it reports is added back
        (PARTITION_AWARE or not: Mesos >= 1.5 does not kill non-partition-aware tasks any more,
        MESOS-7215) with an update in the state the agent reports, SOURCE_MASTER,
        REASON_AGENT_REREGISTERED, "Unreachable agent re-reregistered"; tasks it does not report are
        forgotten (a RECONCILE then answers TASK_GONE / TASK_LOST). Frameworks removed meanwhile
        are shut down on the agent."""
        log.info("agent %s re-registered after being unreachable", agent.id)
        agent.state = "ACTIVE"
        agent.unreachable_time = None
        self.agents[agent.id] = agent
        first = self.agent_times.get(agent.id)
        self.agent_times[agent.id] = (first[0] if first else time.time(), time.time())
        agent.checkpoint()
        held = self.unreachable_tasks.pop(agent.id, {})
        reported = {
            (ex.framework_id, tid): st
            for ex in agent.executors.values()
            if ex.state != "TERMINATED"
            for tid, st in ex.tasks.items()
        }
        for (fid, tid), task in held.items():
            fw = self.frameworks.get(fid)
            latest = reported.get((fid, tid))
            if fw is None or latest is None:
                if fw is not None and fw.tasks.get(tid) is task:
                    self._complete(fw, task)
                continue
            if fw.tasks.get(tid) is not task:
                with contextlib.suppress(ValueError):
                    fw.completed.remove(task)
                fw.tasks[tid] = task
            task.holds = latest not in TERMINAL
            self._master_update(
                fw, task, latest, "REASON_AGENT_REREGISTERED", "Unreachable agent re-reregistered"
            )
        for fid in {ex.framework_id for ex in agent.executors.values() if ex.state != "TERMINATED"}:
            if fid not in self.frameworks:
                log.info("Shutting down framework %s at re-registered agent %s", fid, agent.id)
                self._spawn(agent.shutdown_framework(fid))
        self._observe(agent)
        self.wake()

    def find_agent(self, key: str) -> Agent | None:
        if key in self.agents:
            return self.agents[key]
        matches = [a for a in self.agents.values() if a.hostname == key and a.alive]
        return matches[0] if matches else None

    def agent_tasks(self, agent_id: str) -> list[Task]:
        return [t for fw in self.frameworks.values() for t in fw.tasks.values() if t.agent_id == agent_id]

    def used(self, agent: Agent) -> Resources:
        """Resources of live executors and of tasks not yet terminal."""
        used = agent.used()
        for task in self.agent_tasks(agent.id):
            if task.holds:
                used = used + task.resources
        return used

    def available(self, agent: Agent) -> Resources:
        return agent.total - self.used(agent) - self.offered(agent)

    def offered(self, agent: Agent) -> Resources:
        out = Resources()
        for offer in self.offers.values():
            if offer.agent_id == agent.id:
                out = out + offer.resources
        return out

    # --- frameworks ------------------------------------------------------------------------------

    def subscribe(self, call: Json) -> tuple[Framework, EventStream, Json]:
        """Register or re-register a framework; returns its new stream and the SUBSCRIBED event."""
        sub = call.get("subscribe")
        if not isinstance(sub, dict) or not isinstance(sub.get("framework_info"), dict):
            raise CallError(400, "Failed to validate scheduler::Call: Expecting 'subscribe' to be present")
        info = dict(sub["framework_info"])
        if not info.get("user") or not info.get("name"):
            raise CallError(400, "'framework_info' needs 'user' and 'name'")
        call_id = (call.get("framework_id") or {}).get("value")
        info_id = (info.get("id") or {}).get("value")
        if call_id != info_id:
            raise CallError(
                400,
                "Failed to validate scheduler::Call: "
                "'framework_id' differs from 'subscribe.framework_info.id'",
            )
        error = validate_framework_info(info) or validate_suppressed_roles(info, sub.get("suppressed_roles"))
        if error is not None:
            log.info("Refusing subscription of framework '%s': %s", info.get("name"), error)
            raise SubscriptionRefused(error)
        if info_id in self.removed_frameworks:
            raise FrameworkRemoved("Framework has been removed")
        if info_id and info_id in self.frameworks:
            fw = self.frameworks[info_id]
            error = validate_framework_update(fw.info, info)
            if error is not None:
                log.info("Refusing subscription of framework '%s': %s", info.get("name"), error)
                raise SubscriptionRefused(error)
            fw.info = info
            fw.reregistered_time = time.time()
            fw.recovered = False
            if fw.stream is not None:
                fw.stream.send({"type": "ERROR", "error": {"message": "Framework failed over"}})
                fw.stream.close()
            if fw.failover_timer is not None:
                fw.failover_timer.cancel()
                fw.failover_timer = None
            # Mesos removes a failed-over framework's offers (Master::failoverFramework): the old
            # stream's offers are void, their resources are offered again to the new one.
            self._rescind_framework_offers(fw, send=False)
            self._remove_inverse_offers(lambda io: io.framework_id == fw.id, rescind=False)
            log.info("framework %s re-subscribed", fw.id)
        else:
            fid = info_id or f"{self.id}-{self._framework_seq:04d}"
            self._framework_seq += 1
            info["id"] = {"value": fid}
            fw = Framework(id=fid, info=info)
            self.frameworks[fid] = fw
            log.info("framework %s (%s) subscribed", fid, info.get("name"))
        stream = EventStream(str(uuid.uuid4()))
        fw.stream = stream
        # ``subscribe.suppressed_roles``: the allocator offers nothing to those roles.
        fw.suppressed = fw.role in (sub.get("suppressed_roles") or [])
        subscribed = {
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": {"value": fw.id},
                "heartbeat_interval_seconds": self.settings.heartbeat_interval,
                "master_info": self.master_info(),
            },
        }
        # Updates not yet acknowledged are re-sent on the new stream.
        now = time.monotonic()
        for task in list(fw.tasks.values()):
            if task.pending:
                fw.send({"type": "UPDATE", "update": {"status": task.pending[0]}})
                task.last_sent = now
        self.wake()
        return fw, stream, subscribed

    def disconnected(self, fw: Framework, stream: EventStream) -> None:
        if fw.stream is not stream:
            return
        fw.stream = None
        self._rescind_framework_offers(fw, send=False)
        self._remove_inverse_offers(lambda io: io.framework_id == fw.id, rescind=False)
        timeout = float(fw.info.get("failover_timeout", 0.0))
        log.info("framework %s disconnected; failover timeout %.1fs", fw.id, timeout)
        fw.failover_timer = asyncio.get_running_loop().call_later(timeout, self._failover_expired, fw.id)

    def _failover_expired(self, fid: str) -> None:
        fw = self.frameworks.get(fid)
        if fw is not None and not fw.connected:
            log.info("framework %s did not fail over in time: removing it", fid)
            self.remove_framework(fw)

    def remove_framework(self, fw: Framework) -> None:
        if fw.failover_timer is not None:
            fw.failover_timer.cancel()
        self._rescind_framework_offers(fw, send=False)
        self._remove_inverse_offers(lambda io: io.framework_id == fw.id, rescind=False)
        for agent in self.agents.values():
            self.to_agent(agent, lambda agent=agent: self._spawn(agent.shutdown_framework(fw.id)))
        if fw.stream is not None:
            fw.stream.close()
            fw.stream = None
        for task in fw.tasks.values():
            task.holds = False
        del self.frameworks[fw.id]
        self.removed_frameworks.add(fw.id)
        fw.unregistered_time = time.time()
        self.completed_frameworks.append(fw)
        self.wake()

    def check_framework(self, call: Json, stream_id: str | None) -> Framework:
        """A non-SUBSCRIBE call: validated first (``validate_call``), then its framework and stream."""
        validate_call(call)
        fid = (call.get("framework_id") or {}).get("value")
        if not fid:
            raise CallError(400, "Expecting 'framework_id' to be present")
        fw = self.frameworks.get(fid)
        if fw is None:
            raise CallError(400, f"Framework {fid} cannot be found")
        if fw.stream is None:
            raise CallError(403, "Framework is not subscribed")
        if not stream_id:
            raise CallError(400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header")
        if stream_id != fw.stream.stream_id:
            raise CallError(
                400,
                f"The stream ID '{stream_id}' included in this request didn't match the stream ID currently "
                f"associated with framework ID {fid}",
            )
        return fw

    def master_info(self) -> Json:
        """``mesos.v1.MasterInfo`` (SUBSCRIBED, GET_MASTER): ``ip`` is the IPv4 address packed as
        Mesos does (``s_addr``, network byte order read as a host uint32), ``pid`` its libprocess
        pid (``master@<ip>:<port>``); see :func:`~mesos_stateful.localcluster.views.master_info`."""
        from mesos_stateful.localcluster.views import master_info

        return master_info(self)

    # --- calls -----------------------------------------------------------------------------------

    def handle(self, fw: Framework, call: Json) -> int:
        """Process a validated call; returns the HTTP status to answer: 202 Accepted, 200 OK for
        UPDATE_FRAMEWORK (``Master::Http::scheduler``). Raises ``CallError``."""
        kind = call["type"]
        if kind == "UNKNOWN":
            log.warning("Received 'UNKNOWN' call")
            raise CallError(501, "")  # NotImplemented
        body = call.get(kind.lower()) or {}
        if not isinstance(body, dict):
            raise CallError(400, f"Expecting '{kind.lower()}' to be an object")
        handler = getattr(self, f"_call_{kind.lower()}", None)
        if handler is None:
            raise CallError(400, f"Unsupported call type {kind}")
        status = handler(fw, body)
        return status if isinstance(status, int) else 202

    def _call_update_framework(self, fw: Framework, body: Json) -> int:
        """``Master::updateFramework``: the FrameworkInfo is validated as at SUBSCRIBE, may not change
        principal, user or checkpoint, and replaces the framework's; offers to roles it no longer
        has are rescinded; ``suppressed_roles`` replace the suppressed ones. 200 OK."""
        info = dict(body.get("framework_info") or {})
        error = validate_framework_info(info)
        if error is not None:
            raise CallError(400, f"Supplied FrameworkInfo is not valid: {error}")
        error = validate_framework_update(fw.info, info, preserve=False)
        if error is not None:
            raise CallError(400, f"FrameworkInfo update is not valid: {error}")
        error = validate_suppressed_roles(info, body.get("suppressed_roles"))
        if error is not None:
            raise CallError(400, f"'UpdateFramework' call is not valid: {error}")
        log.info("Updating framework %s with roles %s suppressed", fw.id, body.get("suppressed_roles") or [])
        fw.info = info
        for offer in [o for o in self.offers.values() if o.framework_id == fw.id]:
            if offer.role not in fw.roles:
                self._rescind(offer)
        fw.suppressed = fw.role in (body.get("suppressed_roles") or [])
        self.wake()
        return 200

    def _call_teardown(self, fw: Framework, body: Json) -> None:
        log.info("framework %s tears down", fw.id)
        self.remove_framework(fw)

    def _call_revive(self, fw: Framework, body: Json) -> None:
        fw.filters.clear()
        fw.suppressed = False
        self.wake()

    def _call_suppress(self, fw: Framework, body: Json) -> None:
        fw.suppressed = True

    def _call_decline(self, fw: Framework, body: Json) -> None:
        refuse = self._refuse_seconds(body)
        for oid in self._offer_ids(body):
            offer = self.offers.get(oid)
            if offer is None or offer.framework_id != fw.id:
                log.warning("framework %s declined unknown offer %s", fw.id, oid)
                continue
            del self.offers[oid]
            self._add_filter(fw, offer.agent_id, offer.resources, refuse)
        self.wake()

    def _call_accept(self, fw: Framework, body: Json) -> None:
        oids = self._offer_ids(body)
        operations = body.get("operations") or []
        if not isinstance(operations, list):
            raise CallError(400, "Expecting 'accept.operations' to be a list")
        error = None
        offers: list[Offer] = []
        if not oids:
            error = "No offers specified"
        for oid in oids:
            offer = self.offers.get(oid)
            if offer is None:
                error = error or f"Offer {oid} is no longer valid"
            elif offer.framework_id != fw.id:
                error = error or f"Offer {oid} belongs to framework {offer.framework_id}, not {fw.id}"
            else:
                offers.append(offer)
        if len({o.agent_id for o in offers}) > 1:
            error = error or "Aggregated offers must belong to one single agent"
        for offer in offers:
            self.offers.pop(offer.id, None)
        if error is not None:
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            for task in self._launch_tasks(operations):
                self._master_status(
                    fw, task, state, "REASON_INVALID_OFFERS", f"Task launched with invalid offers: {error}"
                )
            for offer in offers:
                self._add_filter(fw, offer.agent_id, offer.resources, self._refuse_seconds(body))
            self.wake()
            return
        agent = self.agents[offers[0].agent_id]
        remaining = Resources()
        for offer in offers:
            remaining = remaining + offer.resources
        role = fw.role
        for op in operations:
            kind = op.get("type") if isinstance(op, dict) else None
            if kind == "LAUNCH":
                for task in (op.get("launch") or {}).get("task_infos", []):
                    remaining = self._launch(fw, agent, task, remaining, role)
            elif kind in ("RESERVE", "UNRESERVE", "CREATE", "DESTROY"):
                assert isinstance(op, dict)
                try:
                    remaining = self._operation(fw, agent, op, kind, remaining, role)
                except OperationError as error:
                    self._drop(fw, agent, op, str(error))
            elif kind == "LAUNCH_GROUP":
                group = (op.get("launch_group") or {}).get("task_group") or {}
                for task in group.get("tasks", []):
                    self._master_status(
                        fw,
                        task,
                        "TASK_ERROR",
                        "REASON_TASK_GROUP_INVALID",
                        "LAUNCH_GROUP is not supported by the local cluster",
                    )
            elif isinstance(op, dict):
                self._drop(fw, agent, op, f"Operation {kind} is not supported by the local cluster")
        if not remaining.empty():
            self._add_filter(fw, agent.id, remaining, self._refuse_seconds(body))
        self.wake()

    @staticmethod
    def _launch_tasks(operations: list[Json]) -> list[Json]:
        tasks: list[Json] = []
        for op in operations:
            if op.get("type") == "LAUNCH":
                tasks += (op.get("launch") or {}).get("task_infos", [])
            elif op.get("type") == "LAUNCH_GROUP":
                tasks += ((op.get("launch_group") or {}).get("task_group") or {}).get("tasks", [])
        return tasks

    # --- offer operations (RESERVE, UNRESERVE, CREATE, DESTROY) --------------------------------------

    def _drop(self, fw: Framework, agent: Agent, op: Json, reason: str) -> None:
        kind = str(op.get("type"))
        log.warning("Dropping %s operation from framework %s: %s", kind, fw.id, reason)
        self.dropped.append(
            {
                "type": kind,
                "framework_id": fw.id,
                "agent_id": agent.id,
                "reason": reason,
                "time": time.time(),
                "operation": op,
            }
        )

    @staticmethod
    def _agent_name(agent: Agent) -> str:
        return f"{agent.id} at slave(1)@{agent.endpoint} ({agent.hostname})"

    def _operation(
        self, fw: Framework, agent: Agent, op: Json, kind: str, remaining: Resources, role: str
    ) -> Resources:
        """Validate one operation as the Mesos master does, apply it to the offered resources and
        to the agent; returns what is left of the offer. Raises OperationError (the op is dropped)."""
        if op.get("id") is not None:
            raise OperationError(
                f"Operation requested feedback, but agent {agent.id} does not have the required "
                "RESOURCE_PROVIDER capability"
            )
        field = "resources" if kind in ("RESERVE", "UNRESERVE") else "volumes"
        body = op.get(kind.lower())
        items = body.get(field) if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise OperationError(
                f"Operation attempted with invalid resources: Expecting '{kind.lower()}.{field}'"
            )
        if kind == "RESERVE" and isinstance(body, dict) and body.get("source"):
            raise OperationError("Reservation updates are not yet implemented for the scheduler API.")
        try:
            keyed = [parse_resource(item) for item in items]
            resources = Resources.from_json(items)
        except ResourceError as error:
            raise OperationError(
                f"Operation attempted with invalid resources: Invalid resources: {error}"
            ) from None
        # The master injects the offer's allocation info where the framework left it out; a resource
        # allocated to another role is not one of the offered resources.
        allocated = allocation_roles(items) | {role}
        on_agent = f"; on agent {self._agent_name(agent)}"
        keys = [k for k, _v in keyed]
        if kind == "RESERVE":
            for key in keys:
                self._validate_reserve(fw, key, allocated, on_agent)
            if len(allocated) > 1:
                raise OperationError(
                    "Invalid reservation resources: The resources have multiple allocation roles" + on_agent
                )
            consumed, converted = resources.pop_reservation(), resources
        elif kind == "UNRESERVE":
            for key in keys:
                if not key.dynamic:
                    raise OperationError(f"Resource {key} is not dynamically reserved{on_agent}")
                if key.disk is not None:
                    raise OperationError(
                        f"A dynamically reserved persistent volume {key} cannot be unreserved directly. "
                        "Please destroy the persistent volume first then unreserve the resource" + on_agent
                    )
            consumed, converted = resources, resources.pop_reservation()
        elif kind == "CREATE":
            for key in keys:
                _validate_volume(key, on_agent)
            existing = {
                (k.role, k.disk.persistence_id) for k, _v in agent.checkpointed.volumes().items() if k.disk
            }
            for key in keys:
                assert key.disk is not None
                if (key.role, key.disk.persistence_id) in existing:
                    raise OperationError(
                        f"Persistence ID '{key.disk.persistence_id}' is not unique{on_agent}"
                    )
                if fw.principal is not None:
                    if key.disk.principal is None:
                        raise OperationError(
                            f"Create volume operation attempted by principal '{fw.principal}', but there "
                            "is a volume in the operation with no principal set in 'disk.persistence'"
                            + on_agent
                        )
                    if key.disk.principal != fw.principal:
                        raise OperationError(
                            f"Create volume operation attempted by authenticated principal '{fw.principal}', "
                            "which does not match a volume in the operation with principal "
                            f"'{key.disk.principal}' set in 'disk.persistence'" + on_agent
                        )
            consumed, converted = resources.strip_volumes(), resources
        else:  # DESTROY
            for key in keys:
                _validate_volume(key, on_agent)
            if not agent.checkpointed.contains(resources):
                raise OperationError(f"Persistent volumes not found{on_agent}")
            if self.used(agent).contains_any(resources):
                raise OperationError(f"Persistent volumes in use{on_agent}")
            consumed, converted = resources, resources.strip_volumes()
        if len(allocated) > 1 or not remaining.contains(consumed):
            raise OperationError(f"{remaining} does not contain {consumed}")
        log.info(
            "Applying %s operation for %s from framework %s to agent %s", kind, resources, fw.id, agent.id
        )
        agent.convert(consumed, converted)
        if kind == "DESTROY":
            for offer in [o for o in self.offers.values() if o.agent_id == agent.id]:
                if offer.resources.contains_any(resources):
                    self._rescind(offer)
        return remaining - consumed + converted

    def _validate_reserve(self, fw: Framework, key: Key, allocated: set[str], on_agent: str) -> None:
        if not key.dynamic:
            raise OperationError(f"Resource {key} is not dynamically reserved{on_agent}")
        reservation = key.reservations[-1]
        if fw.principal is not None:
            if reservation.principal is None:
                raise OperationError(
                    f"A reserve operation was attempted by principal '{fw.principal}', but there is a "
                    "reserved resource in the request with no principal set" + on_agent
                )
            if reservation.principal != fw.principal:
                raise OperationError(
                    f"A reserve operation was attempted by authenticated principal '{fw.principal}', which "
                    f"does not match a reserved resource in the request with principal "
                    f"'{reservation.principal}'" + on_agent
                )
        for alloc in sorted(allocated):
            if alloc != reservation.role:
                raise OperationError(
                    f"A reserve operation was attempted for a resource with role '{reservation.role}', but "
                    f"the resource was allocated to role '{alloc}'" + on_agent
                )
        if reservation.role not in fw.roles:
            raise OperationError(
                f"A reserve operation was attempted for a resource with role '{reservation.role}', but the "
                f"framework can only reserve resources with roles '{{ {', '.join(fw.roles)} }}'" + on_agent
            )

    def _rescind(self, offer: Offer) -> None:
        self.offers.pop(offer.id, None)
        owner = self.frameworks.get(offer.framework_id)
        if owner is not None:
            owner.send({"type": "RESCIND", "rescind": {"offer_id": {"value": offer.id}}})
        self.wake()

    def _launch(self, fw: Framework, agent: Agent, task: Json, remaining: Resources, role: str) -> Resources:
        def invalid(message: str) -> Resources:
            self._master_status(fw, task, "TASK_ERROR", "REASON_TASK_INVALID", message)
            return remaining

        # ``task::validate`` (src/master/validation.cpp): what does not need the master's state.
        error = validation.validate_task(task, fw.info, agent.id, allocation_role=role)
        if error is not None:
            return invalid(error)
        tid = (task.get("task_id") or {}).get("value")
        if not tid:
            return invalid("Task has no task_id")
        if tid in fw.tasks:
            return invalid(f"Task has duplicate ID: {tid}")
        if (task.get("agent_id") or {}).get("value") != agent.id:
            return invalid(f"Task uses invalid agent: {(task.get('agent_id') or {}).get('value')}")
        has_executor, has_command = "executor" in task, "command" in task
        if has_executor == has_command:
            return invalid(
                "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"
            )
        if has_command:
            return invalid("command tasks not supported by the local cluster; use an executor")
        try:
            resources = Resources.from_json(task.get("resources"))
            executor_resources = Resources.from_json(task["executor"].get("resources"))
        except (ResourceError, KeyError, TypeError, ValueError) as error:
            return invalid(f"Task uses invalid resources: {error}")
        if resources.empty():
            return invalid("Task uses no resources")
        roles = allocation_roles(task.get("resources")) | allocation_roles(task["executor"].get("resources"))
        if roles - {role}:
            return invalid(
                f"Task uses resources allocated to role(s) {sorted(roles - {role})}, not the offer's '{role}'"
            )
        eid = (task["executor"].get("executor_id") or {}).get("value")
        if not eid or not (task["executor"].get("command") or {}).get("value"):
            return invalid("Executor has no executor_id or no command.value")
        existing = agent.executors.get((fw.id, eid))
        needed = resources
        if existing is None or existing.state == "TERMINATED":
            needed = resources + executor_resources
        if not remaining.contains(needed):
            return invalid(f"Task uses more resources {needed} than available {remaining}")
        t = Task(
            task_id=tid,
            framework_id=fw.id,
            agent_id=agent.id,
            executor_id=eid,
            info=task,
            resources=resources,
        )
        fw.tasks[tid] = t
        info = fw.info
        self.to_agent(agent, lambda: agent.launch(info, task))
        return remaining - needed

    def _call_kill(self, fw: Framework, body: Json) -> None:
        tid = (body.get("task_id") or {}).get("value")
        if not tid:
            raise CallError(400, "Expecting 'kill.task_id'")
        task = fw.tasks.get(tid)
        agent = self.agents.get(task.agent_id) if task is not None else None
        if task is None or agent is None or agent.state == "UNREACHABLE":
            # Unknown (or unreachable): answer as explicit reconciliation does.
            aid = (body.get("agent_id") or {}).get("value")
            self._reconcile_one(fw, tid, aid)
            return
        if agent.state != "ACTIVE":
            log.warning(
                "Cannot kill task %s of framework %s because the agent %s is disconnected",
                tid,
                fw.id,
                agent.id,
            )
            return
        # A cut link holds the kill; it is lost if the master marks the agent unreachable first
        # (as in Mesos: the framework must kill again when the task shows up again).
        policy = body.get("kill_policy")
        self.to_agent(agent, lambda: agent.kill_task(fw.id, tid, policy))

    def _call_shutdown(self, fw: Framework, body: Json) -> None:
        aid = (body.get("agent_id") or {}).get("value")
        eid = (body.get("executor_id") or {}).get("value")
        agent = self.agents.get(aid or "")
        if agent is None or eid is None:
            raise CallError(400, "Expecting known 'shutdown.agent_id' and 'shutdown.executor_id'")
        ex = agent.executors.get((fw.id, eid))
        if ex is not None:
            self.to_agent(agent, lambda: self._spawn(agent.shutdown_executor(ex)))

    def _call_acknowledge(self, fw: Framework, body: Json) -> None:
        try:
            tid = body["task_id"]["value"]
            raw = base64.b64decode(body["uuid"], validate=True)
            aid = body["agent_id"]["value"]
        except (KeyError, TypeError, ValueError):
            raise CallError(
                400, "Expecting 'acknowledge' with 'agent_id', 'task_id' and a base64 'uuid'"
            ) from None
        if len(raw) != 16:
            raise CallError(400, "'acknowledge.uuid' is not a valid UUID")
        uid = body["uuid"]
        task = fw.tasks.get(tid)
        if task is None or not task.pending or task.pending[0].get("uuid") != uid:
            log.warning("framework %s: ignoring acknowledgement %s of task %s", fw.id, uid, tid)
            return
        task.pending.popleft()
        agent = self.agents.get(aid)
        if agent is not None and agent.state == "ACTIVE":
            eid = task.executor_id
            self.to_agent(agent, lambda: agent.acknowledged(fw.id, eid, tid, uid))
        if task.pending:
            fw.send({"type": "UPDATE", "update": {"status": task.pending[0]}})
            task.last_sent = time.monotonic()
        elif task.state in TERMINAL:
            self._complete(fw, task)

    def _call_reconcile(self, fw: Framework, body: Json) -> None:
        asked = body.get("tasks") or []
        if not asked:
            for task in fw.tasks.values():
                fw.send({"type": "UPDATE", "update": {"status": self._reconcile_status(task)}})
            return
        for item in asked:
            tid = (item.get("task_id") or {}).get("value")
            if tid:
                self._reconcile_one(fw, tid, (item.get("agent_id") or {}).get("value"))

    def _call_message(self, fw: Framework, body: Json) -> None:
        aid = (body.get("agent_id") or {}).get("value")
        eid = (body.get("executor_id") or {}).get("value")
        if not aid or not eid or "data" not in body:
            raise CallError(400, "Expecting 'message' with 'agent_id', 'executor_id' and 'data'")
        agent = self.agents.get(aid)
        if agent is None or agent.state != "ACTIVE":
            log.warning("framework %s: message to executor %s on %s dropped", fw.id, eid, aid)
            return
        data = body["data"]

        def deliver() -> None:
            if not agent.framework_message(fw.id, eid, data):
                log.warning("framework %s: message to executor %s on %s dropped", fw.id, eid, aid)

        self.to_agent(agent, deliver)

    def _call_request(self, fw: Framework, body: Json) -> None:
        pass

    _call_reconcile_operations = _call_request
    _call_acknowledge_operation_status = _call_request

    # --- status updates --------------------------------------------------------------------------

    def status_update(self, agent: Agent, fid: str, status: Json) -> None:
        """A reliable update from an agent (its own, or its executor's)."""
        fw = self.frameworks.get(fid)
        if fw is None:
            return
        tid = status["task_id"]["value"]
        task = fw.tasks.get(tid)
        if task is None:
            return
        if status.get("uuid") and any(p.get("uuid") == status["uuid"] for p in task.pending):
            return  # re-sent by a recovered agent while the first one still waits: a duplicate
        if task.state not in TERMINAL:  # a late update (held on a cut link) never revives a task
            task.state = status["state"]
            task.status = status
        if task.state in TERMINAL and task.holds:
            task.holds = False
            self.wake()
        task.pending.append(status)
        if len(task.pending) == 1:
            fw.send({"type": "UPDATE", "update": {"status": status}})
            task.last_sent = time.monotonic()

    def executor_terminated(self, agent: Agent, ex: Executor, code: int | None) -> None:
        """FAILURE with the executor's exit status; -1 when it is unknown (a recovered executor is
        not the agent's child), as ``Slave::sendExitedExecutorMessage`` (``status.getOrElse(-1)``)."""
        fw = self.frameworks.get(ex.framework_id)
        if fw is not None:
            failure: Json = {
                "agent_id": {"value": agent.id},
                "executor_id": {"value": ex.executor_id},
                "status": -1 if code is None else code,
            }
            fw.send({"type": "FAILURE", "failure": failure})
        self.wake()

    def executor_message(self, agent: Agent, ex: Executor, data: str) -> None:
        fw = self.frameworks.get(ex.framework_id)
        if fw is not None:
            fw.send(
                {
                    "type": "MESSAGE",
                    "message": {
                        "agent_id": {"value": agent.id},
                        "executor_id": {"value": ex.executor_id},
                        "data": data,
                    },
                }
            )

    def _retry_updates(self) -> None:
        now = time.monotonic()
        for fw in self.frameworks.values():
            if not fw.connected:
                continue
            for task in fw.tasks.values():
                agent = self.agents.get(task.agent_id)
                if agent is None or agent.state != "ACTIVE" or agent.partitioned:
                    continue  # the agent's status update manager re-sends, over a working link
                if task.pending and now - task.last_sent >= self.settings.update_retry_interval:
                    fw.send({"type": "UPDATE", "update": {"status": task.pending[0]}})
                    task.last_sent = now

    def _complete(self, fw: Framework, task: Task) -> None:
        if fw.tasks.get(task.task_id) is task:
            del fw.tasks[task.task_id]
            fw.completed.append(task)

    def _master_update(
        self,
        fw: Framework,
        task: Task,
        state: str,
        reason: str,
        message: str,
        unreachable_time: Json | None = None,
    ) -> None:
        """A master-generated update of a known task (no uuid: not acknowledged, not retried)."""
        status = self._status(task.task_id, task.agent_id, state, reason, message, task.executor_id)
        if unreachable_time is not None:
            status["unreachable_time"] = unreachable_time
        task.state = state
        task.status = status
        fw.send({"type": "UPDATE", "update": {"status": status}})

    def _master_status(self, fw: Framework, task: Json, state: str, reason: str, message: str) -> None:
        tid = (task.get("task_id") or {}).get("value", "")
        aid = (task.get("agent_id") or {}).get("value")
        fw.send({"type": "UPDATE", "update": {"status": self._status(tid, aid, state, reason, message)}})

    @staticmethod
    def _status(
        tid: str, aid: str | None, state: str, reason: str, message: str, eid: str | None = None
    ) -> Json:
        status: Json = {
            "task_id": {"value": tid},
            "state": state,
            "reason": reason,
            "message": message,
            "source": "SOURCE_MASTER",
            "timestamp": time.time(),
        }
        if aid:
            status["agent_id"] = {"value": aid}
        if eid:
            status["executor_id"] = {"value": eid}
        return status

    def _reconcile_status(self, task: Task) -> Json:
        base = (
            dict(task.status)
            if task.status
            else self._status(task.task_id, task.agent_id, task.state, "", "", task.executor_id)
        )
        base.pop("uuid", None)
        base.update(
            {
                "state": task.state,
                "reason": "REASON_RECONCILIATION",
                "source": "SOURCE_MASTER",
                "message": "Reconciliation: latest task status",
                "timestamp": time.time(),
            }
        )
        if task.state == "TASK_UNREACHABLE":
            unreachable = self._unreachable_time(self.agents.get(task.agent_id))
            if unreachable is not None:
                base["unreachable_time"] = unreachable
        else:
            base.pop("unreachable_time", None)
        return base

    @staticmethod
    def _unreachable_time(agent: Agent | None) -> Json | None:
        """``TimeInfo`` of when the master marked the agent unreachable (``slaves.unreachable``)."""
        if agent is None or agent.unreachable_time is None:
            return None
        return {"nanoseconds": int(agent.unreachable_time * 1e9)}

    def _reconcile_one(self, fw: Framework, tid: str, aid: str | None) -> None:
        task = fw.tasks.get(tid)
        if task is not None:
            fw.send({"type": "UPDATE", "update": {"status": self._reconcile_status(task)}})
            return
        agent = self.agents.get(aid) if aid else None
        recovering = any(a.state == "RECOVERED" for a in self.agents.values())
        if (agent is not None and agent.state == "RECOVERED") or (not aid and recovering):
            # ``Master::_reconcileTasks`` case (2), "task unknown, agent recovered": no answer until
            # the agent has re-registered and told the master its tasks; without an agent id, no
            # answer while any agent has not (the task could be on one of them).
            log.info("Dropping reconciliation of task %s: agents have not re-registered yet", tid)
            return
        if agent is not None and agent.state in ("ACTIVE", "DISCONNECTED"):
            state = "TASK_GONE" if fw.partition_aware else "TASK_LOST"
            message = "Reconciliation: Task is unknown to the agent"
        elif agent is not None and agent.state == "UNREACHABLE":
            state = "TASK_UNREACHABLE" if fw.partition_aware else "TASK_LOST"
            message = "Reconciliation: Task is unreachable"
        else:
            state = "TASK_UNKNOWN" if fw.partition_aware else "TASK_LOST"
            message = "Reconciliation: Task is unknown"
        status = self._status(tid, aid, state, "REASON_RECONCILIATION", message)
        if agent is not None and agent.state == "UNREACHABLE":
            # ``Master::_reconcileTasks`` case (4): the time the agent was marked unreachable.
            unreachable = self._unreachable_time(agent)
            if unreachable is not None:
                status["unreachable_time"] = unreachable
        fw.send({"type": "UPDATE", "update": {"status": status}})

    # --- offers ----------------------------------------------------------------------------------

    @staticmethod
    def _offer_ids(body: Json) -> list[str]:
        ids = body.get("offer_ids") or []
        if not isinstance(ids, list):
            raise CallError(400, "Expecting 'offer_ids' to be a list")
        return [str(i.get("value")) for i in ids if isinstance(i, dict)]

    def _refuse_seconds(self, body: Json) -> float:
        filters = body.get("filters") or {}
        return float(filters.get("refuse_seconds", self.settings.default_refuse_seconds))

    def _add_filter(self, fw: Framework, agent_id: str, resources: Resources, seconds: float) -> None:
        if seconds > 0:
            fw.filters.setdefault(agent_id, []).append(Filter(time.monotonic() + seconds, resources))

    def _filtered(self, fw: Framework, agent_id: str, resources: Resources) -> bool:
        now = time.monotonic()
        active = [f for f in fw.filters.get(agent_id, []) if f.expires > now]
        fw.filters[agent_id] = active
        return any(f.resources.contains(resources) for f in active)

    def _rescind_agent_offers(self, agent_id: str) -> None:
        for offer in [o for o in self.offers.values() if o.agent_id == agent_id]:
            del self.offers[offer.id]
            fw = self.frameworks.get(offer.framework_id)
            if fw is not None:
                fw.send({"type": "RESCIND", "rescind": {"offer_id": {"value": offer.id}}})

    def _rescind_framework_offers(self, fw: Framework, send: bool) -> None:
        for offer in [o for o in self.offers.values() if o.framework_id == fw.id]:
            del self.offers[offer.id]
            if send:
                fw.send({"type": "RESCIND", "rescind": {"offer_id": {"value": offer.id}}})

    def _allocate(self) -> None:
        active = [fw for fw in self.frameworks.values() if fw.connected]
        frameworks = sorted(
            (fw for fw in active if not fw.suppressed),
            key=lambda f: sum(1 for t in f.tasks.values() if t.holds),
        )
        batches: dict[str, list[Json]] = {}
        for agent in self.agents.values():
            if agent.state != "ACTIVE" or not frameworks:
                continue
            available = self.available(agent)
            unavailability = self.unavailability(agent)
            for fw in frameworks:
                # Unreserved resources go to any framework, reserved ones (and volumes) only to
                # frameworks of their role; a volume in use is not available.
                offered = available.allocatable_to(fw.role)
                if offered.empty() or self._filtered(fw, agent.id, offered):
                    continue
                available = available - offered
                oid = self._new_offer_id()
                self.offers[oid] = Offer(oid, fw.id, agent.id, offered, fw.role)
                offer: Json = {
                    "id": {"value": oid},
                    "framework_id": {"value": fw.id},
                    "agent_id": {"value": agent.id},
                    "hostname": agent.hostname,
                    "url": self._agent_url(agent),
                    "resources": offered.to_json(role=fw.role, refinement=fw.refinement),
                    "attributes": agent.attributes_json(),
                    "allocation_info": {"role": fw.role},
                }
                # ``Master::offer``: the framework's executors running on that agent, and the
                # agent's unavailability when its machine is scheduled for maintenance.
                executor_ids = self._executor_ids(fw, agent)
                if executor_ids:
                    offer["executor_ids"] = [{"value": eid} for eid in executor_ids]
                if unavailability is not None:
                    offer["unavailability"] = unavailability
                batches.setdefault(fw.id, []).append(offer)
                if self.settings.offer_timeout is not None:
                    loop = asyncio.get_running_loop()
                    loop.call_later(self.settings.offer_timeout, self._offer_timeout, oid)
        for fid, offers in batches.items():
            self.frameworks[fid].send({"type": "OFFERS", "offers": {"offers": offers}})
        self._generate_inverse_offers(active)

    def _new_offer_id(self) -> str:
        """Offers and inverse offers share one id sequence (``Master::newOfferId``)."""
        oid = f"{self.id}-O{self._offer_seq}"
        self._offer_seq += 1
        return oid

    @staticmethod
    def _agent_url(agent: Agent) -> Json:
        return {
            "scheme": "http",
            "address": {"hostname": agent.hostname, "ip": agent.ip, "port": agent.port},
            "path": "/slave(1)",
        }

    @staticmethod
    def _executor_ids(fw: Framework, agent: Agent) -> list[str]:
        """The framework's executors the agent runs (not terminated), sorted."""
        return sorted(
            ex.executor_id
            for ex in agent.executors.values()
            if ex.framework_id == fw.id and ex.state != "TERMINATED"
        )

    def _offer_timeout(self, oid: str) -> None:
        """``Master::offerTimeout`` (``--offer_timeout``, unset by default): the offer is rescinded."""
        offer = self.offers.get(oid)
        if offer is not None:
            log.info("Offer %s timed out: rescinding it", oid)
            self._rescind(offer)

    # --- maintenance: the schedule, machine modes, inverse offers ------------------------------------

    def maintenance_schedule(self) -> Json:
        """``mesos.v1.maintenance.Schedule`` JSON (``{}`` when nothing is scheduled, as Mesos)."""
        return self.maintenance.schedule()

    def maintenance_status(self) -> Json:
        """``mesos.v1.maintenance.ClusterStatus`` JSON: DRAINING machines with the frameworks' answers
        to the inverse offers of their agents, DOWN machines."""
        return self.maintenance.status()

    def machine_mode(self, agent: Agent) -> str:
        """``MachineInfo.Mode`` of the agent's machine: ``UP``, ``DRAINING`` or ``DOWN``."""
        return self.maintenance.mode(agent.hostname, agent.ip)

    def unavailability(self, agent: Agent) -> Json | None:
        """``mesos.v1.Unavailability`` JSON of the agent's machine, None when not scheduled."""
        return self.maintenance.unavailability(agent.hostname, agent.ip)

    def _machine_agents(self, keys: set[mnt.MachineKey]) -> list[Agent]:
        """Registered agents on these machines (Mesos' ``machines[id].slaves``)."""
        return [
            a
            for a in self.agents.values()
            if a.state in ("ACTIVE", "DISCONNECTED") and (a.hostname.lower(), a.ip) in keys
        ]

    def update_maintenance_schedule(self, schedule: Json) -> None:
        """``UPDATE_MAINTENANCE_SCHEDULE`` (``Master::Http::_updateMaintenanceSchedule``): machines new
        to the schedule go DRAINING; every agent of a machine in or taken out of the schedule has its
        offers and inverse offers rescinded (``Master::updateUnavailability``), so that new ones carry
        the new unavailability; machines taken out go back UP. Raises ``CallError(400, ...)`` with
        the message of ``maintenance::validation::schedule``."""
        try:
            changed, removed = self.maintenance.update_schedule(schedule)
        except mnt.MaintenanceError as error:
            raise CallError(400, str(error)) from None
        for agent in self._machine_agents(set(changed) | set(removed)):
            self._update_unavailability(agent)
        self.wake()

    def _update_unavailability(self, agent: Agent) -> None:
        """``Master::updateUnavailability`` + ``HierarchicalAllocatorProcess::updateUnavailability``."""
        log.info("Updating unavailability of agent %s: %s", agent.id, self.unavailability(agent))
        self._rescind_agent_offers(agent.id)
        self._remove_inverse_offers(lambda io: io.agent_id == agent.id, rescind=True)
        for fw in self.frameworks.values():
            fw.inverse_filters.pop(agent.id, None)

    def start_maintenance(self, machines: list[Json]) -> None:
        """``START_MAINTENANCE`` (``Master::Http::_startMaintenance``): DRAINING machines go DOWN;
        each agent on them is told to shut down and removed at once (``removeSlave``, "Operator
        initiated 'Machine DOWN'"): its tasks TASK_LOST / REASON_AGENT_REMOVED, FAILURE (agent lost)
        to every framework. Raises ``CallError(400, ...)`` as Mesos words it."""
        try:
            keys = self.maintenance.start(machines)
        except mnt.MaintenanceError as error:
            raise CallError(400, str(error)) from None
        for agent in self._machine_agents(set(keys)):
            self.to_agent(agent, lambda agent=agent: self._spawn(self._shutdown_agent(agent)))
            self._remove_agent(agent, "Operator initiated 'Machine DOWN'")
        self.wake()

    def stop_maintenance(self, machines: list[Json]) -> None:
        """``STOP_MAINTENANCE`` (``Master::Http::_stopMaintenance``): DOWN machines go UP and leave the
        schedule; their agents may register again. Raises ``CallError(400, ...)``."""
        try:
            self.maintenance.stop(machines)
        except mnt.MaintenanceError as error:
            raise CallError(400, str(error)) from None
        self.wake()

    async def _shutdown_agent(self, agent: Agent) -> None:
        """The agent's ``ShutdownMessage``: it shuts its executors down (each gets its grace) and
        exits; it comes back only by a restart (the ``start`` fault)."""
        fids = {ex.framework_id for ex in agent.executors.values() if ex.state != "TERMINATED"}
        await asyncio.gather(*(agent.shutdown_framework(fid) for fid in fids), return_exceptions=True)
        agent.alive = False
        if agent.silent_since is None:
            agent.silent_since = asyncio.get_running_loop().time()
        await agent.destroy()

    def _remove_agent(self, agent: Agent, cause: str) -> None:
        """``Master::_removeSlave``: every task there TASK_LOST, SOURCE_MASTER, REASON_AGENT_REMOVED
        ("Agent <hostname> removed: <cause>"), offers and inverse offers rescinded, the agent gone
        from the registered agents, FAILURE (agent lost) to every framework (``sendSlaveLost``)."""
        log.info("Removing agent %s (%s): %s", agent.id, agent.hostname, cause)
        agent.state = "REMOVED"
        agent.to_agent.clear()
        self._rescind_agent_offers(agent.id)
        self._remove_inverse_offers(lambda io: io.agent_id == agent.id, rescind=True)
        self.maintenance.forget_agent(agent.hostname, agent.ip, agent.id)
        self.unreachable_tasks.pop(agent.id, None)
        for fw in self.frameworks.values():
            for task in [t for t in fw.tasks.values() if t.agent_id == agent.id]:
                if task.state not in TERMINAL:
                    self._master_update(
                        fw,
                        task,
                        "TASK_LOST",
                        "REASON_AGENT_REMOVED",
                        f"Agent {agent.hostname} removed: {cause}",
                    )
                task.holds = False
                task.pending.clear()
                self._complete(fw, task)
        if self.agents.get(agent.id) is agent:
            del self.agents[agent.id]
        for fw in self.frameworks.values():
            fw.send({"type": "FAILURE", "failure": {"agent_id": {"value": agent.id}}})
        self.wake()

    def _refuse_down(self, agent: Agent) -> bool:
        """``Master::registerSlave`` / ``reregisterSlave``: an agent on a DOWN machine is refused and
        told to shut down ("Machine is `DOWN`")."""
        if self.machine_mode(agent) != mnt.DOWN:
            return False
        log.warning(
            "Refusing registration of agent at %s because the machine %s that it is running on is `DOWN`",
            agent.endpoint,
            mnt.render({"hostname": agent.hostname, "ip": agent.ip}),
        )
        if self.agents.get(agent.id) is not agent:
            agent.state = "REMOVED"
        self._spawn(self._shutdown_agent(agent))
        return True

    def _has_resources_on(self, fw: Framework, agent: Agent) -> bool:
        """Offered or allocated resources on the agent (``Slave::getOfferedOrAllocated``): an offer,
        a task holding resources, or a live executor."""
        return (
            any(o.framework_id == fw.id and o.agent_id == agent.id for o in self.offers.values())
            or any(t.agent_id == agent.id and t.holds for t in fw.tasks.values())
            or bool(self._executor_ids(fw, agent))
        )

    def _generate_inverse_offers(self, active: list[Framework]) -> None:
        """``HierarchicalAllocatorProcess::generateInverseOffers`` + ``Master::inverseOffer``: each
        allocation, a framework with resources on an active agent of a machine with an
        unavailability gets one inverse offer for that agent, unless one is outstanding or its
        answer's filter (``refuse_seconds``) has not expired; after an answer, a new one follows
        once the filter expires, for as long as it has resources there."""
        now = time.monotonic()
        batches: dict[str, list[Json]] = {}
        for agent in self.agents.values():
            if agent.state != "ACTIVE":
                continue
            unavailability = self.unavailability(agent)
            if unavailability is None:
                continue
            for fw in active:
                if not self._has_resources_on(fw, agent):
                    continue
                if any(
                    io.framework_id == fw.id and io.agent_id == agent.id
                    for io in self.inverse_offers.values()
                ):
                    continue
                if fw.inverse_filters.get(agent.id, 0.0) > now:
                    continue
                fw.inverse_filters.pop(agent.id, None)
                oid = self._new_offer_id()
                self.inverse_offers[oid] = InverseOffer(oid, fw.id, agent.id, unavailability)
                batches.setdefault(fw.id, []).append(
                    {
                        "id": {"value": oid},
                        "url": self._agent_url(agent),
                        "framework_id": {"value": fw.id},
                        "agent_id": {"value": agent.id},
                        "unavailability": unavailability,
                    }
                )
        for fid, inverse_offers in batches.items():
            log.info(
                "Sending inverse offers %s to framework %s", [o["id"]["value"] for o in inverse_offers], fid
            )
            self.frameworks[fid].send(
                {"type": "INVERSE_OFFERS", "inverse_offers": {"inverse_offers": inverse_offers}}
            )

    def _remove_inverse_offers(self, which: Any, rescind: bool) -> None:
        """``Master::removeInverseOffer``; with ``rescind`` the framework gets RESCIND_INVERSE_OFFER."""
        for io in [io for io in self.inverse_offers.values() if which(io)]:
            del self.inverse_offers[io.id]
            fw = self.frameworks.get(io.framework_id)
            if rescind and fw is not None:
                fw.send(
                    {
                        "type": "RESCIND_INVERSE_OFFER",
                        "rescind_inverse_offer": {"inverse_offer_id": {"value": io.id}},
                    }
                )

    def _answer_inverse_offers(self, fw: Framework, body: Json, status: str) -> None:
        """``Master::acceptInverseOffers`` / ``declineInverseOffers``: each valid inverse offer's answer
        is recorded (``maintenance_status``), a filter of ``filters.refuse_seconds`` (default 5 s,
        at most 365 days) installed, and the inverse offer removed. Invalid ids are only logged."""
        ids = body.get("inverse_offer_ids") or []
        if not isinstance(ids, list):
            raise CallError(400, "Expecting 'inverse_offer_ids' to be a list")
        oids = [str(i.get("value")) for i in ids if isinstance(i, dict)]
        kind = "ACCEPT_INVERSE_OFFERS" if status == "ACCEPT" else "DECLINE_INVERSE_OFFERS"
        if status == "ACCEPT" and not oids:
            log.warning("%s call used invalid offers '[]': No inverse offers specified", kind)
        error = self._validate_inverse_offers(fw, oids)
        if error is not None:
            log.warning("%s call used invalid offers '%s': %s", kind, oids, error)
        refuse = min(self._refuse_seconds(body), 365 * 86400.0)
        if refuse < 0:
            refuse = 5.0
        for oid in oids:
            io = self.inverse_offers.get(oid)
            if io is None or io.framework_id != fw.id:
                log.warning(
                    "Ignoring %s of inverse offer %s since it is no longer valid", status.lower(), oid
                )
                continue
            del self.inverse_offers[oid]
            agent = self.agents.get(io.agent_id)
            if agent is not None:
                self.maintenance.record(agent.hostname, agent.ip, agent.id, fw.id, status)
            if refuse > 0:
                fw.inverse_filters[io.agent_id] = time.monotonic() + refuse
        self.wake()

    def _validate_inverse_offers(self, fw: Framework, oids: list[str]) -> str | None:
        """``validation::offer::validateInverseOffers``: unique, known, of this framework, one agent."""
        if len(set(oids)) != len(oids):
            dup = next(o for o in oids if oids.count(o) > 1)
            return f"Duplicate offer {dup} in offer list"
        agents = set()
        for oid in oids:
            io = self.inverse_offers.get(oid)
            if io is None:
                return f"Inverse offer {oid} is no longer valid"
            if io.framework_id != fw.id:
                return (
                    f"Offer {oid} has invalid framework {io.framework_id} while framework {fw.id} is expected"
                )
            agents.add(io.agent_id)
        if len(agents) > 1:
            return "Aggregated offers must belong to one single agent"
        return None

    def _call_accept_inverse_offers(self, fw: Framework, body: Json) -> None:
        self._answer_inverse_offers(fw, body, "ACCEPT")

    def _call_decline_inverse_offers(self, fw: Framework, body: Json) -> None:
        self._answer_inverse_offers(fw, body, "DECLINE")

    def state(self) -> Json:
        """``/master/state`` (rendered by :mod:`mesos_stateful.localcluster.views`)."""
        from mesos_stateful.localcluster.views import master_state

        return master_state(self)
