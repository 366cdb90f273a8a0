"""The retry policies (mesos_stateful.common.retry): delays, what is retried, deadlines, stops.

Pure logic: the calls retried are plain coroutines; the waits are the policies' own, kept small."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from mesos_stateful.clients import endpoints
from mesos_stateful.common import errors, retry


def test_delays_double_up_to_the_cap_and_start_over_after_a_reset() -> None:
    backoff = retry.Backoff(retry.Policy("t", initial_seconds=0.1, max_seconds=1.0))
    assert [round(backoff.next_delay(), 6) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.failures == 6
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_jitter_stays_within_its_bound_and_the_cap() -> None:
    policy = retry.Policy("t", initial_seconds=0.1, max_seconds=1.0, jitter_seconds=0.1)
    backoff = retry.Backoff(policy)
    firsts = set()
    for _ in range(200):
        backoff.reset()
        first = backoff.next_delay()
        assert 0.1 <= first <= 0.2
        firsts.add(first)
        for _ in range(8):
            assert backoff.next_delay() <= 1.0
    assert len(firsts) > 1  # really jittered


def test_a_fixed_interval_from_settings() -> None:
    policy = retry.OFFERS_STATE.with_delays(0.3)
    backoff = retry.Backoff(policy)
    assert [backoff.next_delay() for _ in range(3)] == [0.3, 0.3, 0.3]
    assert policy.retry_on == retry.OFFERS_STATE.retry_on


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_seconds": 0, "max_seconds": 1}, "0 < initial_seconds <= max_seconds"),
        ({"initial_seconds": 2, "max_seconds": 1}, "0 < initial_seconds <= max_seconds"),
        ({"initial_seconds": 1, "max_seconds": 1, "multiplier": 0.5}, "multiplier"),
        ({"initial_seconds": 1, "max_seconds": 1, "jitter_seconds": -1}, "jitter"),
        ({"initial_seconds": 1, "max_seconds": 1, "deadline_seconds": 0}, "deadline"),
        ({"initial_seconds": 1, "max_seconds": 1, "retry_on": ()}, "retry_on"),
    ],
)
def test_inconsistent_policies_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retry.Policy("bad", **kwargs)  # type: ignore[arg-type]


def test_the_suite_vocabulary_decides_what_is_retried() -> None:
    read = retry.STATE_READ
    assert read.retryable(errors.Unavailable("down"))
    assert not read.retryable(errors.Conflict("lost a race"))  # a read never conflicts
    for permanent in (errors.NotFound("x"), errors.InvalidArgument("x"), errors.NotLeader("x")):
        assert not read.retryable(permanent)
        assert not retry.OFFERS_STATE.retryable(permanent)
    assert retry.OFFERS_STATE.retryable(errors.Conflict("x"))
    assert retry.STATE_CAS.retryable(errors.Conflict("x"))
    assert retry.STATE_CAS.retryable(errors.AlreadyExists("x"))  # a create-only put lost the race
    assert not retry.STATE_CAS.retryable(errors.Unavailable("x"))  # the put may have been applied
    assert retry.STATUS_SEND.retryable(RuntimeError("Not connected yet"))


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns the number of calls."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


async def test_call_retries_a_retryable_error_until_success_and_reports_each_wait() -> None:
    policy = retry.Policy("t", initial_seconds=0.01, max_seconds=0.02, deadline_seconds=5)
    flaky = Flaky(3, errors.Unavailable("down"))
    waits: list[tuple[str, float]] = []
    assert await retry.call(policy, flaky, on_retry=lambda e, d: waits.append((str(e), d))) == 4
    assert waits == [("down", 0.01), ("down", 0.02), ("down", 0.02)]


async def test_call_awaits_a_lambda_returning_a_coroutine() -> None:
    flaky = Flaky(1, errors.Unavailable("down"))
    policy = retry.Policy("t", initial_seconds=0.01, max_seconds=0.01)
    assert await retry.call(policy, lambda: flaky()) == 2


async def test_call_raises_a_permanent_error_at_once() -> None:
    flaky = Flaky(3, errors.NotFound("gone"))
    with pytest.raises(errors.NotFound, match="gone"):
        await retry.call(retry.STATE_READ, flaky)
    assert flaky.calls == 1


async def test_call_gives_up_before_an_attempt_past_the_deadline_with_the_last_error() -> None:
    policy = retry.Policy("t", initial_seconds=0.05, max_seconds=0.05, multiplier=1, deadline_seconds=0.3)
    flaky = Flaky(1000, errors.Unavailable("still down"))
    started = time.monotonic()
    with pytest.raises(errors.Unavailable, match="still down"):
        await retry.call(policy, flaky)
    took = time.monotonic() - started
    assert 0.2 <= took < 0.3 + 0.5  # no attempt would start after 0.3 s
    assert 4 <= flaky.calls <= 6


async def test_call_stops_when_told_with_the_last_error() -> None:
    stopped = asyncio.Event()
    flaky = Flaky(1000, errors.Unavailable("down"))

    def failed(_error: BaseException, _delay: float) -> None:
        if flaky.calls == 3:
            stopped.set()

    with pytest.raises(errors.Unavailable):
        await retry.call(
            retry.OFFERS_STATE.with_delays(0.01), flaky, stop_when=stopped.is_set, on_retry=failed
        )
    assert flaky.calls == 4  # the attempt after the one that set it finds it set


async def test_backoff_sleep_wakes_early_when_told() -> None:
    wake = asyncio.Event()
    backoff = retry.Backoff(retry.Policy("t", initial_seconds=30, max_seconds=30))
    asyncio.get_running_loop().call_later(0.05, wake.set)
    started = time.monotonic()
    assert await backoff.sleep(wake) == 30
    assert time.monotonic() - started < 5


def test_the_grpc_retry_policy_of_the_state_reads() -> None:
    config = retry.grpc_method_config("stateful.v1.StateService", ["Get", "List"], retry.STATE_READ)
    assert config["name"] == [
        {"service": "stateful.v1.StateService", "method": "Get"},
        {"service": "stateful.v1.StateService", "method": "List"},
    ]
    policy = config["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps it at 5
    assert (policy["initialBackoff"], policy["maxBackoff"]) == ("0.1s", "1.0s")
    # On the channel of one address (no load balancing config) and of several (round_robin).
    for target, balanced in (("127.0.0.1:7100", False), ("ipv4:127.0.0.1:7100,127.0.0.1:7101", True)):
        ((key, value),) = endpoints.channel_options(target, method_config=[config])
        assert key == "grpc.service_config"
        service_config = json.loads(str(value))
        assert service_config["methodConfig"] == [config]
        assert ("loadBalancingConfig" in service_config) == balanced
    assert endpoints.channel_options("127.0.0.1:7100") == []
