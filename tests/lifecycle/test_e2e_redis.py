"""End to end through the public API: real redis-server members on the local cluster."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite, master_of
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import connect, password, redis_pids, replication_info

pytestmark = pytest.mark.slow


async def test_create_three_member_redis_replicates(redis_suite: Suite) -> None:
    suite = redis_suite  # the Python and the Node.js Redis workload
    created = await suite.create("cache", 3)
    assert created.phase == T.INSTANCE_PHASE_PENDING
    instance = await suite.wait_running("cache", 3)
    assert instance.plan.name == plans.DEPLOY and instance.plan.status == plans.COMPLETE
    # Run by the implementation under test: its registration is the one lifecycle called.
    assert instance.spec.workload == suite.workload
    registered = await suite.client.find(spb.KIND_WORKLOAD, suite.workload)
    assert registered is not None and registered.workload.endpoint == suite.redis.endpoint
    master = master_of(instance)
    assert master.ordinal == 0
    assert [m.role for m in instance.members] == [T.ROLE_MASTER, T.ROLE_SLAVE, T.ROLE_SLAVE]
    assert all(m.task_id == f"{m.id}.1" and m.host and m.ports["redis"] for m in instance.members)
    assert len({m.agent_id for m in instance.members}) == 3  # one member per agent
    secret = await password(suite, "cache")
    assert secret
    async with connect(master, secret) as r:
        info = await r.info("replication")
        assert info["role"] == "master" and info["connected_slaves"] == 2
        await r.set("k", "v")
        assert await r.wait(2, 5000) == 2
    for replica in instance.members[1:]:
        async with connect(replica, secret) as r:
            assert await r.get("k") == "v"
    # The public API shows the same.
    got = (await suite.get("cache")).instance
    assert got.phase == T.INSTANCE_PHASE_RUNNING and len(got.members) == 3


async def test_scale_up_then_down_never_removes_the_master(redis_suite: Suite) -> None:
    suite = redis_suite  # the Python and the Node.js Redis workload
    # 5 members on 3 agents: up to 2 per agent.
    await suite.create("cache", 3, placement=T.Placement(max_members_per_agent=2))
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    master = master_of(instance)

    await suite.api.ScaleInstance(api.ScaleInstanceRequest(name="cache", replicas=5))
    instance = await suite.wait_running("cache", 5)
    assert instance.plan.name == plans.SCALE and instance.plan.generation == 2
    assert [m.id for m in instance.members] == [f"cache-{o}" for o in range(5)]
    assert master_of(instance).task_id == master.task_id
    info = await replication_info(master, secret)
    assert info["connected_slaves"] == 4
    removed = [m for m in instance.members if m.ordinal >= 2]

    await suite.api.ScaleInstance(api.ScaleInstanceRequest(name="cache", replicas=2))
    instance = await suite.wait_running("cache", 2)
    assert [m.id for m in instance.members] == ["cache-0", "cache-1"]
    assert master_of(instance).task_id == master.task_id
    steps = [s.name for s in instance.plan.steps]
    assert steps[:3] == ["remove-member cache-4", "kill cache-4", "delete-member cache-4"]
    assert redis_pids(suite, removed) == []
    tasks = await suite.tasks("cache")
    assert all(tasks[m.task_id].state == T.TASK_STATE_KILLED for m in removed)
    await wait_for(lambda: _replicas(master, secret, 1), what="1 connected replica")


async def _replicas(master: T.Member, secret: str, count: int) -> bool:
    return (await replication_info(master, secret))["connected_slaves"] == count


async def test_delete_leaves_no_process_and_no_state(redis_suite: Suite) -> None:
    suite = redis_suite  # the Python and the Node.js Redis workload
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    tasks = list((await suite.tasks("cache")).values())
    assert len(redis_pids(suite, tasks)) == 3
    await suite.api.DeleteInstance(api.DeleteInstanceRequest(name="cache"))
    await suite.wait_gone("cache")
    assert redis_pids(suite, tasks) == []
    assert redis_pids(suite, instance.members) == []
    for kind, prefix in [(spb.KIND_MEMBER, "cache/"), (spb.KIND_TASK, "cache-"), (spb.KIND_SECRETS, "cache")]:
        records, _ = await suite.client.list(kind, prefix)
        assert records == [], f"{spb.Kind.Name(kind)} records left: {records}"
    with pytest.raises(grpc.RpcError) as error:
        await suite.get("cache")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_callbacks_are_retried_after_a_workload_service_restart(redis_suite: Suite) -> None:
    suite = redis_suite  # the Python and the Node.js Redis workload
    await suite.create("cache", 3)
    # The workload service dies (no deregistration) once the master is launched...
    await suite.wait_instance(
        "cache",
        lambda i: any(s.name == "launch cache-0" and s.status == plans.COMPLETE for s in i.plan.steps),
        60,
        "the master launched",
        0.02,
    )
    await suite.redis.stop(deregister=False)
    # ... so the next callback fails UNAVAILABLE and is retried with backoff, recorded on the step.
    stuck = await suite.wait_instance(
        "cache",
        lambda i: any(s.status == plans.DELAYED and s.attempts >= 2 for s in i.plan.steps),
        60,
        "a step delayed after 2 attempts",
    )
    delayed = next(s for s in stuck.plan.steps if s.status == plans.DELAYED)
    assert delayed.name == "start-master cache-0"
    assert "UNAVAILABLE" in delayed.message and delayed.HasField("next_attempt_at")
    assert stuck.phase == T.INSTANCE_PHASE_DEPLOYING
    # Back on the same port: the plan carries on and the deploy completes.
    await suite.redis.start()
    instance = await suite.wait_running("cache", 3)
    step = next(s for s in instance.plan.steps if s.name == "start-master cache-0")
    assert step.status == plans.COMPLETE and step.attempts >= 3


async def test_create_for_an_unregistered_workload_is_rejected(suite: Suite) -> None:
    with pytest.raises(grpc.RpcError) as error:
        await suite.create("nope", 1, workload="nosuchworkload")
    assert error.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    assert await suite.instance("nope") is None


async def test_delete_wins_over_a_deploy_in_progress(suite: Suite) -> None:
    await suite.create("cache", 3)
    await suite.wait_instance(
        "cache",
        lambda i: any(s.name == "launch cache-1" and s.status == plans.COMPLETE for s in i.plan.steps),
        60,
        "replicas launching",
        0.02,
    )
    await suite.api.DeleteInstance(api.DeleteInstanceRequest(name="cache"))
    await suite.wait_gone("cache")
    tasks = list((await suite.tasks("cache")).values())
    assert tasks == []
    members, _ = await suite.client.list(spb.KIND_MEMBER, "cache/")
    assert members == []

    async def no_redis() -> bool:
        # Any redis-server whose sandbox belongs to a task of this instance.
        return redis_pids(suite, [T.Task(task_id=f"cache-{o}.1") for o in range(3)], by_address=False) == []

    await wait_for(no_redis, 30, what="no redis-server of cache left")


def _open_step(plan: T.Plan, name: str) -> T.Step | None:
    return next((s for s in plan.steps if s.name == name and s.status != plans.COMPLETE), None)


DEPLOY_CRASH_POINTS = {
    # The member's task id is stored, the Launch not sent yet.
    "task-id-stored-launch-not-sent": lambda p: (
        (s := _open_step(p, "launch cache-0")) is not None and s.attempts == 1
    ),
    "replicas-launched-not-awaited": lambda p: (
        _open_step(p, "launch cache-2") is None
        and _open_step(p, "await-running cache-1") is not None
        and any(s.name == "launch cache-2" for s in p.steps)
    ),
    "start-slave-about-to-be-called": lambda p: (
        (s := _open_step(p, "start-slave cache-1")) is not None and s.status == plans.STARTING
    ),
}


@pytest.mark.parametrize("point", list(DEPLOY_CRASH_POINTS))
async def test_lifecycle_crash_during_deploy_resumes_without_launching_twice(
    suite: Suite, point: str
) -> None:
    assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
    frozen = suite.lifecycle.freeze_after_save(DEPLOY_CRASH_POINTS[point])
    await suite.create("cache", 3)
    await asyncio.wait_for(frozen.wait(), 60)
    await suite.lifecycle.stop()
    crashed = await suite.instance("cache")
    assert crashed is not None and DEPLOY_CRASH_POINTS[point](crashed.plan)
    await suite.lifecycle.start()
    instance = await suite.wait_running("cache", 3)
    assert instance.plan.started_at == crashed.plan.started_at, "the same deploy plan, resumed"
    assert [m.task_id for m in instance.members] == ["cache-0.1", "cache-1.1", "cache-2.1"]
    assert sorted(await suite.tasks("cache")) == ["cache-0.1", "cache-1.1", "cache-2.1"]
    secret = await password(suite, "cache")
    assert (await replication_info(master_of(instance), secret))["connected_slaves"] == 2
