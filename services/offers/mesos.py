"""Conversions between Mesos v1 JSON (as pymesos hands it over) and our types. Pure functions.

Offers and status updates arrive as dicts (addict ``Dict`` with use_addict=True, a dict
subclass); TaskInfo goes out as plain dicts. Bytes fields are base64 strings in Mesos JSON.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, cast

from google.protobuf import timestamp_pb2

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.offers.matching import Assignment, Need, Offer

Json = dict[str, Any]

TERMINAL_STATES = frozenset(
    {
        types_pb2.TASK_STATE_FINISHED,
        types_pb2.TASK_STATE_FAILED,
        types_pb2.TASK_STATE_KILLED,
        types_pb2.TASK_STATE_ERROR,
        types_pb2.TASK_STATE_LOST,
        types_pb2.TASK_STATE_DROPPED,
        types_pb2.TASK_STATE_GONE,
        types_pb2.TASK_STATE_GONE_BY_OPERATOR,
    }
)


def is_terminal(state: int) -> bool:
    return state in TERMINAL_STATES


def task_state(mesos_state: str) -> types_pb2.TaskState:
    """TASK_RUNNING -> TASK_STATE_RUNNING; unknown names -> TASK_STATE_UNKNOWN."""
    name = "TASK_STATE_" + mesos_state.removeprefix("TASK_")
    try:
        return cast(types_pb2.TaskState, types_pb2.TaskState.Value(name))
    except ValueError:
        return types_pb2.TASK_STATE_UNKNOWN


def _value(field: Any) -> str:
    if isinstance(field, Mapping):
        return str(field.get("value", ""))
    return str(field or "")


def offer_id(offer: Mapping[str, Any]) -> str:
    return _value(offer.get("id"))


def _attribute_text(attribute: Mapping[str, Any]) -> str:
    kind = attribute.get("type")
    if kind == "TEXT":
        return str(attribute.get("text", {}).get("value", ""))
    if kind == "SCALAR":
        value = float(attribute.get("scalar", {}).get("value", 0.0))
        return f"{value:g}"
    if kind == "RANGES":
        ranges = attribute.get("ranges", {}).get("range", [])
        return ",".join(f"{r.get('begin')}-{r.get('end')}" for r in ranges)
    if kind == "SET":
        return ",".join(attribute.get("set", {}).get("item", []))
    return ""


def parse_offer(offer: Mapping[str, Any], role: str = "*") -> Offer:
    """The matching view of an offer: unreserved-or-our-role scalars summed, port ranges merged."""
    result = Offer(
        offer_id=offer_id(offer),
        agent_id=_value(offer.get("agent_id")),
        hostname=str(offer.get("hostname", "")),
        attributes={str(a.get("name")): _attribute_text(a) for a in offer.get("attributes", []) or []},
    )
    for resource in offer.get("resources", []) or []:
        if not _usable(resource, role):
            continue
        name = resource.get("name")
        if name in ("cpus", "mem", "disk") and resource.get("type", "SCALAR") == "SCALAR":
            amount = float(resource.get("scalar", {}).get("value", 0.0))
            setattr(result, name, round(getattr(result, name) + amount, 6))
        elif name == "ports" and resource.get("type", "RANGES") == "RANGES":
            for r in resource.get("ranges", {}).get("range", []) or []:
                result.ports.append((int(r["begin"]), int(r["end"])))
    result.ports.sort()
    return result


def _usable(resource: Mapping[str, Any], role: str) -> bool:
    # Reservations of other roles and persistent volumes are not ours to take.
    resource_role = resource.get("role") or resource.get("allocation_info", {}).get("role") or "*"
    if resource_role not in ("*", role):
        return False
    return not (resource.get("name") == "disk" and "persistence" in resource.get("disk", {}))


def need_of(task: types_pb2.Task) -> Need:
    spec = task.launch
    return Need(
        task_id=task.task_id,
        instance=spec.instance,
        cpus=spec.resources.cpus,
        mem=float(spec.resources.mem_mb),
        disk=float(spec.resources.disk_mb),
        port_names=tuple(spec.port_names),
        max_per_agent=max(spec.placement.max_members_per_agent, 1),
        required_attributes=dict(spec.placement.required_attributes),
    )


def _template(offer: Mapping[str, Any], name: str) -> Json:
    """The offer's resource entry of this name without its amount, so that role, reservation and
    allocation info are carried over as the master expects."""
    for resource in offer.get("resources", []) or []:
        if resource.get("name") == name:
            return {k: v for k, v in dict(resource).items() if k not in ("scalar", "ranges", "set")}
    return {"name": name}


def _scalar(offer: Mapping[str, Any], name: str, amount: float) -> Json:
    return {**_template(offer, name), "name": name, "type": "SCALAR", "scalar": {"value": round(amount, 3)}}


def _ranges(ports: list[int]) -> list[Json]:
    ranges: list[Json] = []
    for port in sorted(ports):
        if ranges and ranges[-1]["end"] == port - 1:
            ranges[-1]["end"] = port
        else:
            ranges.append({"begin": port, "end": port})
    return ranges


def task_info(
    task: types_pb2.Task,
    assignment: Assignment,
    offer: Mapping[str, Any],
    executor_command: str,
    framework_id: str,
) -> Json:
    """The Mesos TaskInfo launching ``task`` on the offer's agent (see docs/internals.md)."""
    spec = task.launch
    resources = [
        _scalar(offer, "cpus", spec.resources.cpus),
        _scalar(offer, "mem", float(spec.resources.mem_mb)),
    ]
    if spec.resources.disk_mb:
        resources.append(_scalar(offer, "disk", float(spec.resources.disk_mb)))
    if assignment.ports:
        resources.append(
            {
                **_template(offer, "ports"),
                "name": "ports",
                "type": "RANGES",
                "ranges": {"range": _ranges(list(assignment.ports.values()))},
            }
        )
    return {
        "name": spec.member_id,
        "task_id": {"value": task.task_id},
        "agent_id": {"value": assignment.agent_id},
        "resources": resources,
        "executor": {
            "executor_id": {"value": task.task_id},
            "framework_id": {"value": framework_id},
            "name": f"mesos-stateful executor for {spec.member_id}",
            "source": spec.instance,
            "command": {"value": executor_command, "shell": True},
        },
        # TaskInfo.data is bytes: base64 in Mesos JSON.
        "data": base64.b64encode(spec.SerializeToString()).decode("ascii"),
        "labels": {
            "labels": [
                {"key": "instance", "value": spec.instance},
                {"key": "member_id", "value": spec.member_id},
            ]
        },
        "discovery": {
            "visibility": "FRAMEWORK",
            "name": spec.member_id,
            "ports": {
                "ports": [
                    {"number": number, "name": name, "protocol": "tcp"}
                    for name, number in assignment.ports.items()
                ]
            },
        },
    }


def status_task_id(status: Mapping[str, Any]) -> str:
    return _value(status.get("task_id"))


def timestamp_of(status: Mapping[str, Any], now: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    seconds = status.get("timestamp")
    stamp.FromNanoseconds(int(float(seconds if seconds is not None else now) * 1e9))
    return stamp


def apply_status(task: types_pb2.Task, status: Mapping[str, Any], now: float) -> None:
    """Copy what a status update says into the task record."""
    task.state = task_state(str(status.get("state", "TASK_UNKNOWN")))
    task.message = str(status.get("message", ""))
    task.reason = str(status.get("reason", ""))
    if "healthy" in status:
        task.healthy = bool(status["healthy"])
    agent = _value(status.get("agent_id"))
    if agent:
        task.agent_id = agent
    task.updated_at.CopyFrom(timestamp_of(status, now))
