"""Lifecycle and offers with standbys (issue 10, item 2), end to end with real processes: two
lifecycle and two offers processes, the state service over a real etcd, the local cluster, and a
3-member Redis instance under WAIT-acknowledged writes.

- The lifecycle leader killed with SIGKILL: the standby leads within the lease bound, no member is
  relaunched (same task ids, same redis-server processes), and a master killed right after is
  still failed over with nothing acknowledged lost.
- The same for the offers leader: the new leader subscribes as the same framework, the members
  keep running, a launch afterwards (a scale-up) works, and a master killed afterwards is failed
  over.
- A stale leader: the lifecycle leader frozen (SIGSTOP) while the standby takes over and acts,
  then resumed (SIGCONT): its term is over, it acts no more (every write of its term is refused
  by the state service, NotLeader) and it becomes a standby.
- In-process: a leader stopped in the middle of a failover; the standby resumes that failover
  from state and never starts a second one.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.leadership import LeadershipSettings, find_leader
from mesos_stateful.lifecycle import plans
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.testing.lifecycle import (
    LifecycleRunner,
    Suite,
    master_of,
    standby_suite,  # noqa: F401  (the fixture)
    wait_offers_subscribed,
)
from mesos_stateful.testing.offers import Replicas, ServiceProcess

from .e2e_helpers import (
    AcknowledgedWriter,
    RoleWatch,
    kill9,
    missing_keys,
    password,
    redis_pids,
    write_acknowledged,
)

pytestmark = pytest.mark.slow

# The replicas run with the default lease settings; polling and a loaded machine add a little.
LEADERSHIP = LeadershipSettings()
TAKEOVER_BOUND = LEADERSHIP.takeover_bound_seconds
SLACK_SECONDS = 2.0
# How long the members are watched for a relaunch after a new leader took over (seconds): the
# new leader reconciles every instance at once when it starts.
QUIET_SECONDS = 3.0


def _member(instance: T.Instance, member_id: str) -> T.Member:
    return next(m for m in instance.members if m.id == member_id)


def _groups(suite: Suite) -> tuple[Replicas, Replicas]:
    assert isinstance(suite.lifecycle, Replicas) and isinstance(suite.offers, Replicas)
    return suite.lifecycle, suite.offers


async def _running_cache(suite: Suite, replicas: int = 3) -> tuple[T.Instance, str]:
    await suite.create("cache", replicas)
    instance = await suite.wait_running("cache", replicas, timeout=180)
    return instance, await password(suite, "cache")


async def _current_tasks(suite: Suite) -> dict[str, str]:
    """member id -> its current task id."""
    instance = await suite.instance("cache")
    assert instance is not None
    return {m.id: m.task_id for m in instance.members}


async def _stays_untouched(suite: Suite, tasks: dict[str, str], pids: list[int], seconds: float) -> None:
    """For ``seconds``: every member keeps its task and every redis-server keeps running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await _current_tasks(suite) == tasks, "a member was relaunched"
        assert sorted(redis_pids(suite, (await suite.tasks("cache")).values(), by_address=False)) == pids
        await asyncio.sleep(0.2)


async def _take_over(group: Replicas, suite: Suite, old: ServiceProcess, since: float) -> ServiceProcess:
    new, seen_at = await group.wait_leader(suite.client, timeout=30, other_than=old)
    took = seen_at - since
    print(f"{group.role}: {new.name} leads {took:.2f}s after {old.name} stopped")
    assert took <= TAKEOVER_BOUND + SLACK_SECONDS, f"standby led {took:.2f}s later (bound {TAKEOVER_BOUND}s)"
    return new


async def _fail_over_master(
    suite: Suite, secret: str, members: int, with_master: Callable[[], None] | None = None
) -> None:
    """Under acknowledged writes, SIGKILL the master (and call ``with_master`` right before, e.g.
    to kill a controller at the same moment): a replica holding every acknowledged write is
    promoted (exactly one promotion), the old master comes back as a replica, and every other
    member keeps its task."""
    instance = await suite.wait_running("cache", members, timeout=120)
    old = master_of(instance)
    others = {m.id: m.task_id for m in instance.members if m.id != old.id}
    writer = AcknowledgedWriter(old, secret, "w")
    writer.start()
    roles = RoleWatch(suite.client, "cache")
    await roles.start()
    try:
        deadline = time.monotonic() + 30
        while len(writer.acknowledged) < 200:
            assert time.monotonic() < deadline, f"writes not acknowledged: {writer.errors}"
            await asyncio.sleep(0.05)
        pids = redis_pids(suite, [old])
        assert len(pids) == 1
        if with_master is not None:
            with_master()
        kill9(pids)

        def failed_over(i: T.Instance) -> bool:
            masters = [m for m in i.members if m.role == T.ROLE_MASTER]
            return (
                i.phase == T.INSTANCE_PHASE_RUNNING
                and len(i.members) == members
                and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
                and len(masters) == 1
                and masters[0].id != old.id
                and _member(i, old.id).incarnation > old.incarnation
            )

        instance = await suite.wait_instance("cache", failed_over, 120, "failed over")
    finally:
        await writer.stop()
        await roles.stop()
    new_master = master_of(instance)
    assert roles.promotions == [new_master.id], "exactly one promotion"
    assert roles.max_masters == 1, "never two MASTER members"
    assert len(writer.acknowledged) >= 200
    assert await missing_keys(new_master, secret, writer.acknowledged) == []
    assert {m.id: m.task_id for m in instance.members if m.id != old.id} == others, "a replica relaunched"


async def test_the_lifecycle_leader_killed_the_standby_leads_and_still_fails_over(
    standby_suite: Suite,  # noqa: F811
) -> None:
    suite = standby_suite
    lifecycle, _ = _groups(suite)
    _, secret = await _running_cache(suite)
    tasks = await _current_tasks(suite)
    pids = sorted(redis_pids(suite, (await suite.tasks("cache")).values(), by_address=False))
    assert len(pids) == 3
    leader = await lifecycle.leader(suite.client)
    assert leader is lifecycle.processes[0]
    before = await find_leader(suite.client, "lifecycle")
    assert before is not None
    assert "leads (term" not in lifecycle.processes[1].log_text(), "the standby ran a controller"

    killed_at = time.monotonic()
    leader.kill()
    new = await _take_over(lifecycle, suite, leader, killed_at)
    after = await find_leader(suite.client, "lifecycle")
    assert after is not None and after.term > before.term
    assert re.search(rf"leads \(term {after.term}\)", new.log_text()), new.log_text()[-3000:]

    # The new leader reconciles every instance and finds nothing to do: no member relaunched.
    await _stays_untouched(suite, tasks, pids, QUIET_SECONDS)
    cache = await suite.instance("cache")
    assert cache is not None and cache.phase == T.INSTANCE_PHASE_RUNNING

    # Back as a standby (as the suite's supervision would restart it).
    leader.start()
    await leader.wait_serving()
    # A master killed right after is failed over by the new leader, nothing acknowledged lost.
    await _fail_over_master(suite, secret, 3)
    assert (await lifecycle.leader(suite.client)) is new
    assert "leads (term" not in leader.log_text().split("--- start 2")[-1], "the restarted one led"

    # Both at once: the leader and the master killed together; the restarted one leads and fails
    # the master over.
    await _fail_over_master(suite, secret, 3, with_master=new.kill)
    assert (await lifecycle.leader(suite.client)) is leader


@pytest.mark.agents(4)  # one member per agent: room for a fourth
# Create, takeover, scale-up and a failover, each with its own deadline (up to 180 + 30 + 120 + 150
# s under load): the per-test timeout only catches a hang.
@pytest.mark.timeout(900)
async def test_the_offers_leader_killed_the_standby_takes_the_framework_over(
    standby_suite: Suite,  # noqa: F811
) -> None:
    suite = standby_suite
    _, offers = _groups(suite)
    _, secret = await _running_cache(suite)
    tasks = await _current_tasks(suite)
    pids = sorted(redis_pids(suite, (await suite.tasks("cache")).values(), by_address=False))
    framework = (await suite.client.get(spb.KIND_FRAMEWORK, "")).framework.framework_id
    assert framework
    leader = await offers.leader(suite.client)
    assert leader is offers.processes[0]

    killed_at = time.monotonic()
    leader.kill()
    new = await _take_over(offers, suite, leader, killed_at)
    await wait_offers_subscribed(suite.client, offers)
    assert f"subscribed to {suite.cluster.master_address} as framework {framework}" in new.log_text()
    assert (await suite.client.get(spb.KIND_FRAMEWORK, "")).framework.framework_id == framework
    await _stays_untouched(suite, tasks, pids, QUIET_SECONDS)
    leader.start()
    await leader.wait_serving()

    # A launch afterwards works: lifecycle finds the new offers leader by its lease.
    await suite.api.ScaleInstance(ipb.ScaleInstanceRequest(name="cache", replicas=4))
    instance = await suite.wait_running("cache", 4, timeout=120)
    assert {m.id: m.task_id for m in instance.members if m.id in tasks} == tasks
    # And a master killed together with the new offers leader is still failed over: the old
    # master is relaunched through the next offers leader (lifecycle finds it by its lease).
    await _fail_over_master(suite, secret, 4, with_master=new.kill)
    assert (await offers.leader(suite.client)) is leader


@pytest.mark.agents(4)  # one member per agent: room for a fourth
async def test_a_stale_lifecycle_leader_is_fenced_and_becomes_a_standby(
    standby_suite: Suite,  # noqa: F811
) -> None:
    """The leader is frozen while a plan keeps it writing (a scale-up whose workload service is
    down: the step is retried with backoff, each attempt stored); the standby takes over and
    goes on; the old leader resumed must stop acting: no write of its term is accepted and it
    campaigns as a standby. The scale-up then completes once, by the new leader."""
    suite = standby_suite
    lifecycle, _ = _groups(suite)
    _, _secret = await _running_cache(suite)
    tasks = await _current_tasks(suite)
    leader = await lifecycle.leader(suite.client)
    assert leader is not None
    lease = await find_leader(suite.client, "lifecycle")
    assert lease is not None
    old_term = lease.term

    # The workload service goes away (its registration stays until its lease ends): the new
    # member's Config callback fails, and the step is retried and stored again and again.
    await suite.redis.stop(deregister=False)
    await suite.api.ScaleInstance(ipb.ScaleInstanceRequest(name="cache", replicas=4))
    await suite.wait_instance(
        "cache",
        lambda i: i.plan.name == plans.SCALE and any(s.status == plans.DELAYED for s in i.plan.steps),
        60,
        "the scale-up retried",
    )
    leader.send(signal.SIGSTOP)
    stopped_at = time.monotonic()
    resumed = False
    try:
        new = await _take_over(lifecycle, suite, leader, stopped_at)
        new_lease = await find_leader(suite.client, "lifecycle")
        assert new_lease is not None and new_lease.term > old_term
        # The new leader goes on retrying the step (its writes are accepted).
        revision = await _revision(suite)
        deadline = time.monotonic() + 30
        while await _revision(suite) <= revision:
            assert time.monotonic() < deadline, "the new leader does not retry the step"
            await asyncio.sleep(0.1)
        # Stay frozen past the old leader's own renew deadline many times over.
        mark = len(leader.log_text())
        leader.send(signal.SIGCONT)
        resumed = True
        resumed_at = time.monotonic()

        # It finds its term over and stands by, within its renew deadline plus a retry.
        pattern = re.compile(rf"term {old_term} over; standby")
        while not pattern.search(leader.log_text()[mark:]):
            assert time.monotonic() - resumed_at < LEADERSHIP.renew_deadline_seconds + 10, (
                f"the stale leader did not stand by:\n{leader.log_text()[mark:][-4000:]}"
            )
            await asyncio.sleep(0.05)
        log_after = leader.log_text()[mark:]
        # Any write it tried in its old term was refused by the state service.
        for line in log_after.splitlines():
            if "reconcile failed" in line:
                assert f"term {old_term} of lifecycle is over" in line, line
        # And it does not lead again while the new leader lives.
        deadline = time.monotonic() + QUIET_SECONDS
        while time.monotonic() < deadline:
            assert (await lifecycle.leader(suite.client)) is new
            await asyncio.sleep(0.2)
        assert not re.search(r"leads \(term", leader.log_text()[mark:]), "the stale leader led again"
    finally:
        if not resumed:
            leader.send(signal.SIGCONT)

    # The workload service back: the new leader completes the scale-up, launching the new member
    # once; the other members keep their tasks.
    await suite.redis.start()
    instance = await suite.wait_running("cache", 4, timeout=120)
    assert {m.id: m.task_id for m in instance.members if m.id in tasks} == tasks
    added = [m for m in instance.members if m.id not in tasks]
    assert [m.incarnation for m in added] == [1]
    assert sorted(await suite.tasks("cache")) == sorted([*tasks.values(), added[0].task_id])


async def _revision(suite: Suite) -> int:
    """The instance record's revision (every plan change is a write)."""
    record = await suite.client.get(spb.KIND_INSTANCE, "cache")
    return int(record.mod_revision)


async def test_a_failover_interrupted_by_a_leader_change_is_resumed_not_restarted(suite: Suite) -> None:
    """In-process: the leader stops right after it stored the recovery plan (a crash at that
    point); the standby takes the plan over from state and completes that one failover."""
    standby = LifecycleRunner(suite.state.endpoint, suite.offers.endpoint, wait_leading=False)
    await standby.start()
    try:
        assert standby.service is not None and not standby.service.leading
        await suite.create("cache", 3)
        instance = await suite.wait_running("cache", 3)
        secret = await password(suite, "cache")
        old = master_of(instance)
        written = await write_acknowledged(old, secret, 300, replicas=1)
        assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
        frozen = suite.lifecycle.freeze_after_save(
            lambda p: p.name == plans.RECOVERY and p.status != plans.COMPLETE
        )
        roles = RoleWatch(suite.client, "cache")
        await roles.start()
        kill9(redis_pids(suite, [old]))
        await asyncio.wait_for(frozen.wait(), 60)
        stored = await suite.instance("cache")
        assert stored is not None and stored.plan.name == plans.RECOVERY
        started_at = stored.plan.started_at
        await suite.lifecycle.stop(crash=True)
        await standby.service.wait_leading(TAKEOVER_BOUND + SLACK_SECONDS)

        def failed_over(i: T.Instance) -> bool:
            return (
                i.phase == T.INSTANCE_PHASE_RUNNING
                and len(i.members) == 3
                and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
                and master_of(i).id != old.id
            )

        instance = await suite.wait_instance("cache", failed_over, 120, "failed over by the standby")
        await roles.stop()
        assert roles.promotions == [master_of(instance).id], "exactly one promotion"
        assert roles.max_masters == 1
        assert instance.plan.name == plans.RECOVERY
        assert instance.plan.started_at == started_at, "the same plan, resumed (not planned again)"
        assert await missing_keys(master_of(instance), secret, written) == []
    finally:
        await standby.stop()


def test_leader_settings_come_from_the_environment_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEFUL_LIFECYCLE_LEADER_LEASE_DURATION_SECONDS", "3")
    monkeypatch.setenv("STATEFUL_LIFECYCLE_LEADER_RENEW_DEADLINE_SECONDS", "2")
    monkeypatch.setenv("STATEFUL_LIFECYCLE_ADVERTISE", "10.0.0.5:7300")
    settings = LifecycleSettings.load([])
    assert settings.leadership.lease_duration_seconds == 3.0
    assert settings.leadership.renew_deadline_seconds == 2.0
    assert settings.leadership.takeover_bound_seconds == 3.2
    assert settings.advertise == "10.0.0.5:7300"
    # A leader must stop before a standby may take over: renew deadline below the lease duration.
    with pytest.raises(ValidationError, match="leader_renew_deadline_seconds"):
        LifecycleSettings(leader_lease_duration_seconds=1.0, leader_renew_deadline_seconds=1.0)
    with pytest.raises(ValidationError, match="leader_retry_period_seconds"):
        LifecycleSettings(leader_retry_period_seconds=2.0)  # not below the renew deadline (2 s)
    with pytest.raises(ValidationError, match="advertise"):
        LifecycleSettings(advertise="nowhere")
