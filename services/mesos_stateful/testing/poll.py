"""Waiting in tests: one polling helper, in an async and a sync form.

    value = await eventually(lambda: client.get(key), "the key to be written", timeout=30)
    value = eventually_sync(lambda: port_open(host, port), "the port to open", timeout=10)

``check`` is called (and awaited, when it returns an awaitable) until it returns a true value,
which is returned. At the deadline a :class:`TimeoutError` (an ``AssertionError`` too, so pytest
shows it as a failed expectation) names what was awaited and the last value or exception seen.
Exceptions of the types in ``ignore`` count as "not yet"; any other propagates at once, so a
bug in the check is not hidden behind a timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

_T = TypeVar("_T")

DEFAULT_TIMEOUT = 30.0
DEFAULT_INTERVAL = 0.1


class WaitTimeout(TimeoutError, AssertionError):
    """What was awaited did not happen within the deadline."""


def _message(what: str, timeout: float, last: object, error: BaseException | None) -> str:
    seen = f"last error: {error!r}" if error is not None else f"last value: {last!r}"
    return f"timed out after {timeout:g}s waiting for {what} ({seen})"


@overload
async def eventually(
    check: Callable[[], Awaitable[_T]],
    what: str,
    timeout: float = ...,
    interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> _T: ...


@overload
async def eventually(
    check: Callable[[], _T],
    what: str,
    timeout: float = ...,
    interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> _T: ...


async def eventually(
    check: Callable[[], Awaitable[_T] | _T],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> _T:
    """Call ``check`` every ``interval`` seconds until it returns a true value and return it.

    ``check`` may be sync or async. Raises :class:`WaitTimeout` after ``timeout`` seconds; an
    exception of a type in ``ignore`` is retried, any other propagates.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            result = check()
            value = await result if inspect.isawaitable(result) else result
            if value:
                return value
            last, error = value, None
        except ignore as caught:
            error = caught
        if time.monotonic() >= deadline:
            raise WaitTimeout(_message(what, timeout, last, error)) from error
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], _T],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> _T:
    """The blocking form of :func:`eventually` (for sync tests and threads); same rules."""
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
            last, error = value, None
        except ignore as caught:
            error = caught
        if time.monotonic() >= deadline:
            raise WaitTimeout(_message(what, timeout, last, error)) from error
        time.sleep(interval)
