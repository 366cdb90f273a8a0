"""Validation of OfferService requests: every problem is reported at once, by field."""

from __future__ import annotations

import re

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors

_PERSISTENCE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?$", re.IGNORECASE)


def validate_launch(spec: types_pb2.LaunchSpec, prefix: str = "launch") -> None:
    fields: dict[str, str] = {}
    if not spec.instance:
        fields[f"{prefix}.instance"] = "required"
    if not spec.member_id:
        fields[f"{prefix}.member_id"] = "required"
    elif spec.instance and not spec.member_id.startswith(spec.instance + "-"):
        fields[f"{prefix}.member_id"] = f"must be '<instance>-<ordinal>' ({spec.instance}-N)"
    if not spec.task_id:
        fields[f"{prefix}.task_id"] = "required"
    else:
        member, dot, incarnation = spec.task_id.rpartition(".")
        if not dot or member != spec.member_id or not incarnation.isdigit() or int(incarnation) < 1:
            fields[f"{prefix}.task_id"] = (
                f"must be '<member_id>.<incarnation>' ({spec.member_id or 'member'}.N, N >= 1)"
            )
    if not spec.resources.cpus > 0:
        fields[f"{prefix}.resources.cpus"] = "must be > 0"
    if spec.resources.mem_mb <= 0:
        fields[f"{prefix}.resources.mem_mb"] = "must be > 0"
    if spec.runtime != types_pb2.RUNTIME_DOCKER and not spec.argv:
        fields[f"{prefix}.argv"] = "required (the command to run)"
    elif spec.argv and not spec.argv[0]:
        fields[f"{prefix}.argv"] = "argv[0] must not be empty"
    if spec.runtime == types_pb2.RUNTIME_DOCKER and not spec.image:
        fields[f"{prefix}.image"] = "required for the Docker runtime"
    seen: set[str] = set()
    for index, name in enumerate(spec.port_names):
        field = f"{prefix}.port_names[{index}]"
        if not _PORT_NAME.match(name):
            fields[field] = "must be 1-32 letters, digits, '-' or '_'"
        key = name.upper().replace("-", "_")
        if key in seen:
            fields[field] = f"duplicate port name {name!r}"
        seen.add(key)
    for check_name, check in (("readiness", spec.readiness), ("health", spec.health)):
        if (
            spec.HasField(check_name)
            and check.WhichOneof("kind") == "tcp"
            and check.tcp.port_name not in spec.port_names
        ):
            fields[f"{prefix}.{check_name}.tcp.port_name"] = "must be one of port_names"
    volume = spec.volume
    if spec.HasField("volume") and (volume.persistence_id or volume.agent_id or volume.size_mb):
        if not _PERSISTENCE_ID.match(volume.persistence_id):
            fields[f"{prefix}.volume.persistence_id"] = (
                "required: letters, digits, '.', '-' or '_' (e.g. '<member id>.v1')"
            )
        if volume.size_mb <= 0:
            fields[f"{prefix}.volume.size_mb"] = "must be > 0"
        path = volume.container_path
        if not path or path.startswith("/") or ".." in path.split("/"):
            fields[f"{prefix}.volume.container_path"] = "required: a relative path inside the sandbox"
    if fields:
        raise errors.InvalidArgument(
            "invalid launch: " + "; ".join(f"{k}: {v}" for k, v in sorted(fields.items())), fields
        )


def validate_task_id(task_id: str, field: str = "task_id") -> None:
    if not task_id:
        raise errors.InvalidArgument("task_id is required", {field: "required"})
