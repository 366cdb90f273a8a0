"""Data safety end to end (DESIGN.md, "Data safety: the rules"; issue 9), through the whole suite
with real redis-servers: a master cut off from Mesos, a silent master, a chained replica, and a
workload service that is down.

- A partitioned master loses no acknowledged write and takes no write after the new master took
  its first one (rules 1 and 2).
- A master frozen while Mesos sees it RUNNING is found by the probe, fenced and failed over (rules
  1 and 2).
- A chained replica is reported within two check intervals and repaired (rule 5).
- A workload service that is down never causes a failover (its silence says nothing about the
  database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import LifecycleRunner, RedisService, Suite, master_of
from mesos_stateful.testing.workloads import wait_for
from mesos_stateful.workloads.redis.replication import self_fence_seconds
from mesos_stateful.workloads.redis.settings import RedisSettings

from .e2e_helpers import (
    PORT,
    AcknowledgedWriter,
    FirstWrite,
    InstanceWatch,
    RoleWatch,
    condition_of,
    connect,
    missing_keys,
    password,
    redis_pids,
    replication_info,
    server_roles,
    write_acknowledged,
)

pytestmark = pytest.mark.slow

REDIS_REPLICATION_LOGGER = "mesos_stateful.workloads.redis.replication"
DETACHING = "fencing: detaching redis at"
# The suite's Redis workload runs with the default min-replicas-max-lag.
SELF_FENCE_SECONDS = self_fence_seconds(RedisSettings.model_fields["min_replicas_max_lag"].default)

# Generous end-to-end deadlines: timings are measured in bench/, not asserted here.
FAILOVER_DEADLINE = 30.0
SETTLE_DEADLINE = 120.0


def _member(instance: T.Instance, member_id: str) -> T.Member:
    return next(m for m in instance.members if m.id == member_id)


def _step(plan: T.Plan, name: str) -> T.Step | None:
    return next((s for s in plan.steps if s.name == name), None)


def _settled(instance: T.Instance, old: str, new: str) -> bool:
    """RUNNING with 3 running members, ``new`` the only master and ``old`` a replica."""
    return (
        instance.phase == T.INSTANCE_PHASE_RUNNING
        and len(instance.members) == 3
        and all(m.state == T.MEMBER_STATE_RUNNING for m in instance.members)
        and [m.id for m in instance.members if m.role == T.ROLE_MASTER] == [new]
        and _member(instance, old).role == T.ROLE_SLAVE
    )


async def _one_master_followed_by_all(suite: Suite, secret: str, master: T.Member) -> bool:
    """Every redis-server the instance ever started (found by sandbox) is up; exactly one reports
    role master, ``master``; the other two follow it."""
    roles = await server_roles(suite, "cache", secret)
    address = f"{master.host}:{master.ports[PORT]}"
    masters = [a for a, info in roles.items() if info["role"] == "master"]
    followers = [
        a
        for a, info in roles.items()
        if info["role"] == "slave" and info["master_port"] == master.ports[PORT] and a != address
    ]
    return masters == [address] and len(followers) == 2 and len(roles) == 3


async def test_partitioned_master_loses_no_acknowledged_write_and_stops_before_the_new_one_starts(
    redis_suite: Suite,
) -> None:
    """The master's agent is cut off from the Mesos master (the redis-server keeps running and
    stays reachable by clients): a replica is promoted; every write the old master acknowledged
    (WAIT 1) is on the new master; the old master's last OK came before the new master's first
    write; it was demoted (it answered) before the promotion; after the heal it follows the new
    master. Run against the Python and the Node.js Redis workload."""
    suite = redis_suite
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    writer = AcknowledgedWriter(old, secret, "old")
    first = FirstWrite(suite, "cache", secret, exclude=old.id)
    writer.start()
    try:

        async def writing() -> bool:
            return len(writer.acknowledged) >= 50

        await wait_for(writing, 30, what="50 writes acknowledged by the old master")
        cut_at = time.monotonic()
        first.start()
        await asyncio.to_thread(suite.cluster.stop_agent, old.agent_id)

        await first.wait(FAILOVER_DEADLINE)
        attempts_then = writer.attempts

        async def kept_trying() -> bool:  # the old master was asked many more times since
            return writer.attempts >= attempts_then + 50

        await wait_for(kept_trying, 30, what="the writer to keep writing to the old master")
        promoted = await suite.wait_instance(
            "cache",
            lambda i: (s := _step(i.plan, f"failover {old.id}")) is not None and s.status == plans.COMPLETE,
            FAILOVER_DEADLINE,
            "the failover step complete",
        )
        new = master_of(promoted)

        # Heal: the old master's redis-server ends up following the new master (demoted in place,
        # or killed and relaunched as a replica); never a second master.
        await asyncio.to_thread(suite.cluster.start_agent, old.agent_id)
        settled = await suite.wait_instance(
            "cache", lambda i: _settled(i, old.id, new.id), SETTLE_DEADLINE, "healed, old master a replica"
        )
        await wait_for(
            lambda: _one_master_followed_by_all(suite, secret, new),
            SETTLE_DEADLINE,
            what="one redis-server master, followed by the two others",
        )
    finally:
        await writer.stop()
        await first.stop()
        await roles.stop()

    # 0 acknowledged writes lost.
    assert len(writer.acknowledged) >= 50
    assert await missing_keys(new, secret, writer.acknowledged) == []
    # No write accepted by the old master after the new master accepted its first one (the
    # latest an OK can have been accepted: its arrival; the earliest for the new master: sending).
    assert first.member_id == new.id
    last_old_ok = max(writer.ok_times)
    assert last_old_ok < first.sent_at, (
        f"the old master took a write {last_old_ok - first.sent_at:.3f}s after the new master's first"
    )
    assert writer.errors, "the old master refused the writes after it was fenced"
    # Fenced directly (it answered), recorded before the promotion.
    plan = promoted.plan
    assert plan.name == plans.RECOVERY and plan.reason.startswith(f"master {old.id} lost")
    fence, failover = plan.steps[0], plan.steps[1]
    assert fence.name == f"fence {old.id}" and fence.status == plans.COMPLETE
    assert fence.fence.method == T.FENCE_METHOD_DEMOTED, fence.fence
    assert failover.name == f"failover {old.id}" and failover.decision.promote_member_id == new.id
    assert plans.seconds(fence.fence.fenced_at) <= roles.promoted_at[new.id]
    assert set(failover.decision.positions) == set(failover.decision.candidate_ids)
    # Exactly one promotion, never two MASTER members.
    assert roles.promotions == [new.id]
    assert roles.max_masters == 1
    assert master_of(settled).id == new.id
    info = await replication_info(_member(settled, old.id), secret)
    assert info["role"] == "slave" and info["master_port"] == new.ports[PORT]
    print(
        f"\npartition: acknowledged {len(writer.acknowledged)}, old OKs {len(writer.ok_times)}; "
        f"old master's last OK {last_old_ok - cut_at:.3f}s after the cut, "
        f"new master's first write {first.sent_at - cut_at:.3f}s after the cut "
        f"(gap {first.sent_at - last_old_ok:.3f}s); errors {writer.errors}"
    )


async def test_stopped_master_is_found_by_the_probe_fenced_and_failed_over(
    suite: Suite, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP of the master's redis-server: Mesos sees it RUNNING, the probe finds it silent; it
    is fenced before the promotion (the Mesos kill reaches a stopped process, or the Fence demotes
    it once the kill resumed it, or it fenced itself: then the promotion waited the self-fence
    bound after the detach) and a replica holding every acknowledged write is promoted."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 300, replicas=1)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    caplog.set_level(logging.WARNING, logger=REDIS_REPLICATION_LOGGER)
    watch = InstanceWatch(suite.client, "cache")
    await watch.start()
    pids = redis_pids(suite, [old])
    assert len(pids) == 1
    first = FirstWrite(suite, "cache", secret, exclude=old.id)
    first.start()
    try:
        os.kill(pids[0], signal.SIGSTOP)
        stopped_at = time.monotonic()
        await first.wait(FAILOVER_DEADLINE)
        took = first.sent_at - stopped_at
        instance = await suite.wait_instance(
            "cache",
            lambda i: _settled(i, old.id, first.member_id) and _member(i, old.id).incarnation >= 2,
            SETTLE_DEADLINE,
            "failed over, the old master relaunched as a replica",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGCONT)
        await first.stop()
        await watch.stop()
        await roles.stop()

    assert took < FAILOVER_DEADLINE
    new = master_of(instance)
    assert new.id == first.member_id
    assert await missing_keys(new, secret, written) == []
    # The failover's plan as last stored (a later plan may have followed it).
    recoveries = [i.plan for i in watch.instances() if i.plan.reason.startswith(f"master {old.id} lost")]
    assert recoveries, [i.plan.reason for i in watch.instances()]
    plan = recoveries[-1]
    assert plan.name == plans.RECOVERY
    assert plan.reason.startswith(f"master {old.id} lost: unresponsive"), plan.reason
    fence = plan.steps[0]
    assert fence.name == f"fence {old.id}"
    # Any of the three: the Mesos kill resumes a stopped process (SIGTERM + SIGCONT), so it may
    # be gone, or answer the Fence's demotion first; or, unreachable, fence itself.
    assert fence.fence.method in (
        T.FENCE_METHOD_PROCESS_GONE,
        T.FENCE_METHOD_DEMOTED,
        T.FENCE_METHOD_SELF_FENCED,
    ), fence.fence
    assert fence.status == plans.COMPLETE
    failover = _step(plan, f"failover {old.id}")
    assert failover is not None and failover.decision.promote_member_id == new.id
    if fence.fence.method == T.FENCE_METHOD_SELF_FENCED:
        # Rule 2's bound: no promotion before the old master provably refuses writes, i.e.
        # self_fence_seconds after its last replica was detached (replication.self_fence_seconds).
        detached = [r.created for r in caplog.records if DETACHING in r.getMessage()]
        assert len(detached) == 2, "both replicas detached from the stopped master"
        bound = max(detached) + SELF_FENCE_SECONDS
        assert plans.seconds(fence.fence.safe_after) >= bound, (
            f"safe_after {plans.seconds(fence.fence.safe_after) - bound:+.3f}s from the detach + bound"
        )
        assert roles.promoted_at[new.id] >= bound
    assert roles.promotions == [new.id]
    assert roles.max_masters == 1

    async def gone() -> bool:
        return redis_pids(suite, [old], by_address=False) == []

    await wait_for(gone, 30, what="the stopped redis-server killed")
    await wait_for(
        lambda: _one_master_followed_by_all(suite, secret, new),
        SETTLE_DEADLINE,
        what="one redis-server master, followed by the two others",
    )
    print(
        f"\nSIGSTOP: new master accepted writes {took:.3f}s after the stop; "
        f"fence {T.FenceMethod.Name(fence.fence.method)}"
    )


def _history(watch: InstanceWatch, member_id: str, since: float) -> list[str]:
    """What the watch saw since ``since`` (phases, plans, the member's REPLICATING), for messages."""
    lines = []
    for s in watch.seen:
        if s.at < since:
            continue
        if s.instance is not None:
            lines.append(
                f"+{s.at - since:.2f}s {T.InstancePhase.Name(s.instance.phase)} {s.instance.plan.reason!r}"
            )
        elif s.member is not None and s.member.id == member_id:
            c = condition_of(s.member, T.CONDITION_TYPE_REPLICATING)
            lines.append(
                f"+{s.at - since:.2f}s {member_id} replicating {c.ok if c else None} {c.reason if c else ''}"
            )
    return lines


def _chained(member: T.Member) -> bool:
    c = condition_of(member, T.CONDITION_TYPE_REPLICATING)
    return c is not None and not c.ok and c.reason == "Chained"


async def test_chained_replica_is_reported_within_two_check_intervals_and_repaired(suite: Suite) -> None:
    """A replica re-pointed by hand to the other replica shows REPLICATING false (Chained) and the
    instance DEGRADED within two check intervals; it is re-pointed at the master (condition ok,
    RUNNING again) without touching the master."""
    assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
    settings = suite.lifecycle.settings()
    interval = settings.check_interval_seconds
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    master = master_of(instance)
    a, b = (m for m in instance.members if m.id != master.id)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    watch = InstanceWatch(suite.client, "cache")
    await watch.start()
    try:
        async with connect(b, secret) as r:
            await r.replicaof(a.host, a.ports[PORT])
        chained_at = time.monotonic()

        repoint = f"re-point {b.id} to master {master.id} (replicating: Chained)"

        def flagged(i: T.Instance) -> bool:
            # DEGRADED until a repair plan runs, RECOVERING while it does (planner.phase_for: the
            # health and the plan are usually stored by the same reconcile, so only RECOVERING
            # may ever be seen).
            return i.phase == T.INSTANCE_PHASE_DEGRADED or (
                i.phase == T.INSTANCE_PHASE_RECOVERING and i.plan.reason == repoint
            )

        async def reported() -> bool:
            return watch.first(b.id, _chained, chained_at) is not None and any(
                flagged(i) for i in watch.instances(chained_at)
            )

        try:
            await wait_for(reported, 2 * interval, 0.05, what=f"{b.id} reported chained, DEGRADED")
        except TimeoutError as error:
            raise AssertionError(f"{error}; seen: {_history(watch, b.id, chained_at)}") from None
        seen = watch.first(b.id, _chained, chained_at)
        assert seen is not None and seen.member is not None
        condition = condition_of(seen.member, T.CONDITION_TYPE_REPLICATING)
        assert condition is not None and a.id in condition.message, condition
        assert seen.member.health.repair == T.REPAIR_REPOINT

        async def repaired() -> bool:
            current = await suite.instance("cache")
            if current is None or current.phase != T.INSTANCE_PHASE_RUNNING:
                return False
            c = condition_of(_member(current, b.id), T.CONDITION_TYPE_REPLICATING)
            if c is None or not c.ok or c.reason != "Following":
                return False
            info = await replication_info(b, secret)
            return info["master_port"] == master.ports[PORT] and info["master_link_status"] == "up"

        # Reported, then a plan re-points it (one callback at most), then the next check says so.
        await wait_for(
            repaired, 2 * interval + settings.callback_timeout_seconds, 0.1, what=f"{b.id} repaired"
        )
    finally:
        await watch.stop()
        await roles.stop()

    # From the first version that flagged it to the re-point's completion, never RUNNING.
    history = watch.instances(chained_at)
    start = next(n for n, i in enumerate(history) if flagged(i))
    end = next(
        n for n, i in enumerate(history) if i.plan.reason == repoint and i.plan.status == plans.COMPLETE
    )
    assert all(i.phase != T.INSTANCE_PHASE_RUNNING for i in history[start:end]), _history(
        watch, b.id, chained_at
    )
    steps = [(st.name, st.status) for st in history[end].plan.steps]
    assert steps == [(f"start-slave {b.id}", plans.COMPLETE), (f"slave-running {b.id}", plans.COMPLETE)]
    assert roles.promotions == [] and roles.max_masters == 1
    current = await suite.instance("cache")
    assert current is not None and master_of(current).task_id == master.task_id
    info = await replication_info(master, secret)
    assert info["role"] == "master" and info["connected_slaves"] == 2
    print(f"\nchained: reported after {seen.at - chained_at:.2f}s (check interval {interval:g}s)")


HEALTH_LOGGER = "mesos_stateful.lifecycle.health"
SAYS_NOTHING = "the workload service does not answer; the probe of"


async def test_workload_service_down_never_causes_a_failover(
    suite: Suite, caplog: pytest.LogCaptureFixture
) -> None:
    """The Redis workload service vanishes (its registration left to expire, as after a crash)
    for longer than it takes to declare a master failed: the probes it cannot answer count for
    nothing; no recovery plan, the master stays master."""
    assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
    settings = suite.lifecycle.settings()
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    master = master_of(instance)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    watch = InstanceWatch(suite.client, "cache")
    await watch.start()
    caplog.set_level(logging.WARNING, logger=HEALTH_LOGGER)
    try:
        await suite.redis.stop(deregister=False)
        down_at = time.monotonic()

        async def probed_long_enough() -> bool:
            unanswered = sum(SAYS_NOTHING in r.getMessage() for r in caplog.records)
            return (
                unanswered > settings.probe_failures
                and time.monotonic() - down_at > 2 * settings.detection_bound_seconds
            )

        await wait_for(probed_long_enough, 30, 0.05, what="more unanswered probes than probe_failures")
        down_for = time.monotonic() - down_at
    finally:
        await suite.redis.start()
    restarted_at = time.time()
    assert isinstance(suite.redis, RedisService)  # the `suite` fixture's in-process Redis workload
    assert suite.redis.running.registration is not None
    await suite.redis.running.registration.wait_registered()

    async def probed_again() -> bool:
        current = await suite.instance("cache")
        m = _member(current, master.id) if current is not None else None
        return m is not None and plans.seconds(m.health.checked_at) > restarted_at

    await wait_for(probed_again, 2 * settings.check_interval_seconds + 10, what="the master probed again")
    await watch.stop()
    await roles.stop()

    assert down_for > settings.probe_failures * settings.probe_interval_seconds
    assert roles.promotions == [] and roles.max_masters == 1
    assert [i.plan.reason for i in watch.instances(down_at) if i.plan.name == plans.RECOVERY] == []
    assert watch.first(master.id, lambda m: m.health.unresponsive or m.health.failed_checks > 0) is None
    current = await suite.instance("cache")
    assert current is not None and current.phase == T.INSTANCE_PHASE_RUNNING
    assert master_of(current).task_id == master.task_id
    assert (await replication_info(master, secret))["role"] == "master"
