"""The one polling helper (mesos_stateful.testing.poll): value returned, deadline, message."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mesos_stateful.testing.poll import WaitTimeout, eventually, eventually_sync


async def test_eventually_returns_the_first_true_value_of_a_sync_or_async_check() -> None:
    calls = iter([0, None, "", 7])
    assert await eventually(lambda: next(calls), "a value", timeout=5, interval=0.01) == 7

    seen = []

    async def check() -> list[int]:
        seen.append(1)
        return seen if len(seen) >= 3 else []

    assert await eventually(check, "three calls", timeout=5, interval=0.01) == [1, 1, 1]


async def test_eventually_names_what_it_awaited_and_the_last_value_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0.2s waiting for the moon \(last value: 0\)"):
        await eventually(lambda: 0, "the moon", timeout=0.2, interval=0.01)
    assert 0.2 <= time.monotonic() - started < 2
    # A timeout is an AssertionError too: pytest reports a failed expectation.
    assert issubclass(WaitTimeout, AssertionError) and issubclass(WaitTimeout, TimeoutError)


async def test_eventually_retries_ignored_errors_and_propagates_others() -> None:
    not_yet = ConnectionError("not yet")
    attempts: Iterator[ConnectionError | str] = iter([not_yet, not_yet, "up"])

    def flaky() -> str:
        value = next(attempts)
        if isinstance(value, Exception):
            raise value
        return value

    assert await eventually(flaky, "the service", timeout=5, interval=0.01, ignore=(ConnectionError,)) == "up"
    with pytest.raises(WaitTimeout, match="last error: StopIteration"):
        await eventually(lambda: flaky(), "x", 0.1, 0.01, (ConnectionError, StopIteration))

    def broken() -> bool:
        raise KeyError("a bug in the check")

    with pytest.raises(KeyError):
        await eventually(broken, "a broken check", timeout=5)


def test_eventually_sync_has_the_same_rules() -> None:
    calls = iter([False, False, {"ok": 1}])
    assert eventually_sync(lambda: next(calls), "a dict", timeout=5, interval=0.01) == {"ok": 1}
    with pytest.raises(WaitTimeout, match="waiting for nothing"):
        eventually_sync(lambda: [], "nothing", timeout=0.1, interval=0.01)
