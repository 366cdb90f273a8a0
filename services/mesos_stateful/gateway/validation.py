"""Input validation of the public API: pure functions that collect every violation at once.

Each check adds ``field path -> what is wrong`` to a ``Violations`` map; the caller raises one
``errors.InvalidArgument`` naming all of them (INVALID_ARGUMENT with a google.rpc.BadRequest).
Field paths are the request's own: ``spec.resources.cpus``, ``spec.config.<key>``, ``replicas``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors

Violations = dict[str, str]

MAX_NAME_LEN = 40
MAX_IMAGE_LEN = 255
MAX_CONFIG_VALUE_LEN = 1024
MAX_LABEL_NAME_LEN = 63
MAX_LABEL_PREFIX_LEN = 253
MAX_LABEL_VALUE_LEN = 63
MAX_LABELS = 64
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_VALUE_LEN = 255
MAX_MEMBERS_PER_AGENT = 1000

_DNS_LABEL = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?)?$")
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
_ATTRIBUTE_VALUE = re.compile(r"^[A-Za-z0-9_./:-]+$")


#: ``default_runtime`` setting values -> the Runtime they stand for.
RUNTIMES: dict[str, int] = {"process": types_pb2.RUNTIME_PROCESS, "docker": types_pb2.RUNTIME_DOCKER}


@dataclass(frozen=True)
class Limits:
    """Operator limits and defaults (from GatewaySettings)."""

    max_replicas: int = 9
    max_cpus: float = 16.0
    max_mem_mb: int = 65536
    max_disk_mb: int = 1048576
    max_config_entries: int = 64
    #: The runtime an instance created with RUNTIME_UNSPECIFIED gets (``default_runtime``).
    default_runtime: int = types_pb2.RUNTIME_PROCESS


def runtime_name(runtime: int) -> str:
    """``RUNTIME_DOCKER`` for 2; ``runtime 7`` for a number this server does not know."""
    try:
        return types_pb2.Runtime.Name(runtime)
    except ValueError:
        return f"runtime {runtime}"


def stored_runtime(spec: types_pb2.InstanceSpec) -> int:
    """The runtime of a stored spec: RUNTIME_UNSPECIFIED in a record written before the field
    existed means the process runtime (what those instances run with)."""
    return spec.runtime or types_pb2.RUNTIME_PROCESS


def raise_if_any(violations: Violations, what: str = "invalid request") -> None:
    """Raise one InvalidArgument listing every violation, if there is any."""
    if violations:
        summary = "; ".join(f"{f}: {d}" for f, d in sorted(violations.items()))
        raise errors.InvalidArgument(f"{what}: {summary}", fields=violations)


def check_name(value: str, field: str, violations: Violations) -> None:
    """A DNS-1123 label: lowercase letters, digits and '-', starting with a letter, ending with a
    letter or digit, at most 40 characters."""
    if not value:
        violations[field] = "is required"
    elif len(value) > MAX_NAME_LEN:
        violations[field] = f"must be at most {MAX_NAME_LEN} characters (got {len(value)})"
    elif not _DNS_LABEL.match(value):
        violations[field] = (
            f"{value!r} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            "start with a letter and end with a letter or digit"
        )


def check_replicas(
    replicas: int,
    field: str,
    limits: Limits,
    description: types_pb2.WorkloadDescription | None,
    violations: Violations,
) -> None:
    """1..max_replicas, and within the workload's own min/max when it declares them."""
    if replicas < 1:
        violations[field] = "must be at least 1"
        return
    if replicas > limits.max_replicas:
        violations[field] = f"must be at most {limits.max_replicas} (got {replicas})"
        return
    if description is None:
        return
    if description.min_replicas and replicas < description.min_replicas:
        violations[field] = (
            f"workload {description.name!r} needs at least {description.min_replicas} members "
            f"(got {replicas})"
        )
    elif description.max_replicas and replicas > description.max_replicas:
        violations[field] = (
            f"workload {description.name!r} supports at most {description.max_replicas} members "
            f"(got {replicas})"
        )


def fill_resources(
    resources: types_pb2.Resources,
    defaults: types_pb2.Resources | None,
    limits: Limits,
    violations: Violations,
    field: str = "spec.resources",
) -> types_pb2.Resources:
    """The resources with zero fields taken from the workload's defaults, checked against limits."""
    filled = types_pb2.Resources()
    filled.CopyFrom(resources)
    if defaults is not None:
        if filled.cpus == 0:
            filled.cpus = defaults.cpus
        if filled.mem_mb == 0:
            filled.mem_mb = defaults.mem_mb
        if filled.disk_mb == 0:
            filled.disk_mb = defaults.disk_mb
    cpus = filled.cpus
    if not math.isfinite(cpus):
        violations[f"{field}.cpus"] = "must be a finite number"
    elif cpus < 0:
        violations[f"{field}.cpus"] = "must be positive"
    elif cpus == 0 and defaults is not None:
        violations[f"{field}.cpus"] = "is required (the workload has no default)"
    elif cpus > limits.max_cpus:
        violations[f"{field}.cpus"] = f"must be at most {limits.max_cpus:g} (got {cpus:g})"
    if filled.mem_mb == 0 and defaults is not None:
        violations[f"{field}.mem_mb"] = "is required (the workload has no default)"
    elif filled.mem_mb > limits.max_mem_mb:
        violations[f"{field}.mem_mb"] = f"must be at most {limits.max_mem_mb} MiB (got {filled.mem_mb})"
    if filled.disk_mb > limits.max_disk_mb:
        violations[f"{field}.disk_mb"] = f"must be at most {limits.max_disk_mb} MiB (got {filled.disk_mb})"
    return filled


def check_image(image: str, field: str, violations: Violations) -> None:
    if len(image) > MAX_IMAGE_LEN:
        violations[field] = f"must be at most {MAX_IMAGE_LEN} characters"
    elif any(c.isspace() for c in image) or not image.isprintable():
        violations[field] = "must not contain whitespace or control characters"


def fill_runtime(
    spec: types_pb2.InstanceSpec,
    description: types_pb2.WorkloadDescription | None,
    default: int,
    violations: Violations,
    field: str = "spec.runtime",
) -> int:
    """The runtime the instance runs with: the spec's, or ``default`` when UNSPECIFIED. A number
    this server does not know (a newer client) is refused, and so is the Docker runtime when
    neither the spec nor the workload names an image."""
    known = {v for v in types_pb2.Runtime.values() if v != types_pb2.RUNTIME_UNSPECIFIED}
    runtime = spec.runtime or default
    if runtime not in known:
        names = ", ".join(runtime_name(v) for v in sorted(known))
        violations[field] = (
            f"unknown runtime {spec.runtime} (known: {names}; RUNTIME_UNSPECIFIED takes the "
            f"suite's default, {runtime_name(default)})"
        )
        return runtime
    docker = runtime == types_pb2.RUNTIME_DOCKER
    if docker and not spec.image and description is not None and not description.default_image:
        violations["spec.image"] = (
            f"is required for the Docker runtime: workload {description.name!r} names no default "
            "image (give one with --image, or use the process runtime)"
        )
    return runtime


def check_runtime_unchanged(
    current: types_pb2.InstanceSpec,
    requested: types_pb2.InstanceSpec,
    violations: Violations,
    field: str = "spec.runtime",
) -> None:
    """An update may not change the runtime: members keep their data on volumes their runtime
    mounted, and a switch would relaunch every member at once. RUNTIME_UNSPECIFIED in the update
    keeps the current one."""
    if requested.runtime == types_pb2.RUNTIME_UNSPECIFIED:
        return
    was = stored_runtime(current)
    if requested.runtime != was:
        violations[field] = (
            f"cannot change the runtime of instance {current.name!r} from {runtime_name(was)} to "
            f"{runtime_name(requested.runtime)}: it is fixed when the instance is created; leave "
            "it unset to keep it, or create a new instance with the runtime wanted (e.g. from a "
            "backup of this one)"
        )


def validate_update(current: types_pb2.InstanceSpec, requested: types_pb2.InstanceSpec) -> None:
    """What an update of a stored spec may not change (InvalidArgument naming each field): the
    name, the workload and the runtime."""
    violations: Violations = {}
    if requested.name and requested.name != current.name:
        violations["spec.name"] = f"cannot rename instance {current.name!r} (got {requested.name!r})"
    if requested.workload and requested.workload != current.workload:
        violations["spec.workload"] = (
            f"cannot change the workload of instance {current.name!r} from {current.workload!r} "
            f"to {requested.workload!r}"
        )
    check_runtime_unchanged(current, requested, violations)
    raise_if_any(violations, "invalid update")


def check_config(
    config: Mapping[str, str],
    description: types_pb2.WorkloadDescription | None,
    limits: Limits,
    violations: Violations,
    field: str = "spec.config",
) -> None:
    """At most N entries; keys the workload declares (and allowed values); printable values."""
    if len(config) > limits.max_config_entries:
        violations[field] = f"at most {limits.max_config_entries} entries (got {len(config)})"
    keys = {k.name: k for k in description.config_keys} if description is not None else None
    workload = description.name if description is not None else ""
    for key, value in sorted(config.items()):
        path = f"{field}.{key}"
        if keys is not None and key not in keys:
            known = ", ".join(sorted(keys)) or "none"
            violations[path] = f"unknown key for workload {workload!r} (known keys: {known})"
        elif len(value) > MAX_CONFIG_VALUE_LEN:
            violations[path] = f"value must be at most {MAX_CONFIG_VALUE_LEN} characters"
        elif not value.isprintable():
            violations[path] = "value must be printable (no control characters)"
        elif keys is not None and keys[key].allowed_values and value not in keys[key].allowed_values:
            allowed = ", ".join(keys[key].allowed_values)
            violations[path] = f"{value!r} is not allowed (allowed: {allowed})"


def label_key_problem(key: str) -> str | None:
    """What is wrong with a Kubernetes label key ``[prefix/]name``, or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "prefix before '/' must not be empty"
    if prefix and (len(prefix) > MAX_LABEL_PREFIX_LEN or not _DNS_SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} must be a DNS subdomain of at most {MAX_LABEL_PREFIX_LEN} characters"
    if not name:
        return "name must not be empty"
    if len(name) > MAX_LABEL_NAME_LEN:
        return f"name must be at most {MAX_LABEL_NAME_LEN} characters"
    if not _LABEL_NAME.match(name):
        return "name must use [A-Za-z0-9-_.] and start and end with a letter or digit"
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > MAX_LABEL_VALUE_LEN:
        return f"value must be at most {MAX_LABEL_VALUE_LEN} characters"
    if not _LABEL_VALUE.match(value):
        return "value must use [A-Za-z0-9-_.] and start and end with a letter or digit"
    return None


def check_labels(labels: Mapping[str, str], field: str, violations: Violations) -> None:
    if len(labels) > MAX_LABELS:
        violations[field] = f"at most {MAX_LABELS} labels (got {len(labels)})"
    for key, value in sorted(labels.items()):
        problem = label_key_problem(key) or label_value_problem(value)
        if problem:
            violations[f"{field}.{key}"] = problem


def check_placement(placement: types_pb2.Placement, field: str, violations: Violations) -> None:
    if placement.max_members_per_agent > MAX_MEMBERS_PER_AGENT:
        violations[f"{field}.max_members_per_agent"] = f"must be at most {MAX_MEMBERS_PER_AGENT}"
    attributes = placement.required_attributes
    path = f"{field}.required_attributes"
    if len(attributes) > MAX_ATTRIBUTES:
        violations[path] = f"at most {MAX_ATTRIBUTES} attributes (got {len(attributes)})"
    for key, value in sorted(attributes.items()):
        if not _ATTRIBUTE_NAME.match(key):
            violations[f"{path}.{key}"] = "attribute name must be 1-63 characters of [A-Za-z0-9_.-]"
        elif len(value) > MAX_ATTRIBUTE_VALUE_LEN or not _ATTRIBUTE_VALUE.match(value):
            violations[f"{path}.{key}"] = (
                f"attribute value must be 1-{MAX_ATTRIBUTE_VALUE_LEN} characters of [A-Za-z0-9_./:-]"
            )


def check_workload(
    workload: str, registered: Iterable[str], field: str, violations: Violations
) -> bool:
    """Whether ``workload`` is registered; a violation listing the registered ones otherwise."""
    names = sorted(registered)
    if workload in names:
        return True
    known = ", ".join(names) if names else "none registered: is a workload service running?"
    violations[field] = (
        f"is required (registered workloads: {known})"
        if not workload
        else f"unknown workload {workload!r} (registered workloads: {known})"
    )
    return False


def validate_spec(
    spec: types_pb2.InstanceSpec,
    workloads: Mapping[str, types_pb2.WorkloadDescription],
    limits: Limits,
) -> types_pb2.InstanceSpec:
    """The spec with defaults filled in, or InvalidArgument naming every bad field."""
    violations: Violations = {}
    check_name(spec.name, "spec.name", violations)
    description = (
        workloads[spec.workload] if check_workload(spec.workload, workloads, "spec.workload", violations)
        else None
    )
    check_replicas(spec.replicas, "spec.replicas", limits, description, violations)
    filled = types_pb2.InstanceSpec()
    filled.CopyFrom(spec)
    resources = fill_resources(
        spec.resources, description.default_resources if description else None, limits, violations
    )
    filled.resources.CopyFrom(resources)
    check_image(spec.image, "spec.image", violations)
    filled.runtime = fill_runtime(spec, description, limits.default_runtime, violations)  # type: ignore[assignment]
    check_config(spec.config, description, limits, violations)
    check_labels(spec.labels, "spec.labels", violations)
    check_placement(spec.placement, "spec.placement", violations)
    raise_if_any(violations, "invalid instance spec")
    return filled


def validate_instance_name(name: str, field: str = "name") -> None:
    violations: Violations = {}
    check_name(name, field, violations)
    raise_if_any(violations)


def validate_scale(
    name: str, replicas: int, description: types_pb2.WorkloadDescription | None, limits: Limits
) -> None:
    violations: Violations = {}
    check_name(name, "name", violations)
    check_replicas(replicas, "replicas", limits, description, violations)
    raise_if_any(violations)


def validate_list_filter(workload: str, labels: Mapping[str, str]) -> None:
    violations: Violations = {}
    if workload:
        check_name(workload, "workload", violations)
    check_labels(labels, "labels", violations)
    raise_if_any(violations)


def validate_watch_filter(name: str, workload: str, start_revision: int) -> None:
    violations: Violations = {}
    if name:
        check_name(name, "name", violations)
    if workload:
        check_name(workload, "workload", violations)
    if start_revision < 0:
        violations["start_revision"] = "must not be negative"
    raise_if_any(violations)


# -- UpdateInstance (AIP-134 update_mask, AIP-154 etag) -----------------------------------------------

#: update_mask paths UpdateInstance accepts (relative to InstanceSpec); "config.<key>",
#: "labels.<key>", "resources.<field>" and "placement.<field>" change one entry.
UPDATABLE = ("config", "resources", "image", "placement", "labels")
_RESOURCE_FIELDS = ("cpus", "mem_mb", "disk_mb")
_PLACEMENT_FIELDS = ("max_members_per_agent", "required_attributes")
_FIXED = {
    "name": "names the instance and is fixed; create a new instance to get another name",
    "workload": "is fixed for the life of the instance; create a new instance of the other workload",
    "runtime": "is fixed for the life of the instance (volumes were mounted by it); create a new instance",
    "replicas": "is changed by ScaleInstance (statefulctl scale), not by UpdateInstance",
}


def check_update_mask(paths: Iterable[str], etag: str) -> list[str]:
    """The update_mask's paths (normalized: a leading ``spec.`` dropped), or InvalidArgument
    naming ``update_mask.paths[i]`` for each path that is empty, unknown or fixed (name,
    workload, runtime; replicas belongs to ScaleInstance) and ``etag`` if it is not a revision."""
    violations: Violations = {}
    out: list[str] = []
    given = list(paths)
    if not given:
        violations["update_mask"] = (
            "is required: name the fields to change (" + ", ".join(UPDATABLE) + ")"
        )
    for i, raw in enumerate(given):
        path = raw.removeprefix("spec.")
        head, _, tail = path.partition(".")
        field = f"update_mask.paths[{i}]"
        if head in _FIXED:
            violations[field] = f"{raw!r}: spec.{head} {_FIXED[head]}"
        elif head not in UPDATABLE:
            known = ", ".join(UPDATABLE)
            violations[field] = f"{raw!r} is not a field UpdateInstance changes (known: {known})"
        elif tail and head == "image":
            violations[field] = f"{raw!r}: image has no sub-fields"
        elif tail and head == "resources" and tail not in _RESOURCE_FIELDS:
            violations[field] = f"{raw!r}: resources has {', '.join(_RESOURCE_FIELDS)}"
        elif tail and head == "placement" and tail not in _PLACEMENT_FIELDS:
            violations[field] = f"{raw!r}: placement has {', '.join(_PLACEMENT_FIELDS)}"
        elif head in ("config", "labels") and path.endswith("."):
            violations[field] = f"{raw!r}: name the key after the dot"
        else:
            out.append(path)
    if etag and not etag.isdigit():
        violations["etag"] = f"{etag!r} is not an etag this service gave (Instance.etag: a revision number)"
    raise_if_any(violations, "invalid update")
    return out


def merge_update(
    current: types_pb2.InstanceSpec, requested: types_pb2.InstanceSpec, paths: Iterable[str]
) -> types_pb2.InstanceSpec:
    """The stored spec with the masked fields taken from ``requested`` (AIP-134: a masked field
    absent from the request is cleared / reset to its default; a map key named by
    ``config.<key>`` absent from the request is removed). ``paths`` come from
    :func:`check_update_mask`. Name, workload and runtime are never taken from the request."""
    merged = types_pb2.InstanceSpec()
    merged.CopyFrom(current)
    for path in paths:
        head, _, tail = path.partition(".")
        if head in ("config", "labels"):
            target, source = getattr(merged, head), getattr(requested, head)
            if not tail:
                target.clear()
                target.update(source)
            elif tail in source:
                target[tail] = source[tail]
            else:
                target.pop(tail, None)
        elif head == "image":
            merged.image = requested.image
        elif head == "resources":
            if tail:
                setattr(merged.resources, tail, getattr(requested.resources, tail))
            else:
                merged.resources.CopyFrom(requested.resources)
        elif head == "placement":
            if tail == "required_attributes":
                merged.placement.required_attributes.clear()
                merged.placement.required_attributes.update(requested.placement.required_attributes)
            elif tail:
                merged.placement.max_members_per_agent = requested.placement.max_members_per_agent
            else:
                merged.placement.CopyFrom(requested.placement)
    return merged


def check_applicable(
    current: types_pb2.InstanceSpec,
    merged: types_pb2.InstanceSpec,
    members: Iterable[types_pb2.Member] = (),
) -> None:
    """A change the members cannot take in place is refused before anything changes
    (FailedPrecondition with the reason and what to do). Members restart in place: on their
    persistent volume, on the agent holding it, inside the resources reserved there for them at
    their first launch (dynamic reservations, docs/volumes.md). So:

    - ``disk_mb``: a volume cannot be resized (Mesos creates it once, at a fixed size);
    - more ``cpus`` / ``mem_mb`` than now: the reservation on the agent is not grown (less is fine);
    - ``placement.required_attributes`` added or changed: the agents the volumes are on were not
      chosen for them (removing one is fine);
    - ``placement.max_members_per_agent`` below the most members on one agent now."""
    name = current.name
    old, new = current.resources, merged.resources
    if new.disk_mb != old.disk_mb:
        raise errors.FailedPrecondition(
            f"cannot change spec.resources.disk_mb of instance {name!r} from {old.disk_mb} to "
            f"{new.disk_mb} MiB: persistent volumes cannot be resized in place (each member's data "
            f"lives on a fixed-size volume); keep {old.disk_mb}, or create a new instance with the "
            "size wanted and move the data"
        )
    grown = (("cpus", "", old.cpus, new.cpus), ("mem_mb", " MiB", old.mem_mb, new.mem_mb))
    for field, unit, was, wanted in grown:
        if wanted > was + 1e-9:
            raise errors.FailedPrecondition(
                f"cannot grow spec.resources.{field} of instance {name!r} from {was:g} to {wanted:g}{unit} "
                "in place: each member restarts inside the resources reserved for it on its agent at "
                "its first launch, and reservations are not grown; a lower value rolls out, a higher "
                "one needs a new instance"
            )
    added = {
        k: v
        for k, v in merged.placement.required_attributes.items()
        if current.placement.required_attributes.get(k) != v
    }
    if added:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(added.items()))
        raise errors.FailedPrecondition(
            f"cannot require agent attributes {shown} of instance {name!r} in place: its members restart "
            "on the agents holding their volumes, which were not chosen for them; removing a "
            "requirement is fine, adding one needs a new instance"
        )
    limit = merged.placement.max_members_per_agent or 1
    per_agent: dict[str, int] = {}
    for m in members:
        agent = m.volume.agent_id or m.agent_id
        if agent:
            per_agent[agent] = per_agent.get(agent, 0) + 1
    crowded = max(per_agent.values(), default=0)
    if crowded > limit:
        raise errors.FailedPrecondition(
            f"cannot lower spec.placement.max_members_per_agent of instance {name!r} to {limit}: "
            f"{crowded} of its members keep their volumes on one agent"
        )


def needs_relaunch(current: types_pb2.InstanceSpec, merged: types_pb2.InstanceSpec) -> bool:
    """Whether members must be restarted to run ``merged``: anything but labels changed (and but
    the image of an instance on the process runtime, which ignores it)."""
    a, b = types_pb2.InstanceSpec(), types_pb2.InstanceSpec()
    a.CopyFrom(current)
    b.CopyFrom(merged)
    a.ClearField("labels")
    b.ClearField("labels")
    if stored_runtime(current) == types_pb2.RUNTIME_PROCESS:
        a.image = b.image = ""
    return a != b
