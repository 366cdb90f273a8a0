"""Issue 11 item 1: a framework failing over (a second SUBSCRIBE with its id while the first stream is
open) gets what a real master gives (``Master::failoverFramework`` / ``_failoverFramework``,
src/master/master.cpp): the old stream gets ERROR "Framework failed over" and is closed, the old
stream's offers are discarded, the new stream gets fresh offers, and an ACCEPT of an old offer id
launches nothing: TASK_LOST (TASK_DROPPED for PARTITION_AWARE), REASON_INVALID_OFFERS."""

from __future__ import annotations

import pytest

from localcluster.harness import task_info
from localcluster.mesos_json import RawScheduler
from mesos_stateful.testing.cluster import RunningCluster


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
