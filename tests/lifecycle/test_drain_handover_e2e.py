"""Drains under a second change (issue 11, after the first user): a scale right after the
switchover's failover keeps a writable master; a planned switchover demotes the old master (not
killed before the promotion); a member is not stopped for a drain while no agent can take it.

Real parts: the local cluster, offers, state, etcd, the lifecycle, the gateway and the Redis
workload with real redis-servers. The point of the race is made deterministic: the lifecycle is
paused right after it persisted the plan with the failover COMPLETE and start-master not.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.exceptions

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import (
    LifecycleRunner,
    Suite,
    is_running,
    master_of,
    schedule_maintenance,
)
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import AcknowledgedWriter, connect, missing_keys, password, replication_info

pytestmark = pytest.mark.slow

DEADLINE = 180.0
# A writable master again within this after the lifecycle goes on (the promoted member's
# start-master and master-running: a few callbacks; the bug left none for ~6 min).
WRITABLE_DEADLINE = 20.0


def _step(plan: T.Plan, name: str) -> T.Step | None:
    return next((s for s in reversed(plan.steps) if s.name == name), None)


def failed_over_not_started(plan: T.Plan, old: str) -> bool:
    """The drain plan's failover of ``old`` is COMPLETE and its new master's start-master is not."""
    failover = _step(plan, f"failover {old}")
    if plan.name != plans.DRAIN or failover is None or failover.status != plans.COMPLETE:
        return False
    new = failover.decision.promote_member_id
    start = _step(plan, f"start-master {new}")
    return start is not None and start.status != plans.COMPLETE


async def writable(suite: Suite, name: str, secret: str) -> bool:
    """The member recorded as master takes a write (a replica answers READONLY)."""
    instance = await suite.instance(name)
    if instance is None:
        return False
    masters = [m for m in instance.members if m.role == T.ROLE_MASTER]
    if len(masters) != 1:
        return False
    try:
        async with connect(masters[0], secret) as r:
            return bool(await r.set("writable-probe", str(time.time())))
    except (redis.exceptions.RedisError, OSError):
        return False


@pytest.mark.agents(4)  # sc-0 and sc-1, a free agent for the drained master, one for the scale
async def test_a_scale_right_after_the_switchover_s_failover_keeps_a_writable_master(suite: Suite) -> None:
    """`create sc --replicas 2`, maintenance for the master's agent, then `scale --replicas 3`
    exactly when the switchover's failover step is COMPLETE and start-master is not: the drain
    plan is kept until its new master runs; a writable master within WRITABLE_DEADLINE; the old
    master was demoted (``fenced (demoted)``), not killed before the promotion; no acknowledged
    write lost."""
    await suite.create("sc", 2)
    instance = await suite.wait_running("sc", 2)
    secret = await password(suite, "sc")
    old = master_of(instance)
    writer = AcknowledgedWriter(old, secret, "w")
    writer.start()
    assert isinstance(suite.lifecycle, LifecycleRunner)
    paused, release = suite.lifecycle.pause_after_save(lambda p: failed_over_not_started(p, old.id))
    try:

        async def writing() -> bool:
            return len(writer.acknowledged) >= 30

        await wait_for(writing, 30, what="30 writes acknowledged by the master")
        schedule_maintenance(suite, [old.agent_id], time.time() + 3600)
        await asyncio.wait_for(paused.wait(), 90)

        at = await suite.instance("sc")
        assert at is not None and failed_over_not_started(at.plan, old.id)
        fence = _step(at.plan, f"fence {old.id}")
        assert fence is not None and fence.status == plans.COMPLETE
        assert fence.fence.method == T.FENCE_METHOD_DEMOTED, fence.message
        assert fence.message.startswith("fenced (demoted)")
        # Not killed before the promotion: its task runs, no kill asked; its server answers as a
        # replica (demoted: it takes no write).
        task = (await suite.tasks("sc"))[old.task_id]
        assert task.state == T.TASK_STATE_RUNNING and not task.kill_requested
        assert (await replication_info(old, secret))["role"] == "slave"
        started_at = at.plan.started_at

        await suite.api.ScaleInstance(ipb.ScaleInstanceRequest(name="sc", replicas=3))
        release.set()
        t0 = time.monotonic()
        await wait_for(
            lambda: writable(suite, "sc", secret), WRITABLE_DEADLINE, what="a writable master after the scale"
        )
        assert time.monotonic() - t0 < WRITABLE_DEADLINE
        kept = await suite.instance("sc")
        assert kept is not None
        if kept.plan.name == plans.DRAIN:
            assert kept.plan.started_at == started_at  # the same drain plan, not replaced

        done = await suite.wait_instance(
            "sc",
            lambda i: is_running(i, 3) and all(m.agent_id != old.agent_id for m in i.members),
            DEADLINE,
            f"3 members, none on {old.agent_id}",
        )
        await writer.stop()
        assert await missing_keys(master_of(done), secret, writer.acknowledged) == []
    finally:
        release.set()
        await writer.stop()


@pytest.mark.agents(3)  # one member per agent: no agent free to move a member to
async def test_a_drain_does_not_stop_a_member_while_no_agent_can_take_it(suite: Suite) -> None:
    """3 replicas on 3 agents, a replica's agent scheduled: every other agent holds a member, so
    the replica is not stopped; the drain step waits (DELAYED), saying why, and retries; every
    member keeps running on its volume (3 copies)."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    master = master_of(instance)
    replica = next(m for m in instance.members if m.id != master.id)
    schedule_maintenance(suite, [replica.agent_id], time.time() + 3600)
    expected = (
        f"no agent to move {replica.id} to: every other agent is scheduled for maintenance or holds "
        "a member of cache"
    )

    def waiting(i: T.Instance) -> bool:
        step = _step(i.plan, f"drain {replica.id}")
        return (
            i.plan.name == plans.DRAIN
            and step is not None
            and step.status == plans.DELAYED
            and expected in step.message
            and step.attempts >= 2  # tried again
        )

    blocked = await suite.wait_instance("cache", waiting, 60, "the drain waiting for room")
    now = next(m for m in blocked.members if m.id == replica.id)
    assert now.task_id == replica.task_id and now.volume.persistence_id == replica.volume.persistence_id
    task = (await suite.tasks("cache"))[replica.task_id]
    assert task.state == T.TASK_STATE_RUNNING and not task.kill_requested
    assert all(m.state == T.MEMBER_STATE_RUNNING for m in blocked.members)
    assert blocked.phase == T.INSTANCE_PHASE_DRAINING
