"""``--wait`` and ``get --watch``: follow one instance through WatchInstances with a live display."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.cli import render
from mesos_stateful.cli.client import CliFailure, Gateway

# What a waiter decides on each change: keep waiting (None), done (True) or failed (a message).
Verdict = bool | str | None


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
    stream = gateway.stub().WatchInstances(
        api.WatchInstancesRequest(name=name, start_revision=start_revision),
        metadata=gateway.metadata,
        timeout=timeout,
    )
    last: types_pb2.Instance | None = None

    def view() -> Group:
        elapsed = time.monotonic() - started
        if last is None:
            status = f"waiting for {name} ({elapsed:.0f}s)"
            return Group(Spinner("dots", text=status))
        status = (
            f"{name}: {render.phase(last)}, {render.ready(last)} ready, "
            f"waiting until {goal} ({elapsed:.0f}s)"
        )
        parts = [Spinner("dots", text=status)] if verdict is not None else []
        return Group(*parts, render.instance_details(last))

    try:
        with Live(view(), console=console, refresh_per_second=4, transient=False) as live:
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
    except grpc.RpcError as error:
        if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            where = f" (phase {render.phase(last)}, {render.ready(last)} ready)" if last is not None else ""
            raise CliFailure(f"timed out after {timeout:g}s waiting for {name} to be {goal}{where}") from None
        raise
    finally:
        stream.cancel()
