"""End to end failovers: a dead master is replaced by a replica holding every acknowledged write,
a lost replica is replaced with the master untouched, and a lifecycle restart in the middle of a
failover never starts a second one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from google.protobuf.message import Message

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite, master_of
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import (
    InstanceWatch,
    RoleWatch,
    kill9,
    missing_keys,
    password,
    redis_pids,
    replication_info,
    write_acknowledged,
)

pytestmark = pytest.mark.slow


def _member(instance: T.Instance, member_id: str) -> T.Member:
    return next(m for m in instance.members if m.id == member_id)


async def _failed_over(suite: Suite, name: str, old_master: str, incarnation: int = 2) -> T.Instance:
    """Wait until the instance runs again with 3 members, a new master, and the old master
    relaunched as a replica."""

    def done(i: T.Instance) -> bool:
        masters = [m for m in i.members if m.role == T.ROLE_MASTER]
        return (
            i.phase == T.INSTANCE_PHASE_RUNNING
            and len(i.members) == 3
            and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
            and len(masters) == 1
            and masters[0].id != old_master
            and _member(i, old_master).incarnation >= incarnation
        )

    return await suite.wait_instance(name, done, 120, "failed over, 3 members running")


async def _check_after_failover(
    suite: Suite, instance: T.Instance, old: T.Member, secret: str, written: dict[str, str]
) -> T.Member:
    new_master = master_of(instance)
    assert new_master.incarnation == 1, "the promoted replica keeps its task"
    assert instance.plan.name == plans.RECOVERY and instance.plan.status == plans.COMPLETE
    relaunched = _member(instance, old.id)
    assert relaunched.role == T.ROLE_SLAVE and relaunched.incarnation >= 2
    assert await missing_keys(new_master, secret, written) == []
    info = await replication_info(new_master, secret)
    assert info["role"] == "master" and info["connected_slaves"] == 2
    for m in instance.members:
        if m.id != new_master.id:
            replica = await replication_info(m, secret)
            assert replica["role"] == "slave" and replica["master_port"] == new_master.ports["redis"]
    return new_master


async def test_master_kill_fails_over_without_losing_acknowledged_writes(redis_suite: Suite) -> None:
    suite = redis_suite  # the Python and the Node.js Redis workload
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 500, replicas=1)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    pids = redis_pids(suite, [old])
    assert len(pids) == 1
    kill9(pids)

    instance = await _failed_over(suite, "cache", old.id)
    await roles.stop()
    new_master = await _check_after_failover(suite, instance, old, secret, written)
    assert roles.promotions == [new_master.id], "exactly one promotion"
    assert roles.max_masters == 1, "never two MASTER members"
    assert "master cache-0 lost" in instance.plan.reason

    # Scaling down never removes the master, wherever it is now.
    await suite.api.ScaleInstance(_scale("cache", 1))
    instance = await suite.wait_running("cache", 1)
    assert [m.id for m in instance.members] == [new_master.id]


def _scale(name: str, replicas: int) -> api.ScaleInstanceRequest:
    return api.ScaleInstanceRequest(name=name, replicas=replicas)


async def test_master_agent_kill_fails_over(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 300, replicas=1)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    await asyncio.to_thread(suite.cluster.kill_agent, old.agent_id)

    # Two agents are left and members are spread one per agent: the promotion happens now, the
    # replacement replica waits for an agent.
    promoted = await suite.wait_instance(
        "cache",
        lambda i: any(m.role == T.ROLE_MASTER and m.id != old.id for m in i.members),
        60,
        "a promotion",
    )
    assert await missing_keys(master_of(promoted), secret, written) == []
    await asyncio.to_thread(suite.cluster.start_agent, old.host)
    instance = await _failed_over(suite, "cache", old.id)
    await roles.stop()
    new_master = await _check_after_failover(suite, instance, old, secret, written)
    assert roles.promotions == [new_master.id] and roles.max_masters == 1


async def test_replica_kill_is_replaced_and_master_untouched(redis_suite: Suite) -> None:
    suite = redis_suite  # the Python and the Node.js Redis workload
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    master = master_of(instance)
    kill9(redis_pids(suite, [_member(instance, "cache-2")]))

    def replaced(i: T.Instance) -> bool:
        return (
            i.phase == T.INSTANCE_PHASE_RUNNING
            and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
            and _member(i, "cache-2").incarnation == 2
        )

    instance = await suite.wait_instance("cache", replaced, 90, "cache-2 replaced")
    assert master_of(instance).task_id == master.task_id == "cache-0.1"
    assert instance.plan.name == plans.RECOVERY
    assert instance.plan.steps[0].name == "slave-lost cache-2"
    assert not any(s.member_id == "cache-0" for s in instance.plan.steps)
    info = await replication_info(master, secret)
    assert info["connected_slaves"] == 2


async def test_lifecycle_restart_mid_failover_promotes_exactly_once(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 200, replicas=2)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    kill9(redis_pids(suite, [old]))

    # Stop lifecycle the moment the recovery plan is persisted (wherever it is by then)...
    await suite.wait_instance("cache", lambda i: i.plan.name == plans.RECOVERY, 60, "a recovery plan", 0.01)
    await suite.lifecycle.stop()
    stopped_at = await suite.instance("cache")
    assert stopped_at is not None
    # ... and start it again: it resumes the persisted plan.
    await suite.lifecycle.start()
    instance = await _failed_over(suite, "cache", old.id)
    await roles.stop()
    new_master = await _check_after_failover(suite, instance, old, secret, written)
    assert roles.promotions == [new_master.id], f"promotions: {roles.promotions}"
    assert roles.max_masters == 1
    assert instance.plan.started_at == stopped_at.plan.started_at, "the same recovery plan, resumed"
    failover = next(s for s in instance.plan.steps if s.name == f"failover {old.id}")
    # MasterLost may be asked again if the stop came before its answer was recorded; the
    # decision itself is made once (one promotion above).
    assert failover.message.startswith(f"promoting {new_master.id}")


async def test_lifecycle_restarted_while_failover_waits_for_the_workload_promotes_once(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 200, replicas=2)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    # No workload service: the failover can decide nothing yet, so the stop lands before it.
    await suite.redis.stop(deregister=False)
    kill9(redis_pids(suite, [old]))

    def failover_step(i: T.Instance) -> T.Step | None:
        return next((s for s in i.plan.steps if s.name == f"failover {old.id}"), None)

    stuck = await suite.wait_instance(
        "cache",
        lambda i: (step := failover_step(i)) is not None and step.status == plans.DELAYED,
        60,
        "a delayed failover",
    )
    fence, waiting = stuck.plan.steps[0], failover_step(stuck)
    assert waiting is not None
    # The killed process was fenced by Mesos's word alone (no workload service needed).
    assert fence.name == f"fence {old.id}" and fence.fence.method == T.FENCE_METHOD_PROCESS_GONE
    assert "UNAVAILABLE" in waiting.message or "not registered" in waiting.message
    assert stuck.phase == T.INSTANCE_PHASE_RECOVERING
    await suite.lifecycle.stop()
    await suite.redis.start()
    await suite.lifecycle.start()
    instance = await _failed_over(suite, "cache", old.id)
    await roles.stop()
    new_master = await _check_after_failover(suite, instance, old, secret, written)
    assert roles.promotions == [new_master.id] and roles.max_masters == 1
    failover = next(s for s in instance.plan.steps if s.name == f"failover {old.id}")
    assert failover.attempts >= 2 and failover.message.startswith(f"promoting {new_master.id}")


async def test_partitioned_master_is_fenced_and_replaced(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 300, replicas=2)
    # The master's agent is cut off: its redis-server keeps running, unreachable (TASK_UNREACHABLE).
    await asyncio.to_thread(suite.cluster.stop_agent, old.agent_id)
    promoted = await suite.wait_instance(
        "cache",
        lambda i: any(m.role == T.ROLE_MASTER and m.id != old.id for m in i.members),
        60,
        "a promotion",
    )
    new_master = master_of(promoted)
    assert await missing_keys(new_master, secret, written) == []
    # The agent comes back: the old master's process is killed, never a second master.
    await asyncio.to_thread(suite.cluster.start_agent, old.agent_id)
    instance = await _failed_over(suite, "cache", old.id)
    await wait_for(lambda: _gone(suite, old), 60, what=f"{old.task_id} killed")
    masters = []
    for m in instance.members:
        if (await replication_info(m, secret))["role"] == "master":
            masters.append(m.id)
    assert masters == [new_master.id]


async def _gone(suite: Suite, member: T.Member) -> bool:
    # By sandbox only: the relaunched incarnation may listen on the same address.
    return redis_pids(suite, [member], by_address=False) == []


async def test_resume_carries_out_a_recorded_failover_decision(suite: Suite) -> None:
    """A lifecycle that died between demoting the old master and promoting the chosen replica left
    the decision in the plan: the next one promotes that replica, without asking MasterLost again."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 200, replicas=2)
    await suite.lifecycle.stop()
    kill9(redis_pids(suite, [old]))

    async def old_failed() -> bool:
        return (await suite.tasks("cache"))[old.task_id].state == T.TASK_STATE_FAILED

    await wait_for(old_failed, 60, what=f"{old.task_id} FAILED")
    # What the crashed lifecycle left: the failover step with its decision, the old master demoted.
    failover = plans.step(plans.Action.FAILOVER, old.id)
    failover.status, failover.attempts = plans.STARTING, 1
    failover.message = "promoting cache-2: decided before the crash"
    failover.decision.promote_member_id = "cache-2"
    plan = plans.new_plan(
        plans.RECOVERY, f"master {old.id} lost", 1, [failover, plans.step(plans.Action.FENCE, old.id)]
    )

    def with_plan(value: Message | None) -> Message | None:
        assert isinstance(value, T.Instance)
        value.plan.CopyFrom(plan)
        value.phase = T.INSTANCE_PHASE_RECOVERING
        return value

    def demoted(value: Message | None) -> Message | None:
        assert isinstance(value, T.Member)
        value.role, value.state = T.ROLE_SLAVE, T.MEMBER_STATE_LOST
        return value

    await suite.client.update(spb.KIND_INSTANCE, "cache", with_plan)
    await suite.client.update(spb.KIND_MEMBER, f"cache/{old.id}", demoted)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    await suite.lifecycle.start()
    instance = await _failed_over(suite, "cache", old.id)
    await roles.stop()
    new_master = await _check_after_failover(suite, instance, old, secret, written)
    assert new_master.id == "cache-2"
    assert roles.promotions == ["cache-2"] and roles.max_masters == 1
    step = next(s for s in instance.plan.steps if s.name == f"failover {old.id}")
    assert step.attempts == 1, "MasterLost was not asked again"
    assert step.message.startswith("promoting cache-2")


def _failover_step(plan: T.Plan) -> T.Step | None:
    return next((s for s in plan.steps if s.name.startswith("failover ")), None)


def _step(plan: T.Plan, prefix: str) -> T.Step | None:
    return next((s for s in plan.steps if s.name.startswith(prefix)), None)


# Points where lifecycle "crashes" during a failover (right after persisting the plan).
CRASH_POINTS: dict[str, Callable[[T.Plan], bool]] = {
    "recovery-plan-persisted": lambda p: p.name == plans.RECOVERY,
    "masterlost-about-to-be-called": lambda p: (
        (s := _step(p, "failover ")) is not None and s.status == plans.STARTING
    ),
    "decision-recorded-roles-untouched": lambda p: (
        (s := _step(p, "failover ")) is not None and bool(s.decision.promote_member_id)
    ),
    "roles-persisted-fence-pending": lambda p: (
        (s := _step(p, "failover ")) is not None and s.status == plans.COMPLETE
    ),
    "start-master-about-to-be-called": lambda p: (
        (s := _step(p, "start-master ")) is not None and s.status == plans.STARTING
    ),
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
async def test_lifecycle_crash_at_each_failover_point_promotes_exactly_once(suite: Suite, point: str) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 200, replicas=2)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
    frozen = suite.lifecycle.freeze_after_save(CRASH_POINTS[point])
    kill9(redis_pids(suite, [old]))
    await asyncio.wait_for(frozen.wait(), 60)
    await suite.lifecycle.stop()  # the crash
    crashed = await suite.instance("cache")
    assert crashed is not None and crashed.plan.name == plans.RECOVERY
    assert CRASH_POINTS[point](crashed.plan), "stopped exactly there"

    watch = InstanceWatch(suite.client, "cache")
    await watch.start()
    await suite.lifecycle.start()
    try:
        instance = await _failed_over(suite, "cache", old.id)
    finally:
        await roles.stop()
        await watch.stop()
    new_master = await _check_after_failover(suite, instance, old, secret, written)
    assert roles.promotions == [new_master.id], f"promotions: {roles.promotions}"
    assert roles.max_masters == 1
    # The same recovery plan, resumed, carried the failover (a repair may follow it, e.g. a
    # replica found chained re-pointed, but no other plan handled the master).
    stored = [i.plan for i in watch.instances() if i.plan.started_at == crashed.plan.started_at]
    assert stored and stored[-1].status == plans.COMPLETE, [i.plan.reason for i in watch.instances()]
    others = [i.plan for i in watch.instances() if i.plan.started_at != crashed.plan.started_at]
    assert not any(_failover_step(plan) is not None for plan in others), [plan.reason for plan in others]
    failover = _failover_step(stored[-1])
    assert failover is not None and failover.message.startswith(f"promoting {new_master.id}")
    crashed_failover = _failover_step(crashed.plan)
    if crashed_failover is not None and crashed_failover.decision.promote_member_id:
        assert failover.attempts == crashed_failover.attempts, "MasterLost not asked again"


async def test_a_fence_waiting_on_members_that_died_with_their_agents_ends_in_a_cold_start(
    suite: Suite,
) -> None:
    """Every agent dies with its members while the offers service is down (the machines and the
    framework restart together, as a restart of `make run` does): the lifecycle still sees the
    tasks RUNNING, its probe finds the master silent and starts a fence. The agents come back
    empty, then the offers service: reconciliation answers TASK_GONE (the framework is
    PARTITION_AWARE), so the fence holds (the process is gone), nobody is left to promote, and every
    member restarts in place on its volume: RUNNING again with every acknowledged write, one
    master. (Not partition-aware, Mesos said TASK_LOST, "may still run": the fence waited forever
    on replicas that nobody restarts.)"""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 200, replicas=2)
    agents = sorted({m.agent_id for m in instance.members})
    assert len(agents) == 3

    await suite.offers.stop()
    for agent in agents:
        await asyncio.to_thread(suite.cluster.kill_agent, agent)
    fencing = await suite.wait_instance(
        "cache",
        lambda i: i.plan.reason.startswith(f"master {old.id} lost: unresponsive")
        and _step_named(i.plan, f"fence {old.id}") is not None,
        60,
        "a fence of the silent master",
    )
    assert all(t.state == T.TASK_STATE_RUNNING for t in (await suite.tasks("cache")).values()), (
        "the lifecycle still sees every task running"
    )
    assert fencing.plan.status != plans.COMPLETE

    for agent in agents:
        await asyncio.to_thread(suite.cluster.start_agent, agent)

    def registered() -> bool:
        slaves = suite.cluster.state()["slaves"]
        return sorted(s["id"] for s in slaves if s["active"]) == agents

    await wait_for(lambda: asyncio.to_thread(registered), 60, what="the agents registered again")
    await suite.offers.start()

    def back(i: T.Instance) -> bool:
        return (
            i.phase == T.INSTANCE_PHASE_RUNNING
            and len(i.members) == 3
            and all(m.state == T.MEMBER_STATE_RUNNING and m.incarnation >= 2 for m in i.members)
            and sum(m.role == T.ROLE_MASTER for m in i.members) == 1
        )

    instance = await suite.wait_instance("cache", back, 180, "every member restarted in place")
    tasks = await suite.tasks("cache")
    assert tasks[old.task_id].state == T.TASK_STATE_GONE, tasks[old.task_id]
    recovery = instance.plan
    fence = _step_named(recovery, f"fence {old.id}")
    assert fence is not None and fence.fence.method == T.FENCE_METHOD_PROCESS_GONE, recovery
    assert {m.volume.persistence_id for m in instance.members} == {
        m.volume.persistence_id for m in fencing.members
    }, "restarted on their volumes"
    new_master = master_of(instance)
    assert await missing_keys(new_master, secret, written) == []
    masters = [m.id for m in instance.members if (await replication_info(m, secret))["role"] == "master"]
    assert masters == [new_master.id]


def _step_named(plan: T.Plan, name: str) -> T.Step | None:
    return next((st for st in plan.steps if st.name == name), None)
