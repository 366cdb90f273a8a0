"""LifecycleSettings: defaults, environment, invariants; and the pure helpers of the step runner."""

from __future__ import annotations

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.lifecycle.plans import Action
from mesos_stateful.lifecycle.reconciler import _apply
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.lifecycle.steps import Outcome


def test_defaults_match_the_local_endpoints() -> None:
    s = LifecycleSettings.load([])
    assert (s.listen, s.state_endpoint, s.offers_endpoint) == (
        "127.0.0.1:7300",
        "127.0.0.1:7100",
        "127.0.0.1:7200",
    )


def test_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEFUL_LIFECYCLE_CALLBACK_TIMEOUT_SECONDS", "7")
    s = LifecycleSettings.load(["--offers-endpoint", "10.0.0.1:7200"])
    assert s.callback_timeout_seconds == 7 and s.offers_endpoint == "10.0.0.1:7200"


@pytest.mark.parametrize(
    "argv",
    [
        ["--retry-initial-seconds", "5", "--retry-max-seconds", "1"],
        ["--callback-timeout-seconds", "0"],
        ["--state-endpoint", "nowhere"],
        ["--max-launch-attempts", "0"],
        ["--secret-bytes", "4"],
    ],
)
def test_invalid_settings_stop_with_a_message(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="LifecycleSettings: invalid settings"):
        LifecycleSettings.load(argv)


def test_backoff_is_exponential_and_capped() -> None:
    s = LifecycleSettings(retry_initial_seconds=0.5, retry_max_seconds=4)
    assert [s.backoff(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]


def test_apply_keeps_a_failover_decision_while_retrying() -> None:
    plan = plans.new_plan(
        plans.RECOVERY, "", 1, [plans.step(Action.FAILOVER, "c-0"), plans.step(Action.FENCE, "c-0")]
    )
    plan.steps[0].decision.promote_member_id = "c-1"
    plan.steps[0].message = "promoting c-1: best"
    _apply(plan, 0, Outcome(plans.DELAYED, "state: UNAVAILABLE", wake_at=10.0, attempts=2))
    assert plan.steps[0].decision.promote_member_id == "c-1" and plan.steps[0].attempts == 2
    assert plan.steps[0].message == "promoting c-1 | state: UNAVAILABLE"
    assert plan.status == plans.DELAYED and plans.seconds(plan.steps[0].next_attempt_at) == 10.0
    appended = [plans.step(Action.START_MASTER, "c-1")]
    _apply(plan, 0, Outcome(plans.COMPLETE, "promoting c-1: best", append=appended))
    assert [s.name for s in plan.steps] == ["failover c-0", "fence c-0", "start-master c-1"]
    assert not plan.steps[0].HasField("next_attempt_at")
    # Applying the same completion again (a resumed step) does not add the steps twice.
    _apply(plan, 0, Outcome(plans.COMPLETE, "", append=[plans.step(Action.START_MASTER, "c-1")]))
    assert len(plan.steps) == 3


def test_apply_skips_later_steps_of_a_lost_member() -> None:
    steps = [plans.step(Action.START_SLAVE, "c-2"), plans.step(Action.SLAVE_RUNNING, "c-2")]
    steps.append(plans.step(Action.START_SLAVE, "c-1"))
    plan = plans.new_plan(plans.RECOVERY, "", 1, steps)
    _apply(plan, 0, Outcome(plans.COMPLETE, "c-2 is lost", skip_member="c-2"))
    assert [s.status for s in plan.steps] == [plans.COMPLETE, plans.COMPLETE, plans.PENDING]
    assert plan.steps[1].message.startswith("skipped")
    assert plan.status == T.STEP_STATUS_PENDING
