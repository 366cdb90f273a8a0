"""Many concurrent launches on the 3 agents of the local cluster: placement, ports, resources."""

from __future__ import annotations

import asyncio
import re

import pytest
from offers_helpers import RUNNING, framework_state, in_state, launch, wait_task, web_spec

from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.offers import OffersService

pytestmark = pytest.mark.slow

MEMBERS = {"alpha": 3, "beta": 3, "gamma": 2, "delta": 2}


def port_range(agent_state: dict[str, object]) -> tuple[int, int]:
    resources = agent_state["resources"]
    assert isinstance(resources, dict)
    match = re.fullmatch(r"\[(\d+)-(\d+)\]", str(resources["ports"]))
    assert match is not None
    return int(match.group(1)), int(match.group(2))


async def test_ten_concurrent_launches_on_three_agents(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    # 1 cpu each, at most 1 member of an instance per agent, 4 cpus per agent: the 10 fit only
    # if nothing is over-committed and the per-agent limit holds.
    specs = [
        web_spec(instance, ordinal, cpus=1.0, mem_mb=256)
        for instance, count in MEMBERS.items()
        for ordinal in range(count)
    ]
    await asyncio.gather(*(launch(offers_service, spec) for spec in specs))
    tasks = await asyncio.gather(*(wait_task(state_client, s.task_id, in_state(RUNNING)) for s in specs))

    # Placement: at most one member of an instance per agent.
    placed = {(t.agent_id, t.instance) for t in tasks}
    assert len(placed) == len(tasks)
    assert len({t.agent_id for t in tasks}) == 3

    # Ports: distinct and inside the range of the agent each task runs on.
    state = local_cluster.state()
    agents = {a["id"]: a for a in state["agents"]}
    ports = [t.ports["web"] for t in tasks]
    assert len(set(ports)) == len(ports)
    for task in tasks:
        begin, end = port_range(agents[task.agent_id])
        assert begin <= task.ports["web"] <= end
        assert task.host == agents[task.agent_id]["hostname"]

    # Resources: what the master counts as used equals what we launched, within each agent.
    cluster = await offers_service.wait_subscribed()
    framework = framework_state(local_cluster, cluster.framework_id)
    assert sorted(t["id"] for t in framework["tasks"]) == sorted(s.task_id for s in specs)
    for agent_id, agent in agents.items():
        ours = [t for t in tasks if t.agent_id == agent_id]
        used = agent["used_resources"]
        assert used["cpus"] <= agent["resources"]["cpus"] + 1e-9
        assert used["mem"] <= agent["resources"]["mem"] + 1e-9
        assert used["cpus"] == pytest.approx(sum(t.launch.resources.cpus for t in ours))
        assert used["mem"] == pytest.approx(sum(t.launch.resources.mem_mb for t in ours))

    # GetCluster: every agent lists our tasks on it, nothing is pending.
    cluster = await offers_service.wait_cluster(lambda c: not c.pending and len(c.agents) == 3)
    listed = {tid: a.agent_id for a in cluster.agents for tid in a.task_ids}
    assert listed == {t.task_id: t.agent_id for t in tasks}

    # Three more members than there is room for: one fits on each agent with a free cpu (at most
    # one epsilon per agent; how the first ten spread depends on which offers were in hand), the
    # rest wait; no agent is ever over-committed.
    free_cpus = {
        a["id"]: a["resources"]["cpus"] - a["used_resources"]["cpus"] for a in local_cluster.state()["agents"]
    }
    room = [agent_id for agent_id, free in free_cpus.items() if free >= 1.0]
    assert sum(free_cpus.values()) == pytest.approx(2.0) and 1 <= len(room) <= 2
    extra = [web_spec("epsilon", ordinal, cpus=1.0, mem_mb=256) for ordinal in range(3)]
    await asyncio.gather(*(launch(offers_service, spec) for spec in extra))
    cluster = await offers_service.wait_cluster(
        lambda c: (
            len(c.pending) == 3 - len(room) and sum(len(a.task_ids) for a in c.agents) == 10 + len(room)
        ),
        timeout=60,
    )
    assert all(p.reason.startswith("waiting: ") for p in cluster.pending)
    waiting = {p.task_id for p in cluster.pending}
    running = [
        await wait_task(state_client, s.task_id, in_state(RUNNING)) for s in extra if s.task_id not in waiting
    ]
    assert sorted(t.agent_id for t in running) == sorted(room)
    for agent in local_cluster.state()["agents"]:
        assert agent["used_resources"]["cpus"] <= agent["resources"]["cpus"] + 1e-9
