"""``statefulctl switchover | restart | replace``: operator actions on one member (issue 15).

Each sends its RPC (SwitchoverInstance, RestartMember, ReplaceMember), prints what was asked and,
with ``--wait``, follows the instance until the lifecycle recorded the action done
(``Member.operation_done`` equals the request's ``Member.operation.id``) with every member ready.
Errors are printed on one line by ``reporting`` (exit 2 for bad input, 1 otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from google.protobuf.message import Message

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.cli import render
from mesos_stateful.cli.client import UNARY_TIMEOUT_SECONDS, CliFailure, Gateway, reporting
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
from mesos_stateful.cli.wait import Verdict, follow, until_running

WaitOption = Annotated[bool, typer.Option(help="follow until the action is done and every member ready")]
TimeoutOption = Annotated[float, typer.Option(help="seconds --wait waits", min=0.0)]


def operation_done(member_id: str, operation_id: str) -> Callable[[types_pb2.Instance], Verdict]:
    """A ``follow`` verdict: done when ``member_id`` recorded ``operation_id`` done and the
    instance is RUNNING with every member ready; FAILED fails."""

    def verdict(instance: types_pb2.Instance) -> Verdict:
        running = until_running(instance)
        if isinstance(running, str):
            return running
        member = next((m for m in instance.members if m.id == member_id), None)
        if member is None or member.operation_done != operation_id:
            return None
        plan = instance.plan
        if plan.operation.id == operation_id and plan.status != types_pb2.STEP_STATUS_COMPLETE:
            return None  # the member record is written just before the plan's last save
        return running

    return verdict


def _operation_of(instance: types_pb2.Instance, member_id: str) -> types_pb2.MemberOperation:
    for m in instance.members:
        if m.id == member_id:
            return m.operation
    return types_pb2.MemberOperation()


def _finish(
    gw: Gateway,
    name: str,
    instance: types_pb2.Instance,
    member_id: str,
    said: str,
    wait: bool,
    timeout: float,
    response: Message,
) -> None:
    if _json(gw) and not wait:
        out.print_json(render.to_json(response))
        return
    if not _json(gw):
        out.print(said)
    if not wait:
        return
    op = _operation_of(instance, member_id)
    follow(gw, name, _live_console(gw), operation_done(member_id, op.id), timeout, "done", instance.revision)
    if _json(gw):
        _print_instance_json(gw, name)
        return
    final = gw.stub().GetInstance(
        api.GetInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
    )
    master = next((m.id for m in final.instance.members if m.role == types_pb2.ROLE_MASTER), "")
    plan = final.instance.plan
    if plan.operation.id == op.id and [st.name.split(" ", 1)[0] for st in plan.steps] == ["done"]:
        # Closed without acting (its member no longer master, its target not ready any more...).
        raise CliFailure(f"not done: {plan.reason}")
    line = f"{plan.name or 'operation'} done: {plan.reason}" if plan.reason else "done"
    out.print(line + (f" (master: {master})" if master else ""))


@app.command()
def switchover(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    to: Annotated[
        str, typer.Option("--to", help="the replica to promote, e.g. cache-2 (default: any ready one)")
    ] = "",
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Planned switchover: the master stops taking writes, a replica catches up exactly and is promoted."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        response = gw.stub().SwitchoverInstance(
            api.SwitchoverInstanceRequest(name=name, target_member_id=to),
            metadata=gw.metadata,
            timeout=UNARY_TIMEOUT_SECONDS,
        )
        instance = response.instance
        master = next(
            (
                m.id
                for m in instance.members
                if m.operation.kind == types_pb2.OPERATION_KIND_SWITCHOVER
                and m.operation.id
                and m.operation.id != m.operation_done
            ),
            "",
        )
        said = f"switchover of {name} asked: master {master} -> {to or 'a ready replica'}"
        _finish(gw, name, instance, master, said, wait, timeout, response)


@app.command()
def restart(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(help="member id, e.g. cache-1")],
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Restart a member in place (same volume, same agent); a master is switched over first."""
    gw = _gateway(ctx, output)
    name = _instance_of(member)
    with reporting(gw):
        response = gw.stub().RestartMember(
            api.RestartMemberRequest(instance=name, member_id=member),
            metadata=gw.metadata,
            timeout=UNARY_TIMEOUT_SECONDS,
        )
        said = f"restart of {member} asked"
        _finish(gw, name, response.instance, member, said, wait, timeout, response)


@app.command()
def replace(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(help="member id, e.g. cache-1")],
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Replace a member: a fresh volume on another agent, resynced (never the last copy of the data)."""
    gw = _gateway(ctx, output)
    name = _instance_of(member)
    with reporting(gw):
        response = gw.stub().ReplaceMember(
            api.ReplaceMemberRequest(instance=name, member_id=member),
            metadata=gw.metadata,
            timeout=UNARY_TIMEOUT_SECONDS,
        )
        said = f"replacement of {member} asked"
        _finish(gw, name, response.instance, member, said, wait, timeout, response)


def _instance_of(member: str) -> str:
    """``cache-1`` -> ``cache`` (the gateway validates the member id against it)."""
    name, sep, ordinal = member.rpartition("-")
    return name if sep and ordinal.isdigit() else member
