"""Retries of the suite, in one place: what is retried, on which errors, with which delays.

The suite's retry loops take their policies from here (built on ``tenacity``), so "how long does
X keep trying, on what" has one answer; the few exceptions are listed at the end. The error
vocabulary is the suite's own (:mod:`mesos_stateful.common.errors`): ``TemporaryError``
(``Unavailable``, ``Conflict``) may succeed later, ``PermanentError`` never does: the policies of
calls that can raise one (state reads, compare-and-swap, offers' state writes) do not retry it;
reconnect loops (watches, restarts, re-subscription) go on after any error by design.

Policies (name: what; retried on; delays in seconds; gives up):

- ``STATE_READ``: state client reads (Get, List, KeepAliveLease, RevokeLease), and the gRPC
  ``retryPolicy`` of those methods on its channel (UNAVAILABLE only); ``Unavailable`` (gRPC
  UNAVAILABLE, DEADLINE_EXCEEDED); 0.1 doubling to 1.0, + up to 0.1 jitter; after 5 s.
- ``STATE_CAS``: state client ``update``, a read-modify-write that lost a compare-and-swap (it
  reads again); ``Conflict``, ``AlreadyExists``; 0.01 doubling to 0.5, + jitter; never.
- ``STATE_WATCH``: state client ``watch`` reconnect, from the last delivered revision + 1;
  ``Unavailable`` or CANCELLED by a stopping server; 0.1 doubling to 2.0, reset by an event; never.
- ``ETCD_WATCH``: state service, the watch hub's and a replayed watch's reconnect to etcd; anything
  but a compacted revision; the state settings ``watch_retry_seconds`` doubling to
  ``watch_retry_max_seconds``, reset by an event; never.
- ``ETCD_RESTART``: state service, restarting the embedded etcd after it exited or failed to
  start (a crash-loop backoff, as supervisord's and systemd's); the first restart is at once, then
  the state settings ``etcd_restart_backoff_seconds`` doubling to
  ``etcd_restart_backoff_max_seconds``, back to at once after it stayed up; never.
- ``OFFERS_CALL``: lifecycle's offers client (Launch, Kill, ...), finding the offers leader again
  between attempts; gRPC UNAVAILABLE or DEADLINE_EXCEEDED (a leader gone, frozen or a standby);
  0.1 doubling to 0.5; after the client's timeout.
- ``GATEWAY_WATCH``: the console's watch of instances through the gateway, from the last revision
  seen + 1; any error; 0.5 doubling to 5, reset by an event; never.
- ``CLI_WATCH``: ``statefulctl get --watch`` / ``wait``, re-opening the gateway's watch from the
  last revision seen + 1 (only once the gateway had been reached); UNAVAILABLE; 0.2 doubling to
  2.0, reset when the gateway was reached again; after 30 s without reaching it.
- ``STATUS_SEND``: executor, the POST of a status update to the agent; any error (the agent is
  away); 0.2 doubling to 2.0; after 30 s (*).
- ``OFFERS_STATE``: offers, storing a status update (acknowledged only once stored), the framework
  id, re-reading members and tasks after a broken watch; ``TemporaryError``; the offers setting
  ``state_retry_seconds``, fixed; when the scheduler stops.
- ``MESOS_RESUBSCRIBE``: offers, subscribing again after an ERROR event or pymesos giving up; the
  master refusing us; 2 doubling to 60; never.

(*) The update is not lost: the executor driver keeps every unacknowledged update and sends it
again in its next SUBSCRIBE (``unacknowledged_updates``), as the Mesos executor HTTP API asks.

Never retried: state writes (``Put``, ``Delete``, ``GrantLease``): a write that failed UNAVAILABLE
or timed out may have been applied, so a blind retry could apply it twice or overwrite a newer
value; the caller re-reads and decides (``StateClient.update`` does, on compare-and-swap).
Not here on purpose: lifecycle's step backoff (persisted in the plan: stored state that survives a
restart, not an in-process loop; its reconcile loop uses the same ``backoff`` setting), leader
election's lease periods (a protocol's timing, checked against each other), the suite
supervisor's crash-loop restart policy (bursts and windows), a workload's registration renewal
(every ttl/3: a lease's keepalive), the Redis and MySQL clients' own single reconnect (the
driver libraries'), and periodic loops (resync, health checks, metrics re-lists), which are
intervals, not retries.

Delays: attempt n waits ``min(initial * multiplier ** (n - 1) + uniform(0, jitter), max)``
(tenacity ``wait_exponential_jitter``); ``multiplier`` 1 makes a fixed interval. A deadline stops
before an attempt that would start after it (tenacity ``stop_before_delay``); the last error is
raised as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import tenacity

from mesos_stateful.common import errors

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class Policy:
    """One retry policy. Times in seconds; ``deadline_seconds`` None = retry until success (or
    until the caller's ``stop_when``); ``retry_on``: the exception types retried (others are
    raised at once). ValueError when the numbers are inconsistent."""

    name: str
    initial_seconds: float
    max_seconds: float
    multiplier: float = 2.0
    jitter_seconds: float = 0.0
    deadline_seconds: float | None = None
    retry_on: tuple[type[BaseException], ...] = (errors.TemporaryError,)

    def __post_init__(self) -> None:
        if not 0 < self.initial_seconds <= self.max_seconds:
            raise ValueError(
                f"retry policy {self.name}: need 0 < initial_seconds <= max_seconds, got "
                f"{self.initial_seconds} and {self.max_seconds}"
            )
        if self.multiplier < 1:
            raise ValueError(f"retry policy {self.name}: multiplier must be >= 1, got {self.multiplier}")
        if self.jitter_seconds < 0:
            raise ValueError(f"retry policy {self.name}: jitter_seconds must be >= 0")
        if self.deadline_seconds is not None and self.deadline_seconds <= 0:
            raise ValueError(f"retry policy {self.name}: deadline_seconds must be > 0 (or None)")
        if not self.retry_on:
            raise ValueError(f"retry policy {self.name}: retry_on names no exception type")

    def with_delays(self, initial_seconds: float, max_seconds: float | None = None) -> Policy:
        """The same policy with the delays of a service's settings (``max_seconds`` None: a
        fixed interval of ``initial_seconds``)."""
        if max_seconds is None:
            return dataclasses.replace(
                self, initial_seconds=initial_seconds, max_seconds=initial_seconds, multiplier=1.0
            )
        return dataclasses.replace(self, initial_seconds=initial_seconds, max_seconds=max_seconds)

    def with_deadline(self, deadline_seconds: float | None) -> Policy:
        """The same policy giving up after ``deadline_seconds`` (a client's call timeout)."""
        return dataclasses.replace(self, deadline_seconds=deadline_seconds)

    def wait(self) -> tenacity.wait.wait_base:
        """The tenacity wait strategy of the policy."""
        return tenacity.wait_exponential_jitter(
            multiplier=self.initial_seconds,
            max=self.max_seconds,
            exp_base=self.multiplier,
            jitter=self.jitter_seconds,
        )

    def retryable(self, error: BaseException) -> bool:
        """Whether ``error`` is retried under this policy (an instance of ``retry_on``)."""
        return isinstance(error, self.retry_on)


# -- the policies (see the module table) --------------------------------------------------------

STATE_READ = Policy(
    "state-read",
    initial_seconds=0.1,
    max_seconds=1.0,
    jitter_seconds=0.1,
    deadline_seconds=5.0,
    retry_on=(errors.Unavailable,),
)
STATE_CAS = Policy(
    "state-compare-and-swap",
    initial_seconds=0.01,
    max_seconds=0.5,
    jitter_seconds=0.01,
    retry_on=(errors.Conflict, errors.AlreadyExists),
)
STATE_WATCH = Policy("state-watch", initial_seconds=0.1, max_seconds=2.0, retry_on=(errors.Unavailable,))
ETCD_WATCH = Policy("etcd-watch", initial_seconds=0.1, max_seconds=1.0, retry_on=(Exception,))
ETCD_RESTART = Policy("etcd-restart", initial_seconds=0.5, max_seconds=10.0, retry_on=(Exception,))
OFFERS_CALL = Policy("offers-call", initial_seconds=0.1, max_seconds=0.5, retry_on=(grpc.RpcError,))
GATEWAY_WATCH = Policy("gateway-watch", initial_seconds=0.5, max_seconds=5.0, retry_on=(Exception,))
CLI_WATCH = Policy("cli-watch", initial_seconds=0.2, max_seconds=2.0, retry_on=(grpc.RpcError,))
STATUS_SEND = Policy(
    "executor-status-send", initial_seconds=0.2, max_seconds=2.0, deadline_seconds=30.0, retry_on=(Exception,)
)
OFFERS_STATE = Policy("offers-state", initial_seconds=1.0, max_seconds=1.0, multiplier=1.0)
MESOS_RESUBSCRIBE = Policy("mesos-resubscribe", initial_seconds=2.0, max_seconds=60.0, retry_on=(Exception,))

# gRPC's own retry caps maxAttempts at 5 (gRFC A6); calls beyond that are the client loop's.
GRPC_MAX_ATTEMPTS = 4


def grpc_method_config(service: str, methods: Sequence[str], policy: Policy) -> dict[str, Any]:
    """A gRPC service-config ``methodConfig`` entry retrying ``methods`` of ``service`` on
    UNAVAILABLE with the policy's delays (gRFC A6 ``retryPolicy``: gRPC adds its own jitter and
    never retries a call whose response headers arrived). Only for idempotent methods."""
    return {
        "name": [{"service": service, "method": method} for method in methods],
        "retryPolicy": {
            "maxAttempts": GRPC_MAX_ATTEMPTS,
            "initialBackoff": f"{policy.initial_seconds}s",
            "maxBackoff": f"{policy.max_seconds}s",
            "backoffMultiplier": policy.multiplier,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }


async def call(
    policy: Policy,
    fn: Callable[[], Awaitable[_T]],
    *,
    stop_when: Callable[[], bool] | None = None,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> _T:
    """``await fn()``, again after a delay while it raises an error the policy retries. Raises
    the last error when the deadline passed or ``stop_when()`` is true (checked after each
    failed attempt), and any other error at once. ``on_retry(error, delay)`` is called before
    each wait (for logs)."""
    stop: tenacity.stop.stop_base = tenacity.stop_never
    if policy.deadline_seconds is not None:
        stop = tenacity.stop_before_delay(policy.deadline_seconds)
    if stop_when is not None:
        stop = stop | _StopWhen(stop_when)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            error = state.outcome.exception()
            if error is not None:
                on_retry(error, state.upcoming_sleep)

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(policy.retryable),
        wait=policy.wait(),
        stop=stop,
        reraise=True,
        before_sleep=before_sleep,
    )

    async def attempt() -> _T:
        # An async def: tenacity awaits only what it sees is a coroutine function (a lambda
        # returning a coroutine would be "called" and its coroutine returned unawaited).
        return await fn()

    return await retrying(attempt)


class _StopWhen(tenacity.stop.stop_base):
    """Stop once ``predicate()`` is true (e.g. the service is stopping)."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self._predicate = predicate

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._predicate()


class Backoff:
    """The delays of a reconnect loop (a stream that runs until it breaks): each failure waits
    longer, per the policy; ``reset()`` after a success (an event received) starts over."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.failures = 0  # consecutive failures since the last reset
        self._wait = policy.wait()
        self._state = tenacity.RetryCallState(tenacity.AsyncRetrying(), None, (), {})

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        self.failures += 1
        self._state.attempt_number = self.failures
        return float(self._wait(self._state))

    async def sleep(self, wake: asyncio.Event | None = None) -> float:
        """Count a failure and wait its delay, or until ``wake`` is set (it is cleared first).
        Returns the delay it would have waited."""
        delay = self.next_delay()
        if wake is None:
            await asyncio.sleep(delay)
            return delay
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)
        return delay
