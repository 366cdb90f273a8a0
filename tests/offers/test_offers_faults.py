"""Faults: agent loss, offers service restarts, a framework away past its failover timeout, and
the state service down while status updates arrive."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import grpc
import pytest
from offers_helpers import (
    RUNNING,
    executor_sessions,
    framework_state,
    in_state,
    launch,
    member_pids,
    port_open,
    wait_task,
    wait_until,
    web_spec,
)

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.cluster import RunningCluster, start_local_cluster
from mesos_stateful.testing.offers import OffersService
from mesos_stateful.testing.ports import free_port
from mesos_stateful.testing.state import StateService

pytestmark = pytest.mark.slow


async def launch_running(
    offers: OffersService, state: StateClient, instance: str, count: int
) -> list[types_pb2.Task]:
    specs = [web_spec(instance, ordinal) for ordinal in range(count)]
    for spec in specs:
        await launch(offers, spec)
    return list(await asyncio.gather(*(wait_task(state, s.task_id, in_state(RUNNING)) for s in specs)))


async def test_killing_an_agent_marks_its_tasks_unreachable(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    tasks = await launch_running(offers_service, state_client, "lost", 3)
    victim = tasks[0]
    local_cluster.kill_agent(victim.agent_id)
    # The offers framework is PARTITION_AWARE: the task may still run there, not "lost".
    lost = await wait_task(state_client, victim.task_id, in_state(types_pb2.TASK_STATE_UNREACHABLE))
    assert lost.reason == "REASON_AGENT_REMOVED"
    for task in tasks[1:]:
        record = await state_client.get(spb.KIND_TASK, task.task_id)
        assert record.task.state == RUNNING
    cluster = await offers_service.wait_cluster(
        lambda c: victim.agent_id not in {a.agent_id for a in c.agents}
    )
    assert all(victim.task_id not in a.task_ids for a in cluster.agents)


async def test_an_unreachable_task_can_still_be_killed(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    # A cut-off agent's tasks are reported UNREACHABLE and may still run: a kill must still be
    # sent, so that lifecycle's fencing of an old master holds when the agent comes back.
    (task,) = await launch_running(offers_service, state_client, "fence", 1)
    sid, _ = executor_sessions(local_cluster)[task.task_id]
    local_cluster.stop_agent(task.agent_id)
    await wait_task(state_client, task.task_id, in_state(types_pb2.TASK_STATE_UNREACHABLE))
    assert offers_service.stub is not None
    killed = await offers_service.stub.Kill(api.KillRequest(task_id=task.task_id))
    assert killed.task.kill_requested
    stored = await state_client.get(spb.KIND_TASK, task.task_id)
    assert stored.task.kill_requested
    local_cluster.start_agent(task.agent_id)
    await wait_until(lambda: not session_members(sid), what="old member gone")


async def test_restarting_the_offers_service_keeps_members_running(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    first = await offers_service.wait_subscribed()
    tasks = await launch_running(offers_service, state_client, "keep", 3)
    pids = {t.task_id: member_pids(local_cluster, t.task_id) for t in tasks}
    assert all(pids.values())
    # One more launch that cannot be placed (1 per agent, 3 agents): it must stay queued.
    await launch(offers_service, web_spec("keep", 3))
    await offers_service.wait_cluster(lambda c: [p.task_id for p in c.pending] == ["keep-3.1"])

    await offers_service.restart()

    second = await offers_service.wait_subscribed()
    assert second.framework_id == first.framework_id
    # Known again after the restart (reloaded from state, reconciled), not relaunched or killed.
    assert offers_service.stub is not None
    listed = await offers_service.stub.ListTasks(api.ListTasksRequest(instance="keep"))
    assert {t.task_id: t.state for t in listed.tasks} == {
        "keep-0.1": RUNNING,
        "keep-1.1": RUNNING,
        "keep-2.1": RUNNING,
        "keep-3.1": types_pb2.TASK_STATE_QUEUED,
    }
    await offers_service.wait_cluster(lambda c: [p.task_id for p in c.pending] == ["keep-3.1"])
    await offers_service.wait_cluster(
        lambda c: sorted(t for a in c.agents for t in a.task_ids) == ["keep-0.1", "keep-1.1", "keep-2.1"]
    )
    framework = framework_state(local_cluster, first.framework_id)
    assert framework["connected"]
    assert sorted(t["id"] for t in framework["tasks"]) == ["keep-0.1", "keep-1.1", "keep-2.1"]
    assert all(t["state"] == "TASK_RUNNING" for t in framework["tasks"])
    assert not framework["completed_tasks"]
    for task in tasks:
        assert member_pids(local_cluster, task.task_id) == pids[task.task_id]
        assert port_open(task.host, task.ports["web"])
        record = await state_client.get(spb.KIND_TASK, task.task_id)
        assert record.task.state == RUNNING and record.task.agent_id == task.agent_id


async def test_a_framework_away_past_its_failover_timeout_loses_its_tasks(
    state_service: StateService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    offers = OffersService(state_service.endpoint, local_cluster.master_address, failover_timeout_seconds=2.0)
    await offers.start()
    try:
        first = await offers.wait_subscribed()
        (task,) = await launch_running(offers, state_client, "gone", 1)
        await offers.stop()
        # Away longer than the failover timeout: the master removes the framework, kills its tasks.
        await wait_until(
            lambda: first.framework_id in [f["id"] for f in local_cluster.state()["completed_frameworks"]],
            what="framework removed",
        )
        await wait_until(lambda: not port_open(task.host, task.ports["web"]), what="member killed")
        await wait_until(lambda: task.task_id not in executor_sessions(local_cluster), what="executor gone")

        # Back: the old id is refused, so it subscribes as a new framework and learns (by
        # reconciliation) that the old task is gone: TASK_GONE, its agent is up and has it no more.
        await offers.start()
        second = await offers.wait_subscribed(timeout=60)
        assert second.framework_id and second.framework_id != first.framework_id
        record = await state_client.get(spb.KIND_FRAMEWORK, "")
        assert record.framework.framework_id == second.framework_id
        gone = await wait_task(state_client, task.task_id, in_state(types_pb2.TASK_STATE_GONE))
        assert gone.message == "Reconciliation: Task is unknown to the agent"
    finally:
        await offers.stop()


async def test_status_updates_are_stored_before_they_are_acknowledged(
    offers_service: OffersService,
    state_service: StateService,
    state_client: StateClient,
    local_cluster: RunningCluster,
) -> None:
    (task,) = await launch_running(offers_service, state_client, "acks", 1)
    cluster = await offers_service.wait_subscribed()

    def unacknowledged() -> tuple[int, float]:
        async def read() -> tuple[int, float]:
            framework = local_cluster.cluster.master.frameworks[cluster.framework_id]
            master_task = framework.tasks.get(task.task_id)
            if master_task is None:  # acknowledged terminal tasks move to the completed ones
                return 0, 0.0
            return len(master_task.pending), master_task.last_sent

        return local_cluster.run(read())

    await state_service.stop()
    # The member dies while the state service is down: TASK_FAILED cannot be stored, so it is
    # not acknowledged and the cluster keeps re-sending it.
    for pid in member_pids(local_cluster, task.task_id):
        os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: unacknowledged()[0] > 0, what="a pending update")
    # The store is down: a launch cannot be recorded, so it is refused (retryable). The leader
    # cannot renew its lease either: past its renew deadline it stands down (its Mesos connection
    # closed with failover), and the update stays unacknowledged until it is stored.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await launch(offers_service, web_spec("acks", 1))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert offers_service.served is not None
    await wait_until(lambda: not offers_service.served.leading, what="the leader standing down")  # type: ignore[union-attr]
    assert unacknowledged()[0] > 0

    await state_service.start()
    failed = await wait_task(state_client, task.task_id, in_state(types_pb2.TASK_STATE_FAILED))
    assert failed.message
    await wait_until(lambda: unacknowledged()[0] == 0, what="the update acknowledged")


async def test_launches_queue_until_the_master_is_up(
    state_service: StateService, state_client: StateClient, tmp_path: Path
) -> None:
    """Not subscribed yet: Launch still queues. The service survives pymesos failing to connect
    (its I/O thread dies and calls interrupt_main) and subscribes once the master is up."""
    master = f"127.0.0.1:{free_port()}"
    offers = OffersService(state_service.endpoint, master)
    await offers.start()
    cluster: RunningCluster | None = None
    try:
        queued = await launch(offers, web_spec("early", 0))
        assert queued.state == types_pb2.TASK_STATE_QUEUED
        view = await offers.wait_cluster(lambda c: [p.task_id for p in c.pending] == ["early-0.1"])
        assert not view.subscribed and view.master == master
        await asyncio.sleep(0)  # give the driver a chance to fail a few times first
        await wait_until(lambda: offers.served is not None and offers.served.scheduler is not None)

        cluster = await asyncio.to_thread(
            start_local_cluster,
            tmp_path / "cluster",
            listen=master,
            agent_ip_base=f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.2",
        )
        await offers.wait_subscribed(timeout=60)
        task = await wait_task(state_client, "early-0.1", in_state(RUNNING))
        assert port_open(task.host, task.ports["web"])
    finally:
        await offers.stop()
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
            assert not cluster.leftovers()


async def test_the_service_survives_the_pymesos_io_thread_dying(
    state_service: StateService, local_cluster: RunningCluster
) -> None:
    """Pointed at something that is not a Mesos master (here an agent's HTTP API, which answers
    404 to SUBSCRIBE), pymesos' I/O thread dies and calls interrupt_main(): the service must
    keep serving and keep trying with a fresh driver."""
    offers = OffersService(state_service.endpoint, local_cluster.agents[0].endpoint)
    await offers.start()
    try:
        assert offers.served is not None and offers.served.scheduler is not None
        driver = offers.served.scheduler.driver
        await wait_until(lambda: driver.aborts >= 2, timeout=60, what="two driver aborts")
        view = await offers.wait_cluster(lambda c: not c.subscribed)
        assert view.master == local_cluster.agents[0].endpoint
        queued = await launch(offers, web_spec("stray", 0))
        assert queued.state == types_pb2.TASK_STATE_QUEUED
    finally:
        await offers.stop()
