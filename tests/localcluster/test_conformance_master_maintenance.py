"""Issue 11 item 8 (master side): maintenance as the real master does it (docs/maintenance.md;
``Master::Http::*Maintenance*`` in src/master/http.cpp, src/master/maintenance.cpp, inverse offers in
``HierarchicalAllocatorProcess::generateInverseOffers`` and ``Master::inverseOffer``). Every event is
parsed strictly against the project's mesos.v1 protos (RawScheduler), as are the schedule and the
cluster status against mesos.v1.maintenance."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from localcluster.harness import task_info
from localcluster.mesos_json import Json, RawScheduler, parse_strict
from mesos_stateful.api.mesos.v1.maintenance import maintenance_pb2
from mesos_stateful.localcluster.agent import Agent
from mesos_stateful.localcluster.master import CallError
from mesos_stateful.testing.cluster import RunningCluster

HOUR_NS = 3600 * 10**9


@pytest.fixture
def sched(local_cluster: RunningCluster) -> Iterator[RawScheduler]:
    s = RawScheduler(local_cluster.master_address, name="maintenance")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def on_master(cluster: RunningCluster, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a Master method on the cluster's loop (what the operator API does)."""

    async def call() -> Any:
        return fn(*args)

    return cluster.run(call())


def machine(agent: Agent) -> Json:
    return {"hostname": agent.hostname, "ip": agent.ip}


def window(machines: list[Json], start_ns: int, duration_ns: int | None = HOUR_NS) -> Json:
    unavailability: Json = {"start": {"nanoseconds": start_ns}}
    if duration_ns is not None:
        unavailability["duration"] = {"nanoseconds": duration_ns}
    return {"machine_ids": machines, "unavailability": unavailability}


def cluster_status(cluster: RunningCluster) -> Json:
    status: Json = on_master(cluster, cluster.cluster.master.maintenance_status)
    parse_strict(status, maintenance_pb2.ClusterStatus())
    return status


def agent_of(cluster: RunningCluster, agent_id: str) -> Agent:
    return next(a for a in cluster.agents if a.id == agent_id)


def launch(sched: RawScheduler) -> tuple[Json, Json]:
    offer = sched.offer()
    task = task_info(offer)
    sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [task]}}])
    sched.update(task["task_id"]["value"], "TASK_RUNNING")
    return offer, task


def agent_offer(sched: RawScheduler, agent_id: str, unavailable: bool) -> Json:
    """The next offer of that agent; it carries ``unavailability`` exactly when ``unavailable``
    (offers made before a schedule change are rescinded, so older ones are skipped)."""
    return sched.offer(
        lambda o: o["agent_id"]["value"] == agent_id and ("unavailability" in o) == unavailable
    )


def test_inverse_offers_for_a_draining_agent(local_cluster: RunningCluster, sched: RawScheduler) -> None:
    master = local_cluster.cluster.master
    offer, _task = launch(sched)
    aid = offer["agent_id"]["value"]
    agent = agent_of(local_cluster, aid)
    start = time.time_ns() + HOUR_NS
    schedule = {"windows": [window([machine(agent)], start)]}
    parse_strict(schedule, maintenance_pb2.Schedule())
    on_master(local_cluster, master.update_maintenance_schedule, schedule)

    got = on_master(local_cluster, master.maintenance_schedule)
    parse_strict(got, maintenance_pb2.Schedule())
    assert got == schedule
    assert on_master(local_cluster, master.machine_mode, agent) == "DRAINING"
    unavailability = {"start": {"nanoseconds": start}, "duration": {"nanoseconds": HOUR_NS}}
    assert on_master(local_cluster, master.unavailability, agent) == unavailability
    for other in local_cluster.agents:
        if other is not agent:
            assert on_master(local_cluster, master.machine_mode, other) == "UP"

    # One inverse offer, for the agent where the framework runs a task.
    event = sched.wait("INVERSE_OFFERS")
    (inverse,) = event["inverse_offers"]["inverse_offers"]
    assert inverse["agent_id"] == {"value": aid}
    assert inverse["framework_id"] == {"value": sched.framework_id}
    assert inverse["unavailability"] == unavailability
    assert inverse["url"]["address"]["ip"] == agent.ip
    # Offers of that agent say when it goes away.
    assert agent_offer(sched, aid, unavailable=True)["unavailability"] == unavailability
    assert cluster_status(local_cluster) == {"draining_machines": [{"id": machine(agent)}]}

    # DECLINE: recorded; a new inverse offer once the filter (refuse_seconds) expired.
    body = {"inverse_offer_ids": [inverse["id"]], "filters": {"refuse_seconds": 0.5}}
    assert sched.call("DECLINE_INVERSE_OFFERS", body) == 202
    (answer,) = cluster_status(local_cluster)["draining_machines"][0]["statuses"]
    assert answer["status"] == "DECLINE" and answer["framework_id"] == {"value": sched.framework_id}
    again = sched.wait("INVERSE_OFFERS")["inverse_offers"]["inverse_offers"][0]
    assert again["id"] != inverse["id"] and again["agent_id"] == {"value": aid}

    # ACCEPT: recorded (the last answer replaces the previous one).
    body = {"inverse_offer_ids": [again["id"]], "filters": {"refuse_seconds": 0.5}}
    assert sched.call("ACCEPT_INVERSE_OFFERS", body) == 202
    (answer,) = cluster_status(local_cluster)["draining_machines"][0]["statuses"]
    assert answer["status"] == "ACCEPT"
    # Still running there: asked again after the filter.
    third = sched.wait("INVERSE_OFFERS")["inverse_offers"]["inverse_offers"][0]

    # Unscheduled: the outstanding inverse offer is rescinded, the machine is UP again, offers
    # carry no unavailability.
    on_master(local_cluster, master.update_maintenance_schedule, {"windows": []})
    rescind = sched.wait("RESCIND_INVERSE_OFFER")
    assert rescind["rescind_inverse_offer"]["inverse_offer_id"] == third["id"]
    assert on_master(local_cluster, master.machine_mode, agent) == "UP"
    assert on_master(local_cluster, master.maintenance_schedule) == {}
    assert cluster_status(local_cluster) == {}
    agent_offer(sched, aid, unavailable=False)
    sched.check()


def test_no_inverse_offer_without_resources_there(local_cluster: RunningCluster, sched: RawScheduler) -> None:
    """Only frameworks with resources offered or allocated on the agent are asked
    (``generateInverseOffers``): a suppressed framework with no task there is not."""
    master = local_cluster.cluster.master
    offer, _task = launch(sched)
    busy = offer["agent_id"]["value"]
    assert sched.call("SUPPRESS") == 202
    # Wait for the offers outstanding at SUPPRESS to be declined.
    deadline = time.monotonic() + 10
    while on_master(local_cluster, lambda: list(master.offers)):
        sched.check()
        for event in list(sched.backlog):
            if event["type"] == "OFFERS":
                sched.backlog.remove(event)
                for o in event["offers"]["offers"]:
                    sched.decline(o)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    idle = next(a for a in local_cluster.agents if a.id != busy)
    on_master(
        local_cluster,
        master.update_maintenance_schedule,
        {"windows": [window([machine(idle), machine(agent_of(local_cluster, busy))], time.time_ns())]},
    )
    event = sched.wait("INVERSE_OFFERS")
    assert [io["agent_id"]["value"] for io in event["inverse_offers"]["inverse_offers"]] == [busy]
    sched.check()
    assert not [
        io
        for e in sched.seen
        if e["type"] == "INVERSE_OFFERS"
        for io in e["inverse_offers"]["inverse_offers"]
        if io["agent_id"]["value"] == idle.id
    ]


def test_maintenance_validation_as_mesos_words_it(local_cluster: RunningCluster) -> None:
    master = local_cluster.cluster.master
    agent = local_cluster.agents[0]
    m = machine(agent)
    rendered = json.dumps(m, separators=(",", ":"))

    def refused(fn: Callable[..., Any], arg: Any) -> str:
        with pytest.raises(CallError) as error:
            on_master(local_cluster, fn, arg)
        assert error.value.status == 400
        return error.value.message

    now = time.time_ns()
    update = master.update_maintenance_schedule
    assert (
        refused(update, {"windows": [window([], now)]})
        == "List of machines in the maintenance window is empty"
    )
    assert refused(update, {"windows": [window([m], now, -1)]}) == "Unavailability 'duration' is negative"
    assert refused(update, {"windows": [window([m], now), window([m], now)]}) == (
        f"Machine '{rendered}' appears more than once in the schedule"
    )
    assert (
        refused(update, {"windows": [window([{}], now)]})
        == "Both 'hostname' and 'ip' for a machine are empty"
    )
    assert (
        refused(update, {"windows": [window([{"ip": "300.1.1.1"}], now)]})
        == "Failed to parse IPv4: 300.1.1.1"
    )
    assert refused(master.start_maintenance, []) == "List of machines is empty"
    assert (
        refused(master.start_maintenance, [m])
        == f"Machine '{rendered}' is not part of a maintenance schedule"
    )
    assert (
        refused(master.stop_maintenance, [m]) == f"Machine '{rendered}' is not part of a maintenance schedule"
    )

    on_master(local_cluster, update, {"windows": [window([m], now)]})
    assert refused(master.stop_maintenance, [m]) == (
        f"Machine '{rendered}' is not in DOWN mode and cannot be brought up"
    )
    on_master(local_cluster, master.start_maintenance, [m])
    assert refused(master.start_maintenance, [m]) == (
        f"Machine '{rendered}' is not in DRAINING mode and cannot be brought down"
    )
    assert refused(update, {"windows": []}) == (
        f"Machine '{rendered}' is deactivated and cannot be removed from the schedule"
    )
    # The hostname matches case-insensitively (MachineID equality).
    upper = {"hostname": agent.hostname.upper(), "ip": agent.ip}
    on_master(local_cluster, master.stop_maintenance, [upper])
    assert on_master(local_cluster, master.maintenance_schedule) == {}


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_start_and_stop_maintenance(local_cluster: RunningCluster, sched: RawScheduler) -> None:
    """START_MAINTENANCE: the agent is shut down and removed (its tasks TASK_LOST,
    REASON_AGENT_REMOVED, FAILURE agent lost); it cannot register while DOWN; STOP_MAINTENANCE:
    it may register again."""
    master = local_cluster.cluster.master
    offer, task = launch(sched)
    aid = offer["agent_id"]["value"]
    agent = agent_of(local_cluster, aid)
    m = machine(agent)
    on_master(local_cluster, master.update_maintenance_schedule, {"windows": [window([m], time.time_ns())]})
    sched.wait("INVERSE_OFFERS")
    on_master(local_cluster, master.start_maintenance, [m])

    lost = sched.update(task["task_id"]["value"], "TASK_LOST")
    assert lost["reason"] == "REASON_AGENT_REMOVED" and lost["source"] == "SOURCE_MASTER"
    assert lost["message"] == f"Agent {agent.hostname} removed: Operator initiated 'Machine DOWN'"
    sched.wait(
        "FAILURE",
        lambda e: e["failure"].get("agent_id") == {"value": aid} and "executor_id" not in e["failure"],
    )
    assert aid not in [a["id"] for a in local_cluster.state()["slaves"]]
    assert cluster_status(local_cluster) == {"down_machines": [m]}
    assert on_master(local_cluster, master.machine_mode, agent) == "DOWN"
    wait_for(lambda: not agent.alive and not agent.live_sessions())

    # Restarted while DOWN: refused and shut down again.
    restarted = local_cluster.start_agent(aid)
    wait_for(lambda: not restarted.alive)
    assert aid not in [a["id"] for a in local_cluster.state()["slaves"]]

    on_master(local_cluster, master.stop_maintenance, [m])
    assert on_master(local_cluster, master.machine_mode, agent) == "UP"
    assert cluster_status(local_cluster) == {}
    local_cluster.start_agent(aid)
    wait_for(lambda: aid in [a["id"] for a in local_cluster.state()["slaves"]])
    assert "unavailability" not in agent_offer(sched, aid, unavailable=False)
    sched.check()


def test_machine_down_while_the_agent_is_cut_off(local_cluster: RunningCluster, sched: RawScheduler) -> None:
    """The shutdown cannot reach an agent behind a partition; it is removed all the same, and when
    the link heals it re-registers, is refused ("Machine is `DOWN`") and shuts its executors down."""
    master = local_cluster.cluster.master
    offer, task = launch(sched)
    aid = offer["agent_id"]["value"]
    agent = agent_of(local_cluster, aid)
    m = machine(agent)
    local_cluster.stop_agent(aid)
    on_master(local_cluster, master.update_maintenance_schedule, {"windows": [window([m], time.time_ns())]})
    on_master(local_cluster, master.start_maintenance, [m])
    lost = sched.update(task["task_id"]["value"], "TASK_LOST")
    assert lost["reason"] == "REASON_AGENT_REMOVED"
    assert agent.alive and agent.live_sessions()  # still running behind the partition

    local_cluster.start_agent(aid)  # the link heals
    wait_for(lambda: not agent.alive and not agent.live_sessions())
    assert aid not in [a["id"] for a in local_cluster.state()["slaves"]]
    sched.check()
