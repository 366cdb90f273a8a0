"""The plan model: the actions a step can take, how steps are named, and plan bookkeeping.

A plan (``types_pb2.Plan``) is persisted in ``Instance.plan`` after every step change, so
``GetInstance`` shows where an instance is and why it is stuck, and a restarted lifecycle resumes
at the first step that is not COMPLETE. A step's action is the first word of its name
(``"launch cache-1"``); the member it is about is ``Step.member_id``. While a waiting step is
STARTING, ``next_attempt_at`` is when it gives up waiting (launch / kill timeout); while it is
DELAYED, when it is tried again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from enum import StrEnum

from google.protobuf import timestamp_pb2

from mesos_stateful.api.stateful.v1 import types_pb2

StepStatus = types_pb2.StepStatus
PENDING = types_pb2.STEP_STATUS_PENDING
STARTING = types_pb2.STEP_STATUS_STARTING
COMPLETE = types_pb2.STEP_STATUS_COMPLETE
DELAYED = types_pb2.STEP_STATUS_DELAYED
ERROR = types_pb2.STEP_STATUS_ERROR

DEPLOY = "deploy"
SCALE = "scale"
RECOVERY = "recovery"
DELETE = "delete"
# Moves one member off an agent scheduled for maintenance (Mesos inverse offers, docs/maintenance.md).
DRAIN = "drain"
# Rolls a new spec generation through the members (lifecycle/rolling.py): replicas in place one at
# a time, then a switchover, then the old master.
UPDATE = "update"
# Operator actions on one member (Member.operation; lifecycle/operations.py).
SWITCHOVER = "switchover"
RESTART = "restart"
REPLACE = "replace"
OPERATIONS = frozenset({SWITCHOVER, RESTART, REPLACE})


class Action(StrEnum):
    """What a step does. Every action checks the state first, so running it twice is harmless."""

    SECRETS = "secrets"  # generate the instance's secrets once
    CREATE = "create"  # create the member record (PENDING; MASTER if the instance has none)
    LAUNCH = "launch"  # Config -> OfferService.Launch, unless the member has a live task
    RELAUNCH = "relaunch"  # cold start: a task not RUNNING yet is killed, then launched anew
    AWAIT = "await-running"  # wait for the task to be RUNNING (relaunch if it ends)
    START = "start"  # Start (peers)
    START_MASTER = "start-master"
    START_SLAVE = "start-slave"
    MASTER_RUNNING = "master-running"  # sets the member RUNNING
    SLAVE_RUNNING = "slave-running"
    PEER_RUNNING = "peer-running"
    FAILOVER = "failover"  # MasterLost -> persist the new roles (promoted first)
    FENCE = "fence"  # before a promotion: the old master stops taking writes (killed, demoted or self-fenced)
    DEMOTE = "demote"  # cold start: the lost master's record becomes a SLAVE before relaunching
    ELECT = "elect"  # cold start: MasterLost over every restarted member with data -> new master
    SLAVE_LOST = "slave-lost"
    PEER_LOST = "peer-lost"
    REMOVE = "remove-member"  # RemoveMember callback
    KILL = "kill"  # kill the member's task and wait until it ends
    REBUILD = "rebuild"  # a diverged replica: kill it, then a fresh volume (it resyncs from the master)
    DRAIN = "drain"  # off an agent going down for maintenance: kill it, then a fresh volume elsewhere
    DELETE_MEMBER = "delete-member"
    RESTART = "restart"  # update: kill the member's task and wait until it ended (its volume stays)
    AWAIT_CAUGHT_UP = "await-caught-up"  # update: wait until a check after the restart finds it caught up
    # planned switchover: wait until a replica holds the fenced old master's exact final position
    CATCH_UP = "catch-up"
    REPLACE_MEMBER = "replace"  # operator: a fresh volume on another agent (never the last copy), task killed
    DONE = "done"  # operator: the member's operation is done (Member.operation_done)
    CLEANUP = "cleanup"  # delete: kill stray tasks, delete members, tasks and secrets
    RELEASE = "release"  # delete: wait until the offers service destroyed volumes and reservations
    REMOVE_INSTANCE = "remove-instance"  # delete: phase DELETED, then remove the record


# Callbacks invoked by an action (for attempts and messages).
CALLBACK_OF: dict[Action, str] = {
    Action.START: "Start",
    Action.START_MASTER: "StartMaster",
    Action.START_SLAVE: "StartSlave",
    Action.MASTER_RUNNING: "MasterRunning",
    Action.SLAVE_RUNNING: "SlaveRunning",
    Action.PEER_RUNNING: "PeerRunning",
    Action.FAILOVER: "MasterLost",
    Action.ELECT: "MasterLost",
    Action.SLAVE_LOST: "SlaveLost",
    Action.PEER_LOST: "PeerLost",
    Action.REMOVE: "RemoveMember",
    Action.FENCE: "Fence",
    Action.CATCH_UP: "CheckMember",
}

# Actions that need the member's task RUNNING before they run.
NEEDS_RUNNING = frozenset(
    {
        Action.START,
        Action.START_MASTER,
        Action.START_SLAVE,
        Action.MASTER_RUNNING,
        Action.SLAVE_RUNNING,
        Action.PEER_RUNNING,
    }
)


def member_id(instance: str, ordinal: int) -> str:
    return f"{instance}-{ordinal}"


def task_id(member: str, incarnation: int) -> str:
    return f"{member}.{incarnation}"


VOLUME_PATH = "data"


def persistence_id(member: str, generation: int, instance_uid: str = "") -> str:
    """The id of a member's ``generation``-th volume: ``<member>.<instance uid>.v<generation>``.
    The uid tells instances of the same name apart: a volume of a deleted instance that could not
    be destroyed yet (its agent was away) is never taken by a new instance of that name."""
    uid = f".{instance_uid}" if instance_uid else ""
    return f"{member}{uid}.v{generation}"


def instance_uid(created_at: timestamp_pb2.Timestamp) -> str:
    """A short id of one instance's life, from its creation time (6 hex digits)."""
    return hashlib.sha256(str(created_at.ToNanoseconds()).encode()).hexdigest()[:6]


def volume_generation(persistence: str) -> int:
    """The generation in ``<member>.v<n>`` (0 if it has none)."""
    _, _, tail = persistence.rpartition(".v")
    return int(tail) if tail.isdigit() else 0


def incarnation_of(task: str) -> int:
    """The incarnation in a task id ``<member>.<incarnation>`` (0 if it has none)."""
    _, _, tail = task.rpartition(".")
    return int(tail) if tail.isdigit() else 0


def step(action: Action, member: str = "") -> types_pb2.Step:
    name = f"{action.value} {member}" if member else action.value
    return types_pb2.Step(name=name, member_id=member, status=PENDING)


def action_of(s: types_pb2.Step) -> Action:
    return Action(s.name.split(" ", 1)[0])


def new_plan(
    name: str, reason: str, generation: int, steps: Iterable[types_pb2.Step], now: float | None = None
) -> types_pb2.Plan:
    plan = types_pb2.Plan(name=name, reason=reason, generation=generation, steps=list(steps))
    plan.started_at.CopyFrom(timestamp(time.time() if now is None else now))
    plan.status = plan_status(plan)
    return plan


def first_open(plan: types_pb2.Plan) -> int | None:
    """Index of the first step not COMPLETE, or None when every step is."""
    for index, s in enumerate(plan.steps):
        if s.status != COMPLETE:
            return index
    return None


def plan_status(plan: types_pb2.Plan) -> types_pb2.StepStatus:
    index = first_open(plan)
    if index is None:
        return COMPLETE
    return plan.steps[index].status


def is_active(plan: types_pb2.Plan) -> bool:
    """A plan that still has work (or is stuck on an ERROR step)."""
    return bool(plan.name) and first_open(plan) is not None


def has_open_step(plan: types_pb2.Plan, member: str, actions: Iterable[Action]) -> bool:
    wanted = set(actions)
    return any(s.member_id == member and s.status != COMPLETE and action_of(s) in wanted for s in plan.steps)


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return float(stamp.ToNanoseconds()) / 1e9
