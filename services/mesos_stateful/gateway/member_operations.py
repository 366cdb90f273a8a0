"""Operator actions on one member (issue 15): SwitchoverInstance, RestartMember, ReplaceMember.

The gateway validates the request against what the store says now and records it in the member's
record (``Member.operation``: kind, a fresh id, the target, when); the lifecycle plans it once no
other plan is in progress (``lifecycle/operations.py``) and records it done in
``Member.operation_done``. A client waits for that (``statefulctl switchover --wait``).

Errors (``common.grpc_errors`` maps them): INVALID_ARGUMENT (field-level: ``name`` / ``instance``,
``member_id``, ``target_member_id``), NOT_FOUND (no such instance or member), FAILED_PRECONDITION
(the instance is being deleted; a peers workload has no master to switch over; the target is not a
ready replica — the message names the ready ones; no ready replica to switch a master over to;
replacing a member that holds the only copy of the data; another operation on the member still
pending).
"""

from __future__ import annotations

import logging
import re
import uuid

from google.protobuf.message import Message

from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.records import member_name
from mesos_stateful.common import errors
from mesos_stateful.gateway import validation
from mesos_stateful.gateway.service import InstanceDomain, _now, assemble

log = logging.getLogger(__name__)
T = types_pb2

_KIND_WORDS = {
    T.OPERATION_KIND_SWITCHOVER: "switchover",
    T.OPERATION_KIND_RESTART: "restart",
    T.OPERATION_KIND_REPLACE: "replacement",
}
_GONE = (T.INSTANCE_PHASE_DELETING, T.INSTANCE_PHASE_DELETED)


def check_member_id(instance: str, member_id: str, field: str, violations: validation.Violations) -> None:
    """``<instance>-<ordinal>`` (the member ids of that instance)."""
    if not member_id:
        violations[field] = "is required"
    elif instance and not re.fullmatch(re.escape(instance) + r"-(0|[1-9][0-9]{0,3})", member_id):
        violations[field] = (
            f"{member_id!r} is not a member id of {instance!r}: use {instance}-<ordinal>, e.g. {instance}-0"
        )


def validate_switchover(name: str, target: str) -> None:
    violations: validation.Violations = {}
    validation.check_name(name, "name", violations)
    if target:
        check_member_id(name if "name" not in violations else "", target, "target_member_id", violations)
    validation.raise_if_any(violations)


def validate_member_request(instance: str, member_id: str) -> None:
    violations: validation.Violations = {}
    validation.check_name(instance, "instance", violations)
    check_member_id(instance if "instance" not in violations else "", member_id, "member_id", violations)
    validation.raise_if_any(violations)


def ready(member: types_pb2.Member) -> bool:
    return member.state == T.MEMBER_STATE_RUNNING


def ready_replicas(instance: types_pb2.Instance) -> list[types_pb2.Member]:
    """Replicas a switchover may promote, as the store shows them: RUNNING slaves holding the data."""
    return [
        m
        for m in instance.members
        if m.role == T.ROLE_SLAVE
        and ready(m)
        and (m.volume.has_data or not instance.has_data)
        and not m.volume.rejoin_pending
    ]


def _names(members: list[types_pb2.Member]) -> str:
    return ", ".join(m.id for m in members) or "none"


def _master(instance: types_pb2.Instance) -> types_pb2.Member | None:
    return next((m for m in instance.members if m.role == T.ROLE_MASTER), None)


def _peers(instance: types_pb2.Instance, description: types_pb2.WorkloadDescription | None) -> bool:
    if description is not None and description.topology == T.TOPOLOGY_PEERS:
        return True
    return any(m.role == T.ROLE_PEER for m in instance.members)


def _member(instance: types_pb2.Instance, member_id: str) -> types_pb2.Member:
    for m in instance.members:
        if m.id == member_id:
            return m
    raise errors.NotFound(
        f"member {member_id!r} not found in instance {instance.spec.name!r} "
        f"(members: {_names(list(instance.members))})"
    )


def check_switchover(
    instance: types_pb2.Instance, target: str, peers: bool, what: str = "switch over"
) -> str:
    """The master a switchover moves (its id), or FAILED_PRECONDITION / NOT_FOUND saying why not."""
    name = instance.spec.name
    if peers:
        raise errors.FailedPrecondition(
            f"instance {name!r} ({instance.spec.workload}) has peers, no master: nothing to {what}; "
            "use restart or replace on a member"
        )
    master = _master(instance)
    if master is None:
        raise errors.FailedPrecondition(
            f"instance {name!r} has no master now; wait for its plan (statefulctl get {name})"
        )
    candidates = ready_replicas(instance)
    if target:
        chosen = _member(instance, target)
        if chosen.id == master.id:
            raise errors.FailedPrecondition(f"{target} is already the master of {name!r}")
        if chosen not in candidates:
            state = T.MemberState.Name(chosen.state).removeprefix("MEMBER_STATE_")
            raise errors.FailedPrecondition(
                f"{target} is not a ready replica holding the data ({state}); ready replicas: "
                f"{_names(candidates)}"
            )
    elif not candidates:
        raise errors.FailedPrecondition(
            f"no ready replica of {name!r} to {what} to (replicas={instance.spec.replicas}); "
            f"scale to {instance.spec.replicas + 1} replicas first"
        )
    return master.id


def check_last_copy(instance: types_pb2.Instance, member: types_pb2.Member) -> None:
    """FAILED_PRECONDITION when replacing ``member`` (an empty volume) could destroy the last
    (or the only up-to-date) copy of the data (data-safety rule 4)."""
    if not instance.has_data or not member.volume.has_data:
        return
    holders = [
        m
        for m in instance.members
        if m.id != member.id and ready(m) and m.volume.has_data and not m.volume.rejoin_pending
    ]
    if not holders:
        raise errors.FailedPrecondition(
            f"{member.id} holds the only up-to-date copy of {instance.spec.name!r}'s data (no other ready "
            "member holds it): not replacing it with an empty volume; restart it instead, or scale up "
            "and wait until a replica is ready"
        )


def _pending(member: types_pb2.Member) -> bool:
    op = member.operation
    return bool(op.id) and op.kind != T.OPERATION_KIND_UNSPECIFIED and op.id != member.operation_done


async def _record(
    domain: InstanceDomain, instance: types_pb2.Instance, member_id: str, op: types_pb2.MemberOperation
) -> types_pb2.Instance:
    """Store ``op`` in the member's record (read-modify-write), refusing while another operation
    on any member of the instance is pending."""
    name = instance.spec.name
    busy = [m for m in instance.members if _pending(m)]
    if busy:
        m = busy[0]
        raise errors.FailedPrecondition(
            f"a {_KIND_WORDS.get(m.operation.kind, 'operation')} of {m.id} is still pending on {name!r}; "
            f"wait until it is done (statefulctl get {name})"
        )

    def mutate(current: Message | None) -> Message | None:
        if current is None:
            raise errors.NotFound(f"member {member_id!r} not found in instance {name!r}")
        member = types_pb2.Member()
        member.MergeFromString(current.SerializeToString())
        if _pending(member) and member.operation.id != op.id:
            raise errors.FailedPrecondition(
                f"a {_KIND_WORDS.get(member.operation.kind, 'operation')} of {member_id} is still pending"
            )
        member.operation.CopyFrom(op)
        return member

    await domain._call(lambda: domain._state.update(st.KIND_MEMBER, member_name(name, member_id), mutate))
    # The OPERATOR_ACTION event (who asked) is recorded by the servicer (gateway/operations.py).
    log.info("instance %s: %s of %s asked (%s)", name, _KIND_WORDS[op.kind], member_id, op.id)
    record = await domain._instance_record(name)
    return assemble(record, await domain._members(name))


async def _load(domain: InstanceDomain, name: str) -> tuple[types_pb2.Instance, bool]:
    record = await domain._instance_record(name)
    instance = assemble(record, await domain._members(name))
    if instance.phase in _GONE:
        phase = T.InstancePhase.Name(instance.phase).removeprefix("INSTANCE_PHASE_")
        raise errors.FailedPrecondition(f"instance {name!r} is {phase}")
    workload = (await domain._workloads()).get(instance.spec.workload)
    return instance, _peers(instance, workload.description if workload is not None else None)


def _operation(kind: int, member_id: str, target: str = "") -> types_pb2.MemberOperation:
    op = types_pb2.MemberOperation(
        kind=kind,  # type: ignore[arg-type]
        id=uuid.uuid4().hex,
        member_id=member_id,
        target_member_id=target,
    )
    op.requested_at.CopyFrom(_now())
    return op


async def switchover(domain: InstanceDomain, name: str, target: str) -> types_pb2.Instance:
    """SwitchoverInstance (see the module doc for the errors)."""
    validate_switchover(name, target)
    instance, peers = await _load(domain, name)
    master = check_switchover(instance, target, peers)
    return await _record(domain, instance, master, _operation(T.OPERATION_KIND_SWITCHOVER, master, target))


async def restart(domain: InstanceDomain, name: str, member_id: str) -> types_pb2.Instance:
    """RestartMember: same volume, same agent; a master is switched over first."""
    validate_member_request(name, member_id)
    instance, peers = await _load(domain, name)
    member = _member(instance, member_id)
    if member.role == T.ROLE_MASTER:
        check_switchover(instance, "", peers, what="restart it after switching over")
    return await _record(domain, instance, member_id, _operation(T.OPERATION_KIND_RESTART, member_id))


async def replace(domain: InstanceDomain, name: str, member_id: str) -> types_pb2.Instance:
    """ReplaceMember: a fresh volume on another agent, resynced; never the last copy."""
    validate_member_request(name, member_id)
    instance, peers = await _load(domain, name)
    member = _member(instance, member_id)
    if peers and len(instance.members) < 2:
        raise errors.FailedPrecondition(
            f"{member_id} is the only peer of {name!r}: not replaced (no other copy)"
        )
    if member.role == T.ROLE_MASTER:
        check_switchover(instance, "", peers, what="replace it after switching over")
    check_last_copy(instance, member)
    return await _record(domain, instance, member_id, _operation(T.OPERATION_KIND_REPLACE, member_id))
