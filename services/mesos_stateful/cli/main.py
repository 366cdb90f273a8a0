"""``statefulctl``: the command line of mesos-stateful, over the public gRPC API."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.cli import output as machine
from mesos_stateful.cli import render
from mesos_stateful.cli.client import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    UNARY_TIMEOUT_SECONDS,
    CliFailure,
    Gateway,
    report,
    reporting,
)
from mesos_stateful.cli.scaffold import render as scaffold
from mesos_stateful.cli.scaffold.node import NodeSkeleton
from mesos_stateful.cli.trace import (
    TraceFolderMissing,
    check_folder,
    no_trace_message,
    read_plans,
    traces_folder,
)
from mesos_stateful.cli.trace import render as trace_render
from mesos_stateful.cli.wait import follow, until_running, watch_stream

DEFAULT_ENDPOINT = "127.0.0.1:7000"
DEFAULT_WAIT_SECONDS = 600.0
# How long `trace` asks the gateway whether an instance without traces exists (seconds): a
# gateway that is down must not hold up the answer "no trace of NAME".
TRACE_LOOKUP_TIMEOUT_SECONDS = 2.0

# Integer flags are checked against the range of their protobuf field (types.proto: replicas is
# uint32, mem_mb / disk_mb are uint64) before anything is sent, so an out-of-range value is a usage
# error naming the flag (click IntRange), not a protobuf "Value out of range". The gateway applies
# the real limits (its max_replicas, the workload's min/max).
MAX_UINT32 = 2**32 - 1
MAX_UINT64 = 2**64 - 1

app = typer.Typer(
    name="statefulctl",
    help="Create, inspect, scale and delete stateful instances (Redis, MariaDB, etcd, ...) on Mesos.",
    no_args_is_help=True,
    # --install-completion / --show-completion (bash, zsh, fish, PowerShell), from typer.
    add_completion=True,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=False)


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class Runtime(StrEnum):
    process = "process"
    docker = "docker"


RUNTIMES = {Runtime.process: types_pb2.RUNTIME_PROCESS, Runtime.docker: types_pb2.RUNTIME_DOCKER}


def _show_version(value: bool | None) -> None:
    if value:
        print(f"statefulctl {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    """The installed mesos-stateful version (pyproject.toml), "unknown" when not installed."""
    try:
        return importlib.metadata.version("mesos-stateful")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@app.callback()
def options(
    ctx: typer.Context,
    endpoint: Annotated[
        str, typer.Option(envvar="STATEFUL_ENDPOINT", help="host:port of the gateway")
    ] = DEFAULT_ENDPOINT,
    token: Annotated[
        str | None, typer.Option(envvar="STATEFUL_TOKEN", help="bearer token, if the gateway wants one")
    ] = None,
    output: Annotated[Output, typer.Option("-o", "--output", help="table, json or yaml")] = Output.table,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_show_version, is_eager=True, help="print the version and exit"),
    ] = None,
) -> None:
    machine.fit_pipe(out)
    ctx.obj = Gateway(endpoint=endpoint, token=token or None, output=output.value)


# -o is accepted before the command (global) and after it (per command); the latter wins.
OutputOption = Annotated[Output | None, typer.Option("-o", "--output", help="table, json or yaml")]


def _gateway(ctx: typer.Context, output: Output | None) -> Gateway:
    gw: Gateway = ctx.obj
    if output is not None:
        gw.output = output.value
    return gw


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``k=v`` options as a dict; a malformed one is a usage error."""
    pairs: dict[str, str] = {}
    for value in values or []:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise CliFailure(f"{option} expects key=value, got {value!r}", EXIT_BAD_INPUT)
        pairs[key] = item
    return pairs


def _json(gw: Gateway) -> bool:
    """Machine-readable output (-o json or -o yaml): stdout carries only the data."""
    return machine.structured(gw.output)


def _live_console(gw: Gateway) -> Console:
    # With -o json, stdout carries only JSON: the live view goes to stderr.
    return Console(stderr=True) if _json(gw) else out


@app.command()
def create(
    ctx: typer.Context,
    workload: Annotated[str, typer.Argument(help="registered workload, e.g. redis (see `workloads`)")],
    name: Annotated[str, typer.Argument(help="instance name (DNS-1123 label, at most 40 characters)")],
    replicas: Annotated[int, typer.Option(help="number of members", min=0, max=MAX_UINT32)] = 1,
    cpus: Annotated[float, typer.Option(help="cpus per member (0: workload default)", min=0.0)] = 0.0,
    mem: Annotated[
        int, typer.Option(help="memory per member in MiB (0: workload default)", min=0, max=MAX_UINT64)
    ] = 0,
    disk: Annotated[
        int, typer.Option(help="disk per member in MiB (0: workload default)", min=0, max=MAX_UINT64)
    ] = 0,
    image: Annotated[
        str, typer.Option(help="container image (Docker runtime; default: the workload's image)")
    ] = "",
    runtime: Annotated[
        Runtime | None,
        typer.Option(
            help="how members run: process (on the agent) or docker (containers; images from "
            "`make images`); default: the gateway's default_runtime. Fixed for the instance's life",
        ),
    ] = None,
    config: Annotated[list[str] | None, typer.Option(help="workload setting key=value (repeatable)")] = None,
    label: Annotated[list[str] | None, typer.Option(help="label key=value (repeatable)")] = None,
    wait: Annotated[bool, typer.Option(help="follow the deploy until RUNNING")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits", min=0.0)] = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Create an instance of a workload."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        spec = types_pb2.InstanceSpec(
            name=name,
            workload=workload,
            replicas=replicas,
            resources=types_pb2.Resources(cpus=cpus, mem_mb=mem, disk_mb=disk),
            image=image,
            runtime=RUNTIMES[runtime] if runtime is not None else types_pb2.RUNTIME_UNSPECIFIED,
            config=_pairs(config, "--config"),
            labels=_pairs(label, "--label"),
        )
        response = gw.stub().CreateInstance(
            api.CreateInstanceRequest(spec=spec), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
        )
        if _json(gw) and not wait:
            machine.emit(gw.output, response)
            return
        if not _json(gw):
            out.print(f"instance {name} created ({render.phase(response.instance)})")
        if wait:
            revision = response.instance.revision
            follow(gw, name, _live_console(gw), until_running, timeout, "RUNNING", revision)
            if _json(gw):
                _print_instance_json(gw, name)
        else:
            out.print(render.instances_table([response.instance]))


def _print_instance_json(gw: Gateway, name: str) -> None:
    response = gw.stub().GetInstance(
        api.GetInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
    )
    machine.emit(gw.output, response)


@app.command()
def get(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="keep showing changes (Ctrl-C to stop)")
    ] = False,
    show_secrets: Annotated[bool, typer.Option(help="also show generated secrets (passwords)")] = False,
    output: OutputOption = None,
) -> None:
    """Show an instance: phase, plan steps and members."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        if watch:
            # NOT_FOUND now rather than waiting forever for an instance that does not exist.
            gw.stub().GetInstance(
                api.GetInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
            )
            if _json(gw):
                _stream_json(gw, name, until_deleted=True)
            else:
                follow(gw, name, out, None, None, "deleted")
            return
        response = gw.stub().GetInstance(
            api.GetInstanceRequest(name=name, include_secrets=show_secrets),
            metadata=gw.metadata,
            timeout=UNARY_TIMEOUT_SECONDS,
        )
        if _json(gw):
            machine.emit(gw.output, response)
        else:
            out.print(render.instance_details(response.instance, dict(response.secrets)))


@app.command("list")
def list_instances(
    ctx: typer.Context,
    workload: Annotated[str, typer.Option(help="only instances of this workload")] = "",
    label: Annotated[list[str] | None, typer.Option(help="only instances with label key=value")] = None,
    output: OutputOption = None,
) -> None:
    """List instances."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        labels = _pairs(label, "--label")
        instances: list[types_pb2.Instance] = []
        token = ""
        while True:
            page = gw.stub().ListInstances(
                api.ListInstancesRequest(workload=workload, labels=labels, page_token=token, page_size=500),
                metadata=gw.metadata,
                timeout=UNARY_TIMEOUT_SECONDS,
            )
            instances.extend(page.instances)
            token = page.next_page_token
            if not token:
                break
        if _json(gw):
            machine.emit(gw.output, api.ListInstancesResponse(instances=instances))
        elif instances:
            out.print(render.instances_table(instances))
        else:
            out.print("no instances")


@app.command()
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    wait: Annotated[bool, typer.Option(help="wait until the instance is gone")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits", min=0.0)] = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Delete an instance (its members are killed, then it is removed)."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        response = gw.stub().DeleteInstance(
            api.DeleteInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
        )
        if _json(gw):
            machine.emit(gw.output, response)
        else:
            out.print(f"instance {name} is {render.phase(response.instance)}")
        if wait:
            revision = response.instance.revision
            follow(gw, name, _live_console(gw), _never_done, timeout, "deleted", revision)


def _never_done(instance: types_pb2.Instance) -> bool | str | None:
    if instance.phase == types_pb2.INSTANCE_PHASE_FAILED:
        return f"instance {instance.spec.name} FAILED: {instance.last_error or 'see statefulctl get'}"
    return None


@app.command()
def scale(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    replicas: Annotated[int, typer.Option(help="new number of members", min=0, max=MAX_UINT32)],
    wait: Annotated[bool, typer.Option(help="follow the scale until RUNNING")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits", min=0.0)] = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Change the number of members of an instance."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        response = gw.stub().ScaleInstance(
            api.ScaleInstanceRequest(name=name, replicas=replicas),
            metadata=gw.metadata,
            timeout=UNARY_TIMEOUT_SECONDS,
        )
        if _json(gw) and not wait:
            machine.emit(gw.output, response)
            return
        if not _json(gw):
            generation = response.instance.generation
            out.print(f"instance {name} scaled to {replicas} members (generation {generation})")
        if wait:
            revision = response.instance.revision
            follow(gw, name, _live_console(gw), until_running, timeout, "RUNNING", revision)
            if _json(gw):
                _print_instance_json(gw, name)


@app.command()
def watch(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="only this instance (default: all)")] = "",
    workload: Annotated[str, typer.Option(help="only instances of this workload")] = "",
    output: OutputOption = None,
) -> None:
    """Stream instance changes, one line each (Ctrl-C to stop)."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        if _json(gw):
            _stream_json(gw, name, workload)
            return
        out.print(f"{'REVISION':>8}  {'EVENT':<8}  {'NAME':<20} {'PHASE':<10} {'READY':>5}  PLAN")
        stream = watch_stream(gw, api.WatchInstancesRequest(name=name, workload=workload))
        # Members' health is refreshed every few seconds: print a line only when what it shows
        # (event, phase, ready, plan) changed for that instance.
        shown: dict[str, str] = {}
        try:
            for event in stream:
                line = render.event_line(event)
                seen = line.split(None, 1)[1]
                if shown.get(event.instance.spec.name) == seen:
                    continue
                shown[event.instance.spec.name] = seen
                out.print(line, markup=False)
        finally:
            stream.close()


def _stream_json(gw: Gateway, name: str, workload: str = "", until_deleted: bool = False) -> None:
    """One JSON object per line per change; with ``until_deleted``, stop once the instance is gone."""
    request = api.WatchInstancesRequest(name=name, workload=workload)
    stream = watch_stream(gw, request)
    try:
        for event in stream:
            machine.emit_item(gw.output, event)
            if until_deleted and event.type == api.INSTANCE_EVENT_TYPE_DELETED:
                return
    finally:
        stream.close()


@app.command()
def workloads(ctx: typer.Context, output: OutputOption = None) -> None:
    """List the registered workloads."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        response = gw.stub().ListWorkloads(
            api.ListWorkloadsRequest(), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
        )
        if _json(gw):
            machine.emit(gw.output, response)
        elif response.workloads:
            out.print(render.workloads_table(list(response.workloads)))
        else:
            out.print("no workloads registered: start a workload service (make run starts them)")


@app.command()
def trace(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    last: Annotated[int, typer.Option(help="show the last N plans (failovers, deploys...)", min=1)] = 1,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show every state/offers call instead of a count")
    ] = False,
    dir: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="folder of the span files (default: $STATEFUL_TRACES_DIR, else `make run`'s "
            "<data_dir>/traces)",
        ),
    ] = None,
) -> None:
    """Show the latest plan of an instance (a failover, a deploy...) as a timeline of its steps."""
    gw: Gateway = ctx.obj
    with reporting(gw):
        folder, source = traces_folder(str(dir) if dir is not None else None)
        try:
            check_folder(folder, source)
        except TraceFolderMissing as missing:
            raise CliFailure(str(missing)) from None
        plans = read_plans(folder, name, last)
        if not plans:
            raise CliFailure(_no_trace(gw, name, folder, source))
        try:
            for line in trace_render(plans, verbose):
                print(line)
            sys.stdout.flush()
        except BrokenPipeError:  # piped into head: the rest is not wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _no_trace(gw: Gateway, name: str, folder: Path, source: str) -> str:
    """Why ``name`` has no trace: the gateway, when it answers, tells whether the instance exists;
    else what the folder holds (see :func:`trace.no_trace_message`)."""
    try:
        gw.stub().GetInstance(
            api.GetInstanceRequest(name=name), metadata=gw.metadata, timeout=TRACE_LOOKUP_TIMEOUT_SECONDS
        )
    except grpc.RpcError as error:
        if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.NOT_FOUND:
            return f"no instance {name}"
    return no_trace_message(folder, source, name)


@app.command("new-workload")
def new_workload(
    name: Annotated[str, typer.Argument(help="workload name (DNS-1123 label, e.g. my-db)")],
    dir: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="parent folder: writes DIR/<name> (default: ./<name>_workload); '-' becomes '_'"
        ),
    ] = None,
    topology: Annotated[
        scaffold.Topology, typer.Option(help="master-replica or peers")
    ] = scaffold.Topology.master_replica,
    force: Annotated[
        bool, typer.Option(help="write into an existing folder (its generated files are overwritten)")
    ] = False,
    lang: Annotated[
        scaffold.Lang, typer.Option(help="python, or node (Node.js: @grpc/grpc-js, run with node)")
    ] = scaffold.Lang.python,
) -> None:
    """Scaffold a workload service (a stateful.v1.WorkloadService) ready to run, in Python or Node.js."""
    try:
        scaffold.check_name(name)
        folder = scaffold.target(name, dir)
        skeleton: scaffold.Skeleton | NodeSkeleton
        if lang == scaffold.Lang.node:
            skeleton = NodeSkeleton(name=name, topology=topology)
        else:
            skeleton = scaffold.Skeleton(name=name, topology=topology, package=folder.name)
        scaffold.write(skeleton, folder, force)
    except scaffold.ScaffoldError as error:
        report(CliFailure(error.message, EXIT_BAD_INPUT if error.usage else EXIT_FAILURE))
        raise typer.Exit(EXIT_BAD_INPUT if error.usage else EXIT_FAILURE) from None
    if lang == scaffold.Lang.node:
        prefix = f"STATEFUL_{scaffold.package_name(name).upper()}_"
        run = f"cd {folder} && npm install && {prefix}STATE_ENDPOINT=127.0.0.1:7100 node src/main.js"
    else:
        run = f"cd {folder.parent} && python -m {folder.name} --state-endpoint 127.0.0.1:7100"
    print(f"workload {name} ({topology.value}) scaffolded in {folder}/; see {folder}/README.md")
    print(f"run it: {run}")


def main() -> None:
    """Entry point: no traceback ever, also on Ctrl-C or a bug."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as error:  # the last line of defence: one line, not a traceback
        report(CliFailure(f"unexpected {type(error).__name__}: {error}"))
        sys.exit(EXIT_FAILURE)


# Commands in their own modules (they decorate ``app``); imported last, after ``app`` exists.
from mesos_stateful.cli import cmd_member_ops, cmd_plans, cmd_update, connect  # noqa: E402, F401

if __name__ == "__main__":
    main()
