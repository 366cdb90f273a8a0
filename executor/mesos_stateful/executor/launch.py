"""From a Mesos TaskInfo to a validated, expanded :class:`Launch` (everything a runtime needs).

Invalid task data raises :class:`InvalidTask`; the executor reports it as TASK_ERROR.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from google.protobuf.message import DecodeError

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.executor.checks import (
    DEFAULT_INTERVAL_MS,
    DEFAULT_MAX_FAILURES,
    DEFAULT_TIMEOUT_MS,
    CheckSpec,
    CommandTarget,
    TcpTarget,
)
from mesos_stateful.executor.expand import Expander

log = logging.getLogger(__name__)

DEFAULT_KILL_GRACE_SECONDS = 10.0
DEFAULT_FILE_MODE = 0o644
ROLE_NAMES = {types_pb2.ROLE_MASTER: "MASTER", types_pb2.ROLE_SLAVE: "SLAVE", types_pb2.ROLE_PEER: "PEER"}
# Variables of the agent/executor protocol that the member must not inherit.
_PRIVATE_PREFIXES = ("MESOS_", "LIBPROCESS_", "STATEFUL_EXECUTOR_")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InvalidTask(Exception):
    """The task cannot be run as given (reported as TASK_ERROR with this message)."""


@dataclass(frozen=True)
class PreparedFile:
    """A file to write: absolute path inside the sandbox, final content, mode."""

    path: Path
    content: bytes = field(repr=False)
    mode: int


@dataclass(frozen=True)
class Launch:
    """One member's launch, validated and with every ``${VAR}`` expanded."""

    task_id: str
    spec: types_pb2.LaunchSpec
    sandbox: Path
    host: str
    ports: Mapping[str, int]
    env: Mapping[str, str] = field(repr=False)
    argv: tuple[str, ...]
    files: tuple[PreparedFile, ...]
    readiness: CheckSpec | None
    health: CheckSpec | None
    kill_grace: float
    unknown_references: frozenset[str] = frozenset()


def port_env_name(port_name: str) -> str:
    """``PORT_<NAME>``: upper case, every character that cannot be in a variable name as '_'."""
    return "PORT_" + re.sub(r"[^A-Z0-9_]", "_", port_name.upper())


def member_base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The executor's environment without the agent's private variables (PATH, HOME, ... stay)."""
    return {k: v for k, v in environ.items() if not k.startswith(_PRIVATE_PREFIXES)}


def decode_task_data(data: Any) -> types_pb2.LaunchSpec:
    """TaskInfo.data as pymesos gives it (base64 text in JSON, or raw bytes) to a LaunchSpec."""
    if data is None or data == "":
        raise InvalidTask("task has no data: expected a serialized stateful.v1.LaunchSpec")
    if isinstance(data, str):
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as error:
            raise InvalidTask(f"task data is not base64: {error}") from None
    elif isinstance(data, bytes | bytearray):
        raw = bytes(data)
    else:
        raise InvalidTask(f"task data has unexpected type {type(data).__name__}")
    spec = types_pb2.LaunchSpec()
    try:
        spec.ParseFromString(raw)
    except DecodeError as error:
        raise InvalidTask(f"task data is not a stateful.v1.LaunchSpec: {error}") from None
    return spec


def ports_from_task(task: Mapping[str, Any], port_names: list[str]) -> dict[str, int]:
    """Named ports: from ``discovery.ports.ports[]`` (name, number); names the discovery info
    lacks are given the remaining ``ports`` resource values in ascending order."""
    named: dict[str, int] = {}
    for port in (task.get("discovery") or {}).get("ports", {}).get("ports", []) or []:
        if port.get("name") and port.get("number") is not None:
            named[str(port["name"])] = int(port["number"])
    offered: list[int] = []
    for resource in task.get("resources", []) or []:
        if resource.get("name") == "ports":
            for r in (resource.get("ranges") or {}).get("range", []) or []:
                offered += range(int(r["begin"]), int(r["end"]) + 1)
    spare = sorted(set(offered) - set(named.values()))
    for name in port_names:
        if name not in named:
            if not spare:
                raise InvalidTask(f"port {name!r} is not among the task's named ports or port resources")
            named[name] = spare.pop(0)
    return named


def grace_from_kill_policy(policy: Mapping[str, Any] | None) -> float | None:
    """Seconds from a Mesos KillPolicy ``{"grace_period": {"nanoseconds": N}}``; None if absent."""
    if not policy:
        return None
    period = policy.get("grace_period") or {}
    if "nanoseconds" not in period:
        return None
    try:
        return max(0.0, int(period["nanoseconds"]) / 1e9)
    except (TypeError, ValueError):
        return None


# The TaskInfo label with the launch's W3C trace context (offers: mesos.task_labels); the executor
# copies it onto the task's status updates (sender.StatusSender) so their handling joins the trace.
LABEL_TRACEPARENT = "traceparent"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def task_traceparent(task: Mapping[str, Any]) -> str:
    """The TaskInfo's ``traceparent`` label if it is a well-formed W3C traceparent
    (https://www.w3.org/TR/trace-context/#traceparent-header), else "" (ignored, never an error)."""
    labels = task.get("labels")
    entries = labels.get("labels") if isinstance(labels, Mapping) else None
    for label in entries if isinstance(entries, list) else []:
        if isinstance(label, Mapping) and label.get("key") == LABEL_TRACEPARENT:
            value = str(label.get("value", ""))
            return value if _TRACEPARENT.match(value) else ""
    return ""


def launch_from_task(
    task: Mapping[str, Any],
    *,
    host: str,
    sandbox: Path,
    environ: Mapping[str, str],
    default_kill_grace: float = DEFAULT_KILL_GRACE_SECONDS,
) -> Launch:
    """Validate a TaskInfo (plain JSON dict) and build its :class:`Launch`."""
    task_id = str((task.get("task_id") or {}).get("value") or "")
    if not task_id:
        raise InvalidTask("task has no task_id")
    spec = decode_task_data(task.get("data"))
    ports = ports_from_task(task, list(spec.port_names))
    policy_grace = grace_from_kill_policy(task.get("kill_policy"))
    return build_launch(
        spec,
        task_id=task_id,
        host=host,
        ports=ports,
        sandbox=sandbox,
        environ=environ,
        kill_grace=policy_grace,
        default_kill_grace=default_kill_grace,
    )


def build_launch(
    spec: types_pb2.LaunchSpec,
    *,
    task_id: str,
    host: str,
    ports: Mapping[str, int],
    sandbox: Path,
    environ: Mapping[str, str],
    kill_grace: float | None = None,
    default_kill_grace: float = DEFAULT_KILL_GRACE_SECONDS,
) -> Launch:
    """Build the member's environment and expand argv, env, files and checks from it.

    ``kill_grace`` (a Mesos kill policy) wins over ``spec.kill_grace_seconds``, which wins over
    ``default_kill_grace``.
    """
    sandbox = sandbox.resolve()
    for name in spec.port_names:
        if name not in ports:
            raise InvalidTask(f"port {name!r} of the launch spec was not given to the task")
    contract = {
        "HOST": host,
        "MESOS_SANDBOX": str(sandbox),
        "MEMBER_ID": spec.member_id,
        "INSTANCE": spec.instance,
        "ROLE": ROLE_NAMES.get(spec.role, ""),
    }
    for name, number in ports.items():
        contract[port_env_name(name)] = str(number)

    base = member_base_env(environ)
    base.update(contract)
    expand_env = Expander(base)
    env = dict(base)
    for key, value in spec.env.items():
        if not _ENV_NAME.match(key):
            raise InvalidTask(f"env: {key!r} is not a valid variable name")
        if key in contract:
            # The contract variables are what checks and other services rely on: they win.
            log.warning("env: %s is set by the executor; the launch spec's value is ignored", key)
            continue
        env[key] = expand_env(value)

    expand = Expander(env)
    argv = tuple(expand(arg) for arg in spec.argv)
    if spec.runtime in (types_pb2.RUNTIME_UNSPECIFIED, types_pb2.RUNTIME_PROCESS) and not argv:
        raise InvalidTask("argv is empty: nothing to run")
    files = tuple(_prepare_file(f, sandbox, expand) for f in spec.files)
    readiness = _check(spec, "readiness", host, ports, env, sandbox, expand)
    health = _check(spec, "health", host, ports, env, sandbox, expand)

    if kill_grace is None:
        kill_grace = float(spec.kill_grace_seconds) if spec.kill_grace_seconds else default_kill_grace
    unknown = frozenset(expand_env.unknown | expand.unknown)
    if unknown:
        log.warning("unknown ${VAR} references left as they are: %s", ", ".join(sorted(unknown)))
    return Launch(
        task_id=task_id,
        spec=spec,
        sandbox=sandbox,
        host=host,
        ports=dict(ports),
        env=env,
        argv=argv,
        files=files,
        readiness=readiness,
        health=health,
        kill_grace=kill_grace,
        unknown_references=unknown,
    )


def _prepare_file(file: types_pb2.FileSpec, sandbox: Path, expand: Expander) -> PreparedFile:
    relative = PurePosixPath(file.path)
    if not file.path or relative.is_absolute() or ".." in relative.parts:
        raise InvalidTask(f"file path {file.path!r} must be relative to the sandbox, without '..'")
    content = file.content
    if file.expand:
        try:
            content = expand(content.decode("utf-8")).encode("utf-8")
        except UnicodeDecodeError:
            raise InvalidTask(f"file {file.path!r}: expand is set but the content is not UTF-8") from None
    mode = file.mode or DEFAULT_FILE_MODE
    if mode > 0o7777:
        raise InvalidTask(f"file {file.path!r}: mode {mode:o} is not a file mode")
    return PreparedFile(path=sandbox / relative, content=content, mode=mode)


def _check(
    spec: types_pb2.LaunchSpec,
    which: Literal["readiness", "health"],
    host: str,
    ports: Mapping[str, int],
    env: Mapping[str, str],
    sandbox: Path,
    expand: Expander,
) -> CheckSpec | None:
    if not spec.HasField(which):
        return None
    check: types_pb2.Check = getattr(spec, which)
    kind = check.WhichOneof("kind")
    target: TcpTarget | CommandTarget
    if kind == "tcp":
        name = check.tcp.port_name
        if name not in ports:
            raise InvalidTask(f"{which} check: port {name!r} is not one of the task's ports")
        target = TcpTarget(host=host, port=ports[name], port_name=name)
    elif kind == "command":
        argv = tuple(expand(a) for a in check.command.argv)
        if not argv:
            raise InvalidTask(f"{which} check: command argv is empty")
        target = CommandTarget(argv=argv, env=env, cwd=sandbox)
    else:
        raise InvalidTask(f"{which} check: neither tcp nor command is set")
    return CheckSpec(
        target=target,
        interval=(check.interval_ms or DEFAULT_INTERVAL_MS) / 1000,
        timeout=(check.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000,
        grace_period=check.grace_period_ms / 1000,
        max_consecutive_failures=check.max_consecutive_failures or DEFAULT_MAX_FAILURES,
    )
