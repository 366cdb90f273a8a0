"""End to end failovers: a dead master is replaced by a replica holding every acknowledged write,
a lost replica is replaced with the master untouched, and a lifecycle restart in the middle of a
failover never starts a second one."""

from __future__ import annotations

import asyncio

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite, master_of
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import (
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


async def _failed_over(suite: Suite, name: str, old_master: str) -> T.Instance:
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
            and _member(i, old_master).incarnation == 2
        )

    return await suite.wait_instance(name, done, 120, "failed over, 3 members running")


async def _check_after_failover(
    suite: Suite, instance: T.Instance, old: T.Member, secret: str, written: dict[str, str]
) -> T.Member:
    new_master = master_of(instance)
    assert new_master.incarnation == 1, "the promoted replica keeps its task"
    assert instance.plan.name == plans.RECOVERY and instance.plan.status == plans.COMPLETE
    relaunched = _member(instance, old.id)
    assert relaunched.role == T.ROLE_SLAVE and relaunched.task_id == f"{old.id}.2"
    assert await missing_keys(new_master, secret, written) == []
    info = await replication_info(new_master, secret)
    assert info["role"] == "master" and info["connected_slaves"] == 2
    for m in instance.members:
        if m.id != new_master.id:
            replica = await replication_info(m, secret)
            assert replica["role"] == "slave" and replica["master_port"] == new_master.ports["redis"]
    return new_master


async def test_master_kill_fails_over_without_losing_acknowledged_writes(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 500, replicas=1)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    pids = redis_pids([old])
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


def _scale(name: str, replicas: int) -> object:
    from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api

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


async def test_replica_kill_is_replaced_and_master_untouched(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    master = master_of(instance)
    kill9(redis_pids([_member(instance, "cache-2")]))

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
    kill9(redis_pids([old]))

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
    assert failover.attempts == 1, "MasterLost asked once"


async def test_lifecycle_stopped_after_roles_persisted_resumes_without_second_promotion(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 200, replicas=2)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    # No workload service: the failover can decide nothing yet, so the stop lands before it.
    await suite.redis.stop(deregister=False)
    kill9(redis_pids([old]))
    stuck = await suite.wait_instance(
        "cache",
        lambda i: (
            bool(i.plan.steps)
            and i.plan.steps[0].name == f"failover {old.id}"
            and i.plan.steps[0].status == plans.DELAYED
        ),
        60,
        "a delayed failover",
    )
    assert "UNAVAILABLE" in stuck.plan.steps[0].message or "not registered" in stuck.plan.steps[0].message
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
    await wait_for(lambda: _gone(old), 60, what=f"{old.task_id} killed")
    masters = []
    for m in instance.members:
        if (await replication_info(m, secret))["role"] == "master":
            masters.append(m.id)
    assert masters == [new_master.id]


async def _gone(member: T.Member) -> bool:
    # By sandbox only: the relaunched incarnation may listen on the same address.
    return redis_pids([member], by_address=False) == []
