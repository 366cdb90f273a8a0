"""Rolling updates end to end (issue 15, part 1): UpdateInstance through the gateway, rolled out
by the lifecycle over real redis-servers on the local cluster.

A writer counts the writes the master acknowledged (``SET`` + ``WAIT 1``) from before the update
until its end (a second writer follows the new master once it is promoted): none is lost. The
rollout: replicas first, one at a time, each restarted in place (same volume, same agent, a new
incarnation with the new launch) and caught up; then one switchover; then the old master
restarted in place as a replica; observed_generation reaches generation.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cli.test_cli_runtime import ctl
from google.protobuf import field_mask_pb2

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import LifecycleRunner, RedisService, Suite, is_running, master_of
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import AcknowledgedWriter, RoleWatch, connect, missing_keys, password, redis_pids

pytestmark = pytest.mark.slow

ROLL_DEADLINE = 240.0  # generous: timings are not asserted here
Check = Callable[[T.Instance], Awaitable[None]]


def applied(generation: int) -> Callable[[T.Instance], bool]:
    return lambda i: i.observed_generation >= generation and is_running(i, 3) and not plans.is_active(i.plan)


async def update(suite: Suite, paths: list[str], name: str = "cache", **spec: Any) -> T.Instance:
    """UpdateInstance with the etag read just before (as `statefulctl apply` does)."""
    read = (await suite.get(name)).instance
    request = ipb.UpdateInstanceRequest(
        spec=T.InstanceSpec(name=name, **spec),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        etag=read.etag,
    )
    for _ in range(5):  # the lifecycle may write the record between the read and the update
        try:
            return (await suite.api.UpdateInstance(request)).instance
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ABORTED:
                raise
            request.etag = (await suite.get(name)).instance.etag
    raise AssertionError("UpdateInstance ABORTED five times in a row")


def assert_rolled_in_order(before: T.Instance, after: T.Instance) -> None:
    """Replicas first (each restarted and caught up before anything else), then one switchover,
    then the old master restarted; every member restarted exactly once, in place."""
    plan = after.plan
    assert plan.name == plans.UPDATE and plan.status == plans.COMPLETE, plan
    assert plan.generation == after.generation
    old = master_of(before)
    order = [(plans.action_of(s), s.member_id) for s in plan.steps]
    restarts = [mid for action, mid in order if action == plans.Action.RESTART]
    replicas = sorted(m.id for m in before.members if m.id != old.id)
    assert restarts == [*replicas, old.id], restarts
    fence = order.index((plans.Action.FENCE, old.id))
    catch_ups = [order.index((plans.Action.AWAIT_CAUGHT_UP, mid)) for mid in replicas]
    assert max(catch_ups) < fence, order
    assert [a for a, _ in order].count(plans.Action.FAILOVER) == 1
    # Replicas were done one at a time: each one's restart began after the previous one caught up.
    first_catch_up = plan.steps[catch_ups[0]]
    second_restart = plan.steps[order.index((plans.Action.RESTART, replicas[1]))]
    assert second_restart.started_at.ToNanoseconds() >= first_catch_up.finished_at.ToNanoseconds()
    for m in after.members:
        was = next(b for b in before.members if b.id == m.id)
        assert m.incarnation > was.incarnation, (m.id, "not restarted")
        assert m.volume.persistence_id == was.volume.persistence_id, (m.id, "not on its volume")
        assert m.agent_id == was.agent_id, (m.id, "moved")


async def roll(
    suite: Suite,
    paths: list[str],
    check: Check,
    crash_at: Callable[[T.Plan], bool] | None = None,
    **spec: Any,
) -> None:
    await suite.create("cache", 3)
    before = await suite.wait_instance("cache", applied(1), 120, "deployed, generation 1 observed")
    secret = await password(suite, "cache")
    old = master_of(before)
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    writer = AcknowledgedWriter(old, secret, "old")
    writer.start()
    follower: AcknowledgedWriter | None = None
    try:
        await wait_for(lambda: _count(writer, 30), 30, what="30 writes acknowledged by the master")
        frozen = None
        crashed: T.Instance | None = None
        if crash_at is not None:
            assert isinstance(suite.lifecycle, LifecycleRunner)
            frozen = suite.lifecycle.freeze_after_save(crash_at)
        updated = await update(suite, paths, **spec)
        assert updated.generation == 2 and updated.observed_generation == 1
        if frozen is not None:
            assert isinstance(suite.lifecycle, LifecycleRunner)
            await wait_for(lambda: _set(frozen), 120, what="the lifecycle frozen mid-update")
            crashed = await suite.instance("cache")
            assert crashed is not None and crashed.plan.name == plans.UPDATE
            await suite.lifecycle.stop()
            await suite.lifecycle.start()

        async def promoted() -> bool:
            return bool(roles.promotions)

        await wait_for(promoted, ROLL_DEADLINE, what="the switchover of the master")
        now = await suite.instance("cache")
        assert now is not None
        follower = AcknowledgedWriter(master_of(now), secret, "new")
        follower.start()
        after = await suite.wait_instance("cache", applied(2), ROLL_DEADLINE, "generation 2 rolled out")
        await wait_for(lambda: _count(follower, 30), 30, what="30 writes acknowledged by the new master")
        await writer.stop()
        await follower.stop()
        new = master_of(after)
        if crashed is not None:
            assert after.plan.started_at == crashed.plan.started_at, "the same update plan, resumed"

        # No acknowledged write lost; exactly one switchover; never two masters in the records.
        assert len(writer.acknowledged) >= 30 and len(follower.acknowledged) >= 30
        assert await missing_keys(new, secret, writer.acknowledged | follower.acknowledged) == []
        assert roles.promotions == [new.id] and new.id != old.id
        assert roles.max_masters == 1
        assert_rolled_in_order(before, after)
        assert after.observed_generation == after.generation == 2
        await check(after)
    finally:
        await writer.stop()
        if follower is not None:
            await follower.stop()
        await roles.stop()


async def _count(writer: AcknowledgedWriter, n: int) -> bool:
    return len(writer.acknowledged) >= n


async def _set(event: asyncio.Event) -> bool:
    return event.is_set()


async def test_a_config_change_rolls_through_replicas_first_then_one_switchover(suite: Suite) -> None:
    """maxmemory-policy changed: every redis-server runs with the new setting afterwards."""

    async def check(after: T.Instance) -> None:
        secret = await password(suite, "cache")
        for m in after.members:
            async with connect(m, secret) as r:
                assert (await r.config_get("maxmemory-policy"))["maxmemory-policy"] == "allkeys-lru", m.id

    await roll(suite, ["config.maxmemory-policy"], check, config={"maxmemory-policy": "allkeys-lru"})


async def test_a_version_change_runs_every_member_on_the_other_binary(suite: Suite, tmp_path: Path) -> None:
    """config version=next: the workload service knows a second redis-server build (a copy of
    the binary, a file of its own); afterwards every member's process runs that file."""
    build = tmp_path / "redis-next" / "redis-server"
    build.parent.mkdir()
    source = shutil.which("redis-server")
    assert source is not None
    shutil.copy2(source, build)
    assert isinstance(suite.redis, RedisService)
    suite.redis.extra = {"redis_server_versions": {"next": str(build)}}
    await suite.redis.restart()
    await suite.redis.running.registration.wait_registered()

    async def check(after: T.Instance) -> None:
        pids = redis_pids(suite, after.members)
        assert len(pids) == 3, pids
        assert {os.readlink(f"/proc/{pid}/exe") for pid in pids} == {str(build)}

    await roll(suite, ["config.version"], check, config={"version": "next"})


def _done(p: T.Plan, action: plans.Action) -> int:
    return sum(plans.action_of(s) == action and s.status == plans.COMPLETE for s in p.steps)


# Where the lifecycle crashes, right after persisting the update plan: the first replica caught up
# (the second one's restart is next); the old master fenced (demoted), nobody promoted yet; the
# failover done (a replica promoted, recorded), the new master not started yet.
UPDATE_CRASH_POINTS: dict[str, Callable[[T.Plan], bool]] = {
    "replica-caught-up": lambda p: p.name == plans.UPDATE and _done(p, plans.Action.AWAIT_CAUGHT_UP) == 1,
    "fenced": lambda p: (
        p.name == plans.UPDATE and _done(p, plans.Action.FENCE) == 1 and _done(p, plans.Action.FAILOVER) == 0
    ),
    "promoted": lambda p: (
        p.name == plans.UPDATE
        and _done(p, plans.Action.FAILOVER) == 1
        and _done(p, plans.Action.MASTER_RUNNING) == 0
    ),
}


@pytest.mark.parametrize("point", sorted(UPDATE_CRASH_POINTS))
async def test_a_lifecycle_restart_mid_update_resumes_the_same_plan(suite: Suite, point: str) -> None:
    """The lifecycle crashes right after persisting the update plan at ``point``; restarted, it
    resumes the stored plan (the same plan, one switchover, nothing acknowledged lost)."""

    async def check(after: T.Instance) -> None:
        assert after.spec.config["appendfsync"] == "everysec"

    await roll(
        suite,
        ["config.appendfsync"],
        check,
        crash_at=UPDATE_CRASH_POINTS[point],
        config={"appendfsync": "everysec"},
    )


async def test_an_unknown_version_is_refused_before_anything_restarts(suite: Suite) -> None:
    await suite.create("cache", 1)
    await suite.wait_instance("cache", lambda i: i.observed_generation == 1, 120, "deployed")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(suite, ["config.version"], config={"version": "9.9"})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.config.version" in (caught.value.details() or "")


async def test_less_memory_rolls_out_inside_the_members_reservations(suite: Suite) -> None:
    """resources.mem_mb lowered: every member is relaunched in place asking for the new amount."""

    async def check(after: T.Instance) -> None:
        tasks = await suite.tasks("cache")
        for m in after.members:
            assert tasks[m.task_id].launch.resources.mem_mb == 200, m.id

    await roll(suite, ["resources.mem_mb"], check, resources=T.Resources(mem_mb=200))


async def test_statefulctl_update_wait_returns_once_the_change_is_applied(suite: Suite) -> None:
    """`statefulctl update --wait` (a subprocess against the suite's gateway) follows the rollout
    and exits 0 only once observed_generation reached the new generation."""
    await suite.create("cache", 3)
    await suite.wait_instance("cache", applied(1), 120, "deployed")
    result = await ctl(
        suite.gateway.endpoint, "update", "cache", "--set", "maxmemory=100mb", "--wait", "--timeout", "50"
    )
    assert result.code == 0, result
    assert "instance cache updated (generation 2): rolling" in result.out, result.out
    assert "instance cache is RUNNING (3/3 ready)" in result.out, result.out
    now = await suite.instance("cache")
    assert now is not None and now.observed_generation == now.generation == 2
    assert now.plan.name == plans.UPDATE and not plans.is_active(now.plan)


async def test_a_change_members_cannot_start_with_stops_at_the_first_replica_and_a_fix_rolls_on(
    suite: Suite,
) -> None:
    """A setting redis-server refuses at start (``save garbage``): the first replica's relaunch
    fails and is retried, the master and the other replica are never touched (no fence, no
    promotion) and keep acknowledging writes; an update back to a good value replaces the stuck
    plan and rolls on to the end."""
    await suite.create("cache", 3)
    before = await suite.wait_instance("cache", applied(1), 120, "deployed")
    secret = await password(suite, "cache")
    old = master_of(before)
    first = sorted(m.id for m in before.members if m.id != old.id)[0]
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    writer = AcknowledgedWriter(old, secret, "w")
    writer.start()
    try:
        await wait_for(lambda: _count(writer, 20), 30, what="20 writes acknowledged")
        await update(suite, ["config.save"], config={"save": "garbage"})

        def stuck(i: T.Instance) -> bool:
            step = next((s for s in i.plan.steps if s.name == f"await-running {first}"), None)
            return step is not None and step.attempts >= 1 and step.status in (plans.DELAYED, plans.ERROR)

        stuck_at = await suite.wait_instance("cache", stuck, 120, f"the relaunch of {first} failing")
        assert not any(
            plans.action_of(s) in (plans.Action.FENCE, plans.Action.FAILOVER) and s.status != plans.PENDING
            for s in stuck_at.plan.steps
        )
        others = [
            s
            for s in stuck_at.plan.steps
            if plans.action_of(s) == plans.Action.RESTART and s.member_id != first
        ]
        assert all(s.status == plans.PENDING for s in others), "only the first replica was restarted"
        acknowledged = len(writer.acknowledged)
        await wait_for(lambda: _count(writer, acknowledged + 20), 30, what="writes acknowledged meanwhile")
        assert roles.promotions == []

        fixed = await update(suite, ["config.save"], config={"save": "3600 1"})
        after = await suite.wait_instance(
            "cache", applied(fixed.generation), ROLL_DEADLINE, "the fix rolled out"
        )
        await writer.stop()
        new = master_of(after)
        assert await missing_keys(new, secret, writer.acknowledged) == []
        assert len(roles.promotions) == 1 and roles.max_masters == 1
        assert after.plan.name == plans.UPDATE and after.plan.generation == fixed.generation
    finally:
        await writer.stop()
        await roles.stop()
