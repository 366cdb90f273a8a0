"""Issue 11 item 1: a framework failing over (a second SUBSCRIBE with its id while the first stream is
open) gets what a real master gives (``Master::failoverFramework`` / ``_failoverFramework``,
src/master/master.cpp): the old stream gets ERROR "Framework failed over" and is closed, the old
stream's offers are discarded, the new stream gets fresh offers, and an ACCEPT of an old offer id
launches nothing: TASK_LOST (TASK_DROPPED for PARTITION_AWARE), REASON_INVALID_OFFERS."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localcluster.harness import task_info
from localcluster.mesos_json import RawScheduler
from mesos_stateful.testing.cluster import RunningCluster, start_local_cluster


@pytest.mark.parametrize("partition_aware", [False, True])
def test_failover_discards_the_old_subscriptions_offers(
    local_cluster: RunningCluster, partition_aware: bool
) -> None:
    first = RawScheduler(local_cluster.master_address, name="failover")
    if partition_aware:
        first.info["capabilities"].append({"type": "PARTITION_AWARE"})
    second: RawScheduler | None = None
    try:
        fid = first.start()
        old = first.wait("OFFERS")["offers"]["offers"]
        assert old
        old_ids = {o["id"]["value"] for o in old}

        second = RawScheduler(local_cluster.master_address, name="failover", framework_id=fid)
        second.info["capabilities"] = list(first.info["capabilities"])
        assert second.start() == fid

        # The old scheduler is told, and its stream ends.
        error = first.wait("ERROR")
        assert error["error"]["message"] == "Framework failed over"
        assert first._thread is not None
        first._thread.join(10)
        assert not first._thread.is_alive(), "the old stream was not closed"

        # Fresh offers on the new stream, for every agent (the old ones were given back).
        fresh: dict[str, str] = {}
        while len(fresh) < len(local_cluster.agents):
            for offer in second.wait("OFFERS")["offers"]["offers"]:
                fresh[offer["agent_id"]["value"]] = offer["id"]["value"]
        assert not set(fresh.values()) & old_ids

        # ACCEPT of an old offer: nothing launches.
        stale = old[0]
        task = task_info(stale)
        second.accept(stale, [{"type": "LAUNCH", "launch": {"task_infos": [task]}}])
        status = second.update(task["task_id"]["value"], "TASK_DROPPED" if partition_aware else "TASK_LOST")
        assert status["reason"] == "REASON_INVALID_OFFERS"
        assert status["source"] == "SOURCE_MASTER"
        assert status["message"] == (
            f"Task launched with invalid offers: Offer {stale['id']['value']} is no longer valid"
        )
        state = local_cluster.state()
        (fw,) = [f for f in state["frameworks"] if f["id"] == fid]
        assert not fw["tasks"]
        second.check()
    finally:
        first._closed = True
        if first._conn is not None:
            first._conn.close()
        if second is not None:
            second.stop()


def test_failover_resends_inverse_offers(local_cluster: RunningCluster) -> None:
    """``_failoverFramework`` removes the framework's inverse offers too; the new stream is asked
    again (the allocator's outstanding marker was cleared)."""
    master = local_cluster.cluster.master
    first = RawScheduler(local_cluster.master_address, name="failover-inverse")
    second: RawScheduler | None = None
    try:
        fid = first.start()
        offer = first.wait("OFFERS")["offers"]["offers"][0]
        agent = next(a for a in local_cluster.agents if a.id == offer["agent_id"]["value"])
        schedule = {
            "windows": [
                {
                    "machine_ids": [{"hostname": agent.hostname, "ip": agent.ip}],
                    "unavailability": {"start": {"nanoseconds": time.time_ns()}},
                }
            ]
        }

        async def update() -> None:
            master.update_maintenance_schedule(schedule)

        local_cluster.run(update())
        old = first.wait("INVERSE_OFFERS")["inverse_offers"]["inverse_offers"][0]
        second = RawScheduler(local_cluster.master_address, name="failover-inverse", framework_id=fid)
        second.start()
        # New offers, hence resources there again, hence a new inverse offer for the agent.
        new = second.wait(
            "INVERSE_OFFERS",
            lambda e: any(io["agent_id"] == old["agent_id"] for io in e["inverse_offers"]["inverse_offers"]),
        )
        assert old["id"] not in [io["id"] for io in new["inverse_offers"]["inverse_offers"]]
        second.check()
    finally:
        first._closed = True
        if first._conn is not None:
            first._conn.close()
        if second is not None:
            second.stop()


def test_offer_timeout(tmp_path: Path) -> None:
    """``--offer_timeout`` (unset by default, as in Mesos): an offer left unanswered is rescinded."""
    cluster = start_local_cluster(tmp_path / "cluster", agents=1, offer_timeout=0.5)
    sched = RawScheduler(cluster.master_address, name="offer-timeout")
    try:
        sched.start()
        offer = sched.wait("OFFERS")["offers"]["offers"][0]
        rescind = sched.wait("RESCIND", timeout=10)
        assert rescind["rescind"]["offer_id"] == offer["id"]
        # Its resources are offered again.
        assert sched.wait("OFFERS")["offers"]["offers"][0]["id"] != offer["id"]
        sched.check()
    finally:
        sched.stop()
        cluster.stop()
