"""End to end: an instance that cannot be deployed says why (in its plan, phase and last_error),
and a user can get it out of there (scale, delete)."""

from __future__ import annotations

import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite, master_of

pytestmark = pytest.mark.slow


async def test_a_launch_waiting_for_an_offer_is_reported_then_scaled_away(suite: Suite) -> None:
    assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
    suite.lifecycle.overrides["launch_timeout_seconds"] = 2.0
    await suite.lifecycle.restart()
    # 4 members, at most 1 per agent, 3 agents: the 4th launch can only wait.
    await suite.create("cache", 4)

    def stuck(i: T.Instance) -> bool:
        return any(s.name == "await-running cache-3" and s.status == plans.DELAYED for s in i.plan.steps)

    instance = await suite.wait_instance("cache", stuck, 90, "the 4th member reported stuck")
    step = next(s for s in instance.plan.steps if s.name == "await-running cache-3")
    assert "cache-3.1 QUEUED" in step.message and "not RUNNING after 2s" in step.message
    assert instance.phase == T.INSTANCE_PHASE_DEPLOYING
    got = (await suite.get("cache")).instance  # what `statefulctl get` shows
    assert got.plan.steps[len(instance.plan.steps) - 1].name == instance.plan.steps[-1].name

    await suite.api.ScaleInstance(api.ScaleInstanceRequest(name="cache", replicas=3))
    instance = await suite.wait_running("cache", 3)
    assert instance.plan.generation == 2
    assert [m.id for m in instance.members] == ["cache-0", "cache-1", "cache-2"]
    assert master_of(instance).id == "cache-0"
    tasks = await suite.tasks("cache")
    assert tasks["cache-3.1"].state == T.TASK_STATE_KILLED


async def test_a_launch_that_can_never_fit_fails_the_instance(suite: Suite) -> None:
    # 12 cpus per member; agents have 4.
    await suite.create("big", 1, resources=T.Resources(cpus=12, mem_mb=256))
    instance = await suite.wait_instance("big", lambda i: i.phase == T.INSTANCE_PHASE_FAILED, 60, "FAILED")
    assert "can never be placed" in instance.last_error and "cpus" in instance.last_error
    failed = next(s for s in instance.plan.steps if s.status == plans.ERROR)
    assert failed.name == "launch big-0"
    assert instance.plan.status == plans.ERROR
    await suite.api.DeleteInstance(api.DeleteInstanceRequest(name="big"))
    await suite.wait_gone("big")
