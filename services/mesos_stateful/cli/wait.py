"""``--wait`` and ``get --watch``: follow one instance through WatchInstances with a live display."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator

import grpc
from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.cli import render
from mesos_stateful.cli.client import CliFailure, Gateway, stderr
from mesos_stateful.common import retry

# What a waiter decides on each change: keep waiting (None), done (True) or failed (a message).
Verdict = bool | str | None

# A stream to the gateway that breaks (the gateway restarted, UNAVAILABLE) after it had connected
# is opened again from the revision after the last change seen, with backoff (seconds), for at
# most RECONNECT_BOUND_SECONDS without reaching the gateway; then the error is reported.
RECONNECT_BOUND_SECONDS = 30.0
RECONNECT_INITIAL_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 2.0
RECONNECTING = "gateway unreachable; reconnecting..."


class StreamDeadline(Exception):
    """The caller's deadline passed while reconnecting."""


def watch_stream(
    gateway: Gateway,
    request: api.WatchInstancesRequest,
    timeout: float | None = None,
    events: bool = False,
) -> Generator[api.WatchInstancesResponse, None, None]:
    """WatchInstances events, resumed across gateway restarts.

    The stream is opened again with ``start_revision`` = the highest revision seen + 1 (the
    gateway replays from there, instance_service.proto WatchInstancesResponse.revision), so no
    change is missed; before any change was seen the original request is sent again (with
    ``start_revision`` 0 the current state comes again as ADDED events). Only UNAVAILABLE after
    the channel had once been READY is retried: a gateway that was never reached is reported at
    once. ``timeout`` (seconds) bounds the whole watch: DEADLINE_EXCEEDED from the stream, or
    :class:`StreamDeadline` while reconnecting. History entries (``WatchInstancesResponse.event``)
    are passed on only with ``events``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    current = api.WatchInstancesRequest()
    current.CopyFrom(request)
    down_since: float | None = None
    backoff = retry.Backoff(retry.CLI_WATCH.with_delays(RECONNECT_INITIAL_SECONDS, RECONNECT_MAX_SECONDS))
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        stream = gateway.stub().WatchInstances(current, metadata=gateway.metadata, timeout=remaining)
        try:
            for event in stream:
                down_since = None
                backoff.reset()
                if event.revision:
                    current.start_revision = max(current.start_revision, event.revision + 1)
                if event.HasField("event") and not events:
                    continue  # an instance's history entry; only ``events=True`` callers want them
                yield event
            return
        except grpc.RpcError as error:
            unavailable = isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAVAILABLE
            if not unavailable or not gateway.ever_ready:
                raise
            now = time.monotonic()
            if down_since is None or gateway.ready:
                # First failure of this outage (or the gateway was reached since the last one).
                if down_since is None:
                    stderr.print(RECONNECTING, markup=False)
                down_since = now
                backoff.reset()
            if now - down_since >= RECONNECT_BOUND_SECONDS:
                raise
            delay = backoff.next_delay()
            if deadline is not None and now + delay >= deadline:
                raise StreamDeadline() from None
            time.sleep(delay)
        finally:
            stream.cancel()


def until_running(instance: types_pb2.Instance) -> Verdict:
    """Done when RUNNING with every desired member ready; failed on FAILED."""
    if instance.phase == types_pb2.INSTANCE_PHASE_FAILED:
        return f"instance {instance.spec.name} FAILED: {instance.last_error or 'see statefulctl get'}"
    if instance.phase in (types_pb2.INSTANCE_PHASE_DELETING, types_pb2.INSTANCE_PHASE_DELETED):
        return f"instance {instance.spec.name} is being deleted"
    if instance.phase != types_pb2.INSTANCE_PHASE_RUNNING:
        return None
    present = [m for m in instance.members if m.state != types_pb2.MEMBER_STATE_STOPPED]
    wanted = instance.spec.replicas
    return (render.ready_count(instance) == wanted and len(present) == wanted) or None


@contextlib.contextmanager
def _ended_line(console: Console) -> Iterator[None]:
    """Rich's Live leaves its last line open when the output is not a terminal (a pipe, a file):
    end it, so what is printed next (an error) starts on a line of its own."""
    try:
        yield
    finally:
        if not console.is_terminal:
            console.file.write("\n")
            console.file.flush()


def progress_line(instance: types_pb2.Instance) -> str:
    """One line of progress: ``<name>: <PHASE>, <ready>/<wanted> ready, plan <name>: <STATUS>
    (<step>: <its message>)`` (the step running now, or the last one)."""
    text = f"{instance.spec.name}: {render.phase(instance)}, {render.ready(instance)} ready"
    if instance.HasField("plan") and instance.plan.name:
        text += f", plan {render.plan_status(instance)}"
        steps = instance.plan.steps
        current = next((s for s in steps if s.status != types_pb2.STEP_STATUS_COMPLETE), None)
        if current is not None:
            message = current.message.splitlines()[0] if current.message else ""
            text += f" ({current.name}" + (f": {message}" if message else "") + ")"
    return text


def _follow_plainly(
    stream: Iterator[api.WatchInstancesResponse],
    name: str,
    console: Console,
    verdict: Callable[[types_pb2.Instance], Verdict] | None,
    goal: str,
) -> None:
    """:func:`follow` without a terminal: a line per change of what :func:`progress_line`
    shows, the final line last."""
    shown = ""

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        console.file.flush()

    for event in stream:
        instance = event.instance
        if event.type == api.INSTANCE_EVENT_TYPE_DELETED:
            if goal == "deleted":
                say(f"instance {name} deleted")
                return
            raise CliFailure(f"instance {name} was deleted")
        line = progress_line(instance)
        if line != shown:
            say(line)
            shown = line
        outcome = verdict(instance) if verdict is not None else None
        if outcome is True:
            say(f"instance {name} is {render.phase(instance)} ({render.ready(instance)} ready)")
            return
        if isinstance(outcome, str):
            raise CliFailure(outcome)


def follow(
    gateway: Gateway,
    name: str,
    console: Console,
    verdict: Callable[[types_pb2.Instance], Verdict] | None,
    timeout: float | None,
    goal: str,
    start_revision: int = 0,
) -> None:
    """Stream changes of ``name`` in a live view until ``verdict`` says done (or forever when it is
    None). The instance vanishing counts as done for a delete (``goal == "deleted"``).

    ``start_revision`` is the revision of the change being waited on (from the create, scale or
    delete answer): the watch replays from there, so a change that lands before the watch is set
    up (e.g. a fast delete) is still seen."""
    started = time.monotonic()
    stream = watch_stream(
        gateway, api.WatchInstancesRequest(name=name, start_revision=start_revision), timeout
    )
    last: types_pb2.Instance | None = None

    def view() -> Group:
        elapsed = time.monotonic() - started
        if last is None:
            status = f"waiting for {name} ({elapsed:.0f}s)"
            return Group(Spinner("dots", text=status))
        status = (
            f"{name}: {render.phase(last)}, {render.ready(last)} ready, waiting until {goal} ({elapsed:.0f}s)"
        )
        parts = [Spinner("dots", text=status)] if verdict is not None else []
        return Group(*parts, render.instance_details(last))

    try:
        if not console.is_terminal:
            # A pipe or a file: no live view (rich's Live shows nothing until it stops, then its
            # last frame, after the final line); one plain line per change, flushed.
            _follow_plainly(stream, name, console, verdict, goal)
            return
        live_view = Live(view(), console=console, refresh_per_second=4, transient=False)
        with _ended_line(console), live_view as live:
            for event in stream:
                last = event.instance
                if event.type == api.INSTANCE_EVENT_TYPE_DELETED:
                    live.update(view())
                    if goal == "deleted":
                        console.print(f"instance {name} deleted")
                        return
                    raise CliFailure(f"instance {name} was deleted")
                live.update(view())
                outcome = verdict(last) if verdict is not None else None
                if outcome is True:
                    console.print(f"instance {name} is {render.phase(last)} ({render.ready(last)} ready)")
                    return
                if isinstance(outcome, str):
                    raise CliFailure(outcome)
    except (grpc.RpcError, StreamDeadline) as error:
        timed_out = isinstance(error, StreamDeadline) or (
            isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        )
        if timed_out:
            where = f" (phase {render.phase(last)}, {render.ready(last)} ready)" if last is not None else ""
            raise CliFailure(f"timed out after {timeout:g}s waiting for {name} to be {goal}{where}") from None
        raise
    finally:
        stream.close()
