"""What `statefulctl get` shows of replication health, fences and promotion decisions."""

from __future__ import annotations

from rich.console import Console

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.cli import render


def _text(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def _instance() -> T.Instance:
    i = T.Instance(spec=T.InstanceSpec(name="cache", workload="redis", replicas=3))
    i.phase = T.INSTANCE_PHASE_DEGRADED
    master = i.members.add(id="cache-0", role=T.ROLE_MASTER)
    master.health.checked_at.GetCurrentTime()
    master.health.conditions.add(type=T.CONDITION_TYPE_REACHABLE, ok=True)
    chained = i.members.add(id="cache-1", role=T.ROLE_SLAVE)
    chained.health.checked_at.GetCurrentTime()
    chained.health.conditions.add(
        type=T.CONDITION_TYPE_REPLICATING, ok=False, reason="Chained", message="follows cache-2"
    )
    chained.health.repair = T.REPAIR_REPOINT
    i.members.add(id="cache-2", role=T.ROLE_SLAVE)
    return i


def test_members_show_health_and_the_failing_conditions() -> None:
    out = _text(render.instance_details(_instance()))
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("cache-")}
    assert " ok " in rows["cache-0"]
    assert "Chained (repoint)" in rows["cache-1"]
    assert " - " in rows["cache-2"]  # never checked
    assert "replication problems:\n  cache-1 replicating: Chained: follows cache-2" in out


def test_plan_shows_the_typed_fence_and_decision() -> None:
    i = _instance()
    i.plan.name = "recovery"
    fence = i.plan.steps.add(name="fence cache-0", member_id="cache-0")
    fence.fence.method = T.FENCE_METHOD_DEMOTED
    fence.fence.detail = "read-only replica of nobody"
    failover = i.plan.steps.add(name="failover cache-0", member_id="cache-0")
    failover.decision.promote_member_id = "cache-2"
    failover.decision.candidate_ids.extend(["cache-1", "cache-2"])
    failover.decision.positions.update({"cache-1": "r:10", "cache-2": "r:12"})
    out = _text(render.instance_details(i))
    assert "fence of cache-0: demoted (read-only replica of nobody)" in out
    assert "decision: promote cache-2 of cache-1, cache-2; positions: cache-1=r:10, cache-2=r:12" in out
