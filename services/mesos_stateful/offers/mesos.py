"""Conversions between Mesos v1 JSON (as pymesos hands it over) and our types. Pure functions.

Offers and status updates arrive as dicts (addict ``Dict`` with use_addict=True, a dict
subclass); TaskInfo goes out as plain dicts. Bytes fields are base64 strings in Mesos JSON.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import duration_pb2, timestamp_pb2

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.offers.matching import (
    CREATE,
    PLAIN,
    RESERVE,
    RESERVED,
    Assignment,
    Need,
    Offer,
    OfferedVolume,
    Reservation,
    VolumeNeed,
)

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


# -- reservations (post-refinement format, see docs/volumes.md) ------------------------------------

LABEL_INSTANCE = "instance"
LABEL_MEMBER = "member_id"
LABEL_PERSISTENCE = "persistence_id"

ReservationKey = tuple[str, str, str]  # (instance, member id, persistence id)


def _reservations(resource: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The resource's reservation stack, also for the pre-refinement format (``role`` plus an
    optional ``reservation``); empty for an unreserved resource."""
    stack = resource.get("reservations")
    if stack:
        return list(stack)
    role = resource.get("role")
    if role in (None, "", "*"):
        return []
    single = dict(resource.get("reservation") or {})
    return [{"type": "DYNAMIC" if "reservation" in resource else "STATIC", "role": role, **single}]


def _label_map(reservation: Mapping[str, Any]) -> dict[str, str]:
    labels = (reservation.get("labels") or {}).get("labels", []) or []
    return {str(label.get("key", "")): str(label.get("value", "")) for label in labels}


def reservation_key(resource: Mapping[str, Any], role: str, principal: str) -> ReservationKey | None:
    """The owner of a resource reserved by us (dynamic, our role and principal, with a member_id
    label); None for anything else (unreserved, other roles, static or someone else's)."""
    stack = _reservations(resource)
    if not stack:
        return None
    last = stack[-1]
    if last.get("type", "DYNAMIC") != "DYNAMIC" or last.get("role") != role:
        return None
    if principal and last.get("principal", principal) != principal:
        return None
    labels = _label_map(last)
    if not labels.get(LABEL_MEMBER):
        return None
    return (labels.get(LABEL_INSTANCE, ""), labels[LABEL_MEMBER], labels.get(LABEL_PERSISTENCE, ""))


def _persistence_id(resource: Mapping[str, Any]) -> str:
    if resource.get("name") != "disk":
        return ""
    return str(((resource.get("disk") or {}).get("persistence") or {}).get("id", ""))


def _unreserved(resource: Mapping[str, Any]) -> bool:
    return not _reservations(resource) and not _persistence_id(resource)


def _amount(resource: Mapping[str, Any]) -> float:
    return float((resource.get("scalar") or {}).get("value", 0.0))


def _range_ports(resource: Mapping[str, Any]) -> list[int]:
    ports: list[int] = []
    for r in (resource.get("ranges") or {}).get("range", []) or []:
        ports.extend(range(int(r["begin"]), int(r["end"]) + 1))
    return ports


def agent_url(offer: Mapping[str, Any]) -> str:
    """The agent's HTTP base URL from an offer's ``url`` (mesos.proto ``Offer.url``: scheme,
    address {hostname, ip, port}), e.g. "http://10.0.0.5:5051"; the IP is preferred to the
    hostname (an agent's hostname may not resolve where the CLI runs). "" when the offer has none."""
    url = offer.get("url") or {}
    address = url.get("address") or {}
    host = str(address.get("ip") or address.get("hostname") or "")
    port = address.get("port")
    if not host or not port:
        return ""
    return f"{url.get('scheme') or 'http'}://{host}:{int(port)}"


def sandbox_path(framework_id: str, executor_id: str) -> str:
    """The virtual path under which every Mesos agent serves the latest run of an executor's
    sandbox through /files/read and /files/browse (src/slave/paths.cpp getExecutorVirtualPath,
    attached in src/slave/slave.cpp); "" without a framework id."""
    if not framework_id:
        return ""
    return f"/frameworks/{framework_id}/executors/{executor_id}/runs/latest"


def parse_offer(offer: Mapping[str, Any], role: str = "stateful", principal: str = "") -> Offer:
    """The matching view of an offer: unreserved scalars summed and port ranges merged; our
    reservations grouped by their labels, with their persistent volumes. Resources of other roles,
    static reservations and reservations not labelled by us are left alone."""
    result = Offer(
        offer_id=offer_id(offer),
        agent_id=_value(offer.get("agent_id")),
        hostname=str(offer.get("hostname", "")),
        url=agent_url(offer),
        attributes={str(a.get("name")): _attribute_text(a) for a in offer.get("attributes", []) or []},
    )
    groups: dict[ReservationKey, Reservation] = {}
    for resource in offer.get("resources", []) or []:
        name = resource.get("name")
        kind = resource.get("type", "RANGES" if name == "ports" else "SCALAR")
        if _unreserved(resource):
            if name in ("cpus", "mem", "disk") and kind == "SCALAR":
                setattr(result, name, round(getattr(result, name) + _amount(resource), 6))
            elif name == "ports" and kind == "RANGES":
                for r in (resource.get("ranges") or {}).get("range", []) or []:
                    result.ports.append((int(r["begin"]), int(r["end"])))
            continue
        key = reservation_key(resource, role, principal)
        if key is None:
            continue
        group = groups.get(key)
        if group is None:
            group = groups[key] = Reservation(*key)
        persistence_id = _persistence_id(resource)
        if persistence_id:
            volume = (resource.get("disk") or {}).get("volume") or {}
            group.volumes.append(
                OfferedVolume(persistence_id, _amount(resource), str(volume.get("container_path", "")))
            )
        elif name in ("cpus", "mem", "disk") and kind == "SCALAR":
            setattr(group, name, round(getattr(group, name) + _amount(resource), 6))
        elif name == "ports" and kind == "RANGES":
            group.ports = sorted(set(group.ports) | set(_range_ports(resource)))
    result.ports.sort()
    result.reservations = list(groups.values())
    window = unavailability(offer)
    if window is not None:
        result.unavailable_at = window[0] / 1e9
    return result


def volume_of(spec: types_pb2.LaunchSpec) -> VolumeNeed | None:
    """The launch's persistent volume (None: a launch without one)."""
    volume = spec.volume
    if not volume.persistence_id:
        return None
    return VolumeNeed(
        persistence_id=volume.persistence_id,
        size=float(volume.size_mb),
        container_path=volume.container_path,
        agent_id=volume.agent_id,
        host=volume.host,
    )


def need_of(task: types_pb2.Task) -> Need:
    spec = task.launch
    volume = volume_of(spec)
    return Need(
        task_id=task.task_id,
        instance=spec.instance,
        cpus=spec.resources.cpus,
        mem=float(spec.resources.mem_mb),
        disk=volume.size if volume is not None else float(spec.resources.disk_mb),
        port_names=tuple(spec.port_names),
        max_per_agent=max(spec.placement.max_members_per_agent, 1),
        required_attributes=dict(spec.placement.required_attributes),
        member_id=spec.member_id,
        volume=volume,
    )


def _template(offer: Mapping[str, Any], name: str) -> Json:
    """The offer's unreserved resource entry of this name without its amount, so that role and
    allocation info are carried over as the master expects."""
    for resource in offer.get("resources", []) or []:
        if (
            resource.get("name") == name
            and _unreserved(resource)
            and "source" not in (resource.get("disk") or {})
        ):
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


def reservation_info(role: str, principal: str, key: ReservationKey) -> Json:
    instance, member_id, persistence_id = key
    return {
        "type": "DYNAMIC",
        "role": role,
        "principal": principal,
        "labels": {
            "labels": [
                {"key": LABEL_INSTANCE, "value": instance},
                {"key": LABEL_MEMBER, "value": member_id},
                {"key": LABEL_PERSISTENCE, "value": persistence_id},
            ]
        },
    }


def task_key(spec: types_pb2.LaunchSpec) -> ReservationKey:
    return (spec.instance, spec.member_id, spec.volume.persistence_id)


def _group(offer: Mapping[str, Any], role: str, principal: str, key: ReservationKey) -> list[Json]:
    """The offer's resource entries reserved with these labels (volumes included)."""
    return [dict(r) for r in offer.get("resources", []) or [] if reservation_key(r, role, principal) == key]


class _Resources:
    """Builds the resources of one launch: unreserved (no volume), to be reserved (first launch),
    or taken from the member's reservation in the offer."""

    def __init__(
        self, offer: Mapping[str, Any], mode: str, role: str, principal: str, key: ReservationKey
    ) -> None:
        self.offer = offer
        self.mode = mode
        self.role = role
        self.principal = principal
        self.key = key
        self.group = _group(offer, role, principal, key) if mode in (CREATE, RESERVED) else []

    def _reserved_template(self, name: str) -> Json:
        if self.mode == RESERVE:
            return {
                "name": name,
                "reservations": [reservation_info(self.role, self.principal, self.key)],
                "allocation_info": {"role": self.role},
            }
        for resource in self.group:
            if resource.get("name") == name and not _persistence_id(resource):
                return {k: v for k, v in resource.items() if k not in ("scalar", "ranges", "set")}
        # e.g. no reserved disk left (it is the volume): the volume's reservation stack.
        reservations = next((r.get("reservations") for r in self.group if r.get("reservations")), None)
        return {
            "name": name,
            "reservations": reservations or [reservation_info(self.role, self.principal, self.key)],
            "allocation_info": {"role": self.role},
        }

    def scalar(self, name: str, amount: float) -> Json:
        if self.mode == PLAIN:
            return _scalar(self.offer, name, amount)
        return {**self._reserved_template(name), "type": "SCALAR", "scalar": {"value": round(amount, 3)}}

    def ports(self, ports: list[int]) -> Json:
        template = _template(self.offer, "ports") if self.mode == PLAIN else self._reserved_template("ports")
        return {**template, "name": "ports", "type": "RANGES", "ranges": {"range": _ranges(ports)}}

    def volume(self, spec: types_pb2.LaunchSpec) -> Json:
        """The volume: as offered (RESERVED), else the disk resource CREATE makes it into."""
        volume = spec.volume
        if self.mode == RESERVED:
            for resource in self.group:
                if _persistence_id(resource) == volume.persistence_id:
                    return resource
        disk = self.scalar("disk", float(volume.size_mb))
        return {
            **disk,
            "disk": {
                "persistence": {"id": volume.persistence_id, "principal": self.principal},
                "volume": {"mode": "RW", "container_path": volume.container_path},
            },
        }


def volume_operations(
    task: types_pb2.Task, assignment: Assignment, offer: Mapping[str, Any], role: str, principal: str
) -> list[Json]:
    """The operations that must precede the launch of ``task``: RESERVE + CREATE at a first launch,
    CREATE when the member's reservation is there without its volume, nothing otherwise."""
    spec = task.launch
    if assignment.mode not in (RESERVE, CREATE):
        return []
    build = _Resources(offer, assignment.mode, role, principal, task_key(spec))
    operations: list[Json] = []
    if assignment.mode == RESERVE:
        reserve = [
            build.scalar("cpus", spec.resources.cpus),
            build.scalar("mem", float(spec.resources.mem_mb)),
        ]
        if assignment.ports:
            reserve.append(build.ports(list(assignment.ports.values())))
        reserve.append(build.scalar("disk", float(spec.volume.size_mb)))
        operations.append({"type": "RESERVE", "reserve": {"resources": reserve}})
    operations.append({"type": "CREATE", "create": {"volumes": [build.volume(spec)]}})
    return operations


def cleanup_operations(
    offer: Mapping[str, Any], role: str, principal: str, keys: list[ReservationKey]
) -> list[Json]:
    """DESTROY of the volumes, then UNRESERVE of everything reserved with these labels."""
    volumes: list[Json] = []
    unreserve: list[Json] = []
    for key in keys:
        for resource in _group(offer, role, principal, key):
            if _persistence_id(resource):
                volumes.append(resource)
                # Destroyed, the volume is reserved disk again: that is what gets unreserved.
                disk = {
                    k: v
                    for k, v in (resource.get("disk") or {}).items()
                    if k not in ("persistence", "volume")
                }
                plain = {k: v for k, v in resource.items() if k != "disk"}
                unreserve.append({**plain, "disk": disk} if disk else plain)
            else:
                unreserve.append(resource)
    operations: list[Json] = []
    if volumes:
        operations.append({"type": "DESTROY", "destroy": {"volumes": volumes}})
    if unreserve:
        operations.append({"type": "UNRESERVE", "unreserve": {"resources": unreserve}})
    return operations


@dataclass(frozen=True)
class ExecutorContainer:
    """The executor as a Docker container on a real Mesos agent (offers settings
    ``executor_image`` ...): run by the agent's Docker containerizer, which launches a custom
    executor whose ExecutorInfo has a ContainerInfo of type DOCKER in a container of that image
    (Mesos ``docs/docker-containerizer.md``, "To run a Docker image as an executor")."""

    image: str
    command: str
    agent_work_dir: str
    docker_socket: str


#: The executor's environment in its container: paths it sees (the sandbox at /mnt/mesos/sandbox,
#: the mounts below) are translated to the agent's paths for the member containers it starts.
EXECUTOR_CONTAINER_ENV = {"STATEFUL_EXECUTOR_DOCKER_HOST_PATHS": "auto"}


def persistent_volume_path(work_dir: str, role: str, persistence_id: str) -> str:
    """Where a Mesos agent keeps a persistent volume: ``<work_dir>/volumes/roles/<role>/<id>``, a
    role's ``/`` written as a space (``getPersistentVolumePath``, Mesos ``src/slave/paths.cpp``)."""
    return posixpath.join(work_dir, "volumes", "roles", role.replace("/", " "), persistence_id)


def executor_container_info(container: ExecutorContainer, spec: types_pb2.LaunchSpec, role: str) -> Json:
    """ExecutorInfo.container for ``container``: the image on the agent's Docker engine, host
    network (the executor reaches the agent's executor API and its members' ports on the agent's
    address, as with the default command executor), the agent's Docker socket (members are
    sibling containers), and the member's persistent volume at its container path in the sandbox
    (relative: Mesos joins it to the mapped sandbox, ``Docker::RunOptions::create`` in
    ``src/docker/docker.cpp``). The Docker containerizer mounts no persistent volume for a custom
    executor ("not supported with custom executors", ``mountPersistentVolumes`` in
    ``src/slave/containerizer/docker.cpp``), hence the host path from the agents' work dir."""
    volumes: list[Json] = [
        {"container_path": container.docker_socket, "host_path": container.docker_socket, "mode": "RW"}
    ]
    volume = spec.volume
    if volume.persistence_id:
        volumes.append(
            {
                "container_path": volume.container_path,
                "host_path": persistent_volume_path(container.agent_work_dir, role, volume.persistence_id),
                "mode": "RW",
            }
        )
    return {
        "type": "DOCKER",
        "docker": {"image": container.image, "network": "HOST"},
        "volumes": volumes,
    }


def task_info(
    task: types_pb2.Task,
    assignment: Assignment,
    offer: Mapping[str, Any],
    executor_command: str,
    framework_id: str,
    role: str = "stateful",
    principal: str = "",
    executor_container: ExecutorContainer | None = None,
) -> Json:
    """The Mesos TaskInfo launching ``task`` on the offer's agent (see docs/internals.md): on
    unreserved resources, or with a volume on the member's reserved resources. With
    ``executor_container`` the executor runs in that Docker image (:func:`executor_container_info`)."""
    spec = task.launch
    build = _Resources(offer, assignment.mode, role, principal, task_key(spec))
    resources = [
        build.scalar("cpus", spec.resources.cpus),
        build.scalar("mem", float(spec.resources.mem_mb)),
    ]
    if assignment.mode == PLAIN and spec.resources.disk_mb:
        resources.append(_scalar(offer, "disk", float(spec.resources.disk_mb)))
    unreserved = set(assignment.unreserved_ports)
    own = [p for p in assignment.ports.values() if p not in unreserved]
    if own:
        resources.append(build.ports(own))
    if unreserved:
        # Ports standing in for reserved ones avoided after failed launches: unreserved.
        ranges = {"range": _ranges(sorted(unreserved))}
        resources.append({**_template(offer, "ports"), "name": "ports", "type": "RANGES", "ranges": ranges})
    if assignment.mode != PLAIN:
        resources.append(build.volume(spec))
    executor: Json = {
        "executor_id": {"value": task.task_id},
        "framework_id": {"value": framework_id},
        "name": f"mesos-stateful executor for {spec.member_id}",
        "source": spec.instance,
        "command": {"value": executor_command, "shell": True},
    }
    if executor_container is not None:
        variables = [{"name": k, "value": v} for k, v in EXECUTOR_CONTAINER_ENV.items()]
        executor["command"] = {
            "value": executor_container.command,
            "shell": True,
            "environment": {"variables": variables},
        }
        executor["container"] = executor_container_info(executor_container, spec, role)
    return {
        "name": spec.member_id,
        "task_id": {"value": task.task_id},
        "agent_id": {"value": assignment.agent_id},
        "resources": resources,
        "executor": executor,
        # TaskInfo.data is bytes: base64 in Mesos JSON.
        "data": base64.b64encode(spec.SerializeToString()).decode("ascii"),
        "labels": {"labels": task_labels(task)},
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


# TaskInfo / TaskStatus label carrying W3C trace context (mesos_stateful.executor.launch reads it from
# the TaskInfo and puts it on the task's status updates).
LABEL_TRACEPARENT = "traceparent"


def task_labels(task: types_pb2.Task) -> list[Json]:
    """The TaskInfo labels: instance, member id, and the launch request's ``traceparent`` if traced."""
    labels: list[Json] = [
        {"key": "instance", "value": task.launch.instance},
        {"key": "member_id", "value": task.launch.member_id},
    ]
    if task.launch_trace_parent:
        labels.append({"key": LABEL_TRACEPARENT, "value": task.launch_trace_parent})
    return labels


def status_traceparent(status: Mapping[str, Any]) -> str:
    """The ``traceparent`` label of a TaskStatus (Mesos ``TaskStatus.labels``), "" if none."""
    labels = status.get("labels")
    entries = labels.get("labels") if isinstance(labels, Mapping) else None
    for label in entries if isinstance(entries, list) else []:
        if isinstance(label, Mapping) and label.get("key") == LABEL_TRACEPARENT:
            return str(label.get("value", ""))
    return ""


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


# -- maintenance (docs/maintenance.md) ---------------------------------------------------------------


def _nanoseconds(field: Any) -> int | None:
    """A Mesos ``TimeInfo`` / ``DurationInfo`` (``{"nanoseconds": int64}``; JSON int64 may come as
    a string, as protobuf's JSON mapping writes it) in nanoseconds; None when absent."""
    if not isinstance(field, Mapping) or field.get("nanoseconds") is None:
        return None
    return int(field["nanoseconds"])


def unavailability(message: Mapping[str, Any]) -> tuple[int, int | None] | None:
    """``(start, duration)`` in nanoseconds of the ``unavailability`` of an Offer or InverseOffer
    (Mesos ``Unavailability``: ``start`` required, ``duration`` optional = "until further notice");
    None when the message carries none (the agent's machine is not scheduled for maintenance)."""
    window = message.get("unavailability")
    if not isinstance(window, Mapping):
        return None
    start = _nanoseconds(window.get("start"))
    if start is None:
        return None
    return start, _nanoseconds(window.get("duration"))


def inverse_offer_agent(inverse_offer: Mapping[str, Any]) -> str:
    return _value(inverse_offer.get("agent_id"))


def agent_maintenance(
    inverse_offer: Mapping[str, Any], hostname: str, announced_at: float
) -> types_pb2.AgentMaintenance | None:
    """What a Mesos InverseOffer announces for its agent (its ``unavailability`` and id), as
    ``stateful.v1.AgentMaintenance``; ``announced_at`` in seconds since the epoch. None for an
    inverse offer without an unavailability (not maintenance: Mesos sends none such today)."""
    window = unavailability(inverse_offer)
    if window is None:
        return None
    start_ns, duration_ns = window
    start = timestamp_pb2.Timestamp()
    start.FromNanoseconds(start_ns)
    announced = timestamp_pb2.Timestamp()
    announced.FromNanoseconds(int(announced_at * 1e9))
    maintenance = types_pb2.AgentMaintenance(
        start=start,
        inverse_offer_id=offer_id(inverse_offer),
        announced_at=announced,
        hostname=hostname,
    )
    if duration_ns is not None:
        duration = duration_pb2.Duration()
        duration.FromNanoseconds(duration_ns)
        maintenance.duration.CopyFrom(duration)
    return maintenance
