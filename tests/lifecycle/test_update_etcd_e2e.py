"""Rolling update of a 3-peer etcd (issue 15, part 1): a config change restarts the peers in place
one at a time (each on its volume, keeping its member id), puts committed through a quorum
throughout, never two peers down at once, observed_generation reaches generation."""

from __future__ import annotations

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import InstanceWatch
from .test_drain_etcd_e2e import NAME, QuorumWriter, _running, etcd_drain_suite  # noqa: F401
from .test_update_e2e import update

pytestmark = pytest.mark.slow

DEADLINE = 240.0


async def test_etcd_peers_restart_in_place_one_at_a_time(etcd_drain_suite: Suite) -> None:  # noqa: F811
    suite = etcd_drain_suite
    await suite.create(NAME, 3, workload="etcd")
    before = await suite.wait_instance(
        NAME, lambda i: _running(i, 3) and i.observed_generation == 1, 180, "3 peers, generation 1 observed"
    )
    watch = InstanceWatch(suite.client, NAME)
    await watch.start()
    writer = QuorumWriter(suite)
    writer.start()
    try:

        async def writing() -> bool:
            return len(writer.committed) >= 20

        await wait_for(writing, 30, what="20 puts committed")
        await update(suite, ["config.snapshot-count"], name=NAME, config={"snapshot-count": "5000"})
        after = await suite.wait_instance(
            NAME,
            lambda i: _running(i, 3) and i.observed_generation == 2 and not plans.is_active(i.plan),
            DEADLINE,
            "generation 2 rolled out",
        )
        committed_then = len(writer.committed)

        async def still_committing() -> bool:
            return len(writer.committed) >= committed_then + 20

        await wait_for(still_committing, 30, what="puts committed after the update")
        await writer.stop()

        assert after.plan.name == plans.UPDATE and after.plan.status == plans.COMPLETE
        restarts = [s.member_id for s in after.plan.steps if plans.action_of(s) == plans.Action.RESTART]
        assert restarts == sorted(m.id for m in before.members)
        for m in after.members:
            was = next(b for b in before.members if b.id == m.id)
            assert m.incarnation > was.incarnation and m.volume.persistence_id == was.volume.persistence_id
            assert m.agent_id == was.agent_id
        # One peer at a time: never two peers down in any stored version of the member records.
        states: dict[str, int] = {m.id: m.state for m in before.members}
        most_down = 0
        for seen in watch.seen:
            if seen.member is not None:
                states[seen.member.id] = seen.member.state
                most_down = max(most_down, sum(s != T.MEMBER_STATE_RUNNING for s in states.values()))
        assert most_down == 1
    finally:
        await writer.stop()
        await watch.stop()
