"""Pure planning logic: what the members' state is, which plan an instance needs now, and the
phase it is in. No I/O here: everything is decided from a :class:`Snapshot`.

The controller calls :func:`sync_member` for each member (task state -> member state), then
:func:`decide`. A plan in progress is kept (it is resumed at its first step not COMPLETE) unless:
the instance is being deleted (a delete wins over everything), the master is lost and the plan
does not already handle it (recovery preempts deploy / scale / another recovery), or a deploy /
scale plan was made for an older spec generation or cannot finish because a member it already
launched is lost. When no plan is in progress, :func:`converge` compares the members with the
spec and builds the plan that closes the gap (deploy, scale up / down, replacement), or None.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from google.protobuf import timestamp_pb2

from mesos_stateful.api.stateful.v1 import offer_service_pb2, types_pb2
from mesos_stateful.lifecycle import plans
from mesos_stateful.lifecycle.plans import Action

T = types_pb2

# Task states after which the task runs no more.
TERMINAL = frozenset(
    {
        T.TASK_STATE_FINISHED,
        T.TASK_STATE_FAILED,
        T.TASK_STATE_KILLED,
        T.TASK_STATE_ERROR,
        T.TASK_STATE_LOST,
        T.TASK_STATE_DROPPED,
        T.TASK_STATE_GONE,
        T.TASK_STATE_GONE_BY_OPERATOR,
    }
)
# States of a task we cannot reach: it may still run, so it is fenced (killed) before replacing.
UNREACHABLE = frozenset({T.TASK_STATE_UNREACHABLE, T.TASK_STATE_UNKNOWN})
ENDED = TERMINAL | UNREACHABLE
# Ended for sure: the process is gone (TASK_GONE / TASK_DROPPED are what Mesos tells the offers
# framework, which is PARTITION_AWARE, of a task whose agent is up but has it no more). TASK_LOST
# is not among them: Mesos sends it to frameworks that are not partition-aware for a cut-off agent's
# tasks too, which may come back.
DEAD = TERMINAL - {T.TASK_STATE_LOST}
DECLINED_PREFIX = "not replaced"


def task_state_name(state: int) -> str:
    return T.TaskState.Name(state).removeprefix("TASK_STATE_") if state in T.TaskState.values() else "?"


class Condition(Enum):
    READY = "ready"  # running in its role, every start callback done
    LOST = "lost"  # its task ended (or is unreachable) without a kill asked by us
    DECLINED = "declined"  # lost, and the workload said not to replace it
    NOT_READY = "not-ready"  # planned, launching, starting, or stopped by us


@dataclass(frozen=True)
class Snapshot:
    """What the planner sees of one instance."""

    instance: types_pb2.Instance  # the stored record (spec, phase, plan, generation)
    members: Sequence[types_pb2.Member]  # sorted by ordinal
    tasks: dict[str, types_pb2.Task] = field(default_factory=dict)  # this instance's tasks, by id
    description: types_pb2.WorkloadDescription | None = None  # None: workload not registered

    @property
    def name(self) -> str:
        return self.instance.spec.name

    def task_of(self, member: types_pb2.Member) -> types_pb2.Task | None:
        return self.tasks.get(member.task_id) if member.task_id else None

    def member(self, member_id: str) -> types_pb2.Member | None:
        return next((m for m in self.members if m.id == member_id), None)

    def condition(self, member: types_pb2.Member) -> Condition:
        return classify(member, self.task_of(member))

    def master(self) -> types_pb2.Member | None:
        return next((m for m in self.members if m.role == T.ROLE_MASTER), None)

    def peers(self) -> bool:
        if self.description is not None:
            return self.description.topology == T.TOPOLOGY_PEERS
        return any(m.role == T.ROLE_PEER for m in self.members)


def condition_name(kind: int) -> str:
    """``CONDITION_TYPE_CAUGHT_UP`` -> ``caught-up``."""
    name = T.ConditionType.Name(kind) if kind in T.ConditionType.values() else "CONDITION_TYPE_?"
    return name.removeprefix("CONDITION_TYPE_").lower().replace("_", "-")


def failing(member: types_pb2.Member, kind: int) -> types_pb2.MemberCondition | None:
    """The member's condition of that type if its last check found it not ok."""
    return next((c for c in member.health.conditions if c.type == kind and not c.ok), None)


def unhealthy(member: types_pb2.Member) -> str:
    """Why the member's replication needs attention ("" if it does not): unreachable, a repair
    asked for, or a history not consistent with the master's. Lag alone is not a problem here."""
    h = member.health
    if h.unresponsive:
        return "unresponsive"
    for kind in (T.CONDITION_TYPE_REACHABLE, T.CONDITION_TYPE_CONSISTENT, T.CONDITION_TYPE_REPLICATING):
        c = failing(member, kind)
        if c is not None and (kind != T.CONDITION_TYPE_REPLICATING or h.repair):
            return f"{condition_name(kind)}: {c.reason}"
    if h.repair:
        return "repair: " + T.Repair.Name(h.repair).removeprefix("REPAIR_").lower()
    return ""


def classify(member: types_pb2.Member, task: types_pb2.Task | None) -> Condition:
    if task is None:
        return Condition.NOT_READY
    if task.state in ENDED and not task.kill_requested:
        return Condition.DECLINED if member.message.startswith(DECLINED_PREFIX) else Condition.LOST
    if member.role == T.ROLE_MASTER and member.health.unresponsive:
        # Declared failed by the health monitor's probe: Mesos may not know yet (a cut-off agent
        # is noticed only after its ping timeouts), the data is at risk now.
        return Condition.LOST
    if task.state == T.TASK_STATE_RUNNING and member.state == T.MEMBER_STATE_RUNNING:
        return Condition.READY
    return Condition.NOT_READY


def member_state_for(member: types_pb2.Member, task: types_pb2.Task) -> types_pb2.MemberState:
    state = task.state
    if state == T.TASK_STATE_QUEUED:
        return T.MEMBER_STATE_LAUNCHING
    if state in (T.TASK_STATE_STAGING, T.TASK_STATE_STARTING):
        return T.MEMBER_STATE_STARTING
    if state == T.TASK_STATE_RUNNING:
        # RUNNING on the member means "ready in its role": the *Running step sets it.
        return T.MEMBER_STATE_RUNNING if member.state == T.MEMBER_STATE_RUNNING else T.MEMBER_STATE_STARTING
    if state == T.TASK_STATE_KILLING:
        return T.MEMBER_STATE_KILLING
    if state in ENDED:
        if task.kill_requested:
            return T.MEMBER_STATE_STOPPED
        if state in (T.TASK_STATE_FAILED, T.TASK_STATE_ERROR, T.TASK_STATE_FINISHED):
            return T.MEMBER_STATE_FAILED
        return T.MEMBER_STATE_LOST
    return member.state


def sync_member(member: types_pb2.Member, task: types_pb2.Task | None) -> types_pb2.Member | None:
    """The member updated from its current task (state, agent, host, ports, message), or None if
    nothing changes. A launch that ended before the member was ready is recorded in
    ``launch_failures`` (:func:`launch_failure_of`), in the same write as the state it ends in."""
    if task is None or task.task_id != member.task_id:
        return None
    new = types_pb2.Member()
    new.CopyFrom(member)
    failure = launch_failure_of(member, task)
    if failure is not None:
        new.launch_failures.append(failure)
        del new.launch_failures[: max(0, len(new.launch_failures) - MAX_LAUNCH_FAILURES)]
    new.state = member_state_for(member, task)
    if task.agent_id:
        new.agent_id = task.agent_id
    if task.host:
        new.host = task.host
    if task.agent_url:
        # Where `statefulctl logs` reads its output (the agent's /files/read).
        new.agent_url = task.agent_url
        new.sandbox_directory = task.sandbox_directory
    if task.ports:
        new.ports.clear()
        new.ports.update(task.ports)
    # The maintenance of its agent (an inverse offer) follows its current task: shown while the
    # member is drained off that agent, gone once it runs elsewhere or the window was cancelled.
    if task.HasField("maintenance"):
        new.maintenance.CopyFrom(task.maintenance)
    else:
        new.ClearField("maintenance")
    volume = task.launch.volume
    if (
        task.state in (T.TASK_STATE_STARTING, T.TASK_STATE_RUNNING)
        and task.agent_id
        and volume.persistence_id
        and volume.persistence_id == member.volume.persistence_id
        and not member.volume.agent_id
    ):
        # The executor started: the RESERVE + CREATE of its launch were applied on that agent.
        new.volume.agent_id = task.agent_id
        new.volume.host = task.host
    if not (task.state in ENDED and member.message.startswith(DECLINED_PREFIX)):
        detail = task_state_name(task.state)
        if task.message:
            detail += f": {one_line(task, member.id)}"
        if task.reason:
            detail += f" ({task.reason})"
        new.message = detail[:500]
    return None if new == member else new


# --- launch failures and placement ---------------------------------------------------------------

# Launch failures kept on a member (newest last).
MAX_LAUNCH_FAILURES = 5
# Failures on one agent (within the memory) after which the whole agent is avoided, not only the
# ports that failed there; a missing image or a lost agent is avoided at once.
AGENT_AVOID_AFTER = 2
# Task states that end a launch; before the member is ready, that is a failed launch. TASK_KILLED
# is not one (killed on request), nor TASK_UNREACHABLE (it may come back: fenced and replaced).
LAUNCH_FAILED_STATES = frozenset(
    {
        T.TASK_STATE_FAILED,
        T.TASK_STATE_ERROR,
        T.TASK_STATE_DROPPED,
        T.TASK_STATE_LOST,
        T.TASK_STATE_GONE,
        T.TASK_STATE_GONE_BY_OPERATOR,
        T.TASK_STATE_FINISHED,
    }
)
# Member states of a launch not ready yet (MEMBER_STATE_RUNNING is "ready in its role").
_STARTING_STATES = frozenset(
    {T.MEMBER_STATE_UNSPECIFIED, T.MEMBER_STATE_PENDING, T.MEMBER_STATE_LAUNCHING, T.MEMBER_STATE_STARTING}
)
# What a process prints when it cannot bind its port (Linux EADDRINUSE; redis, mariadb, etcd).
_PORT_IN_USE = ("address already in use", "eaddrinuse", "address in use")
# What a runtime says when the image or command is not on the agent (Docker, the process runtime).
_IMAGE_MISSING = ("no such image", "pull access denied", "manifest unknown", "image not found")
_COMMAND_MISSING = ("not found", "no such file or directory")
# Mesos reasons of a task whose agent went away (mesos.proto TaskStatus.Reason).
_AGENT_REASONS = frozenset(
    {
        "REASON_AGENT_REMOVED",
        "REASON_AGENT_DISCONNECTED",
        "REASON_AGENT_UNKNOWN",
        "REASON_AGENT_RESTARTED",
        "REASON_AGENT_REMOVED_BY_OPERATOR",
        "REASON_SLAVE_REMOVED",
        "REASON_SLAVE_DISCONNECTED",
        "REASON_SLAVE_UNKNOWN",
        "REASON_SLAVE_RESTARTED",
    }
)
_EXITED_REASONS = frozenset({"REASON_COMMAND_EXECUTOR_FAILED", "REASON_EXECUTOR_TERMINATED"})
_LAUNCH_FAILED_REASON = "REASON_CONTAINER_LAUNCH_FAILED"


def cause_name(cause: int) -> str:
    """``LAUNCH_FAILURE_CAUSE_PORT_IN_USE`` -> ``PORT_IN_USE``."""
    name = T.LaunchFailureCause.Name(cause) if cause in T.LaunchFailureCause.values() else "?"
    return name.removeprefix("LAUNCH_FAILURE_CAUSE_")


def classify_launch_failure(state: int, reason: str, message: str) -> tuple[int, str]:
    """(cause, telling line) of a launch that ended with this final status before it was ready.
    The text is looked at first (the executor puts the process's exit and its last output lines
    in the message), then the state and reason: a task lost with its agent (TASK_LOST / GONE, or a
    REASON_AGENT_* reason, Mesos' TaskStatus.Reason) is AGENT_LOST; a process that exited
    (REASON_COMMAND_EXECUTOR_FAILED, TASK_FINISHED, "exited with code") EXITED_BEFORE_READY."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    first = lines[0] if lines else ""

    def line_with(patterns: tuple[str, ...]) -> str | None:
        # The last line that says so (the process's own error, not an earlier warning).
        return next((ln for ln in reversed(lines) if any(p in ln.lower() for p in patterns)), None)

    def telling(line: str) -> str:
        return line if line == first else f"{first}: {line}"

    if (line := line_with(_PORT_IN_USE)) is not None:
        return T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE, telling(line)
    if (line := line_with(_IMAGE_MISSING)) is not None:
        return T.LAUNCH_FAILURE_CAUSE_IMAGE_MISSING, telling(line)
    if reason == _LAUNCH_FAILED_REASON and (line := line_with(_COMMAND_MISSING)) is not None:
        return T.LAUNCH_FAILURE_CAUSE_IMAGE_MISSING, telling(line)
    last = telling(lines[-1]) if lines else ""
    lost = (T.TASK_STATE_LOST, T.TASK_STATE_GONE, T.TASK_STATE_GONE_BY_OPERATOR, T.TASK_STATE_UNREACHABLE)
    if state in lost or reason in _AGENT_REASONS:
        return T.LAUNCH_FAILURE_CAUSE_AGENT_LOST, last
    exited = reason in _EXITED_REASONS or any(
        p in first.lower() for p in ("exited with code", "killed by signal")
    )
    if state == T.TASK_STATE_FINISHED or (state == T.TASK_STATE_FAILED and exited):
        return T.LAUNCH_FAILURE_CAUSE_EXITED_BEFORE_READY, last
    return T.LAUNCH_FAILURE_CAUSE_OTHER, last


def launch_failure_of(member: types_pb2.Member, task: types_pb2.Task) -> types_pb2.LaunchFailure | None:
    """The failed launch to record when ``task`` (the member's current one) ended before the member
    was ready, or None: it did not end, ended on our kill, the member was ready (a crash after
    that is a loss, handled by recovery), or it is recorded already."""
    if task.task_id != member.task_id or task.state not in LAUNCH_FAILED_STATES or task.kill_requested:
        return None
    if member.state not in _STARTING_STATES:
        return None
    if any(f.task_id == task.task_id for f in member.launch_failures):
        return None
    cause, line = classify_launch_failure(task.state, task.reason, task.message)
    failure = types_pb2.LaunchFailure(
        task_id=task.task_id,
        agent_id=task.agent_id,
        host=task.host,
        ports=dict(task.ports),
        cause=cause,  # type: ignore[arg-type]
        message=(line or task_state_name(task.state))[:300],
    )
    if task.HasField("updated_at"):
        failure.at.CopyFrom(task.updated_at)
    return failure


def recent_failures(member: types_pb2.Member, now: float, memory: float) -> list[types_pb2.LaunchFailure]:
    """The member's launch failures of the last ``memory`` seconds (oldest first)."""
    return [f for f in member.launch_failures if plans.seconds(f.at) >= now - memory]


def avoid_list(member: types_pb2.Member, now: float, memory: float) -> list[types_pb2.PlacementAvoid]:
    """Where the member's next launch must not go (``LaunchSpec.avoid``), learnt from its launch
    failures of the last ``memory`` seconds: the ports that failed, on their agent; the whole
    agent after :data:`AGENT_AVOID_AFTER` failures there, or at once when its image is missing or
    it was lost. Never the agent of the member's volume while that volume holds data (data-safety
    rule 4: a member restarts in place on its data); there only ports that were in use."""
    ports: dict[str, set[int]] = {}
    failures: dict[str, int] = {}
    whole: set[str] = set()
    data_agent = member.volume.agent_id if member.volume.has_data else ""
    for f in recent_failures(member, now, memory):
        if not f.agent_id:
            continue
        failures[f.agent_id] = failures.get(f.agent_id, 0) + 1
        if f.agent_id != data_agent or f.cause == T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE:
            ports.setdefault(f.agent_id, set()).update(f.ports.values())
        if f.cause in (T.LAUNCH_FAILURE_CAUSE_IMAGE_MISSING, T.LAUNCH_FAILURE_CAUSE_AGENT_LOST):
            whole.add(f.agent_id)
    whole |= {agent for agent, count in failures.items() if count >= AGENT_AVOID_AFTER}
    whole.discard(data_agent)
    avoid: list[types_pb2.PlacementAvoid] = []
    for agent in sorted(set(ports) | whole):
        if agent in whole:
            avoid.append(types_pb2.PlacementAvoid(agent_id=agent))
        elif ports[agent]:
            avoid.append(types_pb2.PlacementAvoid(agent_id=agent, ports=sorted(ports[agent])))
    return avoid


def leaves_volume(member: types_pb2.Member, avoid: Sequence[types_pb2.PlacementAvoid]) -> bool:
    """Whether the member's next launch should get a fresh volume instead of its placed one: the
    volume holds no data and the avoid list names its agent (a launch pinned to that agent takes
    the ports reserved there, the very ones that failed). A volume with data is never left here
    (data-safety rule 4)."""
    volume = member.volume
    if not volume.agent_id or volume.has_data:
        return False
    return any(a.agent_id == volume.agent_id for a in avoid)


# Steps whose ERROR can be a launch failure (a member that did not start after its launches).
LAUNCH_ACTIONS = frozenset({Action.LAUNCH, Action.AWAIT, Action.RELAUNCH})


def launch_retry_at(s: Snapshot, step: types_pb2.Step, retry_seconds: float) -> float | None:
    """When a plan stuck on ``step`` (ERROR) is tried again by itself, or None if never: only a
    launch step of a member whose current launch failed (recorded in ``launch_failures``, typed),
    ``retry_seconds`` after that failure, when its avoid list is forgotten too. Any other ERROR
    (e.g. an election that found every copy of the data gone, data-safety rule 4) waits for a
    person."""
    if step.status != plans.ERROR or plans.action_of(step) not in LAUNCH_ACTIONS:
        return None
    member = s.member(step.member_id)
    if member is None or not member.launch_failures:
        return None
    last = member.launch_failures[-1]
    task = s.task_of(member)
    if last.task_id != member.task_id or (task is not None and task.state not in ENDED):
        return None
    return plans.seconds(last.at) + retry_seconds


# --- plans ----------------------------------------------------------------------------------------


def decide(s: Snapshot) -> tuple[types_pb2.Plan | None, bool]:
    """The plan the instance should run now and whether it is new (to persist before running).
    ``(None, False)``: nothing to do (or the workload is not registered yet)."""
    instance = s.instance
    stored = instance.plan
    active = stored if plans.is_active(stored) else None

    if instance.phase in (T.INSTANCE_PHASE_DELETING, T.INSTANCE_PHASE_DELETED):
        if active is not None and active.name == plans.DELETE:
            return active, False
        return delete_plan(s), True

    if not s.peers():
        master = s.master()
        if master is not None and s.condition(master) == Condition.LOST:
            handled = active is not None and plans.has_open_step(
                active,
                master.id,
                (
                    Action.FAILOVER,
                    Action.FENCE,
                    Action.LAUNCH,
                    Action.AWAIT,
                    Action.DEMOTE,
                    Action.RELAUNCH,
                    Action.ELECT,
                ),
            )
            if handled and active is not None and not _reaches_the_master_late(s, active, master.id):
                return active, False
            return master_recovery(s, master), True

    if (
        active is not None
        and (active.status == plans.ERROR or active.name == plans.RECOVERY)
        and not handing_over(s, active)
    ):
        # Stuck in ERROR, or a recovery waiting on a member (e.g. relaunching it in place on an
        # agent that is gone): an operator's restart / replace of that member is a way out (it
        # replaces the plan; operation_plan waits while any *other* member is not ready, so the
        # replaced recovery was about this member alone; what is left is planned again after).
        from mesos_stateful.lifecycle.operations import operation_plan  # it imports this module

        rescue = operation_plan(s) if s.description is not None else None
        if rescue is not None and rescue.operation.id != active.operation.id:
            return rescue, True

    if active is not None:
        if handing_over(s, active):
            # It began handling the master and its new master is not started yet: whatever it
            # is named, a new plan would find a fenced (or promoted but read-only) master and
            # nobody to start it (no writable master until something else happened).
            return active, False
        stale = active.generation != instance.generation and active.name != plans.RECOVERY
        # Peers: a recovery planned for one lost peer must take in every peer lost since (all
        # killed at once are noticed one by one; restarted alone, none would have a quorum).
        replan_losses = active.name in (plans.DEPLOY, plans.SCALE, plans.DRAIN, plans.UPDATE) or (
            active.name == plans.RECOVERY and s.peers()
        )
        if not stale:
            stale = _waits_on_a_rebuild(s, active)
        if replan_losses and not stale:
            # A member the plan is removing may end on its own (an etcd peer exits once removed):
            # that is progress, not a loss to plan for again.
            handling = (
                Action.LAUNCH,
                Action.AWAIT,
                Action.KILL,
                Action.REMOVE,
                Action.DELETE_MEMBER,
                Action.DRAIN,
            )
            # An update handles a member only from its restart on: one lost before its turn
            # is recovered first (a new plan), not left down while others restart.
            stale = any(
                s.condition(m) == Condition.LOST
                and (
                    not plans.has_open_step(active, m.id, handling)
                    or plans.has_open_step(active, m.id, (Action.RESTART,))
                )
                for m in s.members
            )
        if not stale:
            return active, False

    if s.description is None:
        return None, False
    from mesos_stateful.lifecycle.operations import operation_plan  # it imports this module

    # An operator's action first (it waits while a member other than its own is not ready), so a
    # restart / replace of a member that is down replaces the recovery that keeps failing on it.
    plan = operation_plan(s) or converge(s)
    return plan, plan is not None


def _reaches_the_master_late(s: Snapshot, active: types_pb2.Plan, master_id: str) -> bool:
    """True when a planned plan (an update, an operator's operation) holds the master's fence /
    failover only after steps about other members: a replica's restart there cannot finish without
    a master, so the lost master must be recovered now (the plan is replaced; its work is planned
    again after). A plan already handing the master over is never replaced (:func:`handing_over`)."""
    if active.name != plans.UPDATE and active.name not in plans.OPERATIONS:
        return False
    if handing_over(s, active):
        return False
    first = next((st for st in active.steps if st.status != plans.COMPLETE), None)
    return first is not None and first.member_id != master_id


def _waits_on_a_rebuild(s: Snapshot, active: types_pb2.Plan) -> bool:
    """A plan waiting to bring up a replica that its last check says must be rebuilt (e.g. an old
    master on a diverged branch: it never gets ready) is replaced, unless it handles the master."""
    if handing_over(s, active):
        return False
    waiting = (Action.LAUNCH, Action.AWAIT, Action.RELAUNCH, Action.START_SLAVE, Action.SLAVE_RUNNING)
    return any(
        m.role == T.ROLE_SLAVE
        and m.health.repair == T.REPAIR_REBUILD
        and plans.has_open_step(active, m.id, waiting)
        for m in s.members
    )


def converge(s: Snapshot) -> types_pb2.Plan | None:
    """The plan that brings the members to the spec, or None when they already match it."""
    spec = s.instance.spec
    name = s.name
    peers = s.peers()
    members = list(s.members)
    desired = spec.replicas
    steps: list[types_pb2.Step] = []
    reasons: list[str] = []

    if not members:
        steps.append(plans.step(Action.SECRETS))

    # Scale down: the highest ordinals first, never the master.
    victims: list[types_pb2.Member] = []
    if len(members) > desired:
        candidates = sorted((m for m in members if m.role != T.ROLE_MASTER), key=lambda m: -m.ordinal)
        victims = candidates[: len(members) - desired]
        for v in victims:
            steps += [
                plans.step(Action.REMOVE, v.id),
                plans.step(Action.KILL, v.id),
                plans.step(Action.DELETE_MEMBER, v.id),
            ]
        reasons.append(f"scale down from {len(members)} to {desired} members")
    kept = [m for m in members if m not in victims]

    # Scale up: the lowest free ordinals.
    new_ids: list[str] = []
    if len(members) < desired:
        used = {m.ordinal for m in members}
        ordinal = 0
        while len(new_ids) < desired - len(members):
            if ordinal not in used:
                new_ids.append(plans.member_id(name, ordinal))
            ordinal += 1
        steps += [plans.step(Action.CREATE, mid) for mid in new_ids]
        reasons.append(
            f"create {len(new_ids)} members" if not members else f"scale up from {len(members)} to {desired}"
        )

    lost = [m for m in kept if s.condition(m) == Condition.LOST]
    unready = [m for m in kept if s.condition(m) == Condition.NOT_READY]
    if lost:
        in_place = [m for m in lost if m.volume.agent_id]
        elsewhere = [m for m in lost if not m.volume.agent_id]
        if in_place:
            reasons.append(
                "restart lost "
                + ", ".join(f"{m.id} ({_brief(_task_detail(s, m))})" for m in in_place)
                + " in place on their volumes"
            )
        if elsewhere:
            reasons.append(
                "replace lost " + ", ".join(f"{m.id} ({_brief(_task_detail(s, m))})" for m in elsewhere)
            )
    if unready and not new_ids and not victims:
        reasons.append("start members not ready: " + ", ".join(m.id for m in unready))

    if peers:
        # Peers with their data on a volume restart in place, keeping their member ids: all of
        # them launched together (a restarted cluster needs a quorum before any is ready).
        in_place = [m for m in sorted(lost + unready, key=lambda m: m.ordinal) if m.volume.agent_id]
        steps += [plans.step(Action.LAUNCH, m.id) for m in in_place]
        steps += [plans.step(Action.AWAIT, m.id) for m in in_place]
        for m in in_place:
            steps += [plans.step(Action.START, m.id), plans.step(Action.PEER_RUNNING, m.id)]
        for m in sorted(lost + unready, key=lambda m: m.ordinal):
            if m in in_place:
                continue
            if m in lost:
                steps += [plans.step(Action.PEER_LOST, m.id), plans.step(Action.REMOVE, m.id)]
            steps += _bring_up(m.id, Action.START, Action.PEER_RUNNING)
        for mid in new_ids:
            steps += _bring_up(mid, Action.START, Action.PEER_RUNNING)
    else:
        master = s.master()
        slaves: list[str] = []
        lost_slaves: list[str] = []
        # A master that is not ready comes first; with no master at all, the first new member
        # becomes it (the create step gives it ROLE_MASTER). A lost master never gets here:
        # decide() hands it to master_recovery (failover or cold start).
        if master is not None and master in unready:
            steps += _bring_up(master.id, Action.START_MASTER, Action.MASTER_RUNNING)
        for m in sorted(lost + unready, key=lambda m: m.ordinal):
            if master is not None and m.id == master.id:
                continue
            if m in lost:
                lost_slaves.append(m.id)
            slaves.append(m.id)
        new_slaves = list(new_ids)
        if master is None and new_slaves:
            first = new_slaves.pop(0)
            steps += _bring_up(first, Action.START_MASTER, Action.MASTER_RUNNING)
        slaves += new_slaves
        steps += [plans.step(Action.SLAVE_LOST, mid) for mid in lost_slaves]
        # A replica whose last check asked for a rebuild (a diverged history) is not restarted on
        # its volume: it could never follow the master again (its rebuild may have been cut short
        # by another plan).
        rebuilt = {m.id for m in members if m.health.repair == T.REPAIR_REBUILD and m.role != T.ROLE_MASTER}
        steps += [plans.step(Action.REBUILD, mid) for mid in slaves if mid in rebuilt]
        steps += [plans.step(Action.LAUNCH, mid) for mid in slaves]
        steps += [plans.step(Action.AWAIT, mid) for mid in slaves]
        for mid in slaves:
            steps += [plans.step(Action.START_SLAVE, mid), plans.step(Action.SLAVE_RUNNING, mid)]

    repairing = False
    if not steps and not peers:
        steps, repair_reasons = repairs(s)
        reasons += repair_reasons
        repairing = bool(steps)
    if not steps:
        # Nothing else to do: move the next member off an agent going down for maintenance
        # (an operator's action on a member comes before converge: decide()).
        return drain_plan(s)
    if not members:
        plan_name = plans.DEPLOY
    elif lost or repairing:
        # A repair is a recovery, also right after a deploy (not a "deploy" that runs again).
        plan_name = plans.RECOVERY
    elif victims or new_ids:
        plan_name = plans.SCALE
    elif s.instance.phase in (T.INSTANCE_PHASE_PENDING, T.INSTANCE_PHASE_DEPLOYING) or (
        s.instance.plan.name == plans.DEPLOY
    ):
        plan_name = plans.DEPLOY
    else:
        plan_name = plans.RECOVERY
    return plans.new_plan(plan_name, "; ".join(reasons), s.instance.generation, steps)


def repairs(s: Snapshot) -> tuple[list[types_pb2.Step], list[str]]:
    """Steps for replicas whose last check asked for a repair, while the master is ready: re-point
    (StartSlave again: a chained, stopped or broken link) or rebuild (a fresh volume resynced from
    the master: a diverged history). Never the master."""
    master = s.master()
    if master is None or s.condition(master) != Condition.READY:
        return [], []
    steps: list[types_pb2.Step] = []
    reasons: list[str] = []
    for m in s.members:
        if m.role != T.ROLE_SLAVE or s.condition(m) != Condition.READY or not m.health.repair:
            continue
        why = unhealthy(m)
        if m.health.repair == T.REPAIR_REBUILD:
            steps += [plans.step(Action.REBUILD, m.id)]
            steps += _bring_up(m.id, Action.START_SLAVE, Action.SLAVE_RUNNING)
            reasons.append(f"rebuild {m.id} from the master ({why})")
        elif m.health.repair == T.REPAIR_REPOINT:
            steps += [plans.step(Action.START_SLAVE, m.id), plans.step(Action.SLAVE_RUNNING, m.id)]
            reasons.append(f"re-point {m.id} to master {master.id} ({why})")
    return steps, reasons


def _bring_up(mid: str, start: Action, running: Action) -> list[types_pb2.Step]:
    return [
        plans.step(Action.LAUNCH, mid),
        plans.step(Action.AWAIT, mid),
        plans.step(start, mid),
        plans.step(running, mid),
    ]


def _task_detail(s: Snapshot, m: types_pb2.Member) -> str:
    task = s.task_of(m)
    if task is None:
        return "no task"
    if m.role == T.ROLE_MASTER and m.health.unresponsive and task.state not in ENDED:
        c = failing(m, T.CONDITION_TYPE_REACHABLE)
        return (
            "unresponsive (task still " + task_state_name(task.state) + ")" + (f": {c.message}" if c else "")
        )
    detail = task_state_name(task.state)
    return f"{detail}: {one_line(task, m.id)}" if task.message else detail


def one_line(task: types_pb2.Task, member_id: str) -> str:
    """A task's status message on one line for member and step messages: the executor's message
    may end in the last lines of the member's output; only the telling line is kept (the first
    line, or the one naming the cause, e.g. "Address already in use", as
    :func:`classify_launch_failure` picks it) with a pointer to the whole output
    (``statefulctl logs MEMBER``). The Task record keeps the whole message."""
    lines = [line.strip() for line in task.message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    _, line = classify_launch_failure(task.state, task.reason, task.message)
    first = lines[0]
    pointer = f"{first} (output: statefulctl logs {member_id})"
    telling = line.removeprefix(first).removeprefix(": ") if line.startswith(first) else ""
    return f"{pointer}: {telling}" if telling else pointer


def _brief(detail: str, limit: int = 160) -> str:
    """The first line of a task detail, cut to ``limit`` characters (log tails stay in the member)."""
    line = detail.splitlines()[0] if detail else detail
    return line if len(line) <= limit else line[: limit - 1] + "…"


def ready_slaves(s: Snapshot, exclude: Iterable[str] = ()) -> list[types_pb2.Member]:
    skip = set(exclude)
    return [
        m
        for m in s.members
        if m.role == T.ROLE_SLAVE and m.id not in skip and s.condition(m) == Condition.READY
    ]


def holds_data(s: Snapshot, member: types_pb2.Member) -> bool:
    """Whether ``member`` may become master as far as data goes: its volume holds the instance's
    data (and is not an old master's branch waiting to rejoin, ``Volume.rejoin_pending``, while
    another member holds the data), or the instance never had any (a deploy that did not finish)."""
    if not s.instance.has_data:
        return True
    if not member.volume.has_data:
        return False
    if member.volume.rejoin_pending:
        others = [m for m in s.members if m.id != member.id]
        return not any(m.volume.has_data and not m.volume.rejoin_pending for m in others)
    return True


def failover_view(s: Snapshot, old_master: str) -> tuple[list[types_pb2.Member], list[types_pb2.Member]]:
    """(candidates, waited) of a failover (data-safety rule 3). Both hold the instance's data and
    were not found inconsistent with the master's history by the last check (a diverged member is
    never promoted). Candidates run (they can answer MasterLost, which compares their positions);
    waited are the others — restarting, or ended: a failover never skips them, since one of them
    may hold the only copy of an acknowledged write."""
    candidates: list[types_pb2.Member] = []
    waited: list[types_pb2.Member] = []
    for m in s.members:
        if m.id == old_master or m.role != T.ROLE_SLAVE or not holds_data(s, m):
            continue
        if failing(m, T.CONDITION_TYPE_CONSISTENT) is not None:
            continue
        task = s.task_of(m)
        if task is not None and task.state == T.TASK_STATE_RUNNING and not task.kill_requested:
            candidates.append(m)
        else:
            waited.append(m)
    return candidates, waited


def failover_candidates(s: Snapshot, old_master: str) -> list[types_pb2.Member]:
    """The running members of :func:`failover_view` (what MasterLost chooses among)."""
    return failover_view(s, old_master)[0]


def master_recovery(s: Snapshot, master: types_pb2.Member) -> types_pb2.Plan:
    """Recovery of a lost master: fence it (it must have stopped taking writes, data-safety rule
    2), then fail over to a replica (the workload picks it) when every replica holding data runs;
    else restart every member in place and elect the most advanced (:func:`cold_start`), which
    waits for the ones holding data."""
    reason = f"master {master.id} lost: {_brief(_task_detail(s, master))}"
    candidates, waited = failover_view(s, master.id)
    if candidates and not waited:
        steps = [plans.step(Action.FENCE, master.id), plans.step(Action.FAILOVER, master.id)]
    else:
        steps = cold_start(s, master.id)
        reason += "; " + cold_start_reason(waited)
    return plans.new_plan(plans.RECOVERY, reason, s.instance.generation, steps)


def cold_start_reason(waited: Sequence[types_pb2.Member]) -> str:
    """Why a recovery restarts every member instead of failing over."""
    tail = "restarting every member on its volume, the most advanced leads"
    if waited:
        return f"{', '.join(m.id for m in waited)} (holding data) not running: {tail}"
    return f"no ready replica holding data: {tail}"


def cold_start(s: Snapshot, old_master: str, fence: bool = True) -> list[types_pb2.Step]:
    """Every member restarted in place as a replica (the lost master's record first becomes a
    SLAVE, so nobody starts writable), all of them waited for, then ``elect`` asks MasterLost
    which restarted member holding data is the most advanced; its steps follow (see
    :func:`after_election`). Members with a live task are not relaunched (launch is a no-op).

    ``fence``: an old master whose task still runs (declared unresponsive by the probe) is fenced
    first, as before a failover. One whose task ended or is unreachable (LOST: it may run on a
    cut-off agent) needs no fence here: it is relaunched in place, and Mesos gives its persistent
    volume to one task at a time, so its new incarnation starts only once the old process is gone;
    the election waits for it."""
    steps: list[types_pb2.Step] = []
    master = s.member(old_master)
    task = s.task_of(master) if master is not None else None
    if fence and task is not None and task.state not in ENDED:
        steps.append(plans.step(Action.FENCE, old_master))
    steps.append(plans.step(Action.DEMOTE, old_master))
    ids = [m.id for m in s.members]
    steps += [plans.step(Action.RELAUNCH, mid) for mid in ids]
    steps += [plans.step(Action.AWAIT, mid) for mid in ids]
    steps.append(plans.step(Action.ELECT, old_master))
    return steps


def election_candidates(s: Snapshot) -> tuple[list[types_pb2.Member], list[types_pb2.Member]]:
    """(candidates, waited_for): members running again that hold data, and members holding data
    whose task is not running yet (an election never skips them)."""
    candidates: list[types_pb2.Member] = []
    waited: list[types_pb2.Member] = []
    for m in s.members:
        if not holds_data(s, m) or failing(m, T.CONDITION_TYPE_CONSISTENT) is not None:
            continue
        task = s.task_of(m)
        if task is not None and task.state == T.TASK_STATE_RUNNING:
            candidates.append(m)
        else:
            waited.append(m)
    return candidates, waited


def after_election(s: Snapshot, new_master: str) -> list[types_pb2.Step]:
    """After a cold start's election: the chosen member becomes master, every other one follows it."""
    steps = [plans.step(Action.START_MASTER, new_master), plans.step(Action.MASTER_RUNNING, new_master)]
    for m in s.members:
        if m.id != new_master:
            steps += [plans.step(Action.START_SLAVE, m.id), plans.step(Action.SLAVE_RUNNING, m.id)]
    return steps


def after_failover(
    s: Snapshot,
    old_master: str,
    new_master: str,
    drain: bool = False,
    before_bring_up: Sequence[types_pb2.Step] = (),
    closing: Sequence[types_pb2.Step] = (),
) -> list[types_pb2.Step]:
    """Steps appended once the failover step persisted the new roles: start the new master,
    re-point the other ready replicas, then relaunch the old master as a replica. ``drain`` (a
    switchover off an agent going down for maintenance): the old master is not relaunched on its
    volume there but drained first (``drain``: a fresh volume elsewhere, resynced from the new
    master). An operator's plan (lifecycle/operations.py) gives ``before_bring_up`` (a restart's
    ``kill`` or a replacement's ``replace`` of the old master) and ``closing`` (its ``done``)."""
    steps = [plans.step(Action.START_MASTER, new_master), plans.step(Action.MASTER_RUNNING, new_master)]
    for m in ready_slaves(s, exclude=(old_master, new_master)):
        task = s.task_of(m)
        if task is not None and task.kill_requested:
            # Being stopped by the plan this recovery replaced (a rebuild): nothing here would
            # launch it again, so a start-slave would wait for it forever. The next plan does.
            continue
        steps.append(plans.step(Action.START_SLAVE, m.id))
    if drain:
        steps.append(plans.step(Action.DRAIN, old_master))
    steps += before_bring_up
    steps += _bring_up(old_master, Action.START_SLAVE, Action.SLAVE_RUNNING)
    steps += closing
    return steps


# --- maintenance: drains -------------------------------------------------------------------------
#
# Mesos announces an agent's maintenance window with inverse offers (docs/maintenance.md: "frameworks
# ... are expected to vacate the agent before the window starts"); the offers service records it in
# ``Task.maintenance`` of every task there. A member whose task carries it is drained: replicas first,
# one at a time (a fresh volume elsewhere, resynced from the master), the master last by switchover
# (fence + failover while it still runs, then it is drained as a replica); peers one at a time
# (RemoveMember, a fresh volume elsewhere, Start: the quorum never loses more than one member). One
# member per drain plan: the next one is planned from state once the plan is complete, so a
# restarted lifecycle resumes where the drains are.


def draining_agents(s: Snapshot) -> dict[str, types_pb2.AgentMaintenance]:
    """The agents of this instance's task records that carry a maintenance window, by agent id
    (a killed task's record keeps telling where its member must not come back)."""
    out: dict[str, types_pb2.AgentMaintenance] = {}
    for tid in sorted(s.tasks):
        t = s.tasks[tid]
        if t.agent_id and t.HasField("maintenance"):
            out.setdefault(t.agent_id, t.maintenance)
    return out


def maintenance_of(s: Snapshot, member: types_pb2.Member) -> types_pb2.AgentMaintenance | None:
    """The maintenance window of the agent the member runs on (its current task carries it), or
    None: no task, ended, being killed by us, or no maintenance scheduled there."""
    task = s.task_of(member)
    if task is None or task.state in ENDED or task.kill_requested or not task.HasField("maintenance"):
        return None
    return task.maintenance


def agent_of(s: Snapshot, member: types_pb2.Member) -> str:
    task = s.task_of(member)
    return (task.agent_id if task is not None and task.agent_id else "") or member.agent_id


def maintenance_avoid(s: Snapshot, member: types_pb2.Member) -> list[types_pb2.PlacementAvoid]:
    """Agents a launch of ``member`` must not go to: every agent scheduled for maintenance,
    except the one its placed volume is on (a restart in place stays allowed; a drain moves it)."""
    pinned = member.volume.agent_id
    return [types_pb2.PlacementAvoid(agent_id=a) for a in sorted(draining_agents(s)) if a != pinned]


def when(stamp: timestamp_pb2.Timestamp) -> str:
    """A timestamp as RFC 3339 UTC (``2026-11-30T17:00:00Z``), or "?" when unset."""
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else "?"


def drain_reason(s: Snapshot, member: types_pb2.Member, maintenance: types_pb2.AgentMaintenance) -> str:
    task = s.task_of(member)
    host = maintenance.hostname or (task.host if task is not None else "") or member.host
    return f"drain {member.id} off agent {host} (maintenance at {when(maintenance.start)})"


def switchover_candidates(s: Snapshot, master_id: str) -> list[types_pb2.Member]:
    """The failover candidates a switchover may promote: ready, and on an agent that is neither
    the old master's nor scheduled for maintenance."""
    master = s.member(master_id)
    away = set(draining_agents(s))
    if master is not None:
        away.add(agent_of(s, master))
    return [
        m
        for m in failover_candidates(s, master_id)
        if s.condition(m) == Condition.READY and agent_of(s, m) not in away
    ]


def switchover_blocker(s: Snapshot, master: types_pb2.Member) -> str:
    """Why the master cannot be switched over now ("" if it can): a replica holding data does not
    run (a failover never skips one), or no ready replica runs on another agent. Then the master
    stays (it is not killed without somewhere to go); scaling up gives it one."""
    candidates, waited = failover_view(s, master.id)
    if waited:
        return ", ".join(m.id for m in waited) + " (holding data) not running"
    if switchover_candidates(s, master.id):
        return ""
    replicas = s.instance.spec.replicas
    if not candidates:
        return (
            f"no ready replica to switch over to (replicas={replicas}); scale to {replicas + 1} "
            "replicas to move it"
        )
    return "every ready replica runs on an agent scheduled for maintenance too"


def launch_resources(s: Snapshot, member: types_pb2.Member) -> types_pb2.Resources:
    """The resources a launch of ``member`` asks for (as :func:`launch_spec` fills them in: the
    spec's, else the workload's defaults; the disk is its volume's size)."""
    spec = s.instance.spec.resources
    defaults = s.description.default_resources if s.description is not None else types_pb2.Resources()
    return types_pb2.Resources(
        cpus=spec.cpus or defaults.cpus,
        mem_mb=spec.mem_mb or defaults.mem_mb,
        disk_mb=member.volume.size_mb or spec.disk_mb or defaults.disk_mb,
    )


def _resources_text(r: types_pb2.Resources) -> str:
    return f"cpus {r.cpus:g}, mem {r.mem_mb} MB, disk {r.disk_mb} MB"


def drain_room(s: Snapshot, member: types_pb2.Member, agents: Sequence[offer_service_pb2.Agent]) -> str:
    """Whether ``member`` can be moved before it is stopped for a drain: "" if some agent the
    offers service knows (``OfferService.GetCluster``: active agents seen in offers) can take it,
    else why not, worded for a person. Such an agent is not the member's own nor its volume's, not
    scheduled for maintenance (``Agent.maintenance``: its offers carry an unavailability or an
    inverse offer for it arrived; or one of our task records there says so,
    :func:`draining_agents`), holds no
    other member of this instance (its task or its volume, a live reservation of ours), and has
    the member's launch resources (:func:`launch_resources`) left: its total minus our live
    reservations there (what other frameworks use is not known here). Without such an agent a
    stopped member would sit QUEUED with its volume abandoned (fewer copies, a quorum shrunk)."""
    name = s.name
    away = set(draining_agents(s))
    own = {agent_of(s, member), member.volume.agent_id} - {""}
    held: set[str] = set()
    for m in s.members:
        if m.id == member.id:
            continue
        task = s.task_of(m)
        if task is not None and task.agent_id and task.state not in ENDED:
            held.add(task.agent_id)
        if m.volume.agent_id:
            held.add(m.volume.agent_id)
    for tid, t in s.tasks.items():
        if t.agent_id and t.state not in ENDED and not tid.startswith(member.id + "."):
            held.add(t.agent_id)
    needed = launch_resources(s, member)
    short: list[str] = []
    for agent in agents:
        a = agent.agent_id
        if a in own or a in away or agent.HasField("maintenance"):
            continue
        if a in held or any(
            r.instance == name and r.member_id != member.id and not r.orphaned for r in agent.reservations
        ):
            continue
        total = agent.total
        if total.cpus or total.mem_mb or total.disk_mb:
            live = [r.resources for r in agent.reservations if not r.orphaned and r.member_id != member.id]
            free = types_pb2.Resources(
                cpus=total.cpus - sum(r.cpus for r in live),
                mem_mb=total.mem_mb - sum(r.mem_mb for r in live),
                disk_mb=total.disk_mb - sum(r.disk_mb for r in live),
            )
            if free.cpus + 1e-9 < needed.cpus or free.mem_mb < needed.mem_mb or free.disk_mb < needed.disk_mb:
                short.append(f"{agent.hostname or a} has {_resources_text(free)} free")
                continue
        return ""
    why = (
        f"no agent to move {member.id} to: every other agent is scheduled for maintenance or holds "
        f"a member of {name}"
    )
    if short:
        why += f", or lacks its resources ({_resources_text(needed)}): " + "; ".join(short)
    return why


def drain_target(s: Snapshot) -> tuple[types_pb2.Member, types_pb2.AgentMaintenance] | None:
    """The member to drain next, or None: replicas (then peers) by ordinal, the master last; only
    while every member is ready (one at a time; a recovery or repair comes first)."""
    if not s.members or any(s.condition(m) != Condition.READY for m in s.members):
        return None
    draining = [(m, mt) for m in s.members if (mt := maintenance_of(s, m)) is not None]
    for m, mt in draining:
        if m.role != T.ROLE_MASTER:
            return m, mt
    return draining[0] if draining else None


def drain_plan(s: Snapshot) -> types_pb2.Plan | None:
    """The plan that moves the next member off an agent scheduled for maintenance, or None.

    - replica: ``drain`` (a fresh volume, then its task killed) → launch elsewhere → await →
      start-slave → slave-running (it resyncs from the master);
    - master: ``drain``, which appends ``fence`` → ``failover`` (:func:`switchover`) once no
      replica is to be drained first and ``drain_settle_seconds`` passed since the maintenance was
      announced: a switchover while it runs (MasterLost picks among the ready replicas on other
      agents by position; nothing acknowledged is lost and the old master takes no write once
      fenced); the failover appends ``drain`` of the old master and its bring-up as a replica
      (:func:`after_failover`). Without a ready replica on another agent it is not moved: the
      ``drain`` step waits (DELAYED), saying why (scale up to move it);
    - peer: ``remove-member`` → ``drain`` → launch → await → start → peer-running, only while
      every other peer is ready (the quorum loses one member at a time); a single peer waits.
    """
    target = drain_target(s)
    if target is None:
        return None
    member, maintenance = target
    reason = drain_reason(s, member, maintenance)
    steps: list[types_pb2.Step]
    if s.peers():
        if len(s.members) < 2:
            steps = [plans.step(Action.DRAIN, member.id)]
            reason += "; cannot move it: no other peer to resync from"
        else:
            steps = [plans.step(Action.REMOVE, member.id), plans.step(Action.DRAIN, member.id)]
            steps += _bring_up(member.id, Action.START, Action.PEER_RUNNING)
    elif member.role == T.ROLE_MASTER:
        # ``drain`` of a master appends the switchover (:func:`switchover`) once it can, or waits.
        steps = [plans.step(Action.DRAIN, member.id)]
        blocker = switchover_blocker(s, member)
        reason += f"; cannot move it yet: {blocker}" if blocker else " by switchover"
    else:
        steps = [plans.step(Action.DRAIN, member.id)]
        steps += _bring_up(member.id, Action.START_SLAVE, Action.SLAVE_RUNNING)
    return plans.new_plan(plans.DRAIN, reason, s.instance.generation, steps)


def down_for_maintenance(
    s: Snapshot, member: types_pb2.Member, task: types_pb2.Task, now: float
) -> types_pb2.AgentMaintenance | None:
    """The maintenance window, already started at ``now`` (epoch seconds), of the agent a queued
    launch of ``member`` is pinned to (its volume is there), or None. Such a launch is replaced at
    once (a fresh volume elsewhere) instead of after ``replace_after_seconds``: the machine is
    expected down for the window (Mesos docs/maintenance.md) — but only while another ready
    member holds the data (its volume may hold the only copy otherwise: it waits for the agent)."""
    agent = task.launch.volume.agent_id
    if task.state != T.TASK_STATE_QUEUED or not agent:
        return None
    window = draining_agents(s).get(agent)
    if window is None or not window.HasField("start") or now < plans.seconds(window.start):
        return None
    holders = [
        m
        for m in s.members
        if m.id != member.id
        and m.volume.has_data
        and not m.volume.rejoin_pending
        and m.volume.agent_id != agent
        and s.condition(m) == Condition.READY
    ]
    if s.instance.has_data and not holders:
        return None
    return window


def switchover(master_id: str) -> list[types_pb2.Step]:
    """The switchover of a master off a draining agent: fenced while it runs, then a failover
    (MasterLost among the ready replicas on other agents); the failover appends the rest."""
    return [plans.step(Action.FENCE, master_id), plans.step(Action.FAILOVER, master_id)]


def replicas_draining(s: Snapshot) -> list[types_pb2.Member]:
    """Members other than the master on an agent scheduled for maintenance (drained first)."""
    return [m for m in s.members if m.role != T.ROLE_MASTER and maintenance_of(s, m) is not None]


# Steps that handle the master: once one of them started, the plan owns the master until its new
# master is started (:func:`handing_over`).
MASTER_HANDLING = frozenset({Action.FENCE, Action.FAILOVER, Action.DEMOTE, Action.ELECT})


def handing_over(s: Snapshot, plan: types_pb2.Plan) -> bool:
    """Whether ``plan`` began handling the master — a FENCE, FAILOVER, DEMOTE or ELECT step (or a
    REBUILD of the master) started or done — and the START_MASTER and MASTER_RUNNING of its new
    master (appended after that step by the failover or the election) are not both COMPLETE
    yet. Such a plan is never replaced by :func:`decide` (spec change, new losses, a rebuild
    waited for), whatever its name (drain, recovery): a plan that replaced it would find a fenced
    old master and a promoted one that nobody starts (a read-only replica of nobody: no writable
    master). A delete still wins, and a loss of the *new* master hands it to a recovery (its
    ``start-master`` is skipped for a lost member, the plan could not start it anyway)."""
    master = s.master()
    begun = -1
    for i, st in enumerate(plan.steps):
        action = plans.action_of(st)
        handles = action in MASTER_HANDLING or (
            action == Action.REBUILD and master is not None and st.member_id == master.id
        )
        if handles and st.status != plans.PENDING:
            begun = i
    if begun < 0:
        return False
    after = plan.steps[begun + 1 :]
    started = {
        (plans.action_of(st), st.member_id)
        for st in after
        if plans.action_of(st) in (Action.START_MASTER, Action.MASTER_RUNNING) and st.status == plans.COMPLETE
    }
    return not any(
        (Action.START_MASTER, st.member_id) in started and (Action.MASTER_RUNNING, st.member_id) in started
        for st in after
        if plans.action_of(st) == Action.START_MASTER
    )


def delete_plan(s: Snapshot) -> types_pb2.Plan:
    steps = [plans.step(Action.KILL, m.id) for m in s.members if m.task_id]
    steps += [plans.step(Action.CLEANUP), plans.step(Action.RELEASE), plans.step(Action.REMOVE_INSTANCE)]
    return plans.new_plan(plans.DELETE, "deletion requested", s.instance.generation, steps)


def phase_for(s: Snapshot, plan: types_pb2.Plan | None) -> types_pb2.InstancePhase:
    """The phase the instance is in while running ``plan`` (or with no plan in progress)."""
    if s.instance.phase in (T.INSTANCE_PHASE_DELETING, T.INSTANCE_PHASE_DELETED):
        return s.instance.phase
    if plan is not None and plans.is_active(plan):
        if plans.plan_status(plan) == plans.ERROR:
            return T.INSTANCE_PHASE_FAILED
        return {
            plans.DEPLOY: T.INSTANCE_PHASE_DEPLOYING,
            plans.SCALE: T.INSTANCE_PHASE_SCALING,
            plans.RECOVERY: T.INSTANCE_PHASE_RECOVERING,
            plans.DRAIN: T.INSTANCE_PHASE_DRAINING,
            plans.DELETE: T.INSTANCE_PHASE_DELETING,
        }.get(plan.name, s.instance.phase)
    if not s.members:
        return T.INSTANCE_PHASE_PENDING
    ready = all(s.condition(m) == Condition.READY for m in s.members)
    if ready and len(s.members) == s.instance.spec.replicas:
        if any(unhealthy(m) for m in s.members):
            return T.INSTANCE_PHASE_DEGRADED
        return T.INSTANCE_PHASE_RUNNING
    if any(s.condition(m) in (Condition.LOST, Condition.DECLINED) for m in s.members):
        return T.INSTANCE_PHASE_DEGRADED
    return s.instance.phase


# --- launches ------------------------------------------------------------------------------------


def launch_spec(
    config: types_pb2.LaunchSpec,
    instance: types_pb2.Instance,
    member: types_pb2.Member,
    description: types_pb2.WorkloadDescription,
    avoid: Sequence[types_pb2.PlacementAvoid] = (),
) -> types_pb2.LaunchSpec:
    """The workload's Config answer with identity, resources, ports, placement (with the agents
    and ports to avoid, :func:`avoid_list`), runtime and image filled in."""
    spec = instance.spec
    launch = types_pb2.LaunchSpec()
    launch.CopyFrom(config)
    launch.instance = spec.name
    launch.member_id = member.id
    launch.task_id = member.task_id
    launch.workload = spec.workload
    launch.role = member.role
    defaults = description.default_resources
    launch.resources.cpus = spec.resources.cpus or defaults.cpus
    launch.resources.mem_mb = spec.resources.mem_mb or defaults.mem_mb
    launch.resources.disk_mb = spec.resources.disk_mb or defaults.disk_mb
    if not launch.port_names:
        launch.port_names.extend(description.port_names)
    launch.placement.CopyFrom(spec.placement)
    del launch.avoid[:]
    launch.avoid.extend(avoid)
    launch.image = spec.image or launch.image or description.default_image
    # The instance's runtime, not the workload's: RUNTIME_UNSPECIFIED in a record stored before
    # runtimes existed means processes (what its members ran as).
    launch.runtime = spec.runtime or types_pb2.RUNTIME_PROCESS
    if member.volume.persistence_id:
        launch.volume.CopyFrom(member.volume)
        launch.volume.has_data = False  # lifecycle's bookkeeping, not part of the launch
        launch.resources.disk_mb = member.volume.size_mb or launch.resources.disk_mb
    return launch


def new_volume(s: Snapshot, member_id: str, generation: int) -> types_pb2.Volume:
    """A fresh volume for a member: not placed yet, no data, the size of the member's disk."""
    disk = s.instance.spec.resources.disk_mb
    if not disk and s.description is not None:
        disk = s.description.default_resources.disk_mb
    return types_pb2.Volume(
        persistence_id=plans.persistence_id(member_id, generation, plans.instance_uid(s.instance.created_at)),
        container_path=plans.VOLUME_PATH,
        size_mb=max(disk, 1),
    )


def next_incarnation(s: Snapshot, member: types_pb2.Member) -> int:
    """One past every incarnation of the member seen so far (its record and any task record), so a
    new task id never collides with an old task (Launch is idempotent on task id)."""
    seen = [member.incarnation]
    prefix = member.id + "."
    seen += [plans.incarnation_of(t) for t in s.tasks if t.startswith(prefix)]
    return max(seen) + 1
