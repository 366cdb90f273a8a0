"""Maintenance end to end (issue 11, item 8): an operator schedules maintenance for agents
(``UPDATE_MAINTENANCE_SCHEDULE`` on the local cluster's master, Mesos docs/maintenance.md); the
master sends inverse offers; the offers service marks the tasks there (``Task.maintenance``); the
lifecycle drains every member off those agents — replicas first, the master last by switchover —
and the offers service accepts the inverse offer once the agent is empty.

Real parts: the local cluster, the offers and state services, etcd, the lifecycle, the gateway and
the Redis workload with real redis-servers. A writer counts the writes the master acknowledged
(``SET`` + ``WAIT 1``): none is lost; every live redis-server of the instance is sampled
(``INFO replication``) while the drain runs: never two masters.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.lifecycle.planner import TERMINAL
from mesos_stateful.testing.lifecycle import (
    LifecycleRunner,
    Suite,
    inverse_offer_answers,
    is_running,
    master_of,
    schedule_maintenance,
    start_maintenance,
)
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import (
    AcknowledgedWriter,
    InstanceWatch,
    RoleSampler,
    RoleWatch,
    missing_keys,
    password,
)

pytestmark = pytest.mark.slow

DRAIN_DEADLINE = 180.0  # generous: timings are not asserted here


class AcceptWatch:
    """Polls the master's maintenance status and the instance's task records: records every agent
    whose inverse offer was seen ACCEPTed while a task of the instance still ran there."""

    def __init__(self, suite: Suite, instance: str, agents: set[str], interval: float = 0.2) -> None:
        self.suite = suite
        self.instance = instance
        self.agents = agents
        self.interval = interval
        self.checks = 0
        self.too_early: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            # Answers first: a task still live in a later read was live when they were given.
            answers_of = {
                a: await asyncio.to_thread(inverse_offer_answers, self.suite, a) for a in self.agents
            }
            tasks = await self.suite.tasks(self.instance)
            for agent, answers in answers_of.items():
                live = [t.task_id for t in tasks.values() if t.agent_id == agent and t.state not in TERMINAL]
                if live and any(a.get("status") == "ACCEPT" for a in answers):
                    self.too_early.append(f"{agent}: {live}")
            self.checks += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _off(instance: T.Instance, agents: set[str]) -> bool:
    """RUNNING with 3 ready members, none of them (nor its volume) on ``agents``."""
    return is_running(instance, 3) and all(
        m.agent_id not in agents and m.volume.agent_id not in agents for m in instance.members
    )


@pytest.mark.agents(5)  # one member per agent (the default placement): 3 agents stay up for 3 members
async def test_maintenance_of_the_master_s_agent_drains_every_member_off_it_master_by_switchover(
    suite: Suite,
) -> None:
    """Maintenance scheduled (an hour ahead) for the machines of the master's agent and of a
    replica's agent: the replica there is moved first (a fresh volume elsewhere, resynced), the
    master last by switchover (fenced while it runs, a ready replica on another agent promoted,
    the old master rebuilt elsewhere as a replica); no acknowledged write lost, never two masters
    (records and redis-servers), each plan's reason names the member, the agent and the window;
    the inverse offers are accepted once the agents are empty, not before."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    replica_agents = [m.agent_id for m in instance.members if m.agent_id != old.agent_id]
    draining = {old.agent_id} | ({replica_agents[0]} if replica_agents else set())
    hostnames = {a.id: a.hostname for a in suite.cluster.agents}
    on_draining = [m.id for m in instance.members if m.agent_id in draining]

    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    watch = InstanceWatch(suite.client, "cache")
    await watch.start()
    sampler = RoleSampler(suite, "cache", secret)
    sampler.start()
    writer = AcknowledgedWriter(old, secret, "before")
    writer.start()
    early = AcceptWatch(suite, "cache", draining)
    try:

        async def writing() -> bool:
            return len(writer.acknowledged) >= 50

        await wait_for(writing, 30, what="50 writes acknowledged by the master")
        start = time.time() + 3600
        schedule_maintenance(suite, sorted(draining), start)

        early.start()

        drained = await suite.wait_instance(
            "cache",
            lambda i: _off(i, draining) and master_of(i).id != old.id,
            DRAIN_DEADLINE,
            f"every member off {sorted(draining)}",
        )
        await writer.stop()
        new = master_of(drained)

        # Every write the old master acknowledged (WAIT 1) is on the new master.
        assert len(writer.acknowledged) >= 50
        assert await missing_keys(new, secret, writer.acknowledged) == []
        # Never two masters: in the records (one promotion, the switchover) and on the servers.
        assert roles.promotions == [new.id]
        assert roles.max_masters == 1
        # (the sampler shares the event loop with the in-process services: a few samples a second)
        assert sampler.samples >= 3 and sampler.max_masters == 1  # it saw the master
        assert sampler.two_masters == [], f"two redis masters at once: {sampler.two_masters[:3]}"

        # The plans: one drain per member on a draining agent, replicas first, the master last by
        # switchover; each reason names the member, its agent and the window's start.
        at = T.AgentMaintenance()
        at.start.FromNanoseconds(int(start * 1e9))
        window = at.start.ToJsonString()
        started: dict[int, T.Plan] = {}  # every drain plan, its last version seen, by start time
        for seen in watch.instances():
            if seen.plan.name == plans.DRAIN:
                started[seen.plan.started_at.ToNanoseconds()] = seen.plan
        drains = [started[k] for k in sorted(started)]
        for plan in drains:
            mid = plan.reason.split()[1]
            agent = next(m.agent_id for m in instance.members if m.id == mid)
            assert plan.reason.startswith(
                f"drain {mid} off agent {hostnames[agent]} (maintenance at {window})"
            )
        # The members that were moved (a drain step completed with a fresh volume), in order.
        moved = [
            st.member_id
            for p in drains
            for st in p.steps
            if plans.action_of(st) == plans.Action.DRAIN
            and st.status == plans.COMPLETE
            and "fresh volume" in st.message
        ]
        replicas_there = [mid for mid in on_draining if mid != old.id]
        assert sorted(moved) == sorted(on_draining), [p.reason for p in drains]
        assert moved[-1] == old.id and sorted(moved[:-1]) == sorted(replicas_there), moved
        switchovers = [p for p in drains if any(st.name == f"failover {old.id}" for st in p.steps)]
        assert len(switchovers) == 1 and switchovers[0].reason.endswith("by switchover")
        fence = next(st for st in switchovers[0].steps if st.name == f"fence {old.id}")
        assert fence.fence.method != T.FENCE_METHOD_UNSPECIFIED
        failover = next(st for st in switchovers[0].steps if st.name == f"failover {old.id}")
        assert failover.decision.promote_member_id == new.id

        # The old master is a replica of the new one, on a fresh volume on another agent.
        old_now = next(m for m in drained.members if m.id == old.id)
        assert old_now.role == T.ROLE_SLAVE
        assert old_now.volume.persistence_id != old.volume.persistence_id
        assert old_now.agent_id not in draining
        assert not any(m.HasField("maintenance") for m in drained.members)

        # The agents are empty: the offers service accepts their inverse offers.
        async def accepted() -> bool:
            return all(
                any(a.get("status") == "ACCEPT" for a in inverse_offer_answers(suite, agent))
                for agent in draining
            )

        await wait_for(accepted, 60, what=f"the inverse offers of {sorted(draining)} accepted")
        await early.stop()
        assert early.checks > 3
        assert early.too_early == [], (
            f"inverse offer accepted while a task still ran there: {early.too_early}"
        )
    finally:
        await early.stop()
        await writer.stop()
        await sampler.stop()
        await watch.stop()
        await roles.stop()


@pytest.mark.agents(4)  # one member per agent: a free agent to move to
async def test_maintenance_of_a_replica_s_agent_moves_only_that_replica(suite: Suite) -> None:
    """Only a replica's agent is scheduled: that replica is rebuilt on another agent and resyncs;
    the master is never fenced nor demoted (no promotion) and keeps acknowledging writes."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    master = master_of(instance)
    replica = next((m for m in instance.members if m.agent_id != master.agent_id), None)
    if replica is None:
        pytest.skip("every member was placed on the master's agent")
    agent = replica.agent_id
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    writer = AcknowledgedWriter(master, secret, "w")
    writer.start()
    try:
        schedule_maintenance(suite, [agent], time.time() + 3600)
        moved = await suite.wait_instance(
            "cache",
            lambda i: (
                is_running(i, 3)
                and all(m.agent_id != agent for m in i.members)
                and i.plan.name == plans.DRAIN
                and i.plan.status == plans.COMPLETE
            ),
            DRAIN_DEADLINE,
            f"{replica.id} off {agent}",
        )
        acknowledged_then = len(writer.acknowledged)

        async def still_writing() -> bool:
            return len(writer.acknowledged) >= acknowledged_then + 20

        await wait_for(still_writing, 30, what="the master to keep acknowledging writes")
        await writer.stop()
        assert master_of(moved).id == master.id
        assert roles.promotions == []
        assert moved.plan.reason.startswith(f"drain {replica.id} off agent ")
        now = next(m for m in moved.members if m.id == replica.id)
        assert now.volume.persistence_id != replica.volume.persistence_id

        # Resynced from the master: every acknowledged write reaches the moved replica.
        async def resynced() -> bool:
            return await missing_keys(now, secret, writer.acknowledged) == []

        await wait_for(resynced, 30, what=f"{replica.id} to hold every acknowledged write")
    finally:
        await writer.stop()
        await roles.stop()


def _step_named(plan: T.Plan, name: str) -> T.Step | None:
    """The last step of that name (a master's ``drain`` step comes again after its failover)."""
    return next((s for s in reversed(plan.steps) if s.name == name), None)


# Where the lifecycle crashes during the switchover of master cache-<o> (a plan just persisted).
SWITCHOVER_CRASH_POINTS: dict[str, Callable[[T.Plan, str], bool]] = {
    # Fenced (the old master takes no more writes), nobody promoted yet.
    "fenced": lambda p, old: (
        p.name == plans.DRAIN
        and (s := _step_named(p, f"fence {old}")) is not None
        and s.status == plans.COMPLETE
        and (f := _step_named(p, f"failover {old}")) is not None
        and f.status != plans.COMPLETE
    ),
    # Promoted; the old master is being drained off its agent (a fresh volume, its task killed).
    "draining-old-master": lambda p, old: (
        p.name == plans.DRAIN
        and (s := _step_named(p, f"drain {old}")) is not None
        and s.status == plans.STARTING
        and (f := _step_named(p, f"failover {old}")) is not None
        and f.status == plans.COMPLETE
    ),
}


@pytest.mark.agents(4)
@pytest.mark.parametrize("point", sorted(SWITCHOVER_CRASH_POINTS))
async def test_a_lifecycle_crash_during_the_switchover_resumes_the_same_drain(
    suite: Suite, point: str
) -> None:
    """The lifecycle crashes right after persisting the switchover plan at ``point``; restarted,
    it resumes the same drain plan from state: one promotion, no acknowledged write lost, every
    member off the agent."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    writer = AcknowledgedWriter(old, secret, "w")
    writer.start()
    try:

        async def writing() -> bool:
            return len(writer.acknowledged) >= 30

        await wait_for(writing, 30, what="30 writes acknowledged by the master")
        assert isinstance(suite.lifecycle, LifecycleRunner)
        frozen = suite.lifecycle.freeze_after_save(lambda p: SWITCHOVER_CRASH_POINTS[point](p, old.id))
        schedule_maintenance(suite, [old.agent_id], time.time() + 3600)
        await asyncio.wait_for(frozen.wait(), 60)
        await suite.lifecycle.stop()  # the crash
        crashed = await suite.instance("cache")
        assert crashed is not None and SWITCHOVER_CRASH_POINTS[point](crashed.plan, old.id)

        await suite.lifecycle.start()
        drained = await suite.wait_instance(
            "cache",
            lambda i: _off(i, {old.agent_id}) and master_of(i).id != old.id,
            DRAIN_DEADLINE,
            f"every member off {old.agent_id}",
        )
        await writer.stop()
        new = master_of(drained)
        assert drained.plan.started_at == crashed.plan.started_at, "the same drain plan, resumed"
        assert roles.promotions == [new.id] and roles.max_masters == 1
        assert await missing_keys(new, secret, writer.acknowledged) == []
    finally:
        await writer.stop()
        await roles.stop()


@pytest.mark.agents(3)
async def test_a_lone_master_is_not_moved_the_plan_says_why_and_a_scale_up_lets_it_move(suite: Suite) -> None:
    """replicas=1: no replica to switch over to. The master keeps running on its agent (never
    killed without somewhere to go), the drain plan's step says why, the inverse offer stays
    unaccepted; once scaled to 2 the new replica starts on another agent and the master is
    switched over to it."""
    await suite.create("cache", 1)
    instance = await suite.wait_running("cache", 1)
    old = master_of(instance)
    schedule_maintenance(suite, [old.agent_id], time.time() + 3600)
    blocked = await suite.wait_instance(
        "cache",
        lambda i: (
            i.plan.name == plans.DRAIN
            and i.plan.steps[0].status == plans.DELAYED
            and "no ready replica to switch over to (replicas=1)" in i.plan.steps[0].message
        ),
        60,
        "the drain plan waiting, saying why",
    )
    assert blocked.plan.steps[0].message.startswith(f"cannot move {old.id} off agent ")
    assert "scale to 2 replicas to move it" in blocked.plan.reason
    still = master_of(blocked)
    assert still.task_id == old.task_id and still.state == T.MEMBER_STATE_RUNNING
    assert all(a.get("status") != "ACCEPT" for a in inverse_offer_answers(suite, old.agent_id))

    await suite.api.ScaleInstance(ipb.ScaleInstanceRequest(name="cache", replicas=2))
    moved = await suite.wait_instance(
        "cache",
        lambda i: (
            is_running(i, 2)
            and master_of(i).id != old.id
            and all(m.agent_id != old.agent_id for m in i.members)
        ),
        DRAIN_DEADLINE,
        f"both members off {old.agent_id}",
    )
    assert master_of(moved).ordinal == 1

    async def accepted() -> bool:
        return any(a.get("status") == "ACCEPT" for a in inverse_offer_answers(suite, old.agent_id))

    await wait_for(accepted, 60, what="the inverse offer accepted")


@pytest.mark.agents(4)
async def test_a_master_taken_down_before_its_switchover_fails_over_and_is_replaced_at_once(
    suite: Suite,
) -> None:
    """The operator takes the master's machine DOWN (START_MAINTENANCE) while its drain waits to
    switch over: the master is lost (TASK_LOST), a replica is promoted by the recovery, and the
    old master's relaunch pinned to the removed agent is replaced by a fresh volume elsewhere as
    soon as the window has started (not after replace_after_seconds); nothing acknowledged lost."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    writer = AcknowledgedWriter(old, secret, "w")
    writer.start()
    try:

        async def writing() -> bool:
            return len(writer.acknowledged) >= 30

        await wait_for(writing, 30, what="30 writes acknowledged by the master")
        schedule_maintenance(suite, [old.agent_id], time.time() + 1.0)
        await suite.wait_instance(
            "cache",
            lambda i: next(m for m in i.members if m.id == old.id).HasField("maintenance"),
            30,
            f"{old.id} marked for maintenance",
        )
        start_maintenance(suite, [old.agent_id])
        replaced = await suite.wait_instance(
            "cache",
            lambda i: (
                is_running(i, 3)
                and master_of(i).id != old.id
                and all(m.agent_id != old.agent_id for m in i.members)
            ),
            60,  # well below replace_after_seconds (300 s)
            f"{old.id} failed over and replaced off {old.agent_id}",
        )
        await writer.stop()
        new = master_of(replaced)
        assert roles.promotions == [new.id] and roles.max_masters == 1
        assert await missing_keys(new, secret, writer.acknowledged) == []
        old_now = next(m for m in replaced.members if m.id == old.id)
        assert old_now.volume.persistence_id != old.volume.persistence_id
    finally:
        await writer.stop()
        await roles.stop()
