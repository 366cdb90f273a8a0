"""Plan control and history in the public API: RetryPlan, PauseInstance, ResumeInstance,
ListEvents, and the operator-action events of every writing call.

The gateway writes only intent: ``Plan.retries_requested`` (one more per RetryPlan; the lifecycle
resets the failed step, see lifecycle/control.py) and ``Instance.paused``; each is a
compare-and-swap of the instance record, so a concurrent lifecycle write is retried, never lost.
An action the instance's state does not allow is FAILED_PRECONDITION saying what to do instead.

Who asked (``Event.actor``): ``<identity>@<peer>`` — the identity is ``token:<first 8 hex of the
SHA-256 of the bearer token>`` when the call carried one (the auth interceptor checked it when the
gateway wants a token), else ``anonymous``; the peer is gRPC's address of the caller
(``ipv4:127.0.0.1:50412``).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.events import HISTORY_SIZE, EventLog, new_event
from mesos_stateful.common import errors
from mesos_stateful.gateway import validation
from mesos_stateful.gateway.auth import token_of
from mesos_stateful.gateway.service import InstanceDomain, assemble

log = logging.getLogger(__name__)
T = types_pb2

_GONE = (T.INSTANCE_PHASE_DELETING, T.INSTANCE_PHASE_DELETED)


def actor_of(context: Any) -> str:
    """``<identity>@<peer>`` of a servicer context (see the module)."""
    try:
        peer = context.peer() or "unknown"
    except Exception:
        peer = "unknown"
    try:
        metadata = context.invocation_metadata()
    except Exception:
        metadata = None
    token = token_of(tuple(metadata) if metadata else None)
    identity = f"token:{hashlib.sha256(token.encode()).hexdigest()[:8]}" if token else "anonymous"
    return f"{identity}@{peer}"


def _status(status: int) -> str:
    return T.StepStatus.Name(status).removeprefix("STEP_STATUS_")


def _phase(instance: types_pb2.Instance) -> str:
    return T.InstancePhase.Name(instance.phase).removeprefix("INSTANCE_PHASE_")


def _first_open(plan: types_pb2.Plan) -> types_pb2.Step | None:
    for step in plan.steps:
        if step.status != T.STEP_STATUS_COMPLETE:
            return step
    return None


def retry_refusal(instance: types_pb2.Instance) -> str | None:
    """Why RetryPlan cannot retry this instance's plan (None: it can), saying what to do."""
    name = instance.spec.name
    plan = instance.plan
    if instance.phase in _GONE:
        return f"instance {name} is {_phase(instance)}: nothing to retry"
    if not plan.name:
        return f"instance {name} has no plan yet: nothing to retry"
    step = _first_open(plan)
    if step is None:
        return f"plan {plan.name} is COMPLETE: nothing to retry"
    if plan.retries_requested > plan.retries_done:
        return f"a retry of plan {plan.name} is already asked for; follow it with `statefulctl get {name}`"
    if step.status == T.STEP_STATUS_ERROR:
        return None
    if step.status == T.STEP_STATUS_DELAYED:
        return (
            f"plan {plan.name} is not failed: step {step.name} is DELAYED and tried again by itself "
            f"(attempt {step.attempts}): {step.message}"
        )
    held = f" (held: `statefulctl resume {name}` continues it)" if step.held else ""
    at = f"step {step.name} ({_status(step.status)}){held}"
    return f"plan {plan.name} is in progress at {at}: nothing to retry"


class PlanControl:
    """RetryPlan / PauseInstance / ResumeInstance / ListEvents, and operator events."""

    def __init__(self, domain: InstanceDomain, history: int = HISTORY_SIZE) -> None:
        self._domain = domain
        self.events = EventLog(domain.state, history)

    async def operator_event(self, name: str, action: str, actor: str, message: str) -> None:
        """Record that ``actor`` asked for ``action`` on instance ``name`` (best effort)."""
        event = new_event(name, T.EVENT_KIND_OPERATOR_ACTION, message, actor=actor, action=action)
        await self.events.record(event)

    async def retry(self, name: str, actor: str) -> types_pb2.Instance:
        validation.validate_instance_name(name)
        failed = ""

        def ask(instance: types_pb2.Instance) -> bool:
            nonlocal failed
            refusal = retry_refusal(instance)
            if refusal is not None:
                raise errors.FailedPrecondition(refusal)
            step = _first_open(instance.plan)
            failed = f"{step.name}: {step.message}" if step is not None else ""
            instance.plan.retries_requested += 1
            return True

        record = await self._domain.update_record(name, ask)
        plan = record.instance.plan
        log.info("instance %s: retry of plan %s asked by %s", name, plan.name, actor)
        await self.operator_event(name, "retry", actor, f"retry of plan {plan.name} from {failed}")
        return assemble(record, await self._domain.members(name))

    async def pause(self, name: str, actor: str) -> types_pb2.Instance:
        validation.validate_instance_name(name)

        def pause(instance: types_pb2.Instance) -> bool:
            if instance.phase in _GONE:
                raise errors.FailedPrecondition(
                    f"instance {name} is {_phase(instance)}: there is nothing left to pause"
                )
            if instance.paused:
                raise errors.FailedPrecondition(
                    f"instance {name} is already paused; `statefulctl resume {name}` continues its plans"
                )
            instance.paused = True
            return True

        record = await self._domain.update_record(name, pause)
        log.info("instance %s: paused by %s", name, actor)
        await self.operator_event(name, "pause", actor, "paused: no new step starts (a running one finishes)")
        return assemble(record, await self._domain.members(name))

    async def resume(self, name: str, actor: str) -> types_pb2.Instance:
        validation.validate_instance_name(name)

        def resume(instance: types_pb2.Instance) -> bool:
            if not instance.paused:
                raise errors.FailedPrecondition(
                    f"instance {name} is not paused: nothing to resume (`statefulctl pause {name}` pauses it)"
                )
            instance.paused = False
            return True

        record = await self._domain.update_record(name, resume)
        log.info("instance %s: resumed by %s", name, actor)
        await self.operator_event(name, "resume", actor, "resumed: the plans go on")
        return assemble(record, await self._domain.members(name))

    async def list_events(self, name: str, page_size: int) -> list[types_pb2.Event]:
        violations: dict[str, str] = {}
        validation.check_name(name, "name", violations)
        if page_size < 0:
            violations["page_size"] = f"must be >= 0 (0: every event kept, at most {self.events.history})"
        validation.raise_if_any(violations)
        await self._domain.instance_record(name)  # NOT_FOUND for an unknown instance
        limit = min(page_size, self.events.history) if page_size > 0 else 0
        return await self._domain.call(lambda: self.events.list(name, limit))
