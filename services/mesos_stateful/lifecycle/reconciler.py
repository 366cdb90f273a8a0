"""Reconciling one instance: read its world, bring members up to date with their tasks, decide the
plan, run its steps one after another and persist the plan after every step change.

``reconcile`` returns when it has to wait: for a state change (None), until a time (a DELAYED
step's next attempt, a launch deadline), or :data:`GONE` once the instance record is removed.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.events import EventLog
from mesos_stateful.common import errors
from mesos_stateful.lifecycle import control, events, planner, plans, rolling, spans
from mesos_stateful.lifecycle.plans import Action
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.lifecycle.steps import PROMOTING, RELAUNCHING, WAITING, Outcome, StepRunner
from mesos_stateful.lifecycle.store import Loaded, Store

log = logging.getLogger(__name__)
T = types_pb2

GONE: Final = -1.0
# Steps run per reconcile before yielding to the event loop's other work (a safety valve).
MAX_STEPS_PER_PASS = 500


class Preempted(Exception):
    """The instance went DELETING while another plan was being written."""


class Reconciler:
    def __init__(self, settings: LifecycleSettings, store: Store, runner: StepRunner) -> None:
        self.settings = settings
        self.store = store
        self.runner = runner
        # Instances whose DELAYED step waits on a workload that has just (re-)registered: the step
        # is due now, not at its backoff's next_attempt_at (issue 10: a hung workload service
        # that came back waited up to retry_max_seconds more with no master).
        self._retry_now: set[str] = set()
        # The instances' histories (lifecycle/events.py); None: record nothing.
        self.events: EventLog | None = EventLog(store.client)
        self._member_watch = events.MemberWatch()

    def workload_registered(self, workload: str) -> set[str]:
        """``workload``'s registration appeared or changed (a KIND_WORKLOAD put): the instances
        whose last callback to it failed retryably retry their DELAYED step at the next
        reconcile. Returns them (the controller wakes them)."""
        names = self.runner.callbacks.waiting_on(workload)
        if names:
            log.info("workload %s registered: retrying the waiting steps of %s now", workload, sorted(names))
        self._retry_now |= names
        return names

    async def reconcile(self, name: str) -> float | None:
        for _ in range(MAX_STEPS_PER_PASS):
            ld = await self.store.load(name)
            if ld is None:
                self._member_watch.forget(name)
                return GONE
            await self._sync_members(ld)
            await events.record_all(self.events, self._member_watch.changes(name, ld.snapshot.members))
            plan, new = rolling.decide(ld.snapshot)
            if plan is None:
                self._retry_now.discard(name)
                await self._settle(ld)
                return None
            plan = _copy(plan)
            if new:
                # Its trace (the root's context in trace_parent) and, for a lost master, its first sign.
                spans.begin_plan(ld.snapshot, plan, time.time())
            try:
                with spans.in_plan(plan):  # state calls and steps: children of the plan's root
                    if new:
                        log.info("%s: new %s plan (%s): %s", name, plan.name, plan.reason, _names(plan))
                        await self._save(ld, plan)
                    if not new and control.apply_retry(plan):
                        log.warning("%s: plan %s retried by an operator", name, plan.name)
                        await self._save(ld, plan)
                        continue
                    index = plans.first_open(plan)
                    if index is None:
                        plan.status = plans.COMPLETE
                        await self._save(ld, plan)
                        continue
                    step = plan.steps[index]
                    if step.status == plans.ERROR:
                        retry_at = planner.launch_retry_at(
                            ld.snapshot, step, self.settings.launch_failure_retry_seconds
                        )
                        if retry_at is not None and time.time() >= retry_at:
                            # FAILED on a launch failure: its cause (a port taken, a full agent) may be
                            # gone; try again with a fresh budget (the failures stay on the member).
                            _retry_launch(step, time.time())
                            plan.status = plans.plan_status(plan)
                            log.warning("%s: %s: retrying after a failed launch", name, step.name)
                            await self._save(ld, plan)
                            continue
                        if retry_at is not None and not step.message.startswith(RETRY_NOTE):
                            step.message = f"{RETRY_NOTE} at {_clock(retry_at)} | {step.message}"[:1000]
                        await self._save(ld, plan)
                        return retry_at
                    now = time.time()
                    due = step.status != plans.DELAYED or plans.seconds(step.next_attempt_at) <= now
                    if name in self._retry_now:
                        self._retry_now.discard(name)
                        due = True  # its workload came back: retry now (it waited on that workload)
                    if not due and plans.action_of(step) not in WAITING:
                        return plans.seconds(step.next_attempt_at)
                    paused = ld.snapshot.instance.paused
                    if paused and not control.runs_while_paused(ld.snapshot, plan, index):
                        if control.hold(plan, index, name):
                            log.info("%s: paused: %s held", name, step.name)
                            await self._save(ld, plan)
                        return None  # ResumeInstance changes the instance: the watch wakes us
                    control.release(step)
                    outcome = await self._run(ld, plan, index, due)
                    if outcome.gone:
                        # The delete's last step removed the record (the plan was stored COMPLETE).
                        spans.plan_saved(name, _workload(ld), ld.snapshot.instance.plan, plan, time.time())
                        self._member_watch.forget(name)
                        if self.events is not None:
                            await self.events.forget(name)  # its history goes with it
                        return GONE
                    _apply(plan, index, outcome)
                    await self._save(ld, plan)
            except Preempted:
                continue
            if outcome.status != plans.COMPLETE:
                return outcome.wake_at
        return time.time()

    async def _run(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool) -> Outcome:
        step = plan.steps[index]
        if not step.HasField("started_at"):  # it first leaves PENDING (a timeline from the public API)
            step.started_at.CopyFrom(plans.timestamp(time.time()))
        with spans.step_span(ld.name, _workload(ld), plan, step) as run:
            outcome = await self._run_step(ld, plan, index, due)
            attempts = step.attempts if outcome.attempts is None else outcome.attempts
            spans.step_result(run, plan.steps[index], outcome.status, attempts, outcome.message)
            return outcome

    async def _run_step(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool) -> Outcome:
        async def save() -> None:
            await self._save(ld, plan)

        step = plan.steps[index]
        try:
            return await self.runner.run(ld, plan, index, due, save)
        except Preempted:
            raise
        except errors.TemporaryError as error:
            # The store or the offers service is unreachable: retry the step later.
            attempts = step.attempts + 1
            return Outcome(
                plans.DELAYED,
                error.message,
                wake_at=time.time() + self.settings.backoff(attempts),
                attempts=attempts,
            )
        except errors.StatefulError as error:
            return Outcome(plans.ERROR, error.message, attempts=step.attempts)

    async def _sync_members(self, ld: Loaded) -> None:
        """Member state, agent, host and ports follow their current task."""
        for member in list(ld.snapshot.members):
            task = ld.snapshot.task_of(member)
            if planner.sync_member(member, task) is None:
                continue

            def mutate(
                current: types_pb2.Member, task: types_pb2.Task | None = task
            ) -> types_pb2.Member | None:
                return planner.sync_member(current, task)

            updated = await self.store.update_member(ld.name, member.id, mutate)
            if updated is not None:
                ld.with_member(updated)
                await events.record_all(self.events, events.member_events(ld.name, member, updated))

    async def _save(self, ld: Loaded, plan: types_pb2.Plan) -> None:
        """Persist the plan with the phase and last error it implies; raises Preempted if a delete
        was asked for meanwhile (the next pass plans the delete)."""
        snapshot = ld.snapshot
        preempted = False
        before = types_pb2.Plan()

        def mutate(current: types_pb2.Instance) -> types_pb2.Instance | None:
            nonlocal preempted
            deleting = current.phase in (T.INSTANCE_PHASE_DELETING, T.INSTANCE_PHASE_DELETED)
            if deleting and plan.name != plans.DELETE:
                preempted = True
                return None
            before.CopyFrom(current.plan)
            current.plan.CopyFrom(plan)
            if events.same_plan(before, plan):
                # Retries are asked for by the gateway (RetryPlan) on the stored plan: keep them.
                current.plan.retries_requested = max(before.retries_requested, plan.retries_requested)
            spans.stamp_root_end(before, current.plan, time.time())  # the root span is emitted once
            view = planner.Snapshot(current, snapshot.members, snapshot.tasks, snapshot.description)
            current.phase = planner.phase_for(view, plan)
            current.observed_generation = rolling.observed_generation(view, plan)
            index = plans.first_open(plan)
            if index is not None and plan.steps[index].status == plans.ERROR:
                current.last_error = f"{plan.steps[index].name}: {plan.steps[index].message}"
            elif index is None or plan.retries_done != before.retries_done:
                current.last_error = ""  # done, or retried: the error is no longer current
            return current

        updated = await self.store.update_instance(ld.name, mutate)
        if preempted:
            raise Preempted()
        if updated is not None:
            ld.with_instance(updated)
            await events.record_all(self.events, events.plan_events(ld.name, before, updated.plan))
            # The plan's root span when it is over or replaced; failover metrics.
            spans.plan_saved(ld.name, _workload(ld), before, updated.plan, time.time())

    async def _settle(self, ld: Loaded) -> None:
        """No plan to run: the phase follows the members; say why nothing happens if it is the
        workload that is missing."""
        snapshot = ld.snapshot
        workload = snapshot.instance.spec.workload

        def mutate(current: types_pb2.Instance) -> types_pb2.Instance | None:
            if current.phase in (T.INSTANCE_PHASE_DELETING, T.INSTANCE_PHASE_DELETED):
                return None
            view = planner.Snapshot(current, snapshot.members, snapshot.tasks, snapshot.description)
            current.phase = planner.phase_for(view, current.plan)
            current.observed_generation = rolling.observed_generation(view, current.plan)
            if snapshot.description is None:
                current.last_error = f"workload {workload!r} is not registered; waiting for it"
            elif current.last_error.startswith("workload ") and not plans.is_active(current.plan):
                current.last_error = ""
            return current

        updated = await self.store.update_instance(ld.name, mutate)
        if updated is not None:
            ld.with_instance(updated)


# Said in a step FAILED on a launch failure (for people; the decision to retry is typed, see
# planner.launch_retry_at).
RETRY_NOTE = "a failed launch: tried again by itself"


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _retry_launch(step: types_pb2.Step, now: float) -> None:
    """A launch step FAILED on a launch failure, made due again with a fresh attempt budget."""
    step.status = plans.DELAYED
    step.attempts = 0
    failed = step.message.split(" | ", 1)[-1] if step.message.startswith(RETRY_NOTE) else step.message
    step.message = f"{RELAUNCHING} retrying after a failed launch: {failed}"[:1000]
    step.next_attempt_at.CopyFrom(plans.timestamp(now))


def _workload(ld: Loaded) -> str:
    return ld.snapshot.instance.spec.workload


def _copy(plan: types_pb2.Plan) -> types_pb2.Plan:
    copy = types_pb2.Plan()
    copy.CopyFrom(plan)
    return copy


def _names(plan: types_pb2.Plan) -> str:
    return ", ".join(s.name for s in plan.steps)


def _apply(plan: types_pb2.Plan, index: int, outcome: Outcome) -> None:
    step = plan.steps[index]
    message = outcome.message
    decided = step.decision.promote_member_id
    if decided and outcome.status != plans.COMPLETE:
        # Show the recorded decision while the step is retried (the decision itself is typed).
        message = f"{PROMOTING} {decided} | {message}"
    step.status = outcome.status  # type: ignore[assignment]
    step.message = message[:1000]
    if outcome.status in (plans.COMPLETE, plans.ERROR):
        step.finished_at.CopyFrom(plans.timestamp(time.time()))
    if outcome.attempts is not None:
        step.attempts = outcome.attempts
    if outcome.wake_at is not None and outcome.status in (plans.DELAYED, plans.STARTING):
        step.next_attempt_at.CopyFrom(plans.timestamp(outcome.wake_at))
    else:
        step.ClearField("next_attempt_at")
    if outcome.append and not any(s.name == outcome.append[0].name for s in plan.steps[index + 1 :]):
        plan.steps.extend(outcome.append)
    if outcome.skip_member:
        for later in plan.steps[index + 1 :]:
            if later.member_id == outcome.skip_member and later.status != plans.COMPLETE:
                later.status = plans.COMPLETE
                later.message = "skipped: " + outcome.message
    plan.status = plans.plan_status(plan)
    if plans.action_of(step) == Action.REMOVE_INSTANCE:
        plan.status = plans.COMPLETE
