"""validation.py: the rules of src/master/validation.cpp, src/common/validation.cpp, resources.cpp and
roles.cpp, each with an accepted and a refused example, errors worded as Mesos words them. Every
example is first parsed strictly against the project's mesos.v1 protos, so the rules are exercised
on messages the wire contract allows."""

from __future__ import annotations

import base64
import copy
import uuid
from typing import Any

import pytest

from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.api.mesos.v1.scheduler import scheduler_pb2
from mesos_stateful.localcluster import encoding, validation

Json = dict[str, Any]

ROLE = "stateful"
PRINCIPAL = "mesos-stateful"
FRAMEWORK: Json = {
    "user": "u",
    "name": "n",
    "id": {"value": "fw-1"},
    "roles": [ROLE],
    "principal": PRINCIPAL,
    "capabilities": [{"type": "MULTI_ROLE"}, {"type": "RESERVATION_REFINEMENT"}],
}
DYNAMIC: Json = {"type": "DYNAMIC", "role": ROLE, "principal": PRINCIPAL}


def scalar(name: str, value: float, **extra: Any) -> Json:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, **extra}


def ports(*ranges: tuple[int, int], **extra: Any) -> Json:
    return {
        "name": "ports",
        "type": "RANGES",
        "ranges": {"range": [{"begin": b, "end": e} for b, e in ranges]},
        **extra,
    }


def volume(pid: str = "vol-1", size: float = 64.0, principal: str = PRINCIPAL, **extra: Any) -> Json:
    return scalar(
        "disk",
        size,
        reservations=[DYNAMIC],
        disk={
            "persistence": {"id": pid, "principal": principal},
            "volume": {"mode": "RW", "container_path": "data"},
        },
        **extra,
    )


def task(**changes: Any) -> Json:
    info: Json = {
        "name": "member-1",
        "task_id": {"value": "task-1"},
        "agent_id": {"value": "agent-1"},
        "resources": [scalar("cpus", 0.5), scalar("mem", 64.0)],
        "executor": {
            "executor_id": {"value": "task-1"},
            "framework_id": {"value": "fw-1"},
            "command": {"value": "run", "shell": True},
        },
    }
    info.update(changes)
    return info


def allocated(resource: Json) -> str:
    """How Mesos writes ``resource`` once the offer's allocation info is injected."""
    return validation.resource_text({**resource, "allocation_info": {"role": ROLE}})


def parsed(message: Json, kind: Any) -> Json:
    """The example must be a valid message of the wire contract."""
    encoding.to_message(message, kind)
    return message


def check_task(info: Json, agent: str = "agent-1") -> str | None:
    return validation.validate_task(parsed(info, mesos_pb2.TaskInfo), FRAMEWORK, agent)


def check_op(operation: Json, framework: Json = FRAMEWORK) -> str | None:
    return validation.validate_operation(parsed(operation, mesos_pb2.Offer.Operation), framework)


def check_resources(resources: list[Json]) -> str | None:
    for resource in resources:
        parsed(resource, mesos_pb2.Resource)
    return validation.validate_resources(resources)


# --- common::validation::validateID --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("task-1.a_b:c", None),
        ("", "ID must not be empty"),
        ("x" * 256, "ID must not be greater than 255 characters"),
        (".", "'.' is disallowed"),
        ("..", "'..' is disallowed"),
        ("a/b", "'a/b' contains invalid characters"),
        ("a\\b", "'a\\b' contains invalid characters"),
        ("a\nb", "'a\nb' contains invalid characters"),
    ],
)
def test_validate_id(value: str, error: str | None) -> None:
    assert validation.validate_id(value) == error


def test_task_id_rule_applies_to_tasks_and_executors() -> None:
    assert check_task(task(task_id={"value": "a/b"})) == "'a/b' contains invalid characters"
    bad = task()
    bad["executor"]["executor_id"] = {"value": ".."}
    assert check_task(bad) == "'..' is disallowed"


# --- roles::validate --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "error"),
    [
        ("*", None),
        ("stateful", None),
        ("a/b", None),
        ("/a", "Role '/a' cannot start with a slash"),
        ("a/", "Role 'a/' cannot end with a slash"),
        ("a//b", "Role 'a//b' cannot contain two adjacent slashes"),
        ("a/./b", "Role 'a/./b' cannot include '.' as a component"),
        ("a/..", "Role 'a/..' cannot include '..' as a component"),
        ("a/*", "Role 'a/*' cannot include '*' as a component"),
        ("-a", "Role component '-a' is invalid because it starts with a dash"),
        ("a b", "Role component 'a b' is invalid because it contains backspace or whitespace"),
        ("", "Role names cannot be the empty string"),
    ],
)
def test_validate_role(role: str, error: str | None) -> None:
    assert validation.validate_role(role) == error


# --- Resources::validate and resource::validate --------------------------------------------------------


def test_valid_resources_in_both_formats() -> None:
    assert (
        check_resources([scalar("cpus", 1), scalar("mem", 0), ports((31000, 31001), (31005, 31010))]) is None
    )
    assert check_resources([scalar("cpus", 1, role="r", reservation={"principal": "p"})]) is None
    assert check_resources([scalar("cpus", 1, reservations=[DYNAMIC])]) is None
    assert check_resources([{"name": "x", "type": "SET", "set": {"item": ["a", "b"]}}]) is None
    assert check_resources([volume()]) is None


@pytest.mark.parametrize(
    ("resource", "error"),
    [
        (scalar("cpus", -1), "Invalid scalar resource: value <= 0"),
        (scalar("cpus", 0.0001), "Invalid scalar resource: value <= 0"),
        ({"name": "cpus", "type": "SCALAR"}, "Invalid scalar resource"),
        ({**scalar("cpus", 1), "ranges": {"range": []}}, "Invalid scalar resource"),
        ({"name": "ports", "type": "RANGES"}, "Invalid ranges resource"),
        (ports((5, 3)), "Invalid ranges resource: begin > end"),
        (ports((1, 5), (3, 8)), "Invalid ranges resource: overlapping ranges"),
        ({"name": "x", "type": "SET"}, "Invalid set resource"),
        (
            {"name": "x", "type": "SET", "set": {"item": ["a", "a"]}},
            "Invalid set resource: duplicated elements",
        ),
        ({"name": "x", "type": "TEXT"}, "Unsupported resource type"),
        (scalar("cpus", 1, disk={}), "DiskInfo should not be set for cpus resource"),
        (scalar("cpus", 1, role="/a"), "Role '/a' cannot start with a slash"),
        (
            scalar("cpus", 1, role="r", reservation={"role": "r"}),
            "'Resource.ReservationInfo.role' must not be set for the 'Resource.reservation' field",
        ),
        (
            scalar("cpus", 1, role="r", reservation={"type": "DYNAMIC"}),
            "'Resource.ReservationInfo.type' must not be set for the 'Resource.reservation' field",
        ),
        (
            scalar("cpus", 1, reservation={"principal": "p"}),
            'Invalid reservation: role "*" cannot be dynamically reserved',
        ),
        (
            scalar("cpus", 1, reservations=[{"role": "r"}]),
            "Invalid reservation: 'Resource.ReservationInfo.type' field must be set.",
        ),
        (
            scalar("cpus", 1, reservations=[{"type": "DYNAMIC"}]),
            "Invalid reservation: 'Resource.ReservationInfo.role' field must be set.",
        ),
        (
            scalar("cpus", 1, reservations=[{"type": "DYNAMIC", "role": "*"}]),
            'Invalid reservation: role "*" cannot be reserved',
        ),
        (
            scalar(
                "cpus", 1, reservations=[{"type": "STATIC", "role": "a"}, {"type": "STATIC", "role": "a/b"}]
            ),
            "Invalid refined reservation: A refined reservation cannot be STATIC",
        ),
        (
            scalar(
                "cpus", 1, reservations=[{"type": "STATIC", "role": "a"}, {"type": "DYNAMIC", "role": "b"}]
            ),
            "Invalid refined reservation: role 'b' is not a refinement of 'a'",
        ),
        (
            scalar("cpus", 1, role="x", reservations=[DYNAMIC]),
            "Invalid resource format: 'Resource.role' field with 'x' does not match the role "
            "'stateful' in 'Resource.reservations'",
        ),
        (
            scalar("cpus", 1, role=ROLE, reservations=[DYNAMIC]),
            "Invalid resource format: 'Resource.role' and 'Resource.reservation' must either be both set "
            "or both not set if the single reservation in 'Resource.reservations' is DYNAMIC",
        ),
        (
            scalar("cpus", 1, role=ROLE, reservation={"principal": "other"}, reservations=[DYNAMIC]),
            "Invalid resource format: 'Resource.reservation.principal' field with 'other' does not match "
            "the principal 'mesos-stateful' in 'Resource.reservations'",
        ),
        (
            scalar("cpus", 1, reservation={}, reservations=[{"type": "STATIC", "role": "a"}]),
            "Invalid resource format: 'Resource.reservation' must not be set if the single reservation in "
            "'Resource.reservations' is STATIC",
        ),
        (
            scalar(
                "cpus",
                1,
                role="a/b",
                reservations=[{"type": "STATIC", "role": "a"}, {"type": "DYNAMIC", "role": "a/b"}],
            ),
            "Invalid resource format: 'Resource.role' must not be set if there is more than one reservation "
            "in 'Resource.reservations'",
        ),
        (scalar("cpus", 1, shared={}), "Resource cpus cannot be shared"),
        (scalar("disk", 1, shared={}), "Only persistent volumes can be shared"),
    ],
)
def test_invalid_resource(resource: Json, error: str) -> None:
    parsed(resource, mesos_pb2.Resource)
    assert validation.check_resource(resource) == error
    assert check_resources([resource]) == (
        f"Invalid resources: Resource '{validation.resource_text(resource)}' is invalid: {error}"
    )


def test_resource_text_is_mesos_operator_output() -> None:
    labelled = {**DYNAMIC, "labels": {"labels": [{"key": "k", "value": "v"}]}}
    resource = volume(allocation_info={"role": ROLE})
    resource["reservations"] = [labelled]
    assert validation.resource_text(resource) == (
        "disk(allocated: stateful)(reservations: [(DYNAMIC,stateful,mesos-stateful,{k: v})])[vol-1:data]:64"
    )
    assert validation.resource_text(ports((1, 2), (4, 4))) == "ports:[1-2, 4-4]"
    assert validation.resource_text(scalar("cpus", 0.12345)) == "cpus:0.123"
    assert validation.resources_text([]) == "{}"


def test_gpus_must_be_whole() -> None:
    assert check_resources([scalar("gpus", 2)]) is None
    assert check_resources([scalar("gpus", 0.5)]) == (
        "Invalid 'gpus' resource: The 'gpus' resource must be an unsigned integer"
    )


@pytest.mark.parametrize(
    ("resource", "error"),
    [
        (volume(revocable={}), "Persistent volumes cannot be created from revocable resources"),
        (
            scalar(
                "disk", 1, disk={"persistence": {"id": "v"}, "volume": {"mode": "RW", "container_path": "d"}}
            ),
            "Persistent volumes cannot be created from unreserved resources",
        ),
        (
            scalar("disk", 1, reservations=[DYNAMIC], disk={"persistence": {"id": "v"}}),
            "Expecting 'volume' to be set for persistent volume",
        ),
        (
            scalar(
                "disk",
                1,
                reservations=[DYNAMIC],
                disk={
                    "persistence": {"id": "v"},
                    "volume": {"mode": "RW", "container_path": "d", "host_path": "/x"},
                },
            ),
            "Expecting 'host_path' to be unset for persistent volume",
        ),
        (
            volume(pid="a/b"),
            "Invalid persistence ID for persistent volume: 'a/b' contains invalid characters",
        ),
        (
            scalar("disk", 1, disk={"volume": {"mode": "RW", "container_path": "d"}}),
            "Non-persistent volume not supported",
        ),
        (scalar("disk", 1, disk={}), "DiskInfo is set but empty"),
    ],
)
def test_disk_info(resource: Json, error: str) -> None:
    assert check_resources([resource]) == f"Invalid DiskInfo: {error}"


def test_dynamic_reservation_is_not_revocable() -> None:
    resource = scalar("cpus", 1, reservations=[DYNAMIC], revocable={})
    assert check_resources([resource]) == (
        f"Invalid ReservationInfo: Dynamically reserved resource {validation.resource_text(resource)} "
        "cannot be created from revocable resources"
    )


def test_pre_refinement_resources_are_upgraded_before_the_master_rules() -> None:
    old = scalar("disk", 1, role=ROLE, reservation={"principal": PRINCIPAL})
    assert validation.upgrade(old) == scalar(
        "disk", 1, reservations=[{"principal": PRINCIPAL, "type": "DYNAMIC", "role": ROLE}]
    )
    assert validation.upgrade(scalar("cpus", 1, role="r")) == scalar(
        "cpus", 1, reservations=[{"type": "STATIC", "role": "r"}]
    )
    assert validation.upgrade(scalar("cpus", 1, role="*")) == scalar("cpus", 1)


# --- task::validate -------------------------------------------------------------------------------------


def test_valid_task() -> None:
    assert check_task(task()) is None
    with_volume = task(resources=[scalar("cpus", 0.5, reservations=[DYNAMIC]), volume()])
    assert check_task(with_volume) is None
    command = task(command={"value": "sleep 1"})
    del command["executor"]
    assert check_task(command) is None


def test_task_agent() -> None:
    assert (
        check_task(task(), agent="agent-2")
        == "Task uses invalid agent agent-1 while agent agent-2 is expected"
    )


def test_task_durations() -> None:
    assert check_task(task(kill_policy={"grace_period": {"nanoseconds": 0}})) is None
    assert check_task(task(kill_policy={"grace_period": {"nanoseconds": -1}})) == (
        "Task's 'kill_policy.grace_period' must be non-negative"
    )
    assert check_task(task(max_completion_time={"nanoseconds": -1})) == (
        "Task's `max_completion_time` must be non-negative"
    )


def test_task_resources() -> None:
    assert check_task(task(resources=[])) == "Task uses no resources"
    assert check_task(task(resources=[scalar("cpus", 1), scalar("gpus", 0.5)])) == (
        "Task uses invalid resources: Invalid 'gpus' resource: "
        "The 'gpus' resource must be an unsigned integer"
    )
    assert check_task(task(resources=[volume(), volume(size=1)])) == (
        "Task uses duplicate persistence ID: Persistence ID 'vol-1' is not unique"
    )
    two_roles = [
        scalar("cpus", 1, allocation_info={"role": "a"}),
        scalar("mem", 1, allocation_info={"role": "b"}),
    ]
    assert check_task(task(resources=two_roles)) == (
        "Invalid task resources: The resources have multiple allocation roles ('b' and 'a') but only one "
        "allocation role is allowed"
    )
    mixed = [scalar("cpus", 1), scalar("cpus", 1, revocable={})]
    assert check_task(task(resources=mixed)) == (
        "Task mixes revocable and non-revocable resources: Cannot use both revocable and non-revocable "
        "'cpus' at the same time"
    )


def test_task_raw_resources_are_checked_first() -> None:
    # validateAndUpgradeResources runs before task::validate: its error has no prefix.
    assert check_task(task(resources=[scalar("cpus", -1)])) == (
        "Resource 'cpus:-1' is invalid: Invalid scalar resource: value <= 0"
    )


def test_multi_role_framework_without_allocation_info() -> None:
    framework = {**FRAMEWORK, "roles": ["a", "b"]}
    info = parsed(task(), mesos_pb2.TaskInfo)
    assert validation.validate_task(info, framework, "agent-1") == (
        "Invalid task resources: The resources are not allocated to a role"
    )
    assert validation.validate_task(info, framework, "agent-1", allocation_role="a") is None


def test_task_command_environment() -> None:
    env = {"variables": [{"name": "X", "type": "VALUE"}]}
    info = task(command={"value": "x", "environment": env})
    del info["executor"]
    assert (
        check_task(info)
        == "Task's `CommandInfo` is invalid: Environment variable 'X' of type 'VALUE' must have a value set"
    )


def test_task_needs_exactly_one_of_command_and_executor() -> None:
    error = "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"
    assert check_task(task(command={"value": "x"})) == error
    neither = task()
    del neither["executor"]
    assert check_task(neither) == error


def test_task_executor() -> None:
    default = task()
    default["executor"] = {**default["executor"], "type": "DEFAULT"}
    del default["executor"]["command"]
    assert check_task(default) == "'ExecutorInfo.type' must be 'CUSTOM'"
    commandless = task()
    del commandless["executor"]["command"]
    assert check_task(commandless) == "'ExecutorInfo.command' must be set"
    shared = task()
    shared["executor"]["resources"] = [volume(shared={})]
    assert check_task(shared) == (
        f"Executor resources {allocated(volume(shared={}))} should not contain any shared resources"
    )


def test_executor_framework_id_is_filled_in_then_checked() -> None:
    info = task()
    del info["executor"]["framework_id"]
    assert check_task(info) is None
    other = task()
    other["executor"]["framework_id"] = {"value": "fw-2"}
    assert check_task(other) == "ExecutorInfo has an invalid FrameworkID (Actual: fw-2 vs Expected: fw-1)"


def test_task_and_executor_resources() -> None:
    overlapping = task(resources=[scalar("cpus", 1), ports((31000, 31005))])
    overlapping["executor"]["resources"] = [ports((31005, 31006))]
    error = check_task(overlapping)
    assert error is not None and error.startswith("There are overlapping resources in the task resources ")
    apart = copy.deepcopy(overlapping)
    apart["executor"]["resources"] = [ports((31006, 31006))]
    assert check_task(apart) is None
    duplicate = task(resources=[scalar("cpus", 1), volume()])
    duplicate["executor"]["resources"] = [volume(size=1)]
    assert check_task(duplicate) == (
        "Task and its executor use duplicate persistence ID: Persistence ID 'vol-1' is not unique"
    )


# --- executor::validate -----------------------------------------------------------------------------------


def check_executor(executor: Json) -> str | None:
    return validation.validate_executor(parsed(executor, mesos_pb2.ExecutorInfo), FRAMEWORK)


def test_executor_rules() -> None:
    base: Json = {"executor_id": {"value": "e"}, "framework_id": {"value": "fw-1"}, "command": {"value": "x"}}
    assert check_executor(base) is None
    assert (
        check_executor({**base, "type": "DEFAULT"})
        == "'ExecutorInfo.command' must not be set for 'DEFAULT' executor"
    )
    no_command = {k: v for k, v in base.items() if k != "command"}
    assert (
        check_executor({**no_command, "type": "CUSTOM"})
        == "'ExecutorInfo.command' must be set for 'CUSTOM' executor"
    )
    assert check_executor({**base, "executor_id": {"value": ""}}) == "ID must not be empty"
    assert check_executor({**base, "shutdown_grace_period": {"nanoseconds": -5}}) == (
        "ExecutorInfo's 'shutdown_grace_period' must be non-negative"
    )
    env = {"variables": [{"name": "S", "type": "SECRET", "value": "v"}]}
    assert check_executor({**base, "command": {"value": "x", "environment": env}}) == (
        "Executor's `CommandInfo` is invalid: "
        "Environment variable 'S' of type 'SECRET' must have a secret set"
    )
    no_framework = {k: v for k, v in base.items() if k != "framework_id"}
    assert check_executor(no_framework) == "'ExecutorInfo.framework_id' must be set"
    assert check_executor({**base, "resources": [scalar("cpus", -1)]}) == (
        "Executor uses invalid resources: Invalid resources: Resource 'cpus:-1' is invalid: "
        "Invalid scalar resource: value <= 0"
    )
    assert check_executor({**base, "resources": [volume(), volume()]}) == (
        "Executor uses duplicate persistence ID: Persistence ID 'vol-1' is not unique"
    )


# --- offer operations -------------------------------------------------------------------------------------


def reserve(*resources: Json) -> Json:
    return {"type": "RESERVE", "reserve": {"resources": list(resources)}}


def reserved(name: str, value: float, **extra: Any) -> Json:
    return scalar(name, value, reservations=[DYNAMIC], allocation_info={"role": ROLE}, **extra)


def test_operation_bodies() -> None:
    assert check_op({"type": "RESERVE"}) == (
        "Operation attempted with invalid resources: A RESERVE offer operation must have the "
        "Offer.Operation.reserve field set."
    )
    assert check_op({"type": "UNRESERVE"}) == (
        "Operation attempted with invalid resources: An UNRESERVE offer operation must have the "
        "Offer.Operation.unreserve field set."
    )
    assert (
        check_op({"type": "LAUNCH"})
        == "A LAUNCH offer operation must have the Offer.Operation.launch field set."
    )
    assert (
        check_op({"type": "UNKNOWN"}) == "Operation attempted with invalid resources: Unknown offer operation"
    )


def test_operation_raw_resources() -> None:
    assert check_op(reserve(scalar("cpus", -1, reservations=[DYNAMIC]))) == (
        "Operation attempted with invalid resources: Resource 'cpus(reservations: "
        "[(DYNAMIC,stateful,mesos-stateful)]):-1' is invalid: Invalid scalar resource: value <= 0"
    )
    launch = {"type": "LAUNCH", "launch": {"task_infos": [task(resources=[scalar("mem", -1)])]}}
    assert check_op(launch) == "Resource 'mem:-1' is invalid: Invalid scalar resource: value <= 0"


def test_launch_operation() -> None:
    assert check_op({"type": "LAUNCH", "launch": {"task_infos": [task()]}}) is None
    with_id = {"type": "LAUNCH", "id": {"value": "op"}, "launch": {"task_infos": [task()]}}
    assert check_op(with_id) == "The `id` field cannot be set on LAUNCH operations"
    bad = {"type": "LAUNCH", "launch": {"task_infos": [task(), task(task_id={"value": ""})]}}
    assert check_op(bad) == "ID must not be empty"


def test_reserve_operation() -> None:
    assert check_op(reserve(reserved("cpus", 1), reserved("mem", 64))) is None
    # The allocation info comes from the offer when the framework leaves it out.
    assert check_op(reserve(scalar("cpus", 1, reservations=[DYNAMIC]))) is None
    source = {
        "type": "RESERVE",
        "reserve": {"resources": [reserved("cpus", 1)], "source": [scalar("cpus", 1)]},
    }
    assert check_op(source) == "Reservation updates are not yet implemented for the scheduler API."
    unreserved = scalar("cpus", 1, allocation_info={"role": ROLE})
    assert (
        check_op(reserve(unreserved))
        == f"Resource {validation.resource_text(unreserved)} is not dynamically reserved"
    )
    static = scalar(
        "cpus", 1, reservations=[{"type": "STATIC", "role": ROLE}], allocation_info={"role": ROLE}
    )
    assert (
        check_op(reserve(static))
        == f"Resource {validation.resource_text(static)} is not dynamically reserved"
    )


def test_reserve_principal() -> None:
    anonymous = scalar("cpus", 1, reservations=[{"type": "DYNAMIC", "role": ROLE}])
    assert check_op(reserve(anonymous)) == (
        "A reserve operation was attempted by principal 'mesos-stateful', but there is a reserved resource "
        "in the request with no principal set"
    )
    other = scalar("cpus", 1, reservations=[{**DYNAMIC, "principal": "eve"}])
    assert check_op(reserve(other)) == (
        "A reserve operation was attempted by authenticated principal 'mesos-stateful', which does not match "
        "a reserved resource in the request with principal 'eve'"
    )
    without = {k: v for k, v in FRAMEWORK.items() if k != "principal"}
    assert check_op(reserve(anonymous), without) is None


def test_reserve_roles() -> None:
    elsewhere = scalar("cpus", 1, reservations=[{**DYNAMIC, "role": "other"}], allocation_info={"role": ROLE})
    assert check_op(reserve(elsewhere)) == (
        "A reserve operation was attempted for a resource with role 'other', but the resource was "
        "allocated to role 'stateful'"
    )
    foreign = scalar(
        "cpus", 1, reservations=[{**DYNAMIC, "role": "other"}], allocation_info={"role": "other"}
    )
    assert check_op(reserve(foreign)) == (
        "A reserve operation was attempted for a resource allocated to role 'other', but the framework "
        "only has roles '{ stateful }'"
    )


def test_unreserve_operation() -> None:
    assert check_op({"type": "UNRESERVE", "unreserve": {"resources": [reserved("cpus", 1)]}}) is None
    plain = scalar("cpus", 1)
    assert check_op({"type": "UNRESERVE", "unreserve": {"resources": [plain]}}) == (
        f"Resource {allocated(plain)} is not dynamically reserved"
    )
    vol = volume(allocation_info={"role": ROLE})
    assert check_op({"type": "UNRESERVE", "unreserve": {"resources": [vol]}}) == (
        f"A dynamically reserved persistent volume {validation.resource_text(vol)} cannot be unreserved "
        "directly. Please destroy the persistent volume first then unreserve the resource"
    )


def create(*volumes: Json) -> Json:
    return {"type": "CREATE", "create": {"volumes": list(volumes)}}


def test_create_operation() -> None:
    assert check_op(create(volume())) is None
    assert check_op(create(reserved("disk", 1))) == (
        f"Not a persistent volume: Resource {validation.resource_text(reserved('disk', 1))} "
        "does not have DiskInfo"
    )
    read_only = volume()
    read_only["disk"]["volume"]["mode"] = "RO"
    assert check_op(create(read_only)) == "Not a persistent volume: Read-only persistent volume not supported"
    assert check_op(create(volume(), volume(size=1))) == "Persistence ID 'vol-1' is not unique"
    shared = volume(shared={})
    assert check_op(create(shared)) == (
        f"Create volume operation for '{allocated(shared)}' "
        "has been attempted by framework 'fw-1' with no SHARED_RESOURCES capability"
    )
    assert check_op(create(volume(principal="eve"))) == (
        "Create volume operation attempted by authenticated principal 'mesos-stateful', which does not match "
        "a volume in the operation with principal 'eve' set in 'disk.persistence'"
    )
    anonymous = volume()
    del anonymous["disk"]["persistence"]["principal"]
    assert check_op(create(anonymous)) == (
        "Create volume operation attempted by principal 'mesos-stateful', but there is a volume in the "
        "operation with no principal set in 'disk.persistence'"
    )


def test_destroy_operation() -> None:
    assert (
        check_op({"type": "DESTROY", "destroy": {"volumes": [volume(allocation_info={"role": ROLE})]}})
        is None
    )
    assert check_op({"type": "DESTROY", "destroy": {"volumes": [reserved("cpus", 1)]}}) == (
        "Not a persistent volume: Resource "
        f"{validation.resource_text(scalar('cpus', 1, reservations=[DYNAMIC]))} "
        "does not have DiskInfo"
    )


# --- framework::validate and scheduler::call::validate ------------------------------------------------


def check_framework(info: Json) -> str | None:
    return validation.validate_framework(parsed(info, mesos_pb2.FrameworkInfo))


def test_framework_rules() -> None:
    assert check_framework(FRAMEWORK) is None
    old = {"user": "u", "name": "n", "role": ROLE}
    assert check_framework(old) is None
    assert check_framework({**old, "roles": [ROLE]}) == (
        "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable"
    )
    assert check_framework({**FRAMEWORK, "role": ROLE}) == (
        "'FrameworkInfo.role' must not be set when the framework is MULTI_ROLE capable"
    )
    assert (
        check_framework({**FRAMEWORK, "roles": ["a", "a"]})
        == "'FrameworkInfo.roles' contains duplicate items: { a }"
    )
    assert check_framework({**FRAMEWORK, "roles": ["a/"]}) == (
        "'FrameworkInfo.roles' contains invalid role: Role 'a/' cannot end with a slash"
    )
    assert check_framework({**old, "role": "-x"}) == (
        "'FrameworkInfo.role' is not a valid role: "
        "Role component '-x' is invalid because it starts with a dash"
    )
    assert check_framework({**FRAMEWORK, "id": {"value": "a/b"}}) == "'a/b' contains invalid characters"
    assert (
        check_framework({**FRAMEWORK, "failover_timeout": 1e300})
        == "The framework failover_timeout (1e+300) is invalid"
    )
    filters = {"r": {"min_allocatable_resources": {"quantities": [{"quantities": {"cpus": {"value": -1}}}]}}}
    assert check_framework({**FRAMEWORK, "offer_filters": filters}) == (
        "Invalid resource quantity for 'cpus': Negative values not supported"
    )


def check_call(call: Json) -> str | None:
    return validation.validate_call(parsed(call, scheduler_pb2.Call))


def test_call_rules() -> None:
    fid = {"value": "fw-1"}
    info = {k: v for k, v in FRAMEWORK.items() if k != "id"}
    assert check_call({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}) is None
    assert check_call({"type": "SUBSCRIBE"}) == "Expecting 'subscribe' to be present"
    assert check_call({"type": "SUBSCRIBE", "framework_id": fid, "subscribe": {"framework_info": info}}) == (
        "'framework_id' differs from 'subscribe.framework_info.id'"
    )
    assert check_call({}) == "Expecting 'type' to be present"
    assert check_call({"type": "REVIVE"}) == "Expecting 'framework_id' to be present"
    assert check_call({"type": "REVIVE", "framework_id": fid}) is None
    assert check_call({"type": "SUPPRESS", "framework_id": fid}) is None
    assert check_call({"type": "TEARDOWN", "framework_id": fid}) is None
    for kind, body in [
        ("ACCEPT", "accept"),
        ("DECLINE", "decline"),
        ("ACCEPT_INVERSE_OFFERS", "accept_inverse_offers"),
        ("DECLINE_INVERSE_OFFERS", "decline_inverse_offers"),
        ("KILL", "kill"),
        ("ACKNOWLEDGE", "acknowledge"),
        ("RECONCILE", "reconcile"),
    ]:
        assert check_call({"type": kind, "framework_id": fid}) == f"Expecting '{body}' to be present"
    assert check_call({"type": "RECONCILE", "framework_id": fid, "reconcile": {}}) is None


def test_acknowledge_uuid() -> None:
    def ack(raw: bytes) -> Json:
        body = {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": base64.b64encode(raw).decode()}
        return {"type": "ACKNOWLEDGE", "framework_id": {"value": "f"}, "acknowledge": body}

    assert check_call(ack(uuid.uuid4().bytes)) is None
    assert check_call(ack(b"short")) == "Not a valid UUID"
    assert check_call(ack(bytes(16))) == "Not a valid UUID"  # version 0: unknown


def test_update_framework_ids() -> None:
    call = {
        "type": "UPDATE_FRAMEWORK",
        "framework_id": {"value": "fw-1"},
        "update_framework": {"framework_info": FRAMEWORK},
    }
    assert check_call(call) is None
    other = {**call, "framework_id": {"value": "fw-2"}}
    assert check_call(other) == "'framework_id' differs from 'update_framework.framework_info.id'"
