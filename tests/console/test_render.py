"""The console's HTML without a browser: names escaped, the timeline's rows and widths from
Step.started_at / finished_at, what changed between two instances, error pages."""

from __future__ import annotations

import re

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.console import render
from mesos_stateful.lifecycle.plans import timestamp

EVIL = "<script>alert('x')</script>"


def _instance(name: str = "db") -> T.Instance:
    instance = T.Instance(
        spec=T.InstanceSpec(name=name, workload="redis", replicas=3), phase=T.INSTANCE_PHASE_RECOVERING
    )
    instance.members.add(
        id=f"{name}-0",
        role=T.ROLE_MASTER,
        state=T.MEMBER_STATE_RUNNING,
        host="10.0.0.1",
        ports={"client": 6379},
    )
    replica = instance.members.add(id=f"{name}-1", role=T.ROLE_SLAVE, state=T.MEMBER_STATE_LOST)
    replica.health.conditions.add(type=T.CONDITION_TYPE_REACHABLE, ok=False, reason="Refused", message=EVIL)
    plan = instance.plan
    plan.name, plan.status, plan.reason = "recover", T.STEP_STATUS_STARTING, "master lost"
    plan.detected_at.CopyFrom(timestamp(1000.0))
    plan.started_at.CopyFrom(timestamp(1000.5))
    fence = plan.steps.add(name="fence db-2", status=T.STEP_STATUS_COMPLETE)
    fence.started_at.CopyFrom(timestamp(1001.0))
    fence.finished_at.CopyFrom(timestamp(1002.0))
    fence.fence.method = T.FENCE_METHOD_PROCESS_GONE
    failover = plan.steps.add(name="failover", status=T.STEP_STATUS_STARTING, attempts=2)
    failover.started_at.CopyFrom(timestamp(1003.0))
    failover.decision.promote_member_id = "db-1"
    failover.decision.candidate_ids.extend(["db-1", "db-0"])
    plan.steps.add(name="relaunch db-2", status=T.STEP_STATUS_PENDING)
    return instance


def test_names_and_messages_are_escaped() -> None:
    instance = _instance(EVIL)
    for text in (
        render.instances_page([instance]),
        render.instance_page(instance, [render.Event(1.0, EVIL)], now=1004.0),
        render.error_page("Not found", f"instance {EVIL!r} does not exist"),
    ):
        assert EVIL not in text
        assert "&lt;script&gt;" in text


def test_instance_list_shows_phase_ready_and_plan() -> None:
    text = render.instances_page([_instance("db")])
    row = re.search(r"<tr data-name='db'>.*?</tr>", text)
    assert row is not None
    assert "RECOVERING" in row.group(0) and ">1/3<" in row.group(0) and "recover STARTING" in row.group(0)
    assert "No instances" in render.instances_page([])


def test_instance_page_members_plan_and_decisions() -> None:
    text = render.instance_page(_instance(), [], now=1004.0)
    assert "client 10.0.0.1:6379" in text
    assert "REACHABLE: Refused" in text
    assert "fence: PROCESS_GONE" in text
    assert "promote db-1" in text and "candidates db-1, db-0" in text
    assert "/api/instances/db" in text  # live updates from the JSON endpoint


def test_timeline_rows_positioned_from_detection() -> None:
    text = render.timeline(_instance().plan, now=1004.0)
    assert "detected" in text and "4.00 s" in text  # detected 1000 -> now 1004
    bars = dict(re.findall(r"data-step='([^']+)'>.*?(?:style='left:[\d.]+%;width:([\d.]+)%'|not run)", text))
    assert float(bars["fence db-2"]) == 25.0  # 1 s of 4
    assert float(bars["failover"]) == 25.0  # running: up to now
    assert "relaunch db-2" in text and "not run" in text
    assert "gap" in text  # 1000 -> 1001 before the fence


def test_timeline_is_a_waterfall_with_detection_and_writable() -> None:
    """Every step row: start -> end as offsets from the first sign, its duration and the gap before
    it; a detection row (first sign -> plan made, the metric's definition); the time the new
    master became writable (its master-running's finished_at) next to detection."""
    instance = _instance()
    plan = instance.plan
    plan.steps[1].status = T.STEP_STATUS_COMPLETE
    plan.steps[1].finished_at.CopyFrom(timestamp(1003.5))
    running = plan.steps.add(name="master-running db-1", member_id="db-1", status=T.STEP_STATUS_COMPLETE)
    running.started_at.CopyFrom(timestamp(1004.0))
    running.finished_at.CopyFrom(timestamp(1004.25))
    assert render.writable_at(plan) == 1004.25
    text = render.timeline(plan, now=1010.0)
    rows = {
        match.group(1): row
        for row in text.split("<div class='tlrow ")
        if (match := re.match(r"' data-step='([^']+)'", row)) is not None
    }
    assert "+1.000s &rarr; +2.000s" in rows["fence db-2"] and "500 ms gap" in rows["fence db-2"]
    assert "+3.000s &rarr; +3.500s" in rows["failover"] and "1.00 s gap" in rows["failover"]
    assert "+4.000s &rarr; +4.250s" in rows["master-running db-1"] and "250 ms" in rows["master-running db-1"]
    assert "not run" in rows["relaunch db-2"]
    detection = re.search(r"id=detection-row>(.*?)<div class='tlrow", text)
    assert detection is not None and "+0.000s &rarr; +0.500s" in detection.group(1)
    assert "<span id=detection>detection 500 ms" in text
    writable = re.search(r"<span id=writable>(.*?)</span>", text)
    assert writable is not None and "00:16:44.250 UTC" in writable.group(1)
    assert "<b>4.25 s</b> after detected" in writable.group(1)
    # Before the new master's master-running is COMPLETE: not writable yet, nothing claimed.
    running.status = T.STEP_STATUS_STARTING
    assert render.writable_at(plan) is None and "id=writable" not in render.timeline(plan, now=1010.0)


def test_changes_between_two_instances() -> None:
    old = _instance()
    new = T.Instance()
    new.CopyFrom(old)
    new.phase = T.INSTANCE_PHASE_RUNNING
    new.members[1].role = T.ROLE_MASTER
    new.members[1].state = T.MEMBER_STATE_RUNNING
    new.plan.steps[1].status = T.STEP_STATUS_COMPLETE
    texts = render.changes(old, new)
    assert "phase RECOVERING -> RUNNING" in texts
    assert "member db-1 role SLAVE -> MASTER" in texts
    assert "member db-1 LOST -> RUNNING" in texts
    assert "step failover COMPLETE" in texts
    assert not any(t.startswith("plan ") for t in texts)  # only a plan's end is an event
    new.plan.status = T.STEP_STATUS_COMPLETE
    assert "plan recover STARTING -> COMPLETE" in render.changes(old, new)
    assert render.changes(None, new)[0].startswith("seen: RUNNING")


def test_replica_lag_unknown_is_a_question_mark_not_minus_one() -> None:
    instance = _instance()
    known = instance.members.add(id="db-2", role=T.ROLE_SLAVE, state=T.MEMBER_STATE_RUNNING)
    known.health.checked_at.CopyFrom(timestamp(1003.0))
    known.health.lag_seconds, known.health.lag = 0.5, 120
    unknown = instance.members[1]
    unknown.health.checked_at.CopyFrom(timestamp(1003.0))
    unknown.health.lag_seconds, unknown.health.lag = -1.0, -1
    text = render.instance_page(instance, [], now=1004.0)
    assert "<td>0.5s (120)</td>" in text
    assert "<td>? (?)</td>" in text and "<td>-1" not in text and "(-1)" not in text
