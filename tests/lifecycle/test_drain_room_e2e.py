"""A drain finds no room on a free agent the offers service knows is scheduled for maintenance
(issue 11): GetCluster's ``Agent.maintenance`` comes from the agent's offers (their
``unavailability``) even where none of our tasks runs, so Mesos sends us no inverse offer for it.

Real parts: the local cluster (its master's maintenance schedule), offers, state, etcd, the
lifecycle, the gateway and the Redis workload with real redis-servers.
"""

from __future__ import annotations

import time

import pytest

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as opb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite, schedule_maintenance

pytestmark = pytest.mark.slow


def _step(plan: T.Plan, name: str) -> T.Step | None:
    return next((s for s in reversed(plan.steps) if s.name == name), None)


@pytest.mark.agents(5)  # 3 members, 2 free agents
async def test_no_member_is_stopped_while_every_agent_is_scheduled_and_the_drain_goes_on_once_two_are_not(
    suite: Suite,
) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    held = {m.agent_id for m in instance.members}
    everyone = [a.id for a in suite.cluster.agents]
    free = [a for a in everyone if a not in held]
    assert len(held) == 3 and len(free) == 2
    start = time.time() + 3600
    schedule_maintenance(suite, everyone, start)

    def waiting(i: T.Instance) -> bool:
        if i.plan.name != plans.DRAIN:
            return False
        for m in i.members:
            step = _step(i.plan, f"drain {m.id}")
            if (
                step is not None
                and step.status == plans.DELAYED
                and f"no agent to move {m.id} to: every other agent is scheduled for maintenance"
                in step.message
                and step.attempts >= 2  # tried again, still not stopped
            ):
                return True
        return False

    blocked = await suite.wait_instance("cache", waiting, 90, "the drain waiting for room")
    # No member was stopped: the same tasks run on the same volumes.
    assert {(m.id, m.task_id, m.volume.persistence_id) for m in blocked.members} == {
        (m.id, m.task_id, m.volume.persistence_id) for m in instance.members
    }
    assert all(m.state == T.MEMBER_STATE_RUNNING for m in blocked.members)
    tasks = await suite.tasks("cache")
    for m in blocked.members:
        assert tasks[m.task_id].state == T.TASK_STATE_RUNNING and not tasks[m.task_id].kill_requested
    # The offers service says every agent is scheduled, the free ones too (no task of ours there).
    cluster = await suite.offers.stub.GetCluster(opb.GetClusterRequest())
    assert {a.agent_id for a in cluster.agents if a.HasField("maintenance")} == set(everyone)

    # Two free agents are unscheduled: the drain proceeds, members move off their agents.
    schedule_maintenance(suite, sorted(held), start)

    def moved(i: T.Instance) -> bool:
        return any(m.agent_id in free and m.state == T.MEMBER_STATE_RUNNING for m in i.members)

    await suite.wait_instance("cache", moved, 120, "a member moved to an unscheduled agent")
