"""The ``catch-up`` step of a planned switchover (lifecycle/steps.py ``_catch_up``) with a fake
workload (pure logic: the positions CheckMember answers are scripted). The real thing, with
redis-server and MariaDB, is in test_switchover_e2e.py / test_switchover_mysql_e2e.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as wpb
from mesos_stateful.common import errors
from mesos_stateful.lifecycle import operations, plans, steps
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.lifecycle.steps import StepRunner
from mesos_stateful.lifecycle.store import Loaded

from .plan_helpers import snap
from .test_drain_planner import redis


class FakeCallbacks:
    """CheckMember answers ``positions[member]`` (a list: one answer per call, the last repeated),
    or raises ``fail``."""

    def __init__(self, positions: dict[str, list[str]], fail: Exception | None = None) -> None:
        self.positions = positions
        self.fail = fail
        self.calls: list[str] = []

    async def call(self, workload: str, method: str, context: Any, **_: Any) -> wpb.CheckMemberResponse:
        assert method == "CheckMember"
        mid = context.member_id
        self.calls.append(mid)
        if self.fail is not None:
            raise self.fail
        answers = self.positions[mid]
        position = answers.pop(0) if len(answers) > 1 else answers[0]
        return wpb.CheckMemberResponse(health=T.MemberHealth(position=position))


def setup(target: str = "cache-2", fence: int = T.FENCE_METHOD_DEMOTED) -> tuple[Loaded, T.Plan]:
    inst, members, tasks = redis()
    members[0].operation.CopyFrom(
        T.MemberOperation(
            kind=T.OPERATION_KIND_SWITCHOVER, id="op", member_id="cache-0", target_member_id=target
        )
    )
    plan = operations.operation_plan(snap(inst, members, tasks))
    assert plan is not None
    plan.steps[0].status = plans.COMPLETE
    plan.steps[0].fence.method = fence  # type: ignore[assignment]
    return Loaded(snapshot=snap(inst, members, tasks)), plan


def runner(callbacks: FakeCallbacks) -> StepRunner:
    return StepRunner(LifecycleSettings(), None, None, callbacks)  # type: ignore[arg-type]


async def _save() -> None:
    return None


async def test_the_target_is_chosen_once_at_the_exact_final_position(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "CATCH_UP_POLL_SECONDS", 0.0)
    ld, plan = setup()
    fake = FakeCallbacks({"cache-0": ["r:100"], "cache-2": ["r:90", "r:99", "r:100"], "cache-1": ["r:100"]})
    outcome = await runner(fake).run(ld, plan, 1, True, _save)
    assert outcome.status == plans.COMPLETE
    cu = plan.steps[1].catch_up
    assert cu.member_id == "cache-2" and cu.master_position == "r:100" and cu.positions["cache-2"] == "r:100"
    assert cu.HasField("caught_up_at")
    assert "cache-1" not in fake.calls  # a named target: only its position is read


async def test_without_a_target_the_first_replica_at_the_final_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(steps, "CATCH_UP_POLL_SECONDS", 0.0)
    ld, plan = setup(target="")
    fake = FakeCallbacks({"cache-0": ["r:100"], "cache-1": ["r:98", "r:100"], "cache-2": ["r:97"]})
    outcome = await runner(fake).run(ld, plan, 1, True, _save)
    assert outcome.status == plans.COMPLETE and plan.steps[1].catch_up.member_id == "cache-1"


async def test_a_target_behind_is_waited_for_then_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "CATCH_UP_POLL_SECONDS", 0.0)
    monkeypatch.setattr(steps, "CATCH_UP_ATTEMPT_SECONDS", 0.05)
    ld, plan = setup()
    fake = FakeCallbacks({"cache-0": ["r:100"], "cache-2": ["r:99"]})
    outcome = await runner(fake).run(ld, plan, 1, True, _save)
    assert outcome.status == plans.DELAYED
    assert "cache-2 at r:99" in outcome.message and "r:100" in outcome.message
    assert not plan.steps[1].catch_up.member_id  # never promoted behind
    # Past the give-up bound: the failover asks MasterLost (most advanced) instead.
    plan.steps[1].started_at.CopyFrom(plans.timestamp(time.time() - steps.CATCH_UP_GIVE_UP_SECONDS - 1))
    outcome = await runner(fake).run(ld, plan, 1, True, _save)
    assert outcome.status == plans.COMPLETE and "MasterLost" in outcome.message
    assert StepRunner._caught_up(plan, "cache-0") is None


async def test_not_demoted_or_no_check_member_falls_back_to_master_lost() -> None:
    ld, plan = setup(fence=T.FENCE_METHOD_PROCESS_GONE)
    outcome = await runner(FakeCallbacks({})).run(ld, plan, 1, True, _save)
    assert outcome.status == plans.COMPLETE and "was not demoted" in outcome.message
    ld, plan = setup()
    fake = FakeCallbacks({}, fail=errors.FailedPrecondition("no CheckMember"))
    outcome = await runner(fake).run(ld, plan, 1, True, _save)
    assert outcome.status == plans.COMPLETE and "cannot read positions" in outcome.message
