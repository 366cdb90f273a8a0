"""A workload service that went away and came back (issue 10, a tester's report): lifecycle's step
that waited on it retries as soon as the workload registers again, not at its backoff's next
attempt (which had grown to 30 s: 22 s more with no master).

End to end with the real parts: the suite (etcd, state, local cluster, offers, gateway) and the
Redis workload service, stopped without revoking its lease (as a hung or crashed process: its
registration expires) and started again on the same port; lifecycle runs with a long backoff
(the first retry 15 s later) so that "at once" and "at the next attempt" are far apart.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import LifecycleRunner, RedisService, Suite
from mesos_stateful.testing.poll import eventually

pytestmark = pytest.mark.slow

# Lifecycle's step backoff in this test (seconds): attempt n waits 15 * 2**(n-1), at most 60.
BACKOFF: dict[str, Any] = {"retry_initial_seconds": 15.0, "retry_max_seconds": 60.0}
# Re-registration -> the waiting step tried again (seconds): the watch event, a reconcile and a
# loaded machine; far below the backoff it would otherwise wait (up to 15 s here).
PROMPT_SECONDS = 2.0
TIMEOUT = 90.0


def launch_step(instance: T.Instance | None) -> T.Step | None:
    if instance is None:
        return None
    return next((s for s in instance.plan.steps if s.member_id and "launch" in s.name), None)


async def poll(suite: Suite, name: str, check: object, timeout: float, what: str) -> T.Instance:
    assert callable(check)

    async def seen() -> T.Instance | None:
        instance = await suite.instance(name)
        return instance if instance is not None and check(instance) else None

    found = await eventually(seen, what, timeout, interval=0.05)
    assert found is not None
    return found


async def test_step_waiting_on_a_workload_retries_when_it_registers_again(suite: Suite) -> None:
    # Lifecycle with a long backoff instead of the suite's fast one.
    assert isinstance(suite.lifecycle, LifecycleRunner)
    await suite.lifecycle.stop()
    lifecycle = LifecycleRunner(suite.state.endpoint, suite.offers.endpoint, **BACKOFF)
    await lifecycle.start()
    suite.lifecycle = lifecycle

    # The workload service vanishes without revoking its lease (its registration stays until the
    # lease expires), and an instance is created meanwhile: its launch cannot get its Config.
    await suite.redis.stop(deregister=False)
    await suite.create("wake", 1)

    def delayed_long(instance: T.Instance) -> bool:
        step = launch_step(instance)
        return (
            step is not None
            and step.status == plans.DELAYED
            and plans.seconds(step.next_attempt_at) - time.time() >= 10.0
        )

    waiting = await poll(suite, "wake", delayed_long, TIMEOUT, "the launch DELAYED with a long backoff")
    step = launch_step(waiting)
    assert step is not None
    next_attempt_at = plans.seconds(step.next_attempt_at)

    # The workload service comes back (same port) and registers again.
    await suite.redis.start()
    assert isinstance(suite.redis, RedisService)  # the `suite` fixture's in-process Redis workload
    await asyncio.wait_for(suite.redis.running.registration.wait_registered(), 30)
    registered_at = time.time()
    assert await suite.client.find(spb.KIND_WORKLOAD, "redis") is not None
    assert next_attempt_at - registered_at > PROMPT_SECONDS + 1.0, "the backoff is not long enough"

    def tried_again(instance: T.Instance) -> bool:
        # Tried: no longer DELAYED until that time (launched: STARTING, or DELAYED anew).
        current = launch_step(instance)
        return current is not None and (
            current.status != plans.DELAYED or plans.seconds(current.next_attempt_at) != next_attempt_at
        )

    await poll(suite, "wake", tried_again, next_attempt_at - time.time() + 5.0, "the launch tried again")
    retried_at = time.time()
    assert retried_at - registered_at < PROMPT_SECONDS, (
        f"the step was retried {retried_at - registered_at:.1f}s after the workload registered "
        f"(its backoff said {next_attempt_at - registered_at:.1f}s)"
    )
    # And it goes on to run, with the backoff left as it was for anything else.
    await suite.wait_running("wake", 1)
