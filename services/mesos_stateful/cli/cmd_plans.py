"""``statefulctl retry | pause | resume | describe | events``: plan control and an instance's history.

- ``retry NAME [--wait]``: continue a plan stopped in ERROR from its failed step (RetryPlan);
  ``--wait`` follows it until RUNNING.
- ``pause NAME [--wait]`` / ``resume NAME [--wait]``: hold / release the instance's plans;
  ``pause --wait`` waits until no step runs any more (the next one is held, or the plan is done),
  ``resume --wait`` until RUNNING.
- ``describe NAME``: spec, members, the current plan with its steps, and the recent events.
- ``events NAME [--watch] [--limit N]``: the history, oldest first; ``--watch`` then streams new
  ones (WatchInstances' ``event`` responses), one line each, also when piped.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Group
from rich.table import Table
from rich.text import Text

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.cli import output as machine
from mesos_stateful.cli import render
from mesos_stateful.cli.client import UNARY_TIMEOUT_SECONDS, Gateway, reporting
from mesos_stateful.cli.main import (
    DEFAULT_WAIT_SECONDS,
    OutputOption,
    _gateway,
    _json,
    _live_console,
    _print_instance_json,
    app,
    out,
)
from mesos_stateful.cli.wait import Verdict, follow, until_running, watch_stream

# Events `describe` shows (the most recent).
DESCRIBE_EVENTS = 20

WaitOption = Annotated[bool, typer.Option(help="follow it until done (see the command's help)")]
TimeoutOption = Annotated[float, typer.Option(help="seconds --wait waits", min=0.0)]


def event_kind(kind: int) -> str:
    return types_pb2.EventKind.Name(kind).removeprefix("EVENT_KIND_")


def event_time(event: types_pb2.Event) -> str:
    seconds = event.time.ToNanoseconds() / 1e9
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}"


def event_line(event: types_pb2.Event) -> str:
    """``<time> <KIND> [member] <message> (by <actor>)`` on one line."""
    member = f" {event.member_id}" if event.member_id else ""
    by = f" (by {event.actor})" if event.actor and event.actor != "lifecycle" else ""
    return f"{event_time(event)}  {event_kind(event.kind):<16}{member}  {event.message}{by}"


def events_table(events: list[types_pb2.Event]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("TIME", "EVENT", "MEMBER", "MESSAGE", "BY"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(
            event_time(event), event_kind(event.kind), event.member_id or "-", event.message, event.actor
        )
    return table


def _list_events(gw: Gateway, name: str, limit: int) -> list[types_pb2.Event]:
    response = gw.stub().ListEvents(
        api.ListEventsRequest(name=name, page_size=limit), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
    )
    return list(response.events)


def _quiet(instance: types_pb2.Instance) -> Verdict:
    """pause --wait: done once no step runs (the next one is held, the plan is over or failed)."""
    if instance.phase in (types_pb2.INSTANCE_PHASE_DELETING, types_pb2.INSTANCE_PHASE_DELETED):
        return f"instance {instance.spec.name} is being deleted"
    for step in instance.plan.steps:
        if step.status != types_pb2.STEP_STATUS_COMPLETE:
            return step.held or step.status == types_pb2.STEP_STATUS_ERROR or None
    return True


@app.command()
def retry(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Continue a failed plan (ERROR) from its failed step, once its cause is fixed."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        response = gw.stub().RetryPlan(
            api.RetryPlanRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
        )
        if _json(gw) and not wait:
            machine.emit(gw.output, response)
            return
        if not _json(gw):
            out.print(f"plan {response.instance.plan.name} of {name} retried from its failed step")
        if wait:
            revision = response.instance.revision
            follow(gw, name, _live_console(gw), until_running, timeout, "RUNNING", revision)
            if _json(gw):
                _print_instance_json(gw, name)


@app.command()
def pause(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Hold the instance's plans: no new step starts (a running one finishes; a lost master is
    still failed over). --wait: until no step runs."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        response = gw.stub().PauseInstance(
            api.PauseInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
        )
        if _json(gw) and not wait:
            machine.emit(gw.output, response)
            return
        if not _json(gw):
            out.print(f"instance {name} paused; `statefulctl resume {name}` continues")
        if wait:
            revision = response.instance.revision
            follow(gw, name, _live_console(gw), _quiet, timeout, "quiet (no step running)", revision)
            if _json(gw):
                _print_instance_json(gw, name)


@app.command()
def resume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Let a paused instance's plans go on. --wait: until RUNNING."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        response = gw.stub().ResumeInstance(
            api.ResumeInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
        )
        if _json(gw) and not wait:
            machine.emit(gw.output, response)
            return
        if not _json(gw):
            out.print(f"instance {name} resumed")
        if wait:
            revision = response.instance.revision
            follow(gw, name, _live_console(gw), until_running, timeout, "RUNNING", revision)
            if _json(gw):
                _print_instance_json(gw, name)


@app.command()
def describe(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    limit: Annotated[int, typer.Option(help="recent events shown", min=1)] = DESCRIBE_EVENTS,
    output: OutputOption = None,
) -> None:
    """Everything about an instance: spec, members, the current plan and its steps, recent events."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        response = gw.stub().GetInstance(
            api.GetInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
        )
        events = _list_events(gw, name, limit)
        if _json(gw):
            machine.emit(
                gw.output,
                {
                    "instance": MessageToDict(response.instance),
                    "events": MessageToDict(api.ListEventsResponse(events=events)).get("events", []),
                },
            )
            return
        instance = response.instance
        spec = instance.spec
        head = [f"workload: {spec.workload}  replicas: {spec.replicas}"]
        if spec.image:
            head.append(f"image: {spec.image}")
        parts = [Text("\n".join(head)), render.instance_details(instance)]
        plan = instance.plan
        if plan.name:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(plan.started_at.seconds))
            why = f": {plan.reason}" if plan.reason else ""
            parts.append(Text(f"plan {plan.name} started {started}{why}"))
        parts.append(Text(f"events (last {len(events)}):" if events else "events: none"))
        if events:
            parts.append(events_table(events))
        out.print(Group(*parts))


@app.command()
def events(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="then stream new events (Ctrl-C to stop)")
    ] = False,
    limit: Annotated[int, typer.Option(help="most recent events (0: every one kept)", min=0)] = 0,
    output: OutputOption = None,
) -> None:
    """An instance's history (members lost, fences, promotions, plans, operator actions), oldest first."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        gw.stub().GetInstance(  # NOT_FOUND now rather than a watch that waits forever
            api.GetInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
        )
        stream = watch_stream(gw, api.WatchInstancesRequest(name=name), events=True) if watch else None
        try:
            if stream is not None:
                # The watch is set up once its first answer (the instance, ADDED) is here: events
                # recorded from then on come through it, those before through the list (an event
                # in both is shown once).
                next(stream, None)
            history = _list_events(gw, name, limit)
            shown = {e.id for e in history}
            for event in history:
                _print_event(gw, event)
            if stream is None:
                if not history and not _json(gw):
                    out.print(f"no events of {name}")
                return
            for response in stream:
                if response.HasField("event"):
                    if response.event.id not in shown:
                        shown.add(response.event.id)
                        _print_event(gw, response.event)
                elif response.type == api.INSTANCE_EVENT_TYPE_DELETED:
                    return
        finally:
            if stream is not None:
                stream.close()


def _print_event(gw: Gateway, event: types_pb2.Event) -> None:
    if _json(gw):
        print(render.to_json(event, compact=True), flush=True)
    else:
        print(event_line(event), flush=True)
