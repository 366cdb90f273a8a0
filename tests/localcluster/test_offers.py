"""Offers: DECLINE filters (refuse_seconds), REVIVE, SUPPRESS, exact resource accounting."""

from __future__ import annotations

import ipaddress
import threading

from localcluster.harness import Framework, scalar, task_info
from localcluster.mesos_json import Json
from mesos_stateful.testing.cluster import RunningCluster


def _drain_offers(framework: Framework, count: int, refuse: float) -> dict[str, str]:
    """Take one offer per agent, declining each; returns agent id -> hostname."""
    agents: dict[str, str] = {}
    while len(agents) < count:
        offer = framework.offer()
        agents[offer["agent_id"]["value"]] = offer["hostname"]
        framework.driver.declineOffer(offer["id"], {"refuse_seconds": refuse})
    return agents


def test_offer_per_agent_with_own_hostname_and_ports(framework: Framework) -> None:
    offers = [framework.offer() for _ in range(3)]
    assert len({o["agent_id"]["value"] for o in offers}) == 3
    hostnames = sorted(o["hostname"] for o in offers)
    first = ipaddress.ip_address(hostnames[0])
    assert hostnames == [str(first), str(first + 1), str(first + 2)]
    begins = sorted(
        next(r for r in o["resources"] if r["name"] == "ports")["ranges"]["range"][0]["begin"] for o in offers
    )
    assert begins == [begins[0], begins[0] + 1000, begins[0] + 2000]


def test_decline_refuse_seconds_then_revive(framework: Framework) -> None:
    _drain_offers(framework, 3, refuse=1000)
    framework.none("offer", within=2.0)
    framework.driver.reviveOffers()
    framework.offer()


def test_decline_short_filter_expires(framework: Framework) -> None:
    agents = _drain_offers(framework, 3, refuse=1.0)
    offer = framework.offer(timeout=10)
    assert offer["agent_id"]["value"] in agents


def test_suppress_stops_offers(framework: Framework) -> None:
    framework.driver.suppressOffers()
    _drain_offers(framework, 3, refuse=0.0)
    framework.none("offer", within=2.0)
    framework.driver.reviveOffers()
    framework.offer()


def test_no_overcommit_on_racing_accepts(local_cluster: RunningCluster, framework: Framework) -> None:
    offer = framework.offer()
    first = task_info(offer, cpus=3.0)
    second = task_info(offer, cpus=3.0)
    errors: list[BaseException] = []

    def launch(task: dict[str, object]) -> None:
        try:
            framework.driver.launchTasks(offer["id"], [task])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=launch, args=(t,)) for t in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ids = {first["task_id"]["value"], second["task_id"]["value"]}
    outcomes: dict[str, Json] = {}
    while len(outcomes) < 2:
        status = framework.wait("update", lambda s: s["task_id"]["value"] in ids - set(outcomes))
        if status["state"] in ("TASK_RUNNING", "TASK_LOST"):
            outcomes[status["task_id"]["value"]] = status
    states = sorted(s["state"] for s in outcomes.values())
    assert states == ["TASK_LOST", "TASK_RUNNING"]
    lost = next(s for s in outcomes.values() if s["state"] == "TASK_LOST")
    assert lost["reason"] == "REASON_INVALID_OFFERS" and lost["source"] == "SOURCE_MASTER"
    agent = next(a for a in local_cluster.state()["slaves"] if a["id"] == offer["agent_id"]["value"])
    assert agent["used_resources"]["cpus"] == 3.0


def test_task_bigger_than_offer_is_task_error(local_cluster: RunningCluster, framework: Framework) -> None:
    offer = framework.offer()
    a = task_info(offer, cpus=2.5)
    b = task_info(offer, cpus=2.5)  # together more than the agent's 4 cpus
    framework.driver.launchTasks(offer["id"], [a, b])
    framework.update(a["task_id"]["value"], "TASK_RUNNING")
    error = framework.update(b["task_id"]["value"], "TASK_ERROR")
    assert error["reason"] == "REASON_TASK_INVALID"
    # What is left of the agent is offered again (after the default 5 s filter, or at once on REVIVE).
    framework.driver.reviveOffers()
    again = framework.offer(lambda o: o["agent_id"]["value"] == offer["agent_id"]["value"])
    assert scalar(again, "cpus") == 1.5


def test_resources_released_when_task_ends(local_cluster: RunningCluster, framework: Framework) -> None:
    offer = framework.offer()
    task = task_info(offer, cpus=4.0, mem=1024, spec={"finish": True})
    framework.driver.launchTasks(offer["id"], [task], {"refuse_seconds": 0})
    framework.update(task["task_id"]["value"], "TASK_FINISHED")
    # The freed resources come back in a new offer (the rest of the agent is already offered).
    framework.offer(
        lambda o: o["agent_id"]["value"] == offer["agent_id"]["value"] and scalar(o, "cpus") == 4.0
    )
    agent = next(a for a in local_cluster.state()["slaves"] if a["id"] == offer["agent_id"]["value"])
    assert agent["used_resources"].get("cpus", 0) == 0 and agent["offered_resources"]["mem"] == 8192.0


def test_command_task_is_task_error(framework: Framework) -> None:
    offer = framework.offer()
    task = task_info(offer)
    del task["executor"]
    task["command"] = {"value": "true"}
    framework.driver.launchTasks(offer["id"], [task])
    status = framework.update(task["task_id"]["value"], "TASK_ERROR")
    assert "command tasks not supported" in status["message"]


def test_launch_group_is_answered_with_task_error(framework: Framework) -> None:
    offer = framework.offer()
    task = task_info(offer)
    executor = task.pop("executor")
    operation = {
        "type": "LAUNCH_GROUP",
        "launch_group": {"executor": executor, "task_group": {"tasks": [task]}},
    }
    framework.driver.acceptOffers([offer["id"]], [operation])
    status = framework.update(task["task_id"]["value"], "TASK_ERROR")
    assert status["source"] == "SOURCE_MASTER"
