"""Operator actions end to end (issue 15, parts 2 and 3) with real redis-servers: a planned
switchover to a named replica, a restart and a replacement of a replica and of the master, each
under continuous ``SET`` + ``WAIT 1`` writes (``AcknowledgedWriter``): no acknowledged write lost,
never two masters (the member records, ``RoleWatch``, and every live redis-server's ``INFO
replication``, ``RoleSampler``); and the API's answers to bad requests.

Real parts: etcd, the state service, the local cluster, offers, the lifecycle, the gateway and
the Redis workload service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite, is_running, master_of
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import AcknowledgedWriter, RoleSampler, RoleWatch, missing_keys, password

pytestmark = pytest.mark.slow

DEADLINE = 180.0
WRITES_BEFORE = 50


def member(instance: T.Instance, member_id: str) -> T.Member:
    return next(m for m in instance.members if m.id == member_id)


def done(member_id: str, op_id: str, members: int = 3) -> Callable[[T.Instance], bool]:
    """The operation ``op_id`` on ``member_id`` is recorded done, its plan COMPLETE (the member
    record is written before the plan's last save) and every member is ready."""
    return lambda i: (
        is_running(i, members)
        and any(m.id == member_id and m.operation_done == op_id for m in i.members)
        and i.plan.operation.id == op_id
        and i.plan.status == plans.COMPLETE
    )


class Load:
    """A writer on the master, a RoleWatch on the records and a RoleSampler on the servers."""

    def __init__(self, suite: Suite, name: str, master: T.Member, secret: str) -> None:
        self.suite = suite
        self.secret = secret
        self.writer = AcknowledgedWriter(master, secret, "w")
        self.roles = RoleWatch(suite.client, name)
        self.sampler = RoleSampler(suite, name, secret)

    async def __aenter__(self) -> Load:
        await self.roles.start()
        self.sampler.start()
        self.writer.start()

        async def writing() -> bool:
            return len(self.writer.acknowledged) >= WRITES_BEFORE

        await wait_for(writing, 30, what=f"{WRITES_BEFORE} writes acknowledged by the master")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.writer.stop()
        await self.sampler.stop()
        await self.roles.stop()

    async def check(self, instance: T.Instance) -> None:
        """No acknowledged write lost (on the master now and on every member once in sync);
        never two masters."""
        await self.writer.stop()
        assert len(self.writer.acknowledged) >= WRITES_BEFORE
        master = master_of(instance)
        assert await missing_keys(master, self.secret, self.writer.acknowledged) == []
        for m in instance.members:

            async def complete(m: T.Member = m) -> bool:
                return await missing_keys(m, self.secret, self.writer.acknowledged) == []

            await wait_for(complete, 30, what=f"{m.id} holds every acknowledged write")
        assert self.roles.max_masters == 1
        assert self.sampler.two_masters == [], f"two redis masters at once: {self.sampler.two_masters[:3]}"


async def test_switchover_to_a_named_replica_under_acknowledged_writes(suite: Suite) -> None:
    """SwitchoverInstance(target): the old master is demoted (not killed), the target catches up
    to its exact final position and is promoted, the third member re-pointed, the old master a
    replica on its same task and volume; 0 acknowledged writes lost, never two masters."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    target = max((m for m in instance.members if m.id != old.id), key=lambda m: m.ordinal)
    async with Load(suite, "cache", old, secret) as load:
        response = await suite.api.SwitchoverInstance(
            ipb.SwitchoverInstanceRequest(name="cache", target_member_id=target.id)
        )
        op = member(response.instance, old.id).operation
        assert op.kind == T.OPERATION_KIND_SWITCHOVER and op.target_member_id == target.id and op.id
        after = await suite.wait_instance("cache", done(old.id, op.id), DEADLINE, "switchover done")
        await load.check(after)
        assert load.roles.promotions == [target.id]

    assert master_of(after).id == target.id
    old_now = member(after, old.id)
    assert old_now.role == T.ROLE_SLAVE
    # Demoted in place: the same task (not killed), the same volume.
    assert old_now.task_id == old.task_id
    assert old_now.volume.persistence_id == old.volume.persistence_id
    plan = after.plan
    assert plan.name == plans.SWITCHOVER and plan.status == plans.COMPLETE
    assert plan.cause == T.PLAN_CAUSE_SWITCHOVER
    assert plan.operation.id == op.id
    steps = {st.name: st for st in plan.steps}
    assert steps[f"fence {old.id}"].fence.method == T.FENCE_METHOD_DEMOTED
    catch_up = steps[f"catch-up {old.id}"].catch_up
    assert catch_up.member_id == target.id and catch_up.master_position
    assert catch_up.positions[target.id] == catch_up.master_position
    assert steps[f"failover {old.id}"].decision.promote_member_id == target.id
    assert plans.action_of(plan.steps[-1]) == plans.Action.DONE


async def test_restart_a_replica_in_place(suite: Suite) -> None:
    """RestartMember of a replica: a new task on the same volume and agent; the master untouched."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    master = master_of(instance)
    replica = next(m for m in instance.members if m.id != master.id)
    async with Load(suite, "cache", master, secret) as load:
        response = await suite.api.RestartMember(
            ipb.RestartMemberRequest(instance="cache", member_id=replica.id)
        )
        op = member(response.instance, replica.id).operation
        after = await suite.wait_instance("cache", done(replica.id, op.id), DEADLINE, "restart done")
        await load.check(after)
        assert load.roles.promotions == []
    now = member(after, replica.id)
    assert now.incarnation > replica.incarnation and now.task_id != replica.task_id
    assert now.volume.persistence_id == replica.volume.persistence_id
    assert now.agent_id == replica.agent_id
    assert master_of(after).id == master.id and member(after, master.id).task_id == master.task_id
    assert after.plan.name == plans.RESTART and after.plan.status == plans.COMPLETE


async def test_restart_the_master_switches_over_first(suite: Suite) -> None:
    """RestartMember of the master: a switchover first (a replica promoted, nothing acknowledged
    lost), then the old master restarted in place as a replica."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    async with Load(suite, "cache", old, secret) as load:
        response = await suite.api.RestartMember(ipb.RestartMemberRequest(instance="cache", member_id=old.id))
        op = member(response.instance, old.id).operation
        after = await suite.wait_instance("cache", done(old.id, op.id), DEADLINE, "restart done")
        await load.check(after)
        assert len(load.roles.promotions) == 1
    now = member(after, old.id)
    assert now.role == T.ROLE_SLAVE
    assert now.task_id != old.task_id
    assert now.volume.persistence_id == old.volume.persistence_id and now.agent_id == old.agent_id
    assert master_of(after).id != old.id
    assert after.plan.cause == T.PLAN_CAUSE_SWITCHOVER


@pytest.mark.agents(4)  # a free agent to replace onto
async def test_replace_a_replica_on_another_agent(suite: Suite) -> None:
    """ReplaceMember of a replica: a fresh volume on another agent, resynced from the master."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    master = master_of(instance)
    replica = next(m for m in instance.members if m.id != master.id)
    async with Load(suite, "cache", master, secret) as load:
        response = await suite.api.ReplaceMember(
            ipb.ReplaceMemberRequest(instance="cache", member_id=replica.id)
        )
        op = member(response.instance, replica.id).operation
        after = await suite.wait_instance("cache", done(replica.id, op.id), DEADLINE, "replace done")
        await load.check(after)
        assert load.roles.promotions == []
    now = member(after, replica.id)
    assert now.volume.persistence_id != replica.volume.persistence_id
    assert now.agent_id and now.agent_id != replica.agent_id
    assert now.volume.has_data
    step = next(st for st in after.plan.steps if st.name == f"replace {replica.id}")
    assert step.replaced_agent_id == replica.agent_id


@pytest.mark.agents(4)
async def test_replace_the_master_switches_over_first(suite: Suite) -> None:
    """ReplaceMember of the master: switched over first, then rebuilt elsewhere as a replica."""
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    async with Load(suite, "cache", old, secret) as load:
        response = await suite.api.ReplaceMember(ipb.ReplaceMemberRequest(instance="cache", member_id=old.id))
        op = member(response.instance, old.id).operation
        after = await suite.wait_instance("cache", done(old.id, op.id), DEADLINE, "replace done")
        await load.check(after)
        assert len(load.roles.promotions) == 1
    now = member(after, old.id)
    assert now.role == T.ROLE_SLAVE
    assert now.volume.persistence_id != old.volume.persistence_id
    assert now.agent_id and now.agent_id != old.agent_id


async def _status(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    raise AssertionError("the call succeeded")


async def test_bad_requests_are_refused_with_a_reason(suite: Suite) -> None:
    """INVALID_ARGUMENT (field-level), NOT_FOUND, FAILED_PRECONDITION with actionable messages."""
    api = suite.api
    S, R, P = ipb.SwitchoverInstanceRequest, ipb.RestartMemberRequest, ipb.ReplaceMemberRequest
    code, msg = await _status(api.SwitchoverInstance(S(name="Bad_Name")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "name" in msg
    code, msg = await _status(api.RestartMember(R(instance="cache", member_id="other-1")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "member_id" in msg and "cache-<ordinal>" in msg
    code, msg = await _status(api.ReplaceMember(P(instance="cache", member_id="")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "member_id: is required" in msg
    code, msg = await _status(api.SwitchoverInstance(S(name="nosuch")))
    assert code == grpc.StatusCode.NOT_FOUND and "nosuch" in msg

    await suite.create("solo", 1)
    await suite.wait_running("solo", 1)
    code, msg = await _status(api.SwitchoverInstance(S(name="solo")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no ready replica" in msg and "scale to 2" in msg
    code, msg = await _status(api.ReplaceMember(P(instance="solo", member_id="solo-0")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no ready replica" in msg

    await suite.create("cache", 2)
    instance = await suite.wait_running("cache", 2)
    master = master_of(instance)
    replica = next(m for m in instance.members if m.id != master.id)
    code, msg = await _status(api.SwitchoverInstance(S(name="cache", target_member_id="cache-7")))
    assert code == grpc.StatusCode.NOT_FOUND and "cache-7" in msg and master.id in msg
    code, msg = await _status(api.SwitchoverInstance(S(name="cache", target_member_id=master.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already the master" in msg
    code, msg = await _status(api.RestartMember(R(instance="cache", member_id="cache-9")))
    assert code == grpc.StatusCode.NOT_FOUND
    # One operation at a time: a second one while the first is pending is refused.
    await api.RestartMember(R(instance="cache", member_id=replica.id))
    code, msg = await _status(api.SwitchoverInstance(S(name="cache", target_member_id=replica.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "still pending" in msg or "not a ready replica" in msg, msg


def _step(plan: T.Plan, name: str) -> T.Step | None:
    return next((s for s in plan.steps if s.name == name), None)


def _at(plan: T.Plan, done: str, pending: str) -> bool:
    """The operator's plan with step ``done`` COMPLETE and ``pending`` not yet."""
    a, b = _step(plan, done), _step(plan, pending)
    return (
        plan.name in plans.OPERATIONS
        and a is not None
        and a.status == plans.COMPLETE
        and b is not None
        and b.status != plans.COMPLETE
    )


# Where the lifecycle crashes (right after persisting the plan), for master cache-<o> / replica.
CRASH_POINTS: dict[str, tuple[str, Callable[[T.Plan, str], bool]]] = {
    # The master demoted (takes no write), its final position not read yet.
    "fenced": ("switchover", lambda p, m: _at(p, f"fence {m}", f"catch-up {m}")),
    # The target holds the final position (recorded in Step.catch_up), nobody promoted yet.
    "caught-up": ("switchover", lambda p, m: _at(p, f"catch-up {m}", f"failover {m}")),
    # A replica's restart: its task killed, not relaunched yet.
    "replica-killed": ("restart", lambda p, m: _at(p, f"kill {m}", f"launch {m}")),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
async def test_a_lifecycle_crash_mid_operation_resumes_the_same_plan(suite: Suite, point: str) -> None:
    """The lifecycle crashes right after persisting the operator's plan at ``point``; restarted, it
    rebuilds the plan from state and finishes it: at most one promotion (the target), no
    acknowledged write lost, the operation recorded done once."""
    kind, when = CRASH_POINTS[point]
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    replicas = sorted((m for m in instance.members if m.id != old.id), key=lambda m: m.ordinal)
    subject = old if kind == "switchover" else replicas[0]
    target = replicas[-1]
    async with Load(suite, "cache", old, secret) as load:
        assert isinstance(suite.lifecycle, LifecycleRunner)
        frozen = suite.lifecycle.freeze_after_save(lambda p: when(p, subject.id))
        if kind == "switchover":
            asked = await suite.api.SwitchoverInstance(
                ipb.SwitchoverInstanceRequest(name="cache", target_member_id=target.id)
            )
            stored = asked.instance
        else:
            restarted = await suite.api.RestartMember(
                ipb.RestartMemberRequest(instance="cache", member_id=subject.id)
            )
            stored = restarted.instance
        op = member(stored, subject.id).operation
        await asyncio.wait_for(frozen.wait(), 60)
        await suite.lifecycle.stop(crash=True)
        crashed = await suite.instance("cache")
        assert crashed is not None and when(crashed.plan, subject.id)
        await suite.lifecycle.start()
        after = await suite.wait_instance("cache", done(subject.id, op.id), DEADLINE, f"{kind} done")
        await load.check(after)
        assert after.plan.started_at == crashed.plan.started_at, "the same plan, resumed"
        if kind == "switchover":
            assert load.roles.promotions == [target.id]
            assert master_of(after).id == target.id
        else:
            assert load.roles.promotions == []
            assert member(after, subject.id).task_id != subject.task_id


@pytest.mark.agents(4)
async def test_replace_a_replica_whose_agent_died_without_waiting_for_replace_after(suite: Suite) -> None:
    """A replica's agent dies: the recovery waits to restart it in place (its volume is there) for
    ``replace_after_seconds``; an operator's ReplaceMember replaces that recovery at once: a fresh
    volume on another agent, resynced; nothing acknowledged lost."""
    assert isinstance(suite.lifecycle, LifecycleRunner)
    suite.lifecycle.overrides["replace_after_seconds"] = 3600.0
    await suite.lifecycle.restart()
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    master = master_of(instance)
    victim = next(m for m in instance.members if m.id != master.id)
    async with Load(suite, "cache", master, secret) as load:
        await asyncio.to_thread(suite.cluster.kill_agent, victim.volume.host)
        await suite.wait_instance(
            "cache",
            lambda i: i.plan.name == plans.RECOVERY and member(i, victim.id).state != T.MEMBER_STATE_RUNNING,
            DEADLINE,
            f"a recovery of {victim.id}",
        )
        response = await suite.api.ReplaceMember(
            ipb.ReplaceMemberRequest(instance="cache", member_id=victim.id)
        )
        op = member(response.instance, victim.id).operation
        after = await suite.wait_instance("cache", done(victim.id, op.id), DEADLINE, "replace done")
        await load.check(after)
        assert load.roles.promotions == []
    now = member(after, victim.id)
    assert now.volume.persistence_id != victim.volume.persistence_id
    assert now.agent_id not in ("", victim.agent_id)
