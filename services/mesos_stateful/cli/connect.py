"""``statefulctl endpoint NAME`` and ``statefulctl logs MEMBER``: how to connect, what a member printed."""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.cli import output as machine
from mesos_stateful.cli.client import EXIT_BAD_INPUT, UNARY_TIMEOUT_SECONDS, CliFailure, Gateway, reporting
from mesos_stateful.cli.main import OutputOption, _gateway, app, out
from mesos_stateful.cli.sandbox import SandboxError, SandboxFile

# How often `logs -f` asks the agent for more (seconds).
FOLLOW_POLL_SECONDS = 0.5
# "<instance>-<ordinal>": the instance name is a DNS-1123 label.
_MEMBER_ID = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)-([0-9]+)$")


def _endpoint_text(endpoint: types_pb2.InstanceEndpoints.Endpoint) -> str:
    return f"{endpoint.member_id} {endpoint.address}" + ("" if endpoint.ready else " (not ready)")


def endpoints_view(name: str, endpoints: types_pb2.InstanceEndpoints, show_secret: bool) -> Table:
    """``uri``, ``primary``, ``reads``, ``peers`` and the port, one row each (rows without a value
    are left out)."""
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", no_wrap=True)
    uri = endpoints.uri_with_secret if show_secret and endpoints.uri_with_secret else endpoints.uri
    table.add_row("uri", uri or Text("- (no member has an address yet)", style="yellow"))
    if endpoints.HasField("primary"):
        table.add_row("primary", _endpoint_text(endpoints.primary))
    if endpoints.reads:
        table.add_row("reads", ", ".join(_endpoint_text(e) for e in endpoints.reads))
    if endpoints.peers:
        table.add_row("peers", ", ".join(_endpoint_text(e) for e in endpoints.peers))
    table.add_row("port", endpoints.port_name or "-")
    return table


@app.command()
def endpoint(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    show_secret: Annotated[
        bool, typer.Option("--show-secret", help="put the password in the URI (asks for the secrets)")
    ] = False,
    output: OutputOption = None,
) -> None:
    """How to connect to an instance: its URI, master (primary), read replicas or peers."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        response = gw.stub().GetInstance(
            api.GetInstanceRequest(name=name, include_secrets=show_secret),
            metadata=gw.metadata,
            timeout=UNARY_TIMEOUT_SECONDS,
        )
        endpoints = response.instance.endpoints
        if machine.structured(gw.output):
            machine.emit(gw.output, endpoints)
        else:
            out.print(endpoints_view(name, endpoints, show_secret))


def instance_of(member_id: str) -> str:
    """The instance of a member id ``<instance>-<ordinal>``; a usage error otherwise."""
    match = _MEMBER_ID.match(member_id)
    if match is None:
        raise CliFailure(
            f"{member_id!r} is not a member id: members are named <instance>-<ordinal>, e.g. cache-0 "
            "(see statefulctl get NAME)",
            EXIT_BAD_INPUT,
        )
    return match.group(1)


def sandbox_file(gw: Gateway, member_id: str, stream: str) -> SandboxFile:
    """Where ``stream`` (stdout / stderr) of the member's current task is: its agent and path."""
    name = instance_of(member_id)
    response = gw.stub().GetInstance(
        api.GetInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
    )
    member = next((m for m in response.instance.members if m.id == member_id), None)
    if member is None:
        known = ", ".join(m.id for m in response.instance.members) or "none"
        raise CliFailure(f"instance {name} has no member {member_id} (members: {known})")
    if not member.agent_url or not member.sandbox_directory:
        state = types_pb2.MemberState.Name(member.state).removeprefix("MEMBER_STATE_")
        raise CliFailure(
            f"member {member_id} has no sandbox to read: it was not launched on an agent yet (state {state})"
        )
    return SandboxFile(member.agent_url, f"{member.sandbox_directory.rstrip('/')}/{stream}")


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _failure(error: SandboxError, member_id: str, where: SandboxFile) -> CliFailure:
    if error.status == 404:
        return CliFailure(
            f"the agent at {where.agent_url} has no {where.path} (the sandbox of {member_id} was "
            "removed by its agent, or the agent was restarted)"
        )
    return CliFailure(f"cannot read the output of {member_id}: {error.message}")


@app.command()
def logs(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(help="member id, e.g. cache-0 (see statefulctl get NAME)")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing what the member writes (Ctrl-C to stop)")
    ] = False,
    stderr: Annotated[bool, typer.Option("--stderr", help="its stderr instead of its stdout")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", min=0, help="only the last N lines (default: everything)")
    ] = None,
) -> None:
    """Print a member's output (stdout, or --stderr) from its sandbox, read through its Mesos
    agent's /files/read endpoint (the member's current task)."""
    gw: Gateway = ctx.obj
    with reporting(gw):
        where = sandbox_file(gw, member, "stderr" if stderr else "stdout")
        try:
            size = where.size()
            offset = where.tail_start(size, tail) if tail is not None else 0
            while True:
                chunk = where.read(offset)
                if chunk:
                    _write(chunk)
                    offset += len(chunk)
                    continue
                if not follow:
                    return
                time.sleep(FOLLOW_POLL_SECONDS)
        except SandboxError as error:
            raise _failure(error, member, where) from None
        except BrokenPipeError:  # piped into head: the rest is not wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
