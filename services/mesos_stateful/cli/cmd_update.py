"""``statefulctl update`` and ``statefulctl apply -f``: change a living instance (UpdateInstance)
or converge one to a YAML file (create if missing, else update the fields that differ, with the
etag read just before; kubectl apply's idea without its last-applied bookkeeping: only the fields
the file names are managed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
import yaml
from google.protobuf import field_mask_pb2, json_format

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.cli import output as machine
from mesos_stateful.cli import render
from mesos_stateful.cli.client import EXIT_BAD_INPUT, UNARY_TIMEOUT_SECONDS, CliFailure, Gateway, reporting
from mesos_stateful.cli.main import (
    DEFAULT_WAIT_SECONDS,
    MAX_UINT64,
    OutputOption,
    _gateway,
    _json,
    _live_console,
    _pairs,
    _print_instance_json,
    app,
    out,
)
from mesos_stateful.cli.wait import Verdict, follow, until_running

# An etag gone stale between apply's read and its write (the lifecycle writes the record as its
# plans progress): read again, diff again, at most this many times.
APPLY_TRIES = 5
RUNTIME_WORDS = {"process": "RUNTIME_PROCESS", "docker": "RUNTIME_DOCKER"}


def until_applied(generation: int) -> Any:
    """A ``follow`` verdict: done once ``generation`` is rolled out (observed_generation reached
    it) and the instance is RUNNING with every member ready; failed on FAILED."""

    def verdict(instance: types_pb2.Instance) -> Verdict:
        running = until_running(instance)
        if isinstance(running, str):
            return running
        return (running is True and instance.observed_generation >= generation) or None

    return verdict


def _update(gw: Gateway, request: api.UpdateInstanceRequest) -> types_pb2.Instance:
    response = gw.stub().UpdateInstance(request, metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS)
    return response.instance


def _finish(
    gw: Gateway, name: str, instance: types_pb2.Instance, before: int, wait: bool, timeout: float
) -> None:
    """Say what happened (or print the instance as JSON), then follow it with --wait."""
    changed = instance.generation != before
    if not _json(gw):
        if not changed:
            out.print(f"instance {name} unchanged (generation {instance.generation})")
        elif instance.observed_generation >= instance.generation:
            out.print(f"instance {name} updated (generation {instance.generation}, applied)")
        else:
            out.print(
                f"instance {name} updated (generation {instance.generation}): rolling through the "
                "members, replicas first, then a switchover"
            )
    elif not wait:
        machine.emit(gw.output, api.UpdateInstanceResponse(instance=instance))
        return
    if wait:
        follow(
            gw,
            name,
            _live_console(gw),
            until_applied(instance.generation),
            timeout,
            f"generation {instance.generation} applied",
            instance.revision,
        )
        if _json(gw):
            _print_instance_json(gw, name)


@app.command()
def update(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="instance name")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="workload setting key=value (repeatable)")
    ] = None,
    unset: Annotated[
        list[str] | None, typer.Option(help="workload setting to remove (its default applies; repeatable)")
    ] = None,
    cpus: Annotated[float | None, typer.Option(help="cpus per member", min=0.0)] = None,
    mem: Annotated[int | None, typer.Option(help="memory per member in MiB", min=0, max=MAX_UINT64)] = None,
    image: Annotated[str | None, typer.Option(help="container image (Docker runtime)")] = None,
    label: Annotated[
        list[str] | None, typer.Option(help="label key=value (repeatable; empty value removes)")
    ] = None,
    etag: Annotated[str, typer.Option(help="refuse the change if the instance changed since this etag")] = "",
    wait: Annotated[bool, typer.Option(help="follow the rollout until the change is applied")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits", min=0.0)] = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Change settings, resources, image or labels (rolled out one member at a time)."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        spec = types_pb2.InstanceSpec(name=name)
        paths: list[str] = []
        for key, value in _pairs(set_, "--set").items():
            spec.config[key] = value
            paths.append(f"config.{key}")
        paths += [f"config.{key}" for key in unset or []]
        if cpus is not None:
            spec.resources.cpus = cpus
            paths.append("resources.cpus")
        if mem is not None:
            spec.resources.mem_mb = mem
            paths.append("resources.mem_mb")
        if image is not None:
            spec.image = image
            paths.append("image")
        for key, value in _pairs(label, "--label").items():
            if value:
                spec.labels[key] = value
            paths.append(f"labels.{key}")
        if not paths:
            raise CliFailure(
                "nothing to change: give --set, --unset, --cpus, --mem, --image or --label", EXIT_BAD_INPUT
            )
        read = gw.stub().GetInstance(
            api.GetInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
        )
        request = api.UpdateInstanceRequest(
            spec=spec, update_mask=field_mask_pb2.FieldMask(paths=paths), etag=etag
        )
        _finish(gw, name, _update(gw, request), read.instance.generation, wait, timeout)


def load_spec(text: str, source: str) -> tuple[types_pb2.InstanceSpec, set[str]]:
    """The InstanceSpec of a YAML document and the top-level fields it names. The document is an
    InstanceSpec (proto field names or their JSON names: ``mem_mb`` / ``memMb``), or an object
    with one under ``spec`` (what ``statefulctl get -o json`` shows); ``runtime`` may be
    ``process`` / ``docker``. Errors are usage errors naming the file."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CliFailure(f"{source}: not YAML: {error}".replace("\n", " "), EXIT_BAD_INPUT) from None
    if isinstance(document, dict) and isinstance(document.get("spec"), dict):
        document = document["spec"]
    if not isinstance(document, dict):
        raise CliFailure(
            f"{source}: expected a mapping of InstanceSpec fields (name, workload, ...)", EXIT_BAD_INPUT
        )
    runtime = document.get("runtime")
    if isinstance(runtime, str) and runtime.lower() in RUNTIME_WORDS:
        document["runtime"] = RUNTIME_WORDS[runtime.lower()]
    for key in ("config", "labels"):
        if isinstance(document.get(key), dict):  # YAML reads yes / 3 as bool / int: values are strings
            document[key] = {str(k): _text(v) for k, v in document[key].items()}
    spec = types_pb2.InstanceSpec()
    try:
        json_format.ParseDict(document, spec)
    except json_format.ParseError as error:
        raise CliFailure(f"{source}: {error}", EXIT_BAD_INPUT) from None
    if not spec.name:
        raise CliFailure(f"{source}: name is required", EXIT_BAD_INPUT)
    named = {_field_name(k) for k in document}
    return spec, named


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def _field_name(key: str) -> str:
    by_json = {f.json_name: f.name for f in types_pb2.InstanceSpec.DESCRIPTOR.fields}
    return by_json.get(key, key)


def diff_paths(current: types_pb2.InstanceSpec, wanted: types_pb2.InstanceSpec, named: set[str]) -> list[str]:
    """The update_mask paths that bring ``current`` to ``wanted`` for the fields the file names
    (``named``): whole maps for config / labels / placement, the sub-fields given for resources
    (0 = not given)."""
    paths: list[str] = []
    for key in ("config", "labels"):
        if key in named and dict(getattr(current, key)) != dict(getattr(wanted, key)):
            paths.append(key)
    if "image" in named and current.image != wanted.image:
        paths.append("image")
    if "placement" in named and current.placement != wanted.placement:
        paths.append("placement")
    if "resources" in named:
        for field in ("cpus", "mem_mb", "disk_mb"):
            value = getattr(wanted.resources, field)
            if value and value != getattr(current.resources, field):
                paths.append(f"resources.{field}")
    return paths


@app.command()
def apply(
    ctx: typer.Context,
    file: Annotated[str, typer.Option("-f", "--filename", help="instance YAML file ('-' reads stdin)")],
    wait: Annotated[bool, typer.Option(help="follow until deployed / the change is applied")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits", min=0.0)] = DEFAULT_WAIT_SECONDS,
    output: OutputOption = None,
) -> None:
    """Create or update an instance from a YAML InstanceSpec (only the fields that differ)."""
    gw = _gateway(ctx, output)
    with reporting(gw):
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
        except OSError as error:
            raise CliFailure(f"cannot read {file}: {error.strerror}", EXIT_BAD_INPUT) from None
        wanted, named = load_spec(text, file)
        name = wanted.name
        for attempt in range(APPLY_TRIES):
            try:
                current = (
                    gw.stub()
                    .GetInstance(
                        api.GetInstanceRequest(name=name), metadata=gw.metadata, timeout=UNARY_TIMEOUT_SECONDS
                    )
                    .instance
                )
            except grpc.RpcError as error:
                if not isinstance(error, grpc.Call) or error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                created = gw.stub().CreateInstance(
                    api.CreateInstanceRequest(spec=wanted),
                    metadata=gw.metadata,
                    timeout=UNARY_TIMEOUT_SECONDS,
                )
                if not _json(gw):
                    out.print(f"instance {name} created ({render.phase(created.instance)})")
                if wait:
                    follow(
                        gw,
                        name,
                        _live_console(gw),
                        until_running,
                        timeout,
                        "RUNNING",
                        created.instance.revision,
                    )
                if _json(gw):
                    _print_instance_json(gw, name)
                return
            paths = diff_paths(current.spec, wanted, named)
            # A workload / runtime different from the stored one is refused by the gateway, naming it.
            spec = types_pb2.InstanceSpec()
            spec.CopyFrom(wanted)
            if "workload" not in named:
                spec.workload = ""
            if "runtime" not in named:
                spec.runtime = types_pb2.RUNTIME_UNSPECIFIED
            for field, stored in (("workload", current.spec.workload), ("runtime", current.spec.runtime)):
                given = getattr(spec, field)
                if given and stored and given != stored:
                    shown = types_pb2.Runtime.Name(given) if field == "runtime" else given
                    raise CliFailure(
                        f"{file}: {field} {shown!r} differs from instance {name}'s: it is fixed for the "
                        "life of the instance (create a new instance for another one)",
                        EXIT_BAD_INPUT,
                    )
            instance = current
            if paths:
                request = api.UpdateInstanceRequest(
                    spec=spec, update_mask=field_mask_pb2.FieldMask(paths=paths), etag=current.etag
                )
                try:
                    instance = _update(gw, request)
                except grpc.RpcError as error:
                    stale = isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.ABORTED
                    if stale and attempt + 1 < APPLY_TRIES:
                        continue  # changed since the read (e.g. a plan step): read, diff again
                    raise
            if "replicas" in named and wanted.replicas != instance.spec.replicas:
                instance = (
                    gw.stub()
                    .ScaleInstance(
                        api.ScaleInstanceRequest(name=name, replicas=wanted.replicas),
                        metadata=gw.metadata,
                        timeout=UNARY_TIMEOUT_SECONDS,
                    )
                    .instance
                )
            _finish(gw, name, instance, current.generation, wait, timeout)
            return
