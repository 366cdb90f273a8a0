"""Offers with a standby (issue 10, item 2): two offers processes against the local cluster, the
leader found from its lease in state.

- A standby holds no Mesos connection and answers every OfferService call UNAVAILABLE naming
  the leader.
- The leader killed with SIGKILL: the standby leads within the lease bound, subscribes again as
  the stored framework (a Mesos framework failover), its tasks keep running untouched, and a
  launch afterwards works; lifecycle's OffersClient follows the leader by itself.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from offers_helpers import RUNNING, framework_state, in_state, member_pids, port_open, wait_task, web_spec
from pydantic import ValidationError

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.leadership import LeadershipSettings
from mesos_stateful.clients.state import StateClient
from mesos_stateful.lifecycle.offers import OffersClient
from mesos_stateful.offers.driver import MesosDriver
from mesos_stateful.offers.server import framework_config
from mesos_stateful.offers.settings import OffersSettings, advertised
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.offers import Replicas, ServiceProcess, offers_processes
from mesos_stateful.testing.state import StateService

pytestmark = pytest.mark.slow

# The replicas run with the default lease settings; polling and a loaded machine add a little.
TAKEOVER_BOUND = LeadershipSettings().takeover_bound_seconds
SLACK_SECONDS = 2.0


@pytest_asyncio.fixture
async def replicas(
    state_service: StateService, local_cluster: RunningCluster, state_client: StateClient, tmp_path: Path
) -> AsyncIterator[Replicas]:
    """offers-1 (started first: the leader) and offers-2 (the standby), as processes."""
    group = offers_processes(state_service.endpoint, local_cluster.master_address, tmp_path / "offers")
    try:
        first = group.processes[0]
        first.start()
        await first.wait_serving()
        await group.wait_leader(state_client)
        await group.start()
        yield group
    finally:
        await group.stop()


async def cluster_of(process: ServiceProcess, timeout: float = 2.0) -> api.GetClusterResponse:
    async with grpc.aio.insecure_channel(process.endpoint) as channel:
        response: api.GetClusterResponse = await api_grpc.OfferServiceStub(channel).GetCluster(
            api.GetClusterRequest(), timeout=timeout
        )
        return response


async def wait_subscribed(process: ServiceProcess, timeout: float = 60.0) -> api.GetClusterResponse:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await cluster_of(process)
            if isinstance(last, api.GetClusterResponse) and last.subscribed:
                return last
        except grpc.aio.AioRpcError as error:
            last = error
        await asyncio.sleep(0.1)
    raise AssertionError(f"{process.name} not subscribed in {timeout}s; last: {last}\n{process.log_text()}")


def standby_of(group: Replicas, leader: ServiceProcess) -> ServiceProcess:
    return next(p for p in group.processes if p is not leader)


async def assert_standby_refuses(standby: ServiceProcess, leader: ServiceProcess) -> None:
    """Every OfferService call on ``standby`` is UNAVAILABLE naming ``leader``'s address."""
    expected = f"standby; the offers leader is at {leader.endpoint}"
    async with grpc.aio.insecure_channel(standby.endpoint) as channel:
        stub = api_grpc.OfferServiceStub(channel)
        calls: dict[str, Awaitable[object]] = {
            "Launch": stub.Launch(api.LaunchRequest(launch=web_spec("refused", 0)), timeout=5),
            "Kill": stub.Kill(api.KillRequest(task_id="refused-0.1"), timeout=5),
            "ListTasks": stub.ListTasks(api.ListTasksRequest(), timeout=5),
            "GetCluster": stub.GetCluster(api.GetClusterRequest(), timeout=5),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, name
            assert raised.value.details() == expected, name


async def test_a_standby_answers_unavailable_naming_the_leader(
    replicas: Replicas, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    leader = await replicas.leader(state_client)
    assert leader is replicas.processes[0]
    standby = standby_of(replicas, leader)
    first = await wait_subscribed(leader)
    await assert_standby_refuses(standby, leader)
    # One framework connection: the leader's.
    framework = framework_state(local_cluster, first.framework_id)
    assert framework["connected"]
    assert sum(1 for f in local_cluster.state()["frameworks"] if f["active"]) == 1
    assert "subscribing to" not in standby.log_text()


async def test_the_leader_killed_the_standby_takes_over_the_framework_and_its_tasks(
    replicas: Replicas, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    leader = await replicas.leader(state_client)
    assert leader is not None
    first = await wait_subscribed(leader)
    # Lifecycle's client: it finds the leader from the lease.
    offers = OffersClient(replicas.processes[1].endpoint, 10.0, state_client)
    try:
        specs = [web_spec("keep", ordinal) for ordinal in range(2)]
        for spec in specs:
            await offers.launch(spec)
        assert offers.endpoint == leader.endpoint
        tasks = [await wait_task(state_client, s.task_id, in_state(RUNNING)) for s in specs]
        pids = {t.task_id: member_pids(local_cluster, t.task_id) for t in tasks}
        assert all(pids.values())

        killed_at = time.monotonic()
        leader.kill()
        new_leader, seen_at = await replicas.wait_leader(state_client, other_than=leader)
        assert seen_at - killed_at <= TAKEOVER_BOUND + SLACK_SECONDS, (
            f"standby led {seen_at - killed_at:.2f}s after the kill (bound {TAKEOVER_BOUND:.2f}s)"
        )

        # Subscribed again as the same framework: Mesos kept its tasks (failover_timeout).
        second = await wait_subscribed(new_leader)
        assert second.framework_id == first.framework_id
        stored = await state_client.get(spb.KIND_FRAMEWORK, "")
        assert stored.framework.framework_id == first.framework_id
        framework = framework_state(local_cluster, first.framework_id)
        assert framework["connected"]
        assert sorted(t["id"] for t in framework["tasks"]) == ["keep-0.1", "keep-1.1"]
        assert all(t["state"] == "TASK_RUNNING" for t in framework["tasks"])
        for task in tasks:
            assert member_pids(local_cluster, task.task_id) == pids[task.task_id], "member untouched"
            assert port_open(task.host, task.ports["web"])
            record = await state_client.get(spb.KIND_TASK, task.task_id)
            assert record.task.state == RUNNING

        # A launch afterwards works, through the same client (it follows the leader).
        launched = await offers.launch(web_spec("keep", 2))
        assert offers.endpoint == new_leader.endpoint
        assert launched.state == types_pb2.TASK_STATE_QUEUED
        third = await wait_task(state_client, "keep-2.1", in_state(RUNNING))
        assert port_open(third.host, third.ports["web"])
        listed = await cluster_of(new_leader)
        assert sorted(t for a in listed.agents for t in a.task_ids) == ["keep-0.1", "keep-1.1", "keep-2.1"]

        # The old leader, started again, is a standby that names the new leader.
        leader.start()
        await leader.wait_serving()
        await assert_standby_refuses(leader, new_leader)
        assert (await replicas.leader(state_client)) is new_leader
    finally:
        await offers.close()


def test_leader_settings_and_the_advertised_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEFUL_OFFERS_LEADER_LEASE_DURATION_SECONDS", "4")
    monkeypatch.setenv("STATEFUL_OFFERS_LEADER_RENEW_DEADLINE_SECONDS", "3")
    monkeypatch.setenv("STATEFUL_OFFERS_LEADER_RETRY_PERIOD_SECONDS", "0.5")
    settings = OffersSettings()
    assert settings.leadership.takeover_bound_seconds == 4.5
    with pytest.raises(ValidationError, match="leader_renew_deadline_seconds"):
        OffersSettings(leader_renew_deadline_seconds=5.0)
    with pytest.raises(ValidationError, match="advertise"):
        OffersSettings(advertise="host-without-port")
    # Others reach a replica at its listen host and bound port unless told otherwise.
    assert advertised("127.0.0.1:0", "", 40123) == "127.0.0.1:40123"
    assert advertised("0.0.0.0:7200", "", 7200) == "127.0.0.1:7200"
    assert advertised("0.0.0.0:7200", "offers-1.example:7200", 7200) == "offers-1.example:7200"


async def test_a_stale_leader_resumed_does_not_take_the_framework_back(
    replicas: Replicas, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    """The leader frozen (SIGSTOP) while the standby takes over and subscribes as the same
    framework, then resumed: it stands down without subscribing again, and the new leader keeps
    the framework connection (a launch works after the resume)."""
    leader = await replicas.leader(state_client)
    assert leader is not None
    first = await wait_subscribed(leader)
    leader.send(signal.SIGSTOP)
    resumed = False
    try:
        stopped_at = time.monotonic()
        new_leader, seen_at = await replicas.wait_leader(state_client, other_than=leader)
        assert seen_at - stopped_at <= TAKEOVER_BOUND + SLACK_SECONDS
        second = await wait_subscribed(new_leader)
        assert second.framework_id == first.framework_id
        mark = len(leader.log_text())
        leader.send(signal.SIGCONT)
        resumed = True
        deadline = time.monotonic() + 15
        while "term 1 over; standby" not in leader.log_text()[mark:]:
            assert time.monotonic() < deadline, leader.log_text()[mark:]
            await asyncio.sleep(0.05)
    finally:
        if not resumed:
            leader.send(signal.SIGCONT)
    # For a while after the resume: the new leader stays subscribed, the old one never subscribes.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        view = await cluster_of(new_leader)
        assert view.subscribed and view.framework_id == first.framework_id
        assert framework_state(local_cluster, first.framework_id)["connected"]
        await asyncio.sleep(0.2)
    assert "subscribing to" not in leader.log_text()[mark:], leader.log_text()[mark:]
    assert (await replicas.leader(state_client)) is new_leader
    offers = OffersClient(leader.endpoint, 10.0, state_client)
    try:
        await offers.launch(web_spec("after", 0))
        task = await wait_task(state_client, "after-0.1", in_state(RUNNING))
        assert port_open(task.host, task.ports["web"])
    finally:
        await offers.close()
    await assert_standby_refuses(leader, new_leader)


async def test_a_leader_whose_framework_is_taken_ends_its_term_and_the_next_leader_subscribes(
    replicas: Replicas, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    """Another scheduler subscribes as our framework while the leader leads (as a stale leader's
    driver reconnecting would): the leader ends its term instead of staying halted, a leader is
    elected afresh and subscribes again (failing the intruder over, which stops by itself)."""
    leader = await replicas.leader(state_client)
    assert leader is not None
    first = await wait_subscribed(leader)
    lease = await replicas.lease(state_client)
    assert lease is not None
    # The service's own FrameworkInfo (Mesos refuses a failover that changes the principal, user
    # or checkpoint: validation::framework::validateUpdate), from another host.
    intruder = MesosDriver(
        local_cluster.master_address,
        framework_config(OffersSettings(master=local_cluster.master_address, hostname="intruder")),
    )
    await intruder.start(first.framework_id)
    try:
        deadline = time.monotonic() + 30
        while not intruder.failed_over.is_set():  # the next leader took the framework back
            assert time.monotonic() < deadline, f"never failed over; leader log:\n{leader.log_text()[-3000:]}"
            await asyncio.sleep(0.05)
        assert "another scheduler subscribed as framework" in leader.log_text()
        after = await replicas.lease(state_client)
        assert after is not None and after.term > lease.term
        current = await replicas.leader(state_client)
        assert current is not None
        second = await wait_subscribed(current)
        assert second.framework_id == first.framework_id
        # It stays connected: the intruder stopped on the ERROR instead of reconnecting.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert (await cluster_of(current)).subscribed
            await asyncio.sleep(0.2)
    finally:
        await intruder.stop(failover=True)
