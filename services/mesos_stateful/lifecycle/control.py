"""Operator control of an instance's plans (dcos-commons plan interrupt / continue / retry).

**Pause** (``Instance.paused``, set by the gateway's PauseInstance): the reconciler starts no new
step — a step still PENDING is *held* (``Step.held``, its message says how to resume) — while a step
that already started (STARTING, DELAYED between its attempts) runs to its end. New plans are still
made and stored (a scale while paused shows its plan, held at its first step), so the operator sees
what resume will do. Two exceptions, both about keeping a writable master:

- a plan that replaces a master lost by accident (``Plan.cause`` LOST, UNRESPONSIVE or COLD_START)
  runs whole: fence, failover / election, the new master, re-pointing the replicas (a Redis master
  with ``min-replicas-to-write`` takes writes only once a replica follows it) and the old master
  relaunched as a replica. Unlike Patroni's maintenance mode, which stops automatic failover, a
  pause here holds *planned* work only (deploy, scale, update, switchover, drain, repair, the
  replacement of a lost replica): an operator who paused a rolling change does not silently lose
  writes because the master crashed meanwhile. The loss, the fence and the promotion are events.
- a plan that already began handing the master over (``planner.handing_over``: a switchover or a
  drain fenced the old master) goes on until the new master takes writes: holding it there would
  leave no writable master.

A delete is never held (the operator asked for it explicitly).

**Retry** (``Plan.retries_requested``, counted up by the gateway's RetryPlan): the failed step
(ERROR) goes back to PENDING, ``attempts`` kept and ``attempts_before_retry`` set to it (a step's
attempt budget counts from there), and ``retries_done`` catches up; the plan then continues from
that step. A retry asked while no step is in ERROR is only counted.
"""

from __future__ import annotations

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.lifecycle import planner, plans

T = types_pb2

# Plans that replace a master lost by accident: they run (up to the new master) while paused.
_AVAILABILITY_CAUSES = frozenset({T.PLAN_CAUSE_LOST, T.PLAN_CAUSE_UNRESPONSIVE, T.PLAN_CAUSE_COLD_START})


def held_message(instance: str) -> str:
    return f"held: instance {instance} is paused; `statefulctl resume {instance}` continues"


def runs_while_paused(s: planner.Snapshot, plan: types_pb2.Plan, index: int) -> bool:
    """Whether step ``index`` of ``plan`` may start while the instance is paused (see the module)."""
    step = plan.steps[index]
    if step.status != plans.PENDING:
        return True  # it started: it finishes
    if plan.name == plans.DELETE:
        return True
    if planner.handing_over(s, plan):
        return True
    return plan.cause in _AVAILABILITY_CAUSES


def hold(plan: types_pb2.Plan, index: int, instance: str) -> bool:
    """Mark step ``index`` held; False if it already was (nothing to write)."""
    step = plan.steps[index]
    message = held_message(instance)
    if step.held and step.message == message:
        return False
    step.held = True
    step.message = message
    return True


def release(step: types_pb2.Step) -> None:
    """The step runs now: no longer held."""
    if step.held:
        step.held = False
        step.message = ""


def apply_retry(plan: types_pb2.Plan) -> bool:
    """Carry out the retries asked for (see the module); True if the plan changed."""
    if plan.retries_requested <= plan.retries_done:
        return False
    plan.retries_done = plan.retries_requested
    index = plans.first_open(plan)
    if index is not None and plan.steps[index].status == plans.ERROR:
        step = plan.steps[index]
        failed = step.message
        step.status = plans.PENDING
        step.attempts_before_retry = step.attempts
        step.ClearField("finished_at")
        step.ClearField("next_attempt_at")
        step.message = f"retried by an operator after: {failed}"[:1000]
    plan.status = plans.plan_status(plan)
    return True
