"""Issue 11 items 4 and 5: offers list the framework's executors already running on the agent
(``Master::offer``: ``executor_ids``), and every TASK_UNREACHABLE the master sends carries
``unreachable_time``, the time it marked the agent unreachable (``Master::markUnreachable``, and
``Master::_reconcileTasks`` for reconciliation and for a KILL of such a task)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localcluster.harness import task_info
from localcluster.mesos_json import Json, RawScheduler
from mesos_stateful.testing.cluster import RunningCluster


@pytest.fixture
def sched(local_cluster: RunningCluster) -> Iterator[RawScheduler]:
    s = RawScheduler(local_cluster.master_address, name="tasks")
    s.info["capabilities"].append({"type": "PARTITION_AWARE"})
    s.start()
    try:
        yield s
    finally:
        s.stop()


def launch(sched: RawScheduler, executor_id: str | None = None) -> tuple[Json, Json]:
    offer = sched.offer()
    task = task_info(offer, executor_id=executor_id)
    sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [task]}}])
    sched.update(task["task_id"]["value"], "TASK_RUNNING")
    return offer, task


def test_offers_carry_the_executors_running_on_the_agent(sched: RawScheduler) -> None:
    offer, _task = launch(sched, executor_id="exec-shared")
    aid = offer["agent_id"]["value"]
    for _ in range(50):
        event = sched.wait("OFFERS")
        for o in event["offers"]["offers"]:
            if o["agent_id"]["value"] == aid:
                assert o["executor_ids"] == [{"value": "exec-shared"}]
                sched.check()
                return
            assert "executor_ids" not in o  # nothing of ours runs on the other agents
            sched.decline(o)
    pytest.fail("no offer of the agent running the executor")


def test_task_unreachable_carries_unreachable_time(
    local_cluster: RunningCluster, sched: RawScheduler
) -> None:
    offer, task = launch(sched)
    tid, aid = task["task_id"]["value"], offer["agent_id"]["value"]
    local_cluster.stop_agent(aid)  # a partition: the master marks it unreachable after the pings

    marked = sched.update(tid, "TASK_UNREACHABLE")
    assert marked["reason"] == "REASON_AGENT_REMOVED"
    when = int(marked["unreachable_time"]["nanoseconds"])
    assert when > 0

    def reconciled(body: Json) -> Json:
        assert sched.call("RECONCILE", body) == 202
        return sched.update(tid, "TASK_UNREACHABLE")

    explicit = reconciled({"tasks": [{"task_id": {"value": tid}, "agent_id": {"value": aid}}]})
    implicit = reconciled({})
    assert sched.call("KILL", {"task_id": {"value": tid}, "agent_id": {"value": aid}}) == 202
    killed = sched.update(tid, "TASK_UNREACHABLE")
    for status in (explicit, implicit, killed):
        assert status["reason"] == "REASON_RECONCILIATION"
        assert int(status["unreachable_time"]["nanoseconds"]) == when

    # A task the master does not know, on the unreachable agent (``_reconcileTasks`` case 4).
    assert (
        sched.call("RECONCILE", {"tasks": [{"task_id": {"value": "nope"}, "agent_id": {"value": aid}}]})
        == 202
    )
    unknown = sched.update("nope", "TASK_UNREACHABLE")
    assert int(unknown["unreachable_time"]["nanoseconds"]) == when

    # The agent comes back: the task runs again, and is no longer unreachable.
    local_cluster.start_agent(aid)
    back = sched.update(tid, "TASK_RUNNING")
    assert "unreachable_time" not in back
    assert sched.call("RECONCILE", {"tasks": [{"task_id": {"value": tid}}]}) == 202
    assert "unreachable_time" not in sched.update(tid, "TASK_RUNNING")
    sched.check()


def test_launch_is_validated_as_task_validate(sched: RawScheduler) -> None:
    """``task::validate`` (src/master/validation.cpp): TASK_ERROR, REASON_TASK_INVALID, Mesos's text."""
    offer = sched.offer()
    bad_id = task_info(offer, task_id="a/b")
    negative = task_info(offer, task_id="neg")
    negative["resources"][0]["scalar"]["value"] = -1
    sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [bad_id, negative]}}])
    first = sched.update("a/b", "TASK_ERROR")
    assert (first["reason"], first["message"]) == ("REASON_TASK_INVALID", "'a/b' contains invalid characters")
    second = sched.update("neg", "TASK_ERROR")
    assert second["reason"] == "REASON_TASK_INVALID"
    assert second["message"] == "Resource 'cpus:-1' is invalid: Invalid scalar resource: value <= 0"
    sched.check()
