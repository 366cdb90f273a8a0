"""Running one step of a plan. Every action checks the state before acting, so a step resumed
after a restart (or run twice) never repeats an effect that already happened: a member with a
live task is not launched again, roles already persisted are not chosen again, a task already
ended is not killed again.

A step returns an :class:`Outcome`; the reconciler writes it into the plan. Retryable failures
(UNAVAILABLE, DEADLINE_EXCEEDED, an unregistered workload, the offers service down) become DELAYED
with exponential backoff; other failures ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as random_secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.records import member_name
from mesos_stateful.common import errors
from mesos_stateful.lifecycle import operations, planner, plans, rolling
from mesos_stateful.lifecycle.callbacks import Callbacks, NotImplementedByWorkload, callback_context
from mesos_stateful.lifecycle.offers import OffersClient
from mesos_stateful.lifecycle.planner import DEAD, ENDED, Condition, task_state_name
from mesos_stateful.lifecycle.plans import Action
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.lifecycle.store import KIND_MEMBER, KIND_SECRETS, KIND_TASK, Loaded, Store

log = logging.getLogger(__name__)
T = types_pb2

# Actions that only watch state: run whenever the instance changes, even while DELAYED.
WAITING = frozenset(
    {
        Action.AWAIT,
        Action.KILL,
        Action.FENCE,
        Action.CLEANUP,
        Action.ELECT,
        Action.RELAUNCH,
        Action.REBUILD,
        Action.DRAIN,
        Action.RESTART,
        Action.AWAIT_CAUGHT_UP,
        Action.REPLACE_MEMBER,
    }
)
RELAUNCHING = "relaunching:"
RELEASE_POLL_SECONDS = 0.5
PROMOTING = "promoting"
# A planned switchover's catch-up: how long one attempt polls the positions, and how often.
CATCH_UP_ATTEMPT_SECONDS = 10.0
CATCH_UP_POLL_SECONDS = 0.005
# After this long without a replica at the final position (a broken or lagging target), the
# switchover does not hold the instance without a writable master any longer: the failover asks
# MasterLost for the most advanced replica, as a recovery does (it holds every acknowledged write).
CATCH_UP_GIVE_UP_SECONDS = 30.0


def _alive(task: types_pb2.Task | None) -> bool:
    """A task that may still run (not ended for sure)."""
    return task is not None and task.state not in DEAD


def _running(task: types_pb2.Task | None) -> bool:
    return task is not None and task.state == T.TASK_STATE_RUNNING


@dataclass
class Outcome:
    status: int
    message: str = ""
    wake_at: float | None = None  # next_attempt_at (DELAYED) or give-up deadline (STARTING)
    attempts: int | None = None
    append: list[types_pb2.Step] = field(default_factory=list)  # added at the end of the plan
    skip_member: str = ""  # later steps about this member are COMPLETE (skipped)
    gone: bool = False  # the instance record was removed


Save = Callable[[], Awaitable[None]]


class StepRunner:
    def __init__(
        self, settings: LifecycleSettings, store: Store, offers: OffersClient, callbacks: Callbacks
    ) -> None:
        self.settings = settings
        self.store = store
        self.offers = offers
        self.callbacks = callbacks
        # The lost master's last known position (the health monitor's, fresher than the stored one).
        self.master_position: Callable[[str, types_pb2.Member], str] = lambda _, m: m.health.position

    async def run(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        step = plan.steps[index]
        action = plans.action_of(step)
        handler = getattr(self, "_" + action.name.lower())
        outcome: Outcome = await handler(ld, plan, index, due, save)
        return outcome

    # -- helpers ------------------------------------------------------------------------------

    def _delayed(self, message: str, attempts: int) -> Outcome:
        return Outcome(
            plans.DELAYED,
            message,
            wake_at=time.time() + self.settings.backoff(attempts),
            attempts=attempts,
        )

    async def _begin(self, plan: types_pb2.Plan, index: int, save: Save, message: str) -> int:
        """Mark the step STARTING with one more attempt and persist it before acting."""
        step = plan.steps[index]
        step.attempts += 1
        step.status = plans.STARTING
        step.message = message
        step.ClearField("next_attempt_at")
        plan.status = plans.plan_status(plan)
        await save()
        return step.attempts

    async def _call(
        self,
        ld: Loaded,
        plan: types_pb2.Plan,
        index: int,
        save: Save,
        method: str,
        as_master: str = "",
        optional: bool = False,
        **fields: Any,
    ) -> tuple[object | None, Outcome | None]:
        """Invoke a callback for the step's member: (response, None) or (None, failure outcome).
        ``as_master``: show that member as the MASTER in the context (MasterLost after a restart
        that happened between the demotion and the promotion). ``optional``: a callback the
        workload may lack; UNIMPLEMENTED raises ``NotImplementedByWorkload``."""
        step = plan.steps[index]
        attempts = await self._begin(plan, index, save, f"calling {method}")
        context = callback_context(ld.snapshot, step.member_id, ld.secrets, attempts)
        for m in context.instance.members:
            if m.id == as_master:
                m.role = T.ROLE_MASTER
        try:
            response = await self.callbacks.call(
                ld.snapshot.instance.spec.workload, method, context, **fields
            )
        except errors.TemporaryError as error:
            log.warning("%s: %s (attempt %d), retrying", ld.name, error.message, attempts)
            return None, self._delayed(error.message, attempts)
        except NotImplementedByWorkload:
            if optional:
                raise
            log.error("%s: %s does not implement %s", ld.name, ld.snapshot.instance.spec.workload, method)
            raise
        except errors.StatefulError as error:
            log.error("%s: %s", ld.name, error.message)
            return None, Outcome(plans.ERROR, error.message, attempts=attempts)
        return response, None

    def _until_killed(self, task: types_pb2.Task) -> Outcome:
        """Wait for a task we asked to kill to end (it is never taken as the member's live task)."""
        state = task_state_name(task.state)
        return Outcome(
            plans.STARTING,
            f"waiting for {task.task_id} ({state}, killed) to end before relaunching",
            wake_at=time.time() + self.settings.kill_timeout_seconds,
        )

    def _member(self, ld: Loaded, member_id: str) -> types_pb2.Member:
        member = ld.snapshot.member(member_id)
        if member is None:
            raise errors.FailedPrecondition(f"member {member_id} does not exist")
        return member

    def _tasks_of(self, ld: Loaded, member_id: str) -> list[types_pb2.Task]:
        prefix = member_id + "."
        return [t for tid, t in sorted(ld.snapshot.tasks.items()) if tid.startswith(prefix)]

    async def _set_status(
        self,
        ld: Loaded,
        member_id: str,
        status: dict[str, str],
        state: int | None = None,
        repaired: bool = False,
    ) -> None:
        """Keep the workload's status (and the member state); ``repaired``: a StartSlave re-pointed
        it, so a repair asked for by the last check is done (the next check says anew)."""

        def mutate(m: types_pb2.Member) -> types_pb2.Member:
            if status:
                m.workload_status.clear()
                m.workload_status.update(status)
            if state is not None:
                m.state = state  # type: ignore[assignment]
            if repaired and m.health.repair == T.REPAIR_REPOINT:
                m.health.repair = T.REPAIR_UNSPECIFIED
            return m

        updated = await self.store.update_member(ld.name, member_id, mutate)
        if updated is not None:
            ld.with_member(updated)

    # -- setup ---------------------------------------------------------------------------------

    async def _secrets(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        description = ld.snapshot.description
        if description is None:
            return self._delayed(f"workload {ld.snapshot.instance.spec.workload!r} is not registered", 1)
        names = list(description.secret_names)
        size = self.settings.secret_bytes

        def mutate(current: object) -> types_pb2.InstanceSecrets | None:
            value = current if isinstance(current, types_pb2.InstanceSecrets) else None
            value = value or types_pb2.InstanceSecrets(instance=ld.name)
            missing = [n for n in names if n not in value.values]
            if not missing:
                return None
            for n in missing:
                value.values[n] = random_secrets.token_urlsafe(size)
            return value

        if names:
            record = await self.store.client.update(KIND_SECRETS, ld.name, mutate)
            if record is not None:
                ld.secrets = dict(record.secrets.values)
        return Outcome(plans.COMPLETE, f"{len(names)} secrets ready")

    async def _create(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        mid = plan.steps[index].member_id
        if ld.snapshot.member(mid) is not None:
            return Outcome(plans.COMPLETE, f"member {mid} exists")
        ordinal = int(mid.rpartition("-")[2])
        if ld.snapshot.peers():
            role = T.ROLE_PEER
        elif ld.snapshot.master() is None:
            role = T.ROLE_MASTER
        else:
            role = T.ROLE_SLAVE
        member = T.Member(
            id=mid,
            instance=ld.name,
            ordinal=ordinal,
            role=role,
            state=T.MEMBER_STATE_PENDING,
            volume=planner.new_volume(ld.snapshot, mid, 1),
        )
        await self.store.create_member(member)
        ld.with_member(member)
        return Outcome(plans.COMPLETE, f"member {mid} created as {T.Role.Name(role).removeprefix('ROLE_')}")

    # -- launches ------------------------------------------------------------------------------

    async def _ensure_task(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, save: Save
    ) -> tuple[str, Outcome | None]:
        """Make sure the member has a live task (queued, starting or running): launch a new
        incarnation if its task ended, re-send the launch if it was never confirmed. Returns the
        task id, or a failure outcome."""
        step = plan.steps[index]
        member = self._member(ld, step.member_id)
        task = ld.snapshot.task_of(member)
        if task is not None and task.state not in ENDED:
            if not task.kill_requested:
                return member.task_id, None
            # Being killed (e.g. a fenced master Mesos still shows RUNNING): relaunch once it ended.
            return "", self._until_killed(task)
        description = ld.snapshot.description
        if description is None:
            return "", self._delayed(f"workload {ld.snapshot.instance.spec.workload!r} is not registered", 1)

        if task is None and member.task_id:
            # Recorded but never confirmed by the offers service: send the same task id again.
            attempts = step.attempts or 1
        else:
            attempts = step.attempts + 1
            # The budget counts from the last operator retry (RetryPlan keeps ``attempts``).
            if attempts - step.attempts_before_retry > self.settings.max_launch_attempts:
                detail = planner._task_detail(ld.snapshot, member)
                return "", Outcome(
                    plans.ERROR,
                    f"{member.id} did not start after {step.attempts} launches (last task: {detail})",
                    attempts=step.attempts,
                )
            for old in self._tasks_of(ld, member.id):
                if old.state not in DEAD and not old.kill_requested:
                    log.info("%s: fencing %s before relaunching %s", ld.name, old.task_id, member.id)
                    await self.offers.kill(old.task_id)
            incarnation = planner.next_incarnation(ld.snapshot, member)
            # What its failed launches taught: a volume without data on an agent to avoid is left
            # there (a fresh one is placed elsewhere, the old one destroyed as unwanted).
            avoid = planner.avoid_list(member, time.time(), self.settings.launch_failure_retry_seconds)
            leave = planner.leaves_volume(member, avoid)
            if leave:
                log.warning(
                    "%s: %s failed to start on %s (%s): a fresh volume elsewhere (its volume holds no data)",
                    ld.name,
                    member.id,
                    member.volume.host or member.volume.agent_id,
                    planner.cause_name(member.launch_failures[-1].cause) if member.launch_failures else "?",
                )

            def relaunch(m: types_pb2.Member) -> types_pb2.Member:
                if not m.volume.persistence_id:
                    # A member created before volumes existed gets one now.
                    m.volume.CopyFrom(planner.new_volume(ld.snapshot, m.id, 1))
                elif leave and planner.leaves_volume(m, avoid):
                    generation = plans.volume_generation(m.volume.persistence_id) + 1
                    m.volume.CopyFrom(planner.new_volume(ld.snapshot, m.id, generation))
                m.incarnation = incarnation
                m.task_id = plans.task_id(m.id, incarnation)
                m.state = T.MEMBER_STATE_LAUNCHING
                m.agent_id = ""
                m.host = ""
                m.ports.clear()
                m.workload_status.clear()
                m.ClearField("health")
                m.message = "launching"
                return m

            # Persist the new task id first: a restart re-sends this launch instead of another.
            updated = await self.store.update_member(ld.name, member.id, relaunch)
            if updated is None:
                raise errors.FailedPrecondition(f"member {member.id} does not exist")
            ld.with_member(updated)
            member = updated
            step.attempts = attempts
            await save()

        context = callback_context(ld.snapshot, member.id, ld.secrets, attempts)
        workload = ld.snapshot.instance.spec.workload
        try:
            config = await self.callbacks.call(workload, "Config", context)
            avoid = planner.avoid_list(member, time.time(), self.settings.launch_failure_retry_seconds)
            learnt = {a.agent_id for a in avoid if not a.ports}
            avoid += [a for a in planner.maintenance_avoid(ld.snapshot, member) if a.agent_id not in learnt]
            replaced = self._replaced_agent(plan, member.id)
            if replaced and not member.volume.agent_id and replaced not in learnt:
                avoid.append(T.PlacementAvoid(agent_id=replaced))  # ReplaceMember: another agent
            launch = planner.launch_spec(config.launch, ld.snapshot.instance, member, description, avoid)
            await self.offers.launch(launch)
        except errors.TemporaryError as error:
            return "", self._delayed(error.message, attempts)
        except errors.StatefulError as error:
            return "", Outcome(plans.ERROR, error.message, attempts=attempts)
        log.info("%s: launched %s as %s", ld.name, member.task_id, T.Role.Name(member.role))
        return member.task_id, None

    async def _launch(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        task_id, failure = await self._ensure_task(ld, plan, index, save)
        if failure is not None:
            return failure
        return Outcome(plans.COMPLETE, f"task {task_id} launched", attempts=plan.steps[index].attempts)

    async def _relaunch(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """Cold start: keep a RUNNING task; kill one still starting (launched for a master that is
        gone, it would wait for it forever) and wait until it ended; then launch on the volume."""
        member = self._member(ld, plan.steps[index].member_id)
        task = ld.snapshot.task_of(member)
        if task is not None and task.state not in ENDED and task.state != T.TASK_STATE_RUNNING:
            return await self._kill_tasks(ld, plan, index, due, [task], f"restart {member.id} on its volume")
        return await self._launch(ld, plan, index, due, save)

    async def _await(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        step = plan.steps[index]
        member = self._member(ld, step.member_id)
        task = ld.snapshot.task_of(member)
        now = time.time()
        timeout = self.settings.launch_timeout_seconds
        if task is not None and task.state == T.TASK_STATE_RUNNING and not task.kill_requested:
            return Outcome(plans.COMPLETE, f"task {task.task_id} RUNNING on {task.host}")
        if task is not None and task.kill_requested and task.state not in ENDED:
            # Killed on request (a fence): a new incarnation is launched once it ended.
            return self._until_killed(task)
        if task is None or task.state in ENDED:
            waiting_relaunch = step.status == plans.DELAYED and step.message.startswith(RELAUNCHING)
            if task is not None and not waiting_relaunch:
                # Ended before it was ready: relaunch after a backoff (attempts count launches).
                detail = planner._task_detail(ld.snapshot, member)
                if step.attempts + 1 - step.attempts_before_retry > self.settings.max_launch_attempts:
                    return Outcome(
                        plans.ERROR, f"{member.id} did not start after {step.attempts + 1} launches: {detail}"
                    )
                delay = self.settings.backoff(step.attempts + 1)
                return Outcome(
                    plans.DELAYED, f"{RELAUNCHING} task {task.task_id} {detail}", wake_at=now + delay
                )
            if waiting_relaunch and not due:
                return Outcome(plans.DELAYED, step.message, wake_at=plans.seconds(step.next_attempt_at))
            task_id, failure = await self._ensure_task(ld, plan, index, save)
            if failure is not None:
                return failure
            return Outcome(plans.STARTING, f"waiting for task {task_id}", wake_at=now + timeout)
        if self._agent_gone_for_good(task, now):
            return await self._replace(ld, plan, index, save, member, task)
        window = planner.down_for_maintenance(ld.snapshot, member, task, now)
        if window is not None:
            why = f"is down for maintenance (from {planner.when(window.start)})"
            return await self._replace(ld, plan, index, save, member, task, why)
        # Alive but not ready yet.
        state = task_state_name(task.state)
        said = planner.one_line(task, member.id)
        detail = f"task {task.task_id} {state}" + (f": {said}" if said else "")
        if step.status == plans.PENDING or not step.HasField("next_attempt_at"):
            return Outcome(plans.STARTING, f"waiting for {detail}", wake_at=now + timeout)
        deadline = plans.seconds(step.next_attempt_at)
        if now >= deadline:
            if task.state == T.TASK_STATE_QUEUED:
                why = await self.offers.pending_reason(task.task_id)
                detail += f" ({why})" if why else ""
            return Outcome(
                plans.DELAYED,
                f"{detail}: not RUNNING after {timeout:.0f}s, still waiting",
                wake_at=now + timeout,
            )
        message = step.message if step.status == plans.DELAYED else f"waiting for {detail}"
        return Outcome(step.status, message, wake_at=deadline)

    # -- replace -------------------------------------------------------------------------------

    def _agent_gone_for_good(self, task: types_pb2.Task, now: float) -> bool:
        """A launch pinned to its volume's agent that has waited ``replace_after_seconds`` for an
        offer from it: the agent is taken as gone for good."""
        return (
            task.state == T.TASK_STATE_QUEUED
            and bool(task.launch.volume.agent_id)
            and now - plans.seconds(task.updated_at) >= self.settings.replace_after_seconds
        )

    async def _replace(
        self,
        ld: Loaded,
        plan: types_pb2.Plan,
        index: int,
        save: Save,
        member: types_pb2.Member,
        task: types_pb2.Task,
        why: str = "",
    ) -> Outcome:
        """Give the member a fresh volume elsewhere (it resyncs from the others); its old volume
        is destroyed by the offers service if its agent ever comes back. A peer leaves the
        workload's membership first, since it comes back as a new peer. ``why``: the agent is
        down for maintenance (default: it did not come back for ``replace_after_seconds``)."""
        old_volume = member.volume
        if ld.snapshot.peers():
            others = [
                m for m in ld.snapshot.members if m.id != member.id and _running(ld.snapshot.task_of(m))
            ]
            if not others:
                # A fresh peer with nobody to join would start a new, empty cluster.
                return self._delayed(
                    f"not replacing {member.id}: no other peer runs to resync from; waiting for its "
                    f"agent ({old_volume.host or old_volume.agent_id}) to come back",
                    plan.steps[index].attempts + 1,
                )
            _, failure = await self._call(ld, plan, index, save, "RemoveMember")
            if failure is not None:
                return failure
        await self.offers.kill(task.task_id)
        generation = plans.volume_generation(old_volume.persistence_id) + 1

        def replace(m: types_pb2.Member) -> types_pb2.Member:
            m.volume.CopyFrom(planner.new_volume(ld.snapshot, m.id, generation))
            m.ClearField("health")
            where = old_volume.host or old_volume.agent_id
            m.message = f"replaced: agent {where} of {old_volume.persistence_id} " + (why or "gone")
            return m

        updated = await self.store.update_member(ld.name, member.id, replace)
        if updated is not None:
            ld.with_member(updated)
        gone = why or f"did not come back for {self.settings.replace_after_seconds:.0f}s"
        message = (
            f"{RELAUNCHING} {member.id} replaced: agent {old_volume.host or old_volume.agent_id} holding "
            f"{old_volume.persistence_id} {gone}; a fresh volume (generation {generation}) resyncs from "
            "the others"
        )
        log.warning("%s: %s", ld.name, message)
        return Outcome(plans.DELAYED, message, wake_at=time.time())

    # -- role callbacks --------------------------------------------------------------------------

    async def _role_callback(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, save: Save, method: str, running: bool
    ) -> Outcome:
        step = plan.steps[index]
        member = self._member(ld, step.member_id)
        condition = ld.snapshot.condition(member)
        if condition in (Condition.LOST, Condition.DECLINED):
            # A later plan replaces it; this one goes on without it.
            return Outcome(plans.COMPLETE, f"skipped: {member.id} is lost", skip_member=member.id)
        task = ld.snapshot.task_of(member)
        if task is None or task.state != T.TASK_STATE_RUNNING:
            state = task_state_name(task.state) if task is not None else "not launched"
            return Outcome(plans.STARTING, f"waiting for {member.id} to run ({state})")
        response, failure = await self._call(ld, plan, index, save, method)
        if failure is not None:
            return failure
        status = dict(getattr(response, "status", {}))
        await self._set_status(
            ld,
            member.id,
            status,
            T.MEMBER_STATE_RUNNING if running else None,
            repaired=method == "StartSlave",
        )
        if running:
            await self._mark_data(ld, member.id)
        return Outcome(plans.COMPLETE, f"{method} done", attempts=step.attempts)

    async def _mark_data(self, ld: Loaded, member_id: str) -> None:
        """The member is ready in its role: its volume holds the instance's data, and the
        instance has data from now on (rule: never start a master empty once it had data)."""

        def member_has(m: types_pb2.Member) -> types_pb2.Member:
            m.volume.has_data = True
            m.volume.rejoin_pending = False  # ready in its role again: it follows the current history
            return m

        def instance_has(i: types_pb2.Instance) -> types_pb2.Instance:
            i.has_data = True
            return i

        updated = await self.store.update_member(ld.name, member_id, member_has)
        if updated is not None:
            ld.with_member(updated)
        if not ld.snapshot.instance.has_data:
            instance = await self.store.update_instance(ld.name, instance_has)
            if instance is not None:
                ld.with_instance(instance)

    async def _start(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        return await self._role_callback(ld, plan, index, save, "Start", False)

    async def _start_master(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        return await self._role_callback(ld, plan, index, save, "StartMaster", False)

    async def _start_slave(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        return await self._role_callback(ld, plan, index, save, "StartSlave", False)

    async def _master_running(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        return await self._role_callback(ld, plan, index, save, "MasterRunning", True)

    async def _slave_running(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        return await self._role_callback(ld, plan, index, save, "SlaveRunning", True)

    async def _peer_running(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        return await self._role_callback(ld, plan, index, save, "PeerRunning", True)

    # -- losses --------------------------------------------------------------------------------

    async def _failover(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """MasterLost, then persist the decision: first in the step (``Step.decision``), then in
        the roles: the old master becomes a LOST SLAVE, then the chosen replica MASTER (so two
        MASTER members never exist, not even between the two writes). Resumed after a restart, a
        decision already recorded is carried out, never asked for again: one loss, one promotion."""
        step = plan.steps[index]
        old = self._member(ld, step.member_id)
        drain = plan.name == plans.DRAIN  # a switchover off an agent going down: drain the old master
        restart = plan.name == plans.UPDATE  # an update's switchover: restart the old master in place
        # A switchover (the old master runs): candidates as for a drain.
        planned = drain or restart or bool(plan.operation.id)
        # After the bring-up of the old master as a replica: an update restarts it in place first
        # and waits until it caught up; an operator's operation closes with its own steps.
        before = [*operations.after_switchover(plan, old.id)]
        closing = [*operations.done_steps(plan)]
        if restart:
            restart_before, caught_up_after = rolling.after_update_switchover(old.id)
            before += restart_before
            closing[:0] = caught_up_after
        masters = [m for m in ld.snapshot.members if m.role == T.ROLE_MASTER and m.id != old.id]
        if masters:
            if old.role == T.ROLE_MASTER:
                await self._demote_lost_master(ld, old.id)
            return Outcome(
                plans.COMPLETE,
                step.message or f"promote {masters[0].id}",
                attempts=step.attempts,
                append=planner.after_failover(
                    ld.snapshot, old.id, masters[0].id, drain=drain, before_bring_up=before, closing=closing
                ),
            )
        chosen_id = step.decision.promote_member_id
        reason = step.message
        caught = self._caught_up(plan, old.id)
        if not chosen_id and caught is not None:
            # A planned switchover: the replica that holds the fenced old master's exact final
            # position (the catch-up step) is promoted; MasterLost is not asked.
            candidates = planner.failover_candidates(ld.snapshot, old.id)
            why = (
                f"planned switchover: {caught.member_id} holds the old master's final position "
                f"{caught.master_position}"
            )
            reason = self._decide(step, caught.member_id, why, candidates, dict(caught.positions))
            chosen_id = caught.member_id
            await save()
        if not chosen_id:
            candidates, waited = planner.failover_view(ld.snapshot, old.id)
            if planned and not waited:
                # A switchover promotes a replica on another agent, not one going down too.
                candidates = planner.switchover_candidates(ld.snapshot, old.id) or candidates
            if not candidates or waited:
                # A replica holding data does not run (it died too, or restarts): never skipped,
                # so every member restarts in place and the election waits for it.
                return Outcome(
                    plans.COMPLETE,
                    planner.cold_start_reason(waited),
                    attempts=step.attempts,
                    append=planner.cold_start(ld.snapshot, old.id, fence=False),
                )
            response, failure = await self._call(
                ld,
                plan,
                index,
                save,
                "MasterLost",
                as_master=old.id,
                candidate_ids=[m.id for m in candidates],
                master_position=self.master_position(ld.name, old),
                maximum_lag_on_failover=self.settings.maximum_lag_on_failover,
            )
            if failure is not None:
                return failure
            chosen_id = getattr(response, "promote_member_id", "")
            detail: str = getattr(response, "reason", "")
            if not chosen_id:
                note = f": {detail}" if detail else ""
                return self._delayed(f"no replica can be promoted yet{note}", step.attempts)
            chosen = ld.snapshot.member(chosen_id)
            if chosen is None or chosen_id not in {m.id for m in candidates}:
                return self._delayed(f"MasterLost chose {chosen_id!r}, not a ready replica", step.attempts)
            # The decision is durable before any role changes.
            positions = dict(getattr(response, "positions", {}))
            reason = self._decide(step, chosen_id, detail, candidates, positions)
            await save()

        if old.role == T.ROLE_MASTER:
            await self._demote_lost_master(ld, old.id)

        if not await self._promote(ld, chosen_id):
            return Outcome(plans.ERROR, f"{chosen_id}, chosen for promotion, no longer exists")
        if planned:
            log.warning("%s: switchover: master %s fenced; promoted %s", ld.name, old.id, chosen_id)
        else:
            log.warning("%s: master %s lost; promoted %s", ld.name, old.id, chosen_id)
        return Outcome(
            plans.COMPLETE,
            reason,
            attempts=step.attempts,
            append=planner.after_failover(
                ld.snapshot, old.id, chosen_id, drain=drain, before_bring_up=before, closing=closing
            ),
        )

    async def _demote(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """Cold start: the lost master's record becomes a SLAVE, so every member is relaunched
        read-only and none takes writes before the election."""
        mid = plan.steps[index].member_id
        member = ld.snapshot.member(mid)
        if member is None or member.role != T.ROLE_MASTER:
            return Outcome(plans.COMPLETE, f"{mid} is not master")

        def demote(m: types_pb2.Member) -> types_pb2.Member:
            m.role = T.ROLE_SLAVE
            return m

        updated = await self.store.update_member(ld.name, mid, demote)
        if updated is not None:
            ld.with_member(updated)
        return Outcome(plans.COMPLETE, f"{mid} restarts as a replica until the election")

    async def _elect(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """Cold start: once every member holding data runs again, MasterLost picks the most
        advanced among them; the decision is recorded (``Step.decision``) before the role
        changes, as in a failover. Never a member without the data of an instance that had some:
        if none is left, ERROR (the instance is FAILED) and a person decides."""
        step = plan.steps[index]
        s = ld.snapshot
        chosen_id = step.decision.promote_member_id
        reason = step.message
        if not chosen_id:
            candidates, waited = planner.election_candidates(s)
            if not candidates and not waited:
                if s.instance.has_data:
                    return Outcome(
                        plans.ERROR,
                        f"every copy of {ld.name}'s data is gone (no member's volume holds it); not "
                        "starting an empty master: restore from a backup, or delete the instance",
                        attempts=step.attempts,
                    )
                candidates = [m for m in s.members if _running(s.task_of(m))]
            ended = [m for m in waited if (t := s.task_of(m)) is None or t.state in ENDED]
            if ended:
                # Died again after its restart: relaunch it on its volume, then elect.
                again: list[types_pb2.Step] = [plans.step(Action.LAUNCH, m.id) for m in ended]
                again += [plans.step(Action.AWAIT, m.id) for m in ended]
                again.append(plans.step(Action.ELECT, step.member_id))
                return Outcome(
                    plans.COMPLETE,
                    "restarting " + ", ".join(m.id for m in ended) + " again before the election",
                    append=again,
                )
            if waited or not candidates:
                names = ", ".join(m.id for m in waited) or "a running member"
                now = time.time()
                if step.status != plans.STARTING or not step.HasField("next_attempt_at"):
                    return Outcome(
                        plans.STARTING,
                        f"waiting for {names} (holding data) to run before electing a master",
                        wake_at=now + self.settings.elect_timeout_seconds,
                    )
                deadline = plans.seconds(step.next_attempt_at)
                if now >= deadline:
                    return Outcome(
                        plans.DELAYED,
                        f"{names} (holding data) not running after "
                        f"{self.settings.elect_timeout_seconds:.0f}s; still waiting (never skipped)",
                        wake_at=now + self.settings.elect_timeout_seconds,
                    )
                return Outcome(plans.STARTING, step.message, wake_at=deadline)
            response, failure = await self._call(
                ld, plan, index, save, "MasterLost", candidate_ids=[m.id for m in candidates]
            )
            if failure is not None:
                return failure
            chosen_id = getattr(response, "promote_member_id", "")
            detail: str = getattr(response, "reason", "")
            if chosen_id not in {m.id for m in candidates}:
                return self._delayed(
                    f"MasterLost chose {chosen_id!r}, not one of "
                    + ", ".join(m.id for m in candidates)
                    + (f": {detail}" if detail else ""),
                    step.attempts,
                )
            reason = self._decide(
                step, chosen_id, detail, candidates, dict(getattr(response, "positions", {}))
            )
            await save()

        if not await self._promote(ld, chosen_id):
            return Outcome(plans.ERROR, f"{chosen_id}, chosen for master, no longer exists")
        log.warning("%s: every member restarted; %s leads", ld.name, chosen_id)
        return Outcome(
            plans.COMPLETE,
            reason,
            attempts=step.attempts,
            append=planner.after_election(ld.snapshot, chosen_id),
        )

    @staticmethod
    def _decide(
        step: types_pb2.Step,
        chosen_id: str,
        detail: str,
        candidates: list[types_pb2.Member],
        positions: dict[str, str] | None = None,
    ) -> str:
        """Record the decision in the step (typed; the message only tells a person)."""
        step.decision.CopyFrom(
            T.PromotionDecision(
                promote_member_id=chosen_id,
                reason=detail,
                candidate_ids=[m.id for m in candidates],
                positions=positions or {},
            )
        )
        step.message = f"{PROMOTING} {chosen_id}" + (f": {detail}" if detail else "")
        return step.message

    async def _promote(self, ld: Loaded, member_id: str) -> bool:
        """The member's record becomes the MASTER (False if it no longer exists)."""

        def promote(m: types_pb2.Member) -> types_pb2.Member:
            m.role = T.ROLE_MASTER
            # What the monitor found of it as a replica says nothing of it as the master.
            m.ClearField("health")
            return m

        promoted = await self.store.update_member(ld.name, member_id, promote)
        if promoted is None:
            return False
        ld.with_member(promoted)
        return True

    async def _demote_lost_master(self, ld: Loaded, member_id: str) -> None:
        def demote(m: types_pb2.Member) -> types_pb2.Member:
            m.role = T.ROLE_SLAVE
            m.state = T.MEMBER_STATE_LOST
            # Its data may end in writes nobody acknowledged: not a candidate until it rejoined.
            m.volume.rejoin_pending = m.volume.has_data
            return m

        updated = await self.store.update_member(ld.name, member_id, demote)
        if updated is not None:
            ld.with_member(updated)

    async def _lost(self, ld: Loaded, plan: types_pb2.Plan, index: int, save: Save, method: str) -> Outcome:
        step = plan.steps[index]
        member = self._member(ld, step.member_id)
        if ld.snapshot.condition(member) != Condition.LOST:
            return Outcome(plans.COMPLETE, f"{member.id} is not lost any more")
        response, failure = await self._call(ld, plan, index, save, method)
        if failure is not None:
            return failure
        if getattr(response, "replace", True):
            return Outcome(plans.COMPLETE, f"replacing {member.id}", attempts=step.attempts)

        def decline(m: types_pb2.Member) -> types_pb2.Member:
            m.message = f"{planner.DECLINED_PREFIX}: the workload declined a replacement ({method})"
            return m

        await self.store.update_member(ld.name, member.id, decline)
        return Outcome(
            plans.COMPLETE,
            f"{member.id} not replaced (workload)",
            attempts=step.attempts,
            skip_member=member.id,
        )

    async def _slave_lost(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        return await self._lost(ld, plan, index, save, "SlaveLost")

    async def _peer_lost(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        return await self._lost(ld, plan, index, save, "PeerLost")

    async def _remove(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        step = plan.steps[index]
        member = ld.snapshot.member(step.member_id)
        if member is None:
            return Outcome(plans.COMPLETE, f"{step.member_id} is gone")
        if plan.name == plans.DRAIN and planner.maintenance_of(ld.snapshot, member) is not None:
            # A peer drained: it leaves the membership only once it can be placed elsewhere (the
            # quorum must not shrink for a member that then sits QUEUED).
            no_room = await self._no_room(ld, member)
            if no_room:
                return self._delayed(no_room, step.attempts + 1)
        _, failure = await self._call(ld, plan, index, save, "RemoveMember")
        if failure is not None:
            return failure
        return Outcome(plans.COMPLETE, f"{step.member_id} removed from the workload", attempts=step.attempts)

    # -- kills ---------------------------------------------------------------------------------

    async def _kill_tasks(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, tasks: list[types_pb2.Task], what: str
    ) -> Outcome:
        """Kill every task not ended yet (again when a wait timed out) and wait until each ended;
        an unreachable task cannot answer, so the kill request is all it gets."""
        step = plan.steps[index]
        now = time.time()
        waiting = [t for t in tasks if t.state not in ENDED]
        for t in tasks:
            if t.state in DEAD:
                continue
            if not t.kill_requested or (step.status == plans.DELAYED and due):
                log.info("%s: %s: killing %s (%s)", ld.name, what, t.task_id, task_state_name(t.state))
                await self.offers.kill(t.task_id)
        if not waiting:
            return Outcome(plans.COMPLETE, f"{what}: no task running")
        names = ", ".join(f"{t.task_id} ({task_state_name(t.state)})" for t in waiting)
        timeout = self.settings.kill_timeout_seconds
        if step.status != plans.STARTING or not step.HasField("next_attempt_at"):
            if step.status == plans.DELAYED and not due:
                return Outcome(plans.DELAYED, step.message, wake_at=plans.seconds(step.next_attempt_at))
            return Outcome(plans.STARTING, f"{what}: waiting for {names} to end", wake_at=now + timeout)
        deadline = plans.seconds(step.next_attempt_at)
        if now >= deadline:
            return Outcome(
                plans.DELAYED, f"{what}: {names} not ended after {timeout:.0f}s", wake_at=now + timeout
            )
        return Outcome(plans.STARTING, f"{what}: waiting for {names} to end", wake_at=deadline)

    async def _kill(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        mid = plan.steps[index].member_id
        member = ld.snapshot.member(mid)
        if member is None:
            return Outcome(plans.COMPLETE, f"{mid} is gone")
        outcome = await self._kill_tasks(ld, plan, index, due, self._tasks_of(ld, mid), f"stop {mid}")
        final = T.MEMBER_STATE_STOPPED if outcome.status == plans.COMPLETE else T.MEMBER_STATE_KILLING
        if member.task_id and member.state != final:
            await self._set_status(ld, mid, {}, final)
        return outcome

    async def _fence(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """Before a promotion, make sure the old master takes no more writes (data-safety rule 2).
        A Mesos kill is sent, but it is not a fence (it cannot reach a cut-off agent); the step
        completes on the first of:

        - Mesos reports every task of the member ended for sure (FAILED, KILLED, FINISHED...;
          not LOST or UNREACHABLE): PROCESS_GONE;
        - the workload's ``Fence`` demoted it directly: DEMOTED;
        - it could not be reached, every other live member was detached from it, and its own
          rule's bound (``self_fence_seconds``) has passed: SELF_FENCED.

        The outcome is recorded in ``Step.fence`` before the step completes. A workload without
        ``Fence`` is fenced by Mesos alone: the step waits until its tasks are reported ended."""
        step = plan.steps[index]
        mid = step.member_id
        s = ld.snapshot
        member = self._member(ld, mid)
        tasks = self._tasks_of(ld, mid)
        # The current task unless surely dead; older incarnations only if still believed running
        # (an old LOST one was fenced by the recovery that replaced it).
        live = [
            t for t in tasks if t.state not in DEAD and (t.task_id == member.task_id or t.state not in ENDED)
        ]
        now = time.time()
        if not live:
            current = [t for t in tasks if t.task_id == member.task_id]
            ended = ", ".join(f"{t.task_id} {task_state_name(t.state)}" for t in current) or "no task"
            return await self._fenced(step, save, T.FENCE_METHOD_PROCESS_GONE, f"task ended ({ended})", now)
        fence = step.fence
        if fence.method == T.FENCE_METHOD_DEMOTED:
            return Outcome(plans.COMPLETE, step.message, attempts=step.attempts)
        if fence.method == T.FENCE_METHOD_SELF_FENCED:
            safe_after = plans.seconds(fence.safe_after)
            if now >= safe_after:
                return Outcome(plans.COMPLETE, self._fence_message(fence), attempts=step.attempts)
            return Outcome(
                plans.STARTING,
                f"{mid} unreachable, replicas detached; waiting {safe_after - now:.1f}s more until it has "
                f"provably stopped taking writes ({fence.detail})",
                wake_at=safe_after,
                attempts=step.attempts,
            )
        if self._planned_switchover(plan, member, live) and not (step.status == plans.DELAYED and not due):
            # A switchover off an agent going down (drain): the old master runs and is reachable,
            # so it is demoted first (read-only / paused / re-pointed, as the workload's Fence
            # does) and not killed: a kill racing the demotion leaves it unreachable (its clients
            # see "Lost connection", the Fence can only self-fence). Killed only if the demotion
            # fails or times out (below). Promotion still follows only a proven fence (rule 2).
            others = [m.id for m in s.members if m.id != mid and _alive(s.task_of(m))]
            log.info(
                "%s: fence %s: demoting %s (planned switchover; not killed)", ld.name, mid, member.task_id
            )
            try:
                response, failure = await self._call(
                    ld, plan, index, save, "Fence", as_master=mid, optional=True, replica_ids=others
                )
            except NotImplementedByWorkload:
                response, failure = None, None
            method = int(getattr(response, "method", 0)) if response is not None else 0
            if method == T.FENCE_METHOD_DEMOTED:
                detail = str(getattr(response, "detail", ""))
                return await self._fenced(step, save, T.FENCE_METHOD_DEMOTED, detail, time.time())
            if failure is not None:
                why = failure.message
            elif response is None:
                why = f"{ld.snapshot.instance.spec.workload} has no Fence callback"
            else:
                why = "Fence answered " + T.FenceMethod.Name(method)
            log.warning("%s: fence %s: demotion failed (%s); killing it", ld.name, mid, why)
            now = time.time()
        for t in live:
            if not t.kill_requested or due:
                log.info("%s: fence %s: killing %s (%s)", ld.name, mid, t.task_id, task_state_name(t.state))
                await self._fence_kill(ld.name, mid, t.task_id)
        if step.status == plans.DELAYED and not due:
            return Outcome(plans.DELAYED, step.message, wake_at=plans.seconds(step.next_attempt_at))
        others = [m.id for m in s.members if m.id != mid and _alive(s.task_of(m))]
        try:
            response, failure = await self._call(
                ld, plan, index, save, "Fence", as_master=mid, optional=True, replica_ids=others
            )
        except NotImplementedByWorkload:
            response, failure = None, None
        if response is None and failure is None:
            # No Fence: only Mesos can say the process is gone (kills are retried on DELAYED).
            if all(t.state in ENDED for t in live):
                states = ", ".join(f"{t.task_id} {task_state_name(t.state)}" for t in live)
                return await self._fenced(
                    step,
                    save,
                    T.FENCE_METHOD_PROCESS_GONE,
                    f"Mesos reports {states}; {ld.snapshot.instance.spec.workload} has no Fence callback, "
                    "so a process on a cut-off agent may still run",
                    now,
                )
            names = ", ".join(f"{t.task_id} ({task_state_name(t.state)})" for t in live)
            return self._delayed(
                f"{ld.snapshot.instance.spec.workload} has no Fence callback: waiting for Mesos to report "
                f"{names} ended before promoting",
                step.attempts + 1,
            )
        if failure is not None:
            return failure
        method = int(getattr(response, "method", 0))
        detail = str(getattr(response, "detail", ""))
        if method == T.FENCE_METHOD_DEMOTED:
            return await self._fenced(step, save, T.FENCE_METHOD_DEMOTED, detail, now)
        if method == T.FENCE_METHOD_SELF_FENCED:
            # The bound runs from the answer (the replicas were detached by then), not from before
            # the call: the failed attempt to reach the old master took time too.
            now = time.time()
            wait = max(0.0, float(getattr(response, "self_fence_seconds", 0.0)))
            outcome = await self._fenced(step, save, T.FENCE_METHOD_SELF_FENCED, detail, now, now + wait)
            if wait <= 0:
                return outcome
            return Outcome(
                plans.STARTING,
                f"{mid} unreachable, replicas detached; waiting {wait:.1f}s until it has provably "
                f"stopped taking writes ({detail})",
                wake_at=now + wait,
                attempts=step.attempts,
            )
        return Outcome(
            plans.ERROR,
            f"Fence on {mid} answered no fence method ({method}); a workload must demote or self-fence",
            attempts=step.attempts,
        )

    async def _no_room(self, ld: Loaded, member: types_pb2.Member) -> str:
        """Why ``member`` cannot be moved off its agent now ("" if it can): asks the offers service
        for its agents (``GetCluster``) and :func:`planner.drain_room`. The offers service not
        answering is a reason to wait too."""
        try:
            agents = await self.offers.agents()
        except errors.StatefulError as error:
            return f"not moving {member.id} yet: cannot list the agents ({error.message})"
        return planner.drain_room(ld.snapshot, member, agents)

    @staticmethod
    def _planned_switchover(
        plan: types_pb2.Plan, member: types_pb2.Member, live: list[types_pb2.Task]
    ) -> bool:
        """A switchover planned by a drain of a master that runs and answers: its current task
        (and every live one) RUNNING, none killed yet, not declared unresponsive by the probe. A
        LOST master (a recovery, or a drain plan that found it lost) is fenced as before."""
        return (
            plan.name in (plans.DRAIN, plans.UPDATE, *plans.OPERATIONS)
            and member.role == T.ROLE_MASTER
            and not member.health.unresponsive
            and any(t.task_id == member.task_id for t in live)
            and all(t.state == T.TASK_STATE_RUNNING and not t.kill_requested for t in live)
        )

    async def _fence_kill(self, instance: str, mid: str, task_id: str) -> None:
        """Send the Mesos kill of a fenced member's task, best-effort: a Mesos kill is not a fence
        (DESIGN rule 2: it cannot reach a cut-off agent, and a frozen or unreachable Mesos master
        may never answer), so it never holds the fence up. It gets at most
        ``fence_kill_timeout_seconds``; a failure is logged and the fence goes on to the workload's
        ``Fence`` in the same attempt. The task is not marked kill-requested then, so the kill is
        sent again on the next attempt."""
        bound = self.settings.fence_kill_timeout_seconds
        try:
            await asyncio.wait_for(self.offers.kill(task_id), timeout=bound)
        except TimeoutError:
            log.warning(
                "%s: fence %s: kill of %s not answered within %.1fs (offers or the Mesos master "
                "unreachable); fencing through the workload, the kill is sent again later",
                instance,
                mid,
                task_id,
                bound,
            )
        except errors.StatefulError as error:
            log.warning(
                "%s: fence %s: kill of %s failed (%s); fencing through the workload, the kill is "
                "sent again later",
                instance,
                mid,
                task_id,
                error.message,
            )

    async def _fenced(
        self,
        step: types_pb2.Step,
        save: Save,
        method: int,
        detail: str,
        at: float,
        safe_after: float | None = None,
    ) -> Outcome:
        """Record the fence in the step. The reconciler persists the step before the next one
        (the promotion) runs; a self-fence's wait is saved at once (a restart must not shorten it)."""
        step.fence.CopyFrom(T.FenceOutcome(method=method, detail=detail[:500]))  # type: ignore[arg-type]
        step.fence.fenced_at.CopyFrom(plans.timestamp(at))
        if safe_after is not None:
            step.fence.safe_after.CopyFrom(plans.timestamp(safe_after))
            await save()
        return Outcome(plans.COMPLETE, self._fence_message(step.fence), attempts=step.attempts)

    @staticmethod
    def _fence_message(fence: types_pb2.FenceOutcome) -> str:
        how = {
            T.FENCE_METHOD_PROCESS_GONE: "process gone",
            T.FENCE_METHOD_DEMOTED: "demoted",
            T.FENCE_METHOD_SELF_FENCED: "self-fenced",
        }.get(fence.method, "?")
        return f"fenced ({how}): {fence.detail}" if fence.detail else f"fenced ({how})"

    async def _rebuild(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """A replica whose data cannot follow the master (diverged): kill it, wait until it ended,
        then give it a fresh volume; the steps after launch it and resync it from the master. Its
        old volume is destroyed by the offers service (no member wants it). Never the master."""
        mid = plan.steps[index].member_id
        member = self._member(ld, mid)
        if member.role == T.ROLE_MASTER:
            return Outcome(plans.ERROR, f"not rebuilding {mid}: it is the master")
        if not member.volume.has_data and not member.health.repair:
            return Outcome(plans.COMPLETE, f"{mid} has a fresh volume")
        outcome = await self._kill_tasks(ld, plan, index, due, self._tasks_of(ld, mid), f"rebuild {mid}")
        if outcome.status != plans.COMPLETE:
            return outcome
        why = planner.unhealthy(member) or "asked by the workload"
        generation = plans.volume_generation(member.volume.persistence_id) + 1

        def rebuild(m: types_pb2.Member) -> types_pb2.Member:
            m.volume.CopyFrom(planner.new_volume(ld.snapshot, m.id, generation))
            m.ClearField("health")
            m.message = f"rebuilt from the master ({why})"
            return m

        updated = await self.store.update_member(ld.name, mid, rebuild)
        if updated is not None:
            ld.with_member(updated)
        log.warning("%s: rebuilding %s on a fresh volume (%s)", ld.name, mid, why)
        return Outcome(plans.COMPLETE, f"{mid} gets a fresh volume (generation {generation}): {why}")

    async def _drain(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """Move a member off an agent scheduled for maintenance (Mesos docs/maintenance.md: a
        framework vacates the agent before its window starts): it gets a fresh volume — written
        first, so a resumed step never relaunches it on the old one — then its tasks are killed
        and waited for; the steps after launch it elsewhere (every draining agent is avoided) and
        resync it from the master (or the other peers). Idempotent: a member whose volume is not
        placed, or not on a draining agent (the maintenance was cancelled), only has its old tasks
        waited for.

        A master is not killed here: once no replica is left to drain first and
        ``drain_settle_seconds`` passed since its maintenance was announced, the step appends the
        switchover (:func:`planner.switchover`: fence + failover; the failover appends this step
        again for the old master, a replica by then). Without a ready replica on another agent
        (:func:`planner.switchover_blocker`) it waits (DELAYED), saying why."""
        step = plan.steps[index]
        mid = step.member_id
        s = ld.snapshot
        member = ld.snapshot.member(mid)
        if member is None:
            return Outcome(plans.COMPLETE, f"{mid} is gone")
        draining = planner.draining_agents(s)
        if member.role == T.ROLE_MASTER or (s.peers() and len(s.members) < 2):
            maintenance = planner.maintenance_of(s, member)
            if maintenance is None:
                return Outcome(plans.COMPLETE, f"{mid}: no maintenance scheduled for its agent any more")
            first = planner.replicas_draining(s)
            if member.role == T.ROLE_MASTER and first:
                # Maintenance of another agent arrived since: its replicas move first (next plan).
                names = ", ".join(m.id for m in first)
                return Outcome(plans.COMPLETE, f"{names} to be drained before master {mid}")
            if step.status == plans.DELAYED and not due:
                return Outcome(plans.DELAYED, step.message, wake_at=plans.seconds(step.next_attempt_at))
            if member.role == T.ROLE_MASTER:
                blocker = planner.switchover_blocker(s, member)
            else:
                blocker = "no other peer to resync from"
            host = maintenance.hostname or member.host
            if not blocker:
                now = time.time()
                settle_at = plans.seconds(maintenance.announced_at) + self.settings.drain_settle_seconds
                if now < settle_at:
                    return Outcome(
                        plans.STARTING,
                        f"switching {mid} over in {settle_at - now:.1f}s (the other agents of the "
                        "schedule get their inverse offers meanwhile: their replicas move first)",
                        wake_at=settle_at,
                    )
                if member.role == T.ROLE_MASTER:
                    # The old master is drained as a replica after the switchover: not switched
                    # over (nor fenced) while it could not be moved anywhere.
                    no_room = await self._no_room(ld, member)
                    if no_room:
                        return self._delayed(no_room, step.attempts + 1)
                return Outcome(
                    plans.COMPLETE,
                    f"switching {mid} over off agent {host}",
                    append=planner.switchover(mid),
                )
            return self._delayed(
                f"cannot move {mid} off agent {host} before its maintenance at "
                f"{planner.when(maintenance.start)}: {blocker}",
                step.attempts + 1,
            )
        volume = member.volume
        peer_removed = s.peers()  # the plan's remove-member ran: it comes back as a new peer
        if volume.agent_id and volume.agent_id not in draining and not peer_removed:
            return Outcome(plans.COMPLETE, f"{mid}: no maintenance scheduled for its agent any more")
        if volume.agent_id and not peer_removed:
            # Not stopped before a replacement can be placed (a peer was checked before its
            # remove-member, :meth:`_remove`).
            if step.status == plans.DELAYED and not due:
                return Outcome(plans.DELAYED, step.message, wake_at=plans.seconds(step.next_attempt_at))
            no_room = await self._no_room(ld, member)
            if no_room:
                return self._delayed(no_room, step.attempts + 1)
        if volume.agent_id:
            maintenance = draining.get(volume.agent_id, T.AgentMaintenance())
            host = maintenance.hostname or volume.host or volume.agent_id
            generation = plans.volume_generation(volume.persistence_id) + 1
            note = f"drained off agent {host} (maintenance at {planner.when(maintenance.start)})"

            def fresh(m: types_pb2.Member) -> types_pb2.Member:
                m.volume.CopyFrom(planner.new_volume(s, m.id, generation))
                m.ClearField("health")
                m.message = note
                return m

            updated = await self.store.update_member(ld.name, mid, fresh)
            if updated is not None:
                ld.with_member(updated)
            log.warning("%s: %s: %s; a fresh volume (gen %d) elsewhere", ld.name, mid, note, generation)
        outcome = await self._kill_tasks(ld, plan, index, due, self._tasks_of(ld, mid), f"drain {mid}")
        if outcome.status != plans.COMPLETE:
            return outcome
        return Outcome(plans.COMPLETE, f"{mid} stopped; relaunching on a fresh volume elsewhere")

    # -- rolling update (lifecycle/rolling.py) ----------------------------------------------------

    async def _restart(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """An update restarts a member in place: its tasks are killed (asked by us: not a loss) and
        waited for; its volume stays, so the ``launch`` after it (Config again, the new spec)
        goes to the same agent. Never a master: an update switches it over first (a lone master
        is the exception: nobody to switch to, ``rolling.update_plan`` says so)."""
        step = plan.steps[index]
        mid = step.member_id
        member = self._member(ld, mid)
        if member.role == T.ROLE_MASTER and len(ld.snapshot.members) > 1:
            return Outcome(plans.ERROR, f"not restarting {mid}: it is the master (switch it over first)")
        what = f"restart {mid} in place (generation {plan.generation})"
        outcome = await self._kill_tasks(ld, plan, index, due, self._tasks_of(ld, mid), what)
        if outcome.status != plans.COMPLETE:
            return outcome
        return Outcome(
            plans.COMPLETE, f"{mid} stopped; relaunching on its volume with generation {plan.generation}"
        )

    async def _await_caught_up(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        """Wait until a check made after the member's restart (the health monitor's CheckMember,
        every ``check_interval_seconds``) finds it replicating and caught up
        (``rolling.caught_up``), so the next member is restarted (or the master switched over)
        only with this one holding the data again. A workload whose members are never checked
        (no CheckMember) gets ``catch_up_unchecked_seconds`` (bounded: readiness is then all
        there is to wait for)."""
        step = plan.steps[index]
        member = self._member(ld, step.member_id)
        restarts = [
            st
            for st in plan.steps
            if st.member_id == member.id
            and plans.action_of(st) == Action.RESTART
            and st.HasField("finished_at")
        ]
        restart = restarts[-1] if restarts else None
        since = plans.seconds(restart.finished_at) if restart is not None else plans.seconds(plan.started_at)
        ok, message = rolling.caught_up(member, since)
        if ok:
            return Outcome(plans.COMPLETE, message)
        now = time.time()
        unchecked = max(5 * self.settings.check_interval_seconds, 10.0)
        if not member.health.HasField("checked_at") and now - since > unchecked:
            return Outcome(
                plans.COMPLETE, f"{member.id} ready; not checked in {unchecked:.0f}s (no CheckMember?)"
            )
        return Outcome(plans.STARTING, message, wake_at=now + self.settings.check_interval_seconds)

    async def _delete_member(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        mid = plan.steps[index].member_id
        await self.store.client.delete(KIND_MEMBER, member_name(ld.name, mid))
        return Outcome(plans.COMPLETE, f"member {mid} deleted")

    # -- delete --------------------------------------------------------------------------------

    async def _cleanup(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        tasks = [t for _, t in sorted(ld.snapshot.tasks.items())]
        outcome = await self._kill_tasks(ld, plan, index, due, tasks, "stop every task")
        if outcome.status != plans.COMPLETE:
            return outcome
        for m in ld.snapshot.members:
            await self.store.client.delete(KIND_MEMBER, member_name(ld.name, m.id))
        for t in tasks:
            await self.store.client.delete(KIND_TASK, t.task_id)
        await self.store.client.delete(KIND_SECRETS, ld.name)
        return Outcome(plans.COMPLETE, f"deleted {len(ld.snapshot.members)} members and {len(tasks)} tasks")

    async def _release(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """Wait (polling the offers service) until it has destroyed the deleted members' volumes
        and unreserved their resources; past ``release_timeout_seconds`` go on: it destroys the
        rest when their agents come back."""
        left = await self.offers.reservations(ld.name)
        if not left:
            return Outcome(plans.COMPLETE, "volumes destroyed, resources unreserved")
        names = ", ".join(sorted({r.persistence_id or r.member_id for r in left}))
        # The wait is counted from the start of the delete (the plan's start), not per poll.
        timeout = self.settings.release_timeout_seconds
        now = time.time()
        if now >= plans.seconds(plan.started_at) + timeout:
            return Outcome(
                plans.COMPLETE,
                f"not released {timeout:.0f}s after the delete started: {names}; the offers "
                "service destroys them when their agents offer them again",
            )
        return Outcome(
            plans.STARTING,
            f"waiting for the offers service to destroy and unreserve {names}",
            wake_at=now + RELEASE_POLL_SECONDS,
        )

    async def _remove_instance(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        from mesos_stateful.lifecycle.store import KIND_INSTANCE

        plan.steps[index].status = plans.COMPLETE
        plan.steps[index].message = "instance removed"
        plan.status = plans.COMPLETE

        def mark(instance: types_pb2.Instance) -> types_pb2.Instance:
            instance.phase = T.INSTANCE_PHASE_DELETED
            instance.plan.CopyFrom(plan)
            return instance

        await self.store.update_instance(ld.name, mark)
        await self.store.client.delete(KIND_INSTANCE, ld.name)
        log.info("%s: deleted", ld.name)
        return Outcome(plans.COMPLETE, "instance removed", gone=True)

    # -- operator actions (lifecycle/operations.py) ------------------------------------------

    @staticmethod
    def _caught_up(plan: types_pb2.Plan, old_master: str) -> types_pb2.CatchUp | None:
        """The catch-up of ``old_master`` in this plan, if a replica caught up (else None)."""
        for st in plan.steps:
            if (
                plans.action_of(st) == Action.CATCH_UP
                and st.member_id == old_master
                and st.catch_up.member_id
                and st.catch_up.HasField("caught_up_at")
            ):
                return st.catch_up
        return None

    @staticmethod
    def _replaced_agent(plan: types_pb2.Plan, member_id: str) -> str:
        """The agent a ``replace`` step of this plan moved ``member_id`` off ("" if none)."""
        for st in plan.steps:
            if plans.action_of(st) == Action.REPLACE_MEMBER and st.member_id == member_id:
                return st.replaced_agent_id
        return ""

    async def _position(self, ld: Loaded, member_id: str, timeout: float) -> str:
        """The member's replication position now (CheckMember's ``health.position``)."""
        context = callback_context(ld.snapshot, member_id, ld.secrets, 1)
        response = await self.callbacks.call(
            ld.snapshot.instance.spec.workload,
            "CheckMember",
            context,
            timeout=timeout,
            traced=False,
            timeout_seconds=timeout * 0.8,
        )
        return str(response.health.position)

    async def _catch_up(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """A planned switchover, after the old master was demoted (``fence``: it takes no write
        any more): read its final position (CheckMember), then poll the candidates' positions
        (only the target's when the operator named one) until one equals it exactly: that
        replica holds every write the old master took, acknowledged or not (data-safety rules 1
        and 3). The positions are recorded typed in ``Step.catch_up``; ``failover`` promotes the
        member recorded there. One attempt polls for ``CATCH_UP_ATTEMPT_SECONDS``, then the step
        is DELAYED saying who is where and tried again (never promoted behind). An old master
        that could not be demoted (killed or self-fenced instead) has no final position to read:
        the failover then asks MasterLost for the most advanced replica, as in a recovery."""
        step = plan.steps[index]
        mid = step.member_id
        if step.catch_up.HasField("caught_up_at"):
            return Outcome(plans.COMPLETE, step.message, attempts=step.attempts)
        fence = next(
            (st for st in plan.steps if plans.action_of(st) == Action.FENCE and st.member_id == mid), None
        )
        if fence is None or fence.fence.method != T.FENCE_METHOD_DEMOTED:
            how = StepRunner._fence_message(fence.fence) if fence is not None else "not fenced by this plan"
            return Outcome(
                plans.COMPLETE,
                f"{mid} was not demoted ({how}): its final position cannot be read; the most advanced "
                "replica is promoted (MasterLost)",
            )
        target = plan.operation.target_member_id
        allowed = [target] if target else [m.id for m in planner.failover_candidates(ld.snapshot, mid)]
        if step.status == plans.DELAYED and not due:
            return Outcome(plans.DELAYED, step.message, wake_at=plans.seconds(step.next_attempt_at))
        if (
            step.HasField("started_at")
            and time.time() - plans.seconds(step.started_at) > CATCH_UP_GIVE_UP_SECONDS
        ):
            return Outcome(
                plans.COMPLETE,
                f"no replica reached {mid}'s final position {step.catch_up.master_position or '?'} within "
                f"{CATCH_UP_GIVE_UP_SECONDS:.0f}s; the most advanced replica is promoted "
                "(MasterLost)",
                attempts=step.attempts,
            )
        attempts = await self._begin(plan, index, save, "reading the positions")
        probe = max(0.5, self.settings.probe_timeout_seconds)
        deadline = time.monotonic() + CATCH_UP_ATTEMPT_SECONDS
        positions: dict[str, str] = {}
        problems: dict[str, str] = {}
        while True:
            try:
                if not step.catch_up.master_position:
                    final = await self._position(ld, mid, probe)
                    if final:
                        step.catch_up.master_position = final
                        await save()  # typed: a restart compares against the same final position
                if step.catch_up.master_position:
                    answers = await asyncio.gather(
                        *(self._position(ld, m, probe) for m in allowed), return_exceptions=True
                    )
                    for m, answer in zip(allowed, answers, strict=True):
                        if isinstance(answer, BaseException):
                            problems[m] = getattr(answer, "message", str(answer))
                        else:
                            positions[m] = answer
                            problems.pop(m, None)
                    chosen = operations.caught_up(step.catch_up.master_position, positions, allowed)
                    if chosen:
                        # The history shows it in the PROMOTED event (the positions, the reason).
                        step.catch_up.member_id = chosen
                        step.catch_up.positions.clear()
                        step.catch_up.positions.update(positions)
                        step.catch_up.caught_up_at.CopyFrom(plans.timestamp(time.time()))
                        return Outcome(
                            plans.COMPLETE,
                            f"{chosen} caught up with {mid}'s final position {step.catch_up.master_position}",
                            attempts=attempts,
                        )
            except errors.TemporaryError as error:
                problems[mid] = error.message
            except errors.StatefulError as error:
                # No CheckMember (NotImplementedByWorkload) or a permanent refusal: never leave the
                # instance without a writable master on it; MasterLost picks the most advanced.
                return Outcome(
                    plans.COMPLETE,
                    f"cannot read positions ({error.message}); the most advanced replica is promoted "
                    "(MasterLost)",
                    attempts=attempts,
                )
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(CATCH_UP_POLL_SECONDS)
        step.catch_up.positions.clear()
        step.catch_up.positions.update(positions)
        where = ", ".join(f"{m} at {p}" for m, p in sorted(positions.items())) or "no position read"
        trouble = "; ".join(f"{m}: {p}" for m, p in sorted(problems.items()))
        return self._delayed(
            f"waiting for {target or 'a replica'} to reach {mid}'s final position "
            f"{step.catch_up.master_position or '?'} ({where})" + (f"; {trouble}" if trouble else ""),
            attempts,
        )

    async def _replace_member(
        self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save
    ) -> Outcome:
        """ReplaceMember: a fresh volume (written first: a resumed step never relaunches the member
        on its old one), the agent it leaves recorded (``Step.replaced_agent_id``: its launch avoids
        it), then its tasks killed and waited for; the steps after launch it elsewhere and resync
        it. Never the last copy of the data (data-safety rule 4): while no other ready member holds
        the data, it waits (DELAYED), saying so. Never the master (a switchover comes first)."""
        step = plan.steps[index]
        mid = step.member_id
        member = ld.snapshot.member(mid)
        if member is None:
            return Outcome(plans.COMPLETE, f"{mid} is gone")
        if member.role == T.ROLE_MASTER:
            return Outcome(plans.ERROR, f"not replacing {mid}: it is the master (a switchover comes first)")
        if member.volume.agent_id:
            if step.status == plans.DELAYED and not due:
                return Outcome(plans.DELAYED, step.message, wake_at=plans.seconds(step.next_attempt_at))
            why = operations.last_copy(ld.snapshot, member) or await self._no_room(ld, member)
            if why:
                # Never the last copy; and not stopped while no other agent can take it (it would
                # sit QUEUED with its data gone): DELAYED, saying why, tried again.
                return self._delayed(why, step.attempts + 1)
            old_agent = member.volume.agent_id
            host = member.volume.host or old_agent
            generation = plans.volume_generation(member.volume.persistence_id) + 1
            step.replaced_agent_id = old_agent
            await save()
            note = f"replaced by an operator: a fresh volume (generation {generation}) off agent {host}"

            def fresh(m: types_pb2.Member) -> types_pb2.Member:
                m.volume.CopyFrom(planner.new_volume(ld.snapshot, m.id, generation))
                m.ClearField("health")
                m.message = note
                return m

            updated = await self.store.update_member(ld.name, mid, fresh)
            if updated is not None:
                ld.with_member(updated)
            # The REPLACED event comes from the new volume (lifecycle/events.py, member changes).
            log.warning("%s: %s: %s", ld.name, mid, note)
        outcome = await self._kill_tasks(ld, plan, index, due, self._tasks_of(ld, mid), f"replace {mid}")
        if outcome.status != plans.COMPLETE:
            return outcome
        return Outcome(plans.COMPLETE, f"{mid} stopped; relaunching on a fresh volume on another agent")

    async def _done(self, ld: Loaded, plan: types_pb2.Plan, index: int, due: bool, save: Save) -> Outcome:
        """Record the plan's operator action done (``Member.operation_done``)."""
        mid = plan.steps[index].member_id
        op_id = plan.operation.id

        def done(m: types_pb2.Member) -> types_pb2.Member:
            m.operation_done = op_id
            return m

        if op_id:
            # Its end is the plan's PLAN_FINISHED event (lifecycle/events.py).
            updated = await self.store.update_member(ld.name, mid, done)
            if updated is not None:
                ld.with_member(updated)
        return Outcome(plans.COMPLETE, f"{plan.name} of {mid} done")
