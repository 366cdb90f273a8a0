"""Maintenance of agents running etcd peers (issue 11, item 8): the peers there are moved one at
a time (RemoveMember, a fresh volume on another agent, Start: it joins as a new peer), so the
cluster never loses more than one voter; every write made before is readable after, and a writer
keeps getting its writes committed (a quorum stays) while the peers move.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import (
    Suite,
    inverse_offer_answers,
    schedule_maintenance,
    workload_in_suite,
)
from mesos_stateful.testing.workloads import etcd_test_settings, wait_for
from mesos_stateful.workloads.etcd import members
from mesos_stateful.workloads.etcd.servicer import EtcdWorkload

from .e2e_helpers import InstanceWatch

pytestmark = pytest.mark.slow

NAME = "kv"
DEADLINE = 240.0


@pytest_asyncio.fixture
async def etcd_drain_suite(suite: Suite) -> AsyncIterator[Suite]:
    """The whole suite plus the etcd workload service, registered in its state service."""
    settings = etcd_test_settings(suite.state.endpoint)
    async with workload_in_suite(suite, EtcdWorkload(settings)) as running:
        yield running


def _url(m: T.Member) -> str:
    return f"http://{m.host}:{m.ports['client']}"


def _running(i: T.Instance, peers: int) -> bool:
    return (
        i.phase == T.INSTANCE_PHASE_RUNNING
        and len(i.members) == peers
        and all(m.state == T.MEMBER_STATE_RUNNING and m.role == T.ROLE_PEER for m in i.members)
    )


class QuorumWriter:
    """Puts ``w-<i>`` keys in a loop through whichever peer answers (read from the state service
    each round); keeps the keys etcd committed (a put answered OK needs a quorum)."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.committed: dict[str, str] = {}
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while True:
            instance = await self.suite.instance(NAME)
            for m in instance.members if instance is not None else []:
                if not m.host or "client" not in m.ports:
                    continue
                key, value = f"w-{i}", f"v-{i}"
                try:
                    async with members.Client(_url(m), 2) as c:
                        await c.put(key, value)
                except Exception:
                    self.failures += 1
                    continue
                self.committed[key] = value
                i += 1
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.mark.agents(5)  # one peer per agent (the default placement): 3 agents stay up
async def test_etcd_peers_are_drained_one_at_a_time_keeping_the_quorum(etcd_drain_suite: Suite) -> None:
    suite = etcd_drain_suite
    await suite.create(NAME, 3, workload="etcd")
    instance = await suite.wait_instance(NAME, lambda i: _running(i, 3), 180, "3 peers running")
    draining = sorted({m.agent_id for m in instance.members})[:2]
    moving = sorted(m.id for m in instance.members if m.agent_id in draining)
    watch = InstanceWatch(suite.client, NAME)
    await watch.start()
    writer = QuorumWriter(suite)
    writer.start()
    try:

        async def writing() -> bool:
            return len(writer.committed) >= 20

        await wait_for(writing, 30, what="20 puts committed")
        schedule_maintenance(suite, draining, time.time() + 3600)
        moved = await suite.wait_instance(
            NAME,
            lambda i: _running(i, 3) and all(m.agent_id not in draining for m in i.members),
            DEADLINE,
            f"every peer off {draining}",
        )
        committed_then = len(writer.committed)

        async def still_committing() -> bool:
            return len(writer.committed) >= committed_then + 20

        await wait_for(still_committing, 30, what="puts committed after the drain")
        await writer.stop()

        # One peer at a time: never two peers of the instance down (not RUNNING) in any stored
        # version of the member records while the drains ran.
        states: dict[str, int] = {m.id: m.state for m in instance.members}
        most_down = 0
        for seen in watch.seen:
            if seen.member is not None:
                states[seen.member.id] = seen.member.state
                most_down = max(most_down, sum(s != T.MEMBER_STATE_RUNNING for s in states.values()))
        assert most_down == 1

        drains = {
            i.plan.started_at.ToNanoseconds(): i.plan for i in watch.instances() if i.plan.name == plans.DRAIN
        }
        reasons = [drains[k].reason for k in sorted(drains)]
        assert sorted(r.split()[1] for r in reasons) == moving, reasons
        assert all(" off agent " in r and "(maintenance at " in r for r in reasons)

        # Every moved peer joined as a new etcd member (new incarnation); every committed put is
        # readable through every peer.
        async with members.Client(_url(moved.members[0]), 5) as c:
            names = sorted(x.name for x in await c.members())
        expected = sorted(f"{m.id}.{m.incarnation}" for m in moved.members)
        assert names == expected
        assert all(m.incarnation >= 2 for m in moved.members if m.id in moving)
        for m in moved.members:
            async with members.Client(_url(m), 5) as c:
                for key in list(writer.committed)[:: max(1, len(writer.committed) // 20)]:
                    assert await c.get(key) == writer.committed[key], f"{key} through {m.id}"

        async def accepted() -> bool:
            return all(
                any(a.get("status") == "ACCEPT" for a in inverse_offer_answers(suite, agent))
                for agent in draining
            )

        await wait_for(accepted, 60, what=f"the inverse offers of {draining} accepted")
    finally:
        await writer.stop()
        await watch.stop()


@pytest.mark.agents(3)  # one peer per agent: no agent free to move a peer to
async def test_a_peer_is_not_removed_for_a_drain_while_no_agent_can_take_it(etcd_drain_suite: Suite) -> None:
    """3 peers on 3 agents, one agent scheduled: the peer is not removed (the quorum keeps 3
    voters) nor stopped; the drain's remove-member step waits (DELAYED) saying why and retries."""
    suite = etcd_drain_suite
    await suite.create(NAME, 3, workload="etcd")
    instance = await suite.wait_instance(NAME, lambda i: _running(i, 3), 180, "3 peers running")
    peer = instance.members[0]
    schedule_maintenance(suite, [peer.agent_id], time.time() + 3600)
    expected = (
        f"no agent to move {peer.id} to: every other agent is scheduled for maintenance or holds a "
        f"member of {NAME}"
    )

    def waiting(i: T.Instance) -> bool:
        step = next((s for s in i.plan.steps if s.name == f"remove-member {peer.id}"), None)
        return (
            i.plan.name == plans.DRAIN
            and step is not None
            and step.status == plans.DELAYED
            and expected in step.message
            and step.attempts >= 2
        )

    blocked = await suite.wait_instance(NAME, waiting, 60, "the drain waiting for room")
    assert all(m.state == T.MEMBER_STATE_RUNNING for m in blocked.members)
    assert next(m for m in blocked.members if m.id == peer.id).task_id == peer.task_id
    async with members.Client(_url(blocked.members[1]), 5) as c:
        assert len(await c.members()) == 3  # still 3 voters
