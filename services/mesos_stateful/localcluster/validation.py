"""What a real Mesos master checks in what a framework sends, as pure functions on v1 JSON.

Ports of the rules of Apache Mesos (read from the sources; each function names its origin):

* ``src/common/validation.cpp``: ``validateID`` (task, executor, framework ids and persistence ids),
  ``validateEnvironment`` (CommandInfo), ``validateGpus``, ``validateOfferFilters``;
* ``src/common/roles.cpp``: ``roles::validate``;
* ``src/common/resources.cpp``: ``Resources::validate`` (a resource and its reservation formats);
* ``src/common/resources_utils.cpp``: ``validateAndUpgradeResources`` (an operation's body and raw
  resources are checked, then the resources are upgraded to the post-refinement format);
* ``src/master/validation.cpp``: ``resource::validate`` and friends, ``executor::validate``,
  ``task::validate``, ``operation::validate`` (RESERVE, UNRESERVE, CREATE, DESTROY),
  ``framework::validate``, ``scheduler::call::validate``;
* ``src/master/master.cpp`` (``Master::accept``/``_accept``): the order of the steps, the offer's
  ``allocation_info`` injected into the operation's resources, ``ExecutorInfo.framework_id`` filled
  in, the principal a RESERVE / CREATE is checked against (``FrameworkInfo.principal``).

Each function returns Mesos's error text, or ``None`` when Mesos accepts. Where the master adds
context of its own the caller adds it: the scheduler HTTP handler prefixes a call error with
``Failed to validate scheduler::Call: ``; a dropped RESERVE/UNRESERVE/CREATE/DESTROY error is
followed by ``; on agent <agent>``; an operation whose raw resources are invalid is dropped with
``Operation attempted with invalid resources: <error>`` (``validate_operation`` returns that whole
text); a LAUNCH error is the message of the TASK_ERROR (REASON_TASK_INVALID).

Not checked here, because it needs the master's state: task id uniqueness within the framework, an
ExecutorInfo equal to the one already running with that id, the offered resources containing what a
task and its executor use, persistence id uniqueness against the agent's volumes, DESTROY of a volume
that is missing or in use, authorization (ACLs), operation feedback. Not ported: the rules of
fields the wire contract (``protos/mesos``) leaves out (ContainerInfo, HealthCheck, CheckInfo,
resource limits, secrets, CREATE/DESTROY_DISK) and of operations the local cluster does not support
(LAUNCH_GROUP, GROW/SHRINK_VOLUME: ``validate_operation`` returns ``None`` for them). Agents are
assumed to have the HIERARCHICAL_ROLE and RESERVATION_REFINEMENT capabilities (every Mesos agent
since 1.5 does).

Resources are rendered in messages as Mesos's ``operator<<`` writes them (``cpus(allocated: r)
(reservations: [(DYNAMIC,r,p,{k: v})])[id:path]:0.5``); a list of resources is joined by ``; ``
without merging equal entries as Mesos's ``Resources`` would.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

Json = dict[str, Any]

NAME_MAX = 255  # Linux, <limits.h>: validateID's bound on an id's length.
# roles.cpp INVALID_CHARACTERS: \t \n \v \f \r, space and DEL.
_ROLE_INVALID = "\x09\x0a\x0b\x0c\x0d\x20\x7f"
# stout Duration: int64 nanoseconds.
_INT64_MAX = 2**63 - 1

_MISSING_BODY = {
    "RESERVE": "A RESERVE offer operation must have the Offer.Operation.reserve field set.",
    "UNRESERVE": "An UNRESERVE offer operation must have the Offer.Operation.unreserve field set.",
    "CREATE": "A CREATE offer operation must have the Offer.Operation.create field set.",
    "DESTROY": "A DESTROY offer operation must have the Offer.Operation.destroy field set.",
    "GROW_VOLUME": "A GROW_VOLUME operation must have the Offer.Operation.grow_volume field set",
    "SHRINK_VOLUME": "A SHRINK_VOLUME offer operation must have the Offer.Operation.shrink_volume field set",
    "LAUNCH": "A LAUNCH offer operation must have the Offer.Operation.launch field set.",
    "LAUNCH_GROUP": "A LAUNCH_GROUP offer operation must have the Offer.Operation.launch_group field set.",
    "CREATE_DISK": "A CREATE_DISK offer operation must have the Offer.Operation.create_disk field set.",
    "DESTROY_DISK": "A DESTROY_DISK offer operation must have the Offer.Operation.destroy_disk field set.",
}
_BODY = {
    "RESERVE": "reserve",
    "UNRESERVE": "unreserve",
    "CREATE": "create",
    "DESTROY": "destroy",
    "GROW_VOLUME": "grow_volume",
    "SHRINK_VOLUME": "shrink_volume",
    "LAUNCH": "launch",
    "LAUNCH_GROUP": "launch_group",
    "CREATE_DISK": "create_disk",
    "DESTROY_DISK": "destroy_disk",
}
# Calls whose body must be present (scheduler::call::validate), by call type.
_CALL_BODY = {
    "ACCEPT": "accept",
    "DECLINE": "decline",
    "ACCEPT_INVERSE_OFFERS": "accept_inverse_offers",
    "DECLINE_INVERSE_OFFERS": "decline_inverse_offers",
    "KILL": "kill",
    "SHUTDOWN": "shutdown",
    "ACKNOWLEDGE": "acknowledge",
    "ACKNOWLEDGE_OPERATION_STATUS": "acknowledge_operation_status",
    "RECONCILE": "reconcile",
    "RECONCILE_OPERATIONS": "reconcile_operations",
    "MESSAGE": "message",
    "REQUEST": "request",
    "UPDATE_FRAMEWORK": "update_framework",
}


# --- ids and roles ----------------------------------------------------------------------------------


def validate_id(value: str) -> str | None:
    """``common::validation::validateID`` (task, executor, framework, agent and persistence ids)."""
    if not value:
        return "ID must not be empty"
    if len(value.encode()) > NAME_MAX:
        return f"ID must not be greater than {NAME_MAX} characters"
    if value in (".", ".."):
        return f"'{value}' is disallowed"
    if any(_iscntrl(c) or c in "/\\" for c in value):
        return f"'{value}' contains invalid characters"
    return None


def _iscntrl(c: str) -> bool:
    return ord(c) < 0x20 or ord(c) == 0x7F


def validate_role(role: str) -> str | None:
    """``roles::validate`` (``src/common/roles.cpp``)."""
    if role == "*":
        return None
    if role.startswith("/"):
        return f"Role '{role}' cannot start with a slash"
    if role.endswith("/"):
        return f"Role '{role}' cannot end with a slash"
    if "//" in role:
        return f"Role '{role}' cannot contain two adjacent slashes"
    components = [c for c in role.split("/") if c]
    if not components:
        return "Role names cannot be the empty string"
    for component in components:
        if component == ".":
            return f"Role '{role}' cannot include '.' as a component"
        if component == "..":
            return f"Role '{role}' cannot include '..' as a component"
        if component == "*":
            return f"Role '{role}' cannot include '*' as a component"
        if component.startswith("-"):
            return f"Role component '{component}' is invalid because it starts with a dash"
        if any(c in _ROLE_INVALID for c in component):
            return f"Role component '{component}' is invalid because it contains backspace or whitespace"
    return None


def _is_strict_subrole(left: str, right: str) -> bool:
    """``roles::isStrictSubroleOf``."""
    return len(left) > len(right) and left[len(right)] == "/" and left.startswith(right)


# --- rendering (operator<< of src/common/resources.cpp and values.cpp) -----------------------------


def _fixed(value: float) -> float:
    """Mesos keeps scalars as fixed point with three decimals (``convertToFixed``: llround)."""
    scaled = value * 1000.0
    return math.copysign(math.floor(abs(scaled) + 0.5), scaled) / 1000.0


def _scalar_text(value: float) -> str:
    return format(_fixed(value), ".15g")


def _labels_text(labels: Mapping[str, Any]) -> str:
    items = []
    for label in labels.get("labels", []) or []:
        text = str(label.get("key", ""))
        if "value" in label:
            text += ": " + str(label["value"])
        items.append(text)
    return "{" + ", ".join(items) + "}"


def _reservation_text(reservation: Mapping[str, Any]) -> str:
    text = f"{reservation.get('type', 'UNKNOWN')},{reservation.get('role', '')}"
    if "principal" in reservation:
        text += "," + str(reservation["principal"])
    if "labels" in reservation:
        text += "," + _labels_text(reservation["labels"])
    return text


def resource_text(resource: Mapping[str, Any]) -> str:
    """``operator<<(ostream&, const Resource&)``."""
    text = str(resource.get("name", ""))
    if "allocation_info" in resource:
        text += f"(allocated: {(resource['allocation_info'] or {}).get('role', '')})"
    reservations = resource.get("reservations") or []
    if reservations:
        text += "(reservations: [" + ",".join(f"({_reservation_text(r)})" for r in reservations) + "])"
    disk = resource.get("disk")
    if disk is not None:
        inner = ""
        source = disk.get("source")
        if source is not None:
            inner += str(source.get("type", "UNKNOWN"))
        persistence = disk.get("persistence")
        if persistence is not None:
            inner += ("," if source is not None else "") + str(persistence.get("id", ""))
        volume = disk.get("volume")
        if volume is not None:
            path = str(volume.get("container_path", ""))
            if "host_path" in volume:
                path = f"{volume['host_path']}:{path}:{str(volume.get('mode', 'RW')).lower()}"
            inner += ":" + path
        text += f"[{inner}]"
    if "revocable" in resource:
        text += "{REV}"
    if "shared" in resource:
        text += "<SHARED>"
    text += ":"
    kind = resource.get("type")
    if kind == "SCALAR":
        text += _scalar_text(float((resource.get("scalar") or {}).get("value", 0.0)))
    elif kind == "RANGES":
        ranges = (resource.get("ranges") or {}).get("range", []) or []
        text += "[" + ", ".join(f"{r.get('begin')}-{r.get('end')}" for r in ranges) + "]"
    elif kind == "SET":
        text += "{" + ", ".join(str(i) for i in (resource.get("set") or {}).get("item", []) or []) + "}"
    return text


def resources_text(resources: Iterable[Mapping[str, Any]]) -> str:
    """``operator<<(ostream&, const Resources&)`` (``{}`` when empty)."""
    items = [resource_text(r) for r in resources]
    return "; ".join(items) if items else "{}"


# --- resources ---------------------------------------------------------------------------------------


def _reservations(resource: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(resource.get("reservations") or [])


def _is_dynamically_reserved(resource: Mapping[str, Any]) -> bool:
    stack = _reservations(resource)
    return bool(stack) and stack[-1].get("type") == "DYNAMIC"


def _reservation_role(resource: Mapping[str, Any]) -> str:
    stack = _reservations(resource)
    return str(stack[-1].get("role", "")) if stack else "*"


def _is_persistent_volume(resource: Mapping[str, Any]) -> bool:
    return "persistence" in (resource.get("disk") or {})


def _allocation_role(resource: Mapping[str, Any]) -> str | None:
    info = resource.get("allocation_info")
    if not isinstance(info, Mapping) or "role" not in info:
        return None
    return str(info["role"])


def check_resource(resource: Mapping[str, Any]) -> str | None:
    """``Resources::validate(const Resource&)`` (``src/common/resources.cpp``), in either
    reservation format."""
    name = resource.get("name", "")
    if not name:
        return "Empty resource name"
    kind = resource.get("type")
    has = {k: k in resource for k in ("scalar", "ranges", "set")}
    if kind == "SCALAR":
        if not has["scalar"] or has["ranges"] or has["set"]:
            return "Invalid scalar resource"
        value = float((resource.get("scalar") or {}).get("value", 0.0))
        if value != 0 and _fixed(value) <= 0:
            return "Invalid scalar resource: value <= 0"
    elif kind == "RANGES":
        if has["scalar"] or not has["ranges"] or has["set"]:
            return "Invalid ranges resource"
        ranges = (resource.get("ranges") or {}).get("range", []) or []
        for i, r in enumerate(ranges):
            begin, end = int(r.get("begin", 0)), int(r.get("end", 0))
            if begin > end:
                return "Invalid ranges resource: begin > end"
            for other in ranges[i + 1 :]:
                if begin <= int(other.get("begin", 0)) <= end:
                    return "Invalid ranges resource: overlapping ranges"
    elif kind == "SET":
        if has["scalar"] or has["ranges"] or not has["set"]:
            return "Invalid set resource"
        items = (resource.get("set") or {}).get("item", []) or []
        if len(set(items)) != len(items):
            return "Invalid set resource: duplicated elements"
    elif kind in ("TEXT",):
        return "Unsupported resource type"
    else:
        return "Invalid resource type"

    disk = resource.get("disk")
    if disk is not None:
        if name != "disk":
            return f"DiskInfo should not be set for {name} resource"
        source = disk.get("source")
        if source is not None:
            source_type = source.get("type", "UNKNOWN")
            if source_type in ("BLOCK", "RAW"):
                if "mount" in source:
                    return f"Mount should not be set for {source_type} disk source"
                if "path" in source:
                    return f"Path should not be set for {source_type} disk source"
            elif source_type not in ("PATH", "MOUNT"):
                return f"Unsupported 'DiskInfo.Source.Type' in '{source_type}'"

    error = _check_reservation_format(resource)
    if error is not None:
        return error

    if "shared" in resource:
        if name != "disk":
            return f"Resource {name} cannot be shared"
        if not _is_persistent_volume(resource):
            return "Only persistent volumes can be shared"
    return None


def _check_reservation_format(resource: Mapping[str, Any]) -> str | None:
    stack = _reservations(resource)
    role = str(resource.get("role", "*"))
    reservation = resource.get("reservation")
    if not stack:
        # The pre-reservation-refinement format.
        error = validate_role(role)
        if error is not None:
            return error
        if reservation is not None:
            if "type" in reservation:
                return "'Resource.ReservationInfo.type' must not be set for the 'Resource.reservation' field"
            if "role" in reservation:
                return "'Resource.ReservationInfo.role' must not be set for the 'Resource.reservation' field"
            if role == "*":
                return 'Invalid reservation: role "*" cannot be dynamically reserved'
        return None
    # The post-reservation-refinement format.
    for item in stack:
        if "type" not in item:
            return "Invalid reservation: 'Resource.ReservationInfo.type' field must be set."
        if "role" not in item:
            return "Invalid reservation: 'Resource.ReservationInfo.role' field must be set."
        error = validate_role(str(item["role"]))
        if error is not None:
            return error
        if item["role"] == "*":
            return 'Invalid reservation: role "*" cannot be reserved'
    ancestor = str(stack[0]["role"])
    for item in stack[1:]:
        if item.get("type") == "STATIC":
            return "Invalid refined reservation: A refined reservation cannot be STATIC"
        descendant = str(item["role"])
        if not _is_strict_subrole(descendant, ancestor):
            return f"Invalid refined reservation: role '{descendant}' is not a refinement of '{ancestor}'"
        ancestor = descendant
    if len(stack) == 1:
        single = stack[0]
        if "role" in resource and resource["role"] != single["role"]:
            return (
                f"Invalid resource format: 'Resource.role' field with '{resource['role']}' does not "
                f"match the role '{single['role']}' in 'Resource.reservations'"
            )
        if single["type"] == "STATIC":
            if reservation is not None:
                return (
                    "Invalid resource format: 'Resource.reservation' must not be set if the single "
                    "reservation in 'Resource.reservations' is STATIC"
                )
        elif single["type"] == "DYNAMIC":
            if ("role" in resource) != (reservation is not None):
                return (
                    "Invalid resource format: 'Resource.role' and 'Resource.reservation' must either "
                    "be both set or both not set if the single reservation in "
                    "'Resource.reservations' is DYNAMIC"
                )
            if reservation is not None and reservation.get("principal", "") != single.get("principal", ""):
                return (
                    "Invalid resource format: 'Resource.reservation.principal' field with "
                    f"'{reservation.get('principal', '')}' does not match the principal "
                    f"'{single.get('principal', '')}' in 'Resource.reservations'"
                )
            if reservation is not None and (reservation.get("labels") or {}) != (single.get("labels") or {}):
                return (
                    "Invalid resource format: 'Resource.reservation.labels' field with "
                    f"'{_labels_text(reservation.get('labels') or {})}' does not match the labels "
                    f"'{_labels_text(single.get('labels') or {})}' in 'Resource.reservations'"
                )
        else:
            return "Unsupported 'Resource.ReservationInfo.Type'"
    else:
        if "role" in resource:
            return (
                "Invalid resource format: 'Resource.role' must not be set if there is more than one "
                "reservation in 'Resource.reservations'"
            )
        if reservation is not None:
            return (
                "Invalid resource format: 'Resource.reservation' must not be set if there is more than "
                "one reservation in 'Resource.reservations'"
            )
    return None


def check_resources(resources: Iterable[Mapping[str, Any]]) -> str | None:
    """``Resources::validate(const RepeatedPtrField<Resource>&)``: the first invalid resource."""
    for resource in resources:
        error = check_resource(resource)
        if error is not None:
            return f"Resource '{resource_text(resource)}' is invalid: {error}"
    return None


def upgrade(resource: Mapping[str, Any]) -> Json:
    """``convertResourceFormat(POST_RESERVATION_REFINEMENT)`` (``resources_utils.cpp``): a copy in
    the post-refinement format (``reservations``; no ``role`` / ``reservation``)."""
    out: Json = copy.deepcopy(dict(resource))
    reservation = out.pop("reservation", None)
    role = out.pop("role", None)
    if out.get("reservations"):
        return out
    if role in (None, "*"):
        return out
    if reservation is None:
        out["reservations"] = [{"type": "STATIC", "role": role}]
    else:
        out["reservations"] = [{**dict(reservation), "type": "DYNAMIC", "role": role}]
    return out


def validate_resources(resources: list[Json]) -> str | None:
    """``resource::validate`` of ``src/master/validation.cpp`` (after the resources are upgraded to
    the post-refinement format): each resource valid (names, types, scalars > 0 or 0 with three
    decimals, ranges ordered and disjoint, sets without duplicates, reservation formats and roles),
    whole ``gpus``, DiskInfo (persistent volumes: reserved, not revocable, with a ``volume`` without
    ``host_path``, a valid persistence id; no non-persistent volumes, no empty DiskInfo), dynamic
    reservations not revocable."""
    error = check_resources(resources)
    if error is not None:
        return f"Invalid resources: {error}"
    return _validate_upgraded([upgrade(r) for r in resources])


def _validate_upgraded(resources: list[Json]) -> str | None:
    error = check_resources(resources)
    if error is not None:
        return f"Invalid resources: {error}"
    gpus = sum(
        float((r.get("scalar") or {}).get("value", 0.0))
        for r in resources
        if r.get("name") == "gpus" and r.get("type") == "SCALAR"
    )
    if round(_fixed(gpus) * 1000.0) % 1000 != 0:
        return "Invalid 'gpus' resource: The 'gpus' resource must be an unsigned integer"
    error = _validate_disk_info(resources)
    if error is not None:
        return f"Invalid DiskInfo: {error}"
    for resource in resources:
        if _is_dynamically_reserved(resource) and "revocable" in resource:
            return (
                "Invalid ReservationInfo: Dynamically reserved resource "
                f"{resource_text(resource)} cannot be created from revocable resources"
            )
    return None


def _validate_disk_info(resources: list[Json]) -> str | None:
    """``resource::validateDiskInfo``."""
    for resource in resources:
        disk = resource.get("disk")
        if disk is None:
            continue
        if "persistence" in disk:
            if "revocable" in resource:
                return "Persistent volumes cannot be created from revocable resources"
            if not _reservations(resource):
                return "Persistent volumes cannot be created from unreserved resources"
            if "volume" not in disk:
                return "Expecting 'volume' to be set for persistent volume"
            if "host_path" in (disk.get("volume") or {}):
                return "Expecting 'host_path' to be unset for persistent volume"
            error = validate_id(str((disk.get("persistence") or {}).get("id", "")))
            if error is not None:
                return f"Invalid persistence ID for persistent volume: {error}"
        elif "volume" in disk:
            return "Non-persistent volume not supported"
        elif "source" not in disk:
            return "DiskInfo is set but empty"
    return None


def _unique_persistence_id(resources: list[Json]) -> str | None:
    """``resource::validateUniquePersistenceID``: unique per role."""
    seen: set[tuple[str, str]] = set()
    for resource in resources:
        if not _is_persistent_volume(resource):
            continue
        key = (_reservation_role(resource), str(resource["disk"]["persistence"].get("id", "")))
        if key in seen:
            return f"Persistence ID '{key[1]}' is not unique"
        seen.add(key)
    return None


def _allocated_to_single_role(resources: list[Json]) -> str | None:
    """``resource::validateAllocatedToSingleRole``."""
    first: str | None = None
    for resource in resources:
        role = _allocation_role(resource)
        if role is None:
            return "The resources are not allocated to a role"
        if first is None:
            first = role
        elif role != first:
            return (
                f"The resources have multiple allocation roles ('{role}' and '{first}') but only one "
                "allocation role is allowed"
            )
    return None


def _revocable_and_non_revocable(resources: list[Json]) -> str | None:
    """``resource::validateRevocableAndNonRevocableResources``."""
    names = sorted({str(r.get("name", "")) for r in resources})
    for name in names:
        kinds = {"revocable" in r for r in resources if r.get("name") == name}
        if kinds == {True, False}:
            return f"Cannot use both revocable and non-revocable '{name}' at the same time"
    return None


def _persistent_volume(volumes: list[Json]) -> str | None:
    """``resource::validatePersistentVolume``."""
    for volume in volumes:
        disk = volume.get("disk")
        if disk is None:
            return f"Resource {resource_text(volume)} does not have DiskInfo"
        if "persistence" not in disk:
            return "'persistence' is not set in DiskInfo"
        if "volume" not in disk:
            return "Expecting 'volume' to be set for persistent volume"
        if (disk.get("volume") or {}).get("mode") == "RO":
            return "Read-only persistent volume not supported"
    return None


def _overlapping(first: list[Json], second: list[Json]) -> bool:
    """``resource::detectOverlappingSetAndRangeResources``: ranges or set items of the same resource
    (equal but for the values) used by both lists."""

    def values(resources: list[Json]) -> dict[str, list[tuple[int, int]] | set[str]]:
        out: dict[str, Any] = {}
        for r in resources:
            key = json.dumps({k: v for k, v in r.items() if k not in ("ranges", "set")}, sort_keys=True)
            if r.get("type") == "RANGES":
                ranges = [
                    (int(x.get("begin", 0)), int(x.get("end", 0)))
                    for x in (r.get("ranges") or {}).get("range", []) or []
                ]
                out.setdefault(key, []).extend(ranges)
            elif r.get("type") == "SET":
                out.setdefault(key, set()).update((r.get("set") or {}).get("item", []) or [])
        return out

    left, right = values(first), values(second)
    for key, items in left.items():
        other = right.get(key)
        if other is None:
            continue
        if isinstance(items, set) and isinstance(other, set) and items & other:
            return True
        if (
            isinstance(items, list)
            and isinstance(other, list)
            and any(a <= d and c <= b for a, b in items for c, d in other)
        ):
            return True
    return False


# --- frameworks ---------------------------------------------------------------------------------------


def _capabilities(framework: Mapping[str, Any]) -> set[str]:
    return {str(c.get("type", "")) for c in framework.get("capabilities", []) or []}


def framework_roles(framework: Mapping[str, Any]) -> list[str]:
    """``protobuf::framework::getRoles``: ``roles`` of a MULTI_ROLE framework, else ``role``."""
    if "MULTI_ROLE" in _capabilities(framework):
        return [str(r) for r in framework.get("roles", []) or []]
    return [str(framework.get("role", "*"))]


def _id(field: Any) -> str | None:
    if isinstance(field, Mapping):
        return str(field.get("value", ""))
    return None


def _stringify_double(value: float) -> str:
    """``stringify(double)``: an ostream with its default precision (6 significant digits)."""
    return format(value, ".6g")


def validate_framework(framework: Mapping[str, Any]) -> str | None:
    """``framework::validate`` (``src/master/validation.cpp``): roles (MULTI_ROLE uses ``roles``, others
    ``role``; no duplicates; valid names), the id, offer filters and the failover timeout."""
    multi_role = "MULTI_ROLE" in _capabilities(framework)
    if multi_role and "role" in framework:
        return "'FrameworkInfo.role' must not be set when the framework is MULTI_ROLE capable"
    if not multi_role and framework.get("roles"):
        return "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable"
    if multi_role:
        roles = [str(r) for r in framework.get("roles", []) or []]
        duplicates = sorted({r for r in roles if roles.count(r) > 1})
        if duplicates:
            return "'FrameworkInfo.roles' contains duplicate items: { " + ", ".join(duplicates) + " }"
        for role in roles:
            error = validate_role(role)
            if error is not None:
                return f"'FrameworkInfo.roles' contains invalid role: {error}"
    else:
        error = validate_role(str(framework.get("role", "*")))
        if error is not None:
            return f"'FrameworkInfo.role' is not a valid role: {error}"
    framework_id = _id(framework.get("id"))
    if framework_id:
        error = validate_id(framework_id)
        if error is not None:
            return error
    for filters in (framework.get("offer_filters") or {}).values():
        minimum = (filters or {}).get("min_allocatable_resources") or {}
        for quantities in minimum.get("quantities", []) or []:
            entries = (quantities or {}).get("quantities") or {}
            if not entries:
                return "Resource quantities must contain at least one quantity"
            for name, scalar in entries.items():
                error = _input_scalar(float((scalar or {}).get("value", 0.0)))
                if error is not None:
                    return f"Invalid resource quantity for '{name}': {error}"
    timeout = float(framework.get("failover_timeout", 0.0))
    if not math.isfinite(timeout) or abs(timeout * 1e9) > _INT64_MAX:
        return f"The framework failover_timeout ({_stringify_double(timeout)}) is invalid"
    return None


def _input_scalar(value: float) -> str | None:
    """``common::validation::validateInputScalarValue``."""
    if math.isinf(value):
        return "Infinite values not supported"
    if math.isnan(value):
        return "NaN not supported"
    if value != 0 and abs(value) < 2.2250738585072014e-308:
        return "Subnormal values not supported"
    if value < 0:
        return "Negative values not supported"
    return None


# --- scheduler calls ------------------------------------------------------------------------------


def validate_call(call: Mapping[str, Any]) -> str | None:
    """``scheduler::call::validate``: the call's type, its body per type, the framework id, the
    acknowledged uuid. The HTTP handler answers 400 ``Failed to validate scheduler::Call: <error>``."""
    kind = call.get("type")
    if kind is None:
        return "Expecting 'type' to be present"
    if kind == "SUBSCRIBE":
        subscribe = call.get("subscribe")
        if subscribe is None:
            return "Expecting 'subscribe' to be present"
        info_id = _id((subscribe.get("framework_info") or {}).get("id")) or ""
        if info_id != (_id(call.get("framework_id")) or ""):
            return "'framework_id' differs from 'subscribe.framework_info.id'"
        return None
    if "framework_id" not in call:
        return "Expecting 'framework_id' to be present"
    body = _CALL_BODY.get(str(kind))
    if body is not None and call.get(body) is None:
        return f"Expecting '{body}' to be present"
    if kind == "ACKNOWLEDGE":
        return _uuid_error(str(call["acknowledge"].get("uuid", "")))
    if kind == "ACKNOWLEDGE_OPERATION_STATUS":
        acknowledge = call["acknowledge_operation_status"]
        error = _uuid_error(str(acknowledge.get("uuid", "")))
        if error is not None:
            return error
        if "agent_id" not in acknowledge:
            return "Expecting 'agent_id' to be present"
    if kind == "UPDATE_FRAMEWORK":
        info_id = _id((call["update_framework"].get("framework_info") or {}).get("id")) or ""
        if info_id != (_id(call.get("framework_id")) or ""):
            return "'framework_id' differs from 'update_framework.framework_info.id'"
    return None


def _uuid_error(encoded: str) -> str | None:
    """``id::UUID::fromBytes`` (stout): 16 bytes with a known version (1-5)."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "Not a valid UUID"
    if len(raw) != 16 or not 1 <= (raw[6] >> 4) <= 5:
        return "Not a valid UUID"
    return None


# --- executors and tasks ----------------------------------------------------------------------------


def _nanoseconds(field: Any) -> int | None:
    if not isinstance(field, Mapping) or "nanoseconds" not in field:
        return None
    return int(field["nanoseconds"])


def _environment(command: Mapping[str, Any]) -> str | None:
    """``common::validation::validateEnvironment`` (what ``validateCommandInfo`` checks)."""
    for variable in (command.get("environment") or {}).get("variables", []) or []:
        name = variable.get("name", "")
        kind = variable.get("type", "VALUE")
        if kind == "SECRET":
            if "secret" not in variable:
                return f"Environment variable '{name}' of type 'SECRET' must have a secret set"
            if "value" in variable:
                return f"Environment variable '{name}' of type 'SECRET' must not have a value set"
        elif kind == "VALUE":
            if "value" not in variable:
                return f"Environment variable '{name}' of type 'VALUE' must have a value set"
        elif kind == "UNKNOWN":
            return "Environment variable of type 'UNKNOWN' is not allowed"
    return None


def _inject(resources: list[Json], role: str | None) -> list[Json]:
    """The offer's ``allocation_info`` added where the framework left it out
    (``protobuf::injectAllocationInfo``), then the post-refinement format."""
    out = []
    for resource in resources:
        item = upgrade(resource)
        if role is not None and "allocation_info" not in item:
            item["allocation_info"] = {"role": role}
        out.append(item)
    return out


def _default_role(framework: Mapping[str, Any], allocation_role: str | None) -> str | None:
    if allocation_role is not None:
        return allocation_role
    roles = framework_roles(framework)
    return roles[0] if len(roles) == 1 else None


def validate_executor(executor: Json, framework: Json, *, allocation_role: str | None = None) -> str | None:
    """``executor::internal::validate`` (``src/master/validation.cpp``) without the check against an
    executor already running with that id: type (DEFAULT without, CUSTOM with a command), id,
    ``shutdown_grace_period`` >= 0, the command's environment, ``framework_id`` set and the
    framework's, resources (valid, unique persistence ids, one allocation role, not mixing revocable).
    The resources lacking ``allocation_info`` get ``allocation_role`` (default: the framework's role
    when it has one), as the master injects the offer's."""
    kind = executor.get("type", "UNKNOWN")
    if kind == "DEFAULT" and "command" in executor:
        return "'ExecutorInfo.command' must not be set for 'DEFAULT' executor"
    if kind == "CUSTOM" and "command" not in executor:
        return "'ExecutorInfo.command' must be set for 'CUSTOM' executor"
    error = validate_id(_id(executor.get("executor_id")) or "")
    if error is not None:
        return error
    grace = _nanoseconds(executor.get("shutdown_grace_period"))
    if grace is not None and grace < 0:
        return "ExecutorInfo's 'shutdown_grace_period' must be non-negative"
    if "command" in executor:
        error = _environment(executor["command"])
        if error is not None:
            return f"Executor's `CommandInfo` is invalid: {error}"
    framework_id = _id(executor.get("framework_id"))
    if framework_id is None:
        return "'ExecutorInfo.framework_id' must be set"
    expected = _id(framework.get("id"))
    if expected is not None and framework_id != expected:
        return f"ExecutorInfo has an invalid FrameworkID (Actual: {framework_id} vs Expected: {expected})"
    raw = list(executor.get("resources", []) or [])
    error = check_resources(raw)
    if error is not None:
        return f"Executor uses invalid resources: Invalid resources: {error}"
    resources = _inject(raw, _default_role(framework, allocation_role))
    error = _validate_upgraded(resources)
    if error is not None:
        return f"Executor uses invalid resources: {error}"
    error = _unique_persistence_id(resources)
    if error is not None:
        return f"Executor uses duplicate persistence ID: {error}"
    error = _allocated_to_single_role(resources)
    if error is not None:
        return f"Invalid executor resources: {error}"
    error = _revocable_and_non_revocable(resources)
    if error is not None:
        return f"Executor mixes revocable and non-revocable resources: {error}"
    return None


def validate_task(
    task: Json, framework: Json, agent_id: str, *, allocation_role: str | None = None
) -> str | None:
    """``task::validate`` (``src/master/validation.cpp``) as ``Master::accept`` runs it for a LAUNCH:
    first the raw resources of the task and its executor (``validateAndUpgradeResources``), then the
    task id, its agent (``agent_id``), ``kill_policy.grace_period`` and ``max_completion_time`` >= 0,
    resources (non-empty, valid, unique persistence ids, one allocation role, not mixing revocable),
    the command's environment; exactly one of ``command`` / ``executor``; the executor
    (``validate_executor``, with ``framework_id`` filled in from the framework when missing, as the
    master does; type CUSTOM, a command, no shared resources); the task and executor resources
    together (valid, not overlapping, unique persistence ids). See the module docstring for what
    needs the master's state and is not checked here."""
    executor = task.get("executor")
    error = check_resources(task.get("resources", []) or [])
    if error is None and executor is not None:
        error = check_resources(executor.get("resources", []) or [])
    if error is not None:
        return error
    role = _default_role(framework, allocation_role)
    if executor is not None and "framework_id" not in executor and "id" in framework:
        executor = {**executor, "framework_id": framework["id"]}

    error = validate_id(_id(task.get("task_id")) or "")
    if error is not None:
        return error
    task_agent = _id(task.get("agent_id")) or ""
    if task_agent != agent_id:
        return f"Task uses invalid agent {task_agent} while agent {agent_id} is expected"
    grace = _nanoseconds((task.get("kill_policy") or {}).get("grace_period"))
    if grace is not None and grace < 0:
        return "Task's 'kill_policy.grace_period' must be non-negative"
    completion = _nanoseconds(task.get("max_completion_time"))
    if completion is not None and completion < 0:
        return "Task's `max_completion_time` must be non-negative"
    resources = _inject(list(task.get("resources", []) or []), role)
    if not resources:
        return "Task uses no resources"
    error = _validate_upgraded(resources)
    if error is not None:
        return f"Task uses invalid resources: {error}"
    error = _unique_persistence_id(resources)
    if error is not None:
        return f"Task uses duplicate persistence ID: {error}"
    error = _allocated_to_single_role(resources)
    if error is not None:
        return f"Invalid task resources: {error}"
    error = _revocable_and_non_revocable(resources)
    if error is not None:
        return f"Task mixes revocable and non-revocable resources: {error}"
    if "command" in task:
        error = _environment(task["command"])
        if error is not None:
            return f"Task's `CommandInfo` is invalid: {error}"

    if (executor is not None) == ("command" in task):
        return "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"
    executor_resources: list[Json] = []
    if executor is not None:
        error = validate_executor(executor, framework, allocation_role=role)
        if error is not None:
            return error
        if "type" in executor and executor["type"] != "CUSTOM":
            return "'ExecutorInfo.type' must be 'CUSTOM'"
        if "command" not in executor:
            return "'ExecutorInfo.command' must be set"
        executor_resources = _inject(list(executor.get("resources", []) or []), role)
        if any("shared" in r for r in executor_resources):
            return (
                f"Executor resources {resources_text(executor_resources)} should not contain any "
                "shared resources"
            )
    total = resources + executor_resources
    error = _validate_upgraded(total)
    if error is not None:
        return f"Task and its executor use invalid resources: {error}"
    if executor is not None and _overlapping(resources, executor_resources):
        return (
            f"There are overlapping resources in the task resources {resources_text(resources)} and "
            f"executor resources {resources_text(executor_resources)}"
        )
    error = _unique_persistence_id(total)
    if error is not None:
        return f"Task and its executor use duplicate persistence ID: {error}"
    error = _revocable_and_non_revocable(total)
    if error is not None:
        return f"Task and its executor mix revocable and non-revocable resources: {error}"
    return None


# --- offer operations ------------------------------------------------------------------------------


def _operation_resources(kind: str, body: Mapping[str, Any]) -> list[list[Json]]:
    """The resource lists ``validateAndUpgradeResources`` checks for an operation."""
    if kind == "RESERVE":
        return [list(body.get("resources", []) or []), list(body.get("source", []) or [])]
    if kind == "UNRESERVE":
        return [list(body.get("resources", []) or [])]
    if kind in ("CREATE", "DESTROY"):
        return [list(body.get("volumes", []) or [])]
    if kind == "LAUNCH":
        lists = []
        for task in body.get("task_infos", []) or []:
            lists.append(list(task.get("resources", []) or []))
            if task.get("executor") is not None:
                lists.append(list(task["executor"].get("resources", []) or []))
        return lists
    return []


def validate_operation(operation: Json, framework: Json, *, allocation_role: str | None = None) -> str | None:
    """An offer operation of ACCEPT as ``Master::accept`` / ``_accept`` validate it: its body and raw
    resources (``validateAndUpgradeResources``; a non-LAUNCH operation is then dropped with
    ``Operation attempted with invalid resources: ...``), no ``source`` in a RESERVE, no ``id`` on a
    LAUNCH, then ``operation::validate`` of RESERVE (dynamic reservations of resources allocated to
    the framework's role, principal = the framework's), UNRESERVE (dynamically reserved, not a volume),
    CREATE (persistent RW volumes, unique ids, principal = the framework's, SHARED_RESOURCES for a shared
    one), DESTROY (persistent volumes) and every task of a LAUNCH (``validate_task`` against its own
    ``agent_id``). ``allocation_role``: the offer's allocation role (default: the framework's single
    role), injected where the operation's resources lack ``allocation_info``."""
    kind = str(operation.get("type", "UNKNOWN"))
    if kind == "UNKNOWN":
        return "Operation attempted with invalid resources: Unknown offer operation"
    body_name = _BODY.get(kind)
    body = operation.get(body_name) if body_name else None
    if body is None:
        message = _MISSING_BODY.get(kind, "Unknown offer operation")
        return message if kind == "LAUNCH" else f"Operation attempted with invalid resources: {message}"
    for resources in _operation_resources(kind, body):
        error = check_resources(resources)
        if error is not None:
            return error if kind == "LAUNCH" else f"Operation attempted with invalid resources: {error}"
    if kind == "RESERVE" and body.get("source"):
        return "Reservation updates are not yet implemented for the scheduler API."
    if kind == "LAUNCH" and "id" in operation:
        return "The `id` field cannot be set on LAUNCH operations"

    role = _default_role(framework, allocation_role)
    principal = framework.get("principal")
    if kind == "RESERVE":
        return _validate_reserve(_inject(list(body.get("resources", []) or []), role), framework, principal)
    if kind == "UNRESERVE":
        return _validate_unreserve(_inject(list(body.get("resources", []) or []), role))
    if kind == "CREATE":
        return _validate_create(_inject(list(body.get("volumes", []) or []), role), framework, principal)
    if kind == "DESTROY":
        volumes = [{k: v for k, v in upgrade(r).items() if k != "allocation_info"} for r in body["volumes"]]
        error = _validate_upgraded(volumes)
        if error is not None:
            return f"Invalid resources: {error}"
        error = _persistent_volume(volumes)
        if error is not None:
            return f"Not a persistent volume: {error}"
        return None
    if kind == "LAUNCH":
        for task in body.get("task_infos", []) or []:
            error = validate_task(task, framework, _id(task.get("agent_id")) or "", allocation_role=role)
            if error is not None:
                return error
        return None
    return None  # LAUNCH_GROUP, GROW/SHRINK_VOLUME (unsupported by the local cluster), CREATE/DESTROY_DISK.


def _validate_reserve(resources: list[Json], framework: Json, principal: str | None) -> str | None:
    """``operation::validate(Offer::Operation::Reserve, ...)`` with the framework's info."""
    error = _validate_upgraded(resources)
    if error is not None:
        return f"Invalid resources: {error}"
    roles = framework_roles(framework)
    roles_text = "{ " + ", ".join(roles) + " }"
    for resource in resources:
        text = resource_text(resource)
        if not _is_dynamically_reserved(resource):
            return f"Resource {text} is not dynamically reserved"
        if principal is not None:
            last = _reservations(resource)[-1]
            if "principal" not in last:
                return (
                    f"A reserve operation was attempted by principal '{principal}', but there is a "
                    "reserved resource in the request with no principal set"
                )
            if last["principal"] != principal:
                return (
                    f"A reserve operation was attempted by authenticated principal '{principal}', which "
                    f"does not match a reserved resource in the request with principal '{last['principal']}'"
                )
        allocated = _allocation_role(resource)
        reserved = _reservation_role(resource)
        if allocated is None:
            return (
                f"A reserve operation was attempted on unallocated resource {text}, but frameworks can "
                "only perform reservations on allocated resources"
            )
        if allocated != reserved:
            return (
                f"A reserve operation was attempted for a resource with role '{reserved}', but the "
                f"resource was allocated to role '{allocated}'"
            )
        if allocated not in roles:
            return (
                f"A reserve operation was attempted for a resource allocated to role '{allocated}', but "
                f"the framework only has roles '{roles_text}'"
            )
        if reserved not in roles:
            return (
                f"A reserve operation was attempted for a resource with role '{reserved}', but the "
                f"framework can only reserve resources with roles '{roles_text}'"
            )
    error = _allocated_to_single_role(resources)
    if error is not None:
        return f"Invalid reservation resources: {error}"
    return None


def _validate_unreserve(resources: list[Json]) -> str | None:
    """``operation::validate(Offer::Operation::Unreserve, ...)``."""
    error = _validate_upgraded(resources)
    if error is not None:
        return f"Invalid resources: {error}"
    for resource in resources:
        text = resource_text(resource)
        if not _is_dynamically_reserved(resource):
            return f"Resource {text} is not dynamically reserved"
        if _is_persistent_volume(resource):
            return (
                f"A dynamically reserved persistent volume {text} cannot be unreserved directly. Please "
                "destroy the persistent volume first then unreserve the resource"
            )
    return None


def _validate_create(volumes: list[Json], framework: Json, principal: str | None) -> str | None:
    """``operation::validate(Offer::Operation::Create, ...)`` (the agent's existing volumes unknown)."""
    error = _validate_upgraded(volumes)
    if error is not None:
        return f"Invalid resources: {error}"
    error = _persistent_volume(volumes)
    if error is not None:
        return f"Not a persistent volume: {error}"
    error = _unique_persistence_id(volumes)
    if error is not None:
        return error
    for volume in volumes:
        if "shared" in volume and "SHARED_RESOURCES" not in _capabilities(framework):
            return (
                f"Create volume operation for '{resource_text(volume)}' has been attempted by framework "
                f"'{_id(framework.get('id')) or ''}' with no SHARED_RESOURCES capability"
            )
        if principal is not None:
            persistence = volume["disk"]["persistence"]
            if "principal" not in persistence:
                return (
                    f"Create volume operation attempted by principal '{principal}', but there is a volume "
                    "in the operation with no principal set in 'disk.persistence'"
                )
            if persistence["principal"] != principal:
                return (
                    f"Create volume operation attempted by authenticated principal '{principal}', which "
                    f"does not match a volume in the operation with principal '{persistence['principal']}' "
                    "set in 'disk.persistence'"
                )
    error = _allocated_to_single_role(volumes)
    if error is not None:
        return f"Invalid volume resources: {error}"
    return None
