"""Framework-side conformance of the builders of ``mesos_stateful.offers.mesos`` and of the FrameworkInfo
of ``mesos_stateful.offers.driver``: for every workload shape (plain, with ports and disk, a first launch
with a volume: RESERVE + CREATE, a relaunch where the reservation is left without its volume:
CREATE, a relaunch on the volume, with unreserved stand-in ports, and the release: DESTROY +
UNRESERVE), with and without a framework principal, what they build parses strictly as the
project's ``mesos.v1`` messages and passes the rules of ``src/master/validation.cpp``
(``validation.py``). Offers are written as the local cluster sends them to a RESERVATION_REFINEMENT
framework (post-refinement format, ``allocation_info``)."""

from __future__ import annotations

from typing import Any

import pytest

from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.localcluster import encoding, validation
from mesos_stateful.offers import mesos
from mesos_stateful.offers.driver import FrameworkConfig
from mesos_stateful.offers.matching import CREATE, PLAIN, RESERVE, RESERVED, Assignment

Json = dict[str, Any]

ROLE = "stateful"
AGENT = "A1"
FRAMEWORK_ID = "F1"
EXECUTOR = "python -m mesos_stateful.executor"
PRINCIPALS = ["mesos-stateful", ""]


def framework(principal: str) -> Json:
    config = FrameworkConfig(
        name="mesos-stateful",
        role=ROLE,
        user="root",
        hostname="localhost",
        failover_timeout_seconds=604800.0,
        principal=principal,
    )
    return config.info(FRAMEWORK_ID)


def allocated(resource: Json) -> Json:
    return {**resource, "allocation_info": {"role": ROLE}}


def scalar(name: str, value: float, **extra: Any) -> Json:
    return allocated({"name": name, "type": "SCALAR", "scalar": {"value": value}, **extra})


def ports_resource(begin: int, end: int, **extra: Any) -> Json:
    return allocated(
        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": begin, "end": end}]}, **extra}
    )


def unreserved() -> list[Json]:
    return [
        scalar("cpus", 4.0),
        scalar("mem", 4096.0),
        scalar("disk", 10240.0),
        ports_resource(31000, 31099),
    ]


def reserved_group(principal: str, with_volume: bool, with_disk: bool = False) -> list[Json]:
    """The member's reserved resources as offered: cpus, mem, its port, and its volume (or, before
    CREATE, the reserved disk)."""
    reservation = [mesos.reservation_info(ROLE, principal, ("vol", "vol-0", "vol-0.v1"))]
    group = [
        scalar("cpus", 0.25, reservations=reservation),
        scalar("mem", 64.0, reservations=reservation),
        ports_resource(31500, 31500, reservations=reservation),
    ]
    if with_volume:
        disk = {
            "persistence": {"id": "vol-0.v1", "principal": principal},
            "volume": {"mode": "RW", "container_path": "data"},
        }
        group.append(scalar("disk", 32.0, reservations=reservation, disk=disk))
    if with_disk:
        group.append(scalar("disk", 32.0, reservations=reservation))
    return group


def offer(resources: list[Json]) -> Json:
    value: Json = {
        "id": {"value": "O1"},
        "framework_id": {"value": FRAMEWORK_ID},
        "agent_id": {"value": AGENT},
        "hostname": "127.0.0.2",
        "resources": resources,
        "attributes": [{"name": "zone", "type": "TEXT", "text": {"value": "a"}}],
        "allocation_info": {"role": ROLE},
    }
    encoding.to_message(value, mesos_pb2.Offer)
    return value


def spec(
    volume: bool, port_names: tuple[str, ...], disk_mb: int = 0, agent: str = ""
) -> types_pb2.LaunchSpec:
    launch = types_pb2.LaunchSpec(
        instance="vol",
        member_id="vol-0",
        task_id="vol-0.1",
        workload="test",
        role=types_pb2.ROLE_PEER,
        resources=types_pb2.Resources(cpus=0.25, mem_mb=64, disk_mb=disk_mb),
        port_names=list(port_names),
        argv=["redis-server"],
    )
    if volume:
        launch.volume.CopyFrom(
            types_pb2.Volume(persistence_id="vol-0.v1", container_path="data", size_mb=32, agent_id=agent)
        )
    return launch


def task_of(launch: types_pb2.LaunchSpec) -> types_pb2.Task:
    return types_pb2.Task(
        task_id=launch.task_id, instance=launch.instance, member_id=launch.member_id, launch=launch
    )


def assert_valid_task(info: Json, principal: str) -> None:
    encoding.to_message(info, mesos_pb2.TaskInfo)
    encoding.to_message(info["executor"], mesos_pb2.ExecutorInfo)
    fw = framework(principal)
    assert validation.validate_task(info, fw, AGENT, allocation_role=ROLE) is None
    assert validation.validate_executor(info["executor"], fw, allocation_role=ROLE) is None
    launch = {"type": "LAUNCH", "launch": {"task_infos": [info]}}
    assert_valid_operations([launch], principal)


def assert_valid_operations(operations: list[Json], principal: str) -> None:
    for operation in operations:
        encoding.to_message(operation, mesos_pb2.Offer.Operation)
        assert validation.validate_operation(operation, framework(principal), allocation_role=ROLE) is None, (
            operation
        )


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_framework_info(principal: str) -> None:
    info = framework(principal)
    encoding.to_message(info, mesos_pb2.FrameworkInfo)
    assert validation.validate_framework(info) is None
    assert ("principal" in info) == bool(principal)
    subscribe = {"type": "SUBSCRIBE", "framework_id": info["id"], "subscribe": {"framework_info": info}}
    assert validation.validate_call(subscribe) is None


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize(
    ("port_names", "disk_mb"),
    [((), 0), (("web",), 0), (("client", "bus"), 100)],
    ids=["bare", "port", "ports+disk"],
)
def test_plain_launch(principal: str, port_names: tuple[str, ...], disk_mb: int) -> None:
    launch = spec(volume=False, port_names=port_names, disk_mb=disk_mb)
    ports = {name: 31000 + i for i, name in enumerate(port_names)}
    assignment = Assignment(launch.task_id, "O1", AGENT, "127.0.0.2", ports, PLAIN)
    the_offer = offer(unreserved())
    assert mesos.volume_operations(task_of(launch), assignment, the_offer, ROLE, principal) == []
    info = mesos.task_info(task_of(launch), assignment, the_offer, EXECUTOR, FRAMEWORK_ID, ROLE, principal)
    assert_valid_task(info, principal)
    names = sorted(r["name"] for r in info["resources"])
    assert names == sorted(["cpus", "mem", *(["disk"] if disk_mb else []), *(["ports"] if ports else [])])
    assert all("reservations" not in r for r in info["resources"])


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("port_names", [(), ("web",)], ids=["no-port", "port"])
def test_first_launch_with_a_volume(principal: str, port_names: tuple[str, ...]) -> None:
    launch = spec(volume=True, port_names=port_names)
    ports = {name: 31000 + i for i, name in enumerate(port_names)}
    assignment = Assignment(launch.task_id, "O1", AGENT, "127.0.0.2", ports, RESERVE)
    the_offer = offer(unreserved())
    operations = mesos.volume_operations(task_of(launch), assignment, the_offer, ROLE, principal)
    assert [o["type"] for o in operations] == ["RESERVE", "CREATE"]
    assert_valid_operations(operations, principal)
    reserved = operations[0]["reserve"]["resources"]
    assert sorted(r["name"] for r in reserved) == sorted(
        ["cpus", "mem", "disk", *(["ports"] if ports else [])]
    )
    info = mesos.task_info(task_of(launch), assignment, the_offer, EXECUTOR, FRAMEWORK_ID, ROLE, principal)
    assert_valid_task(info, principal)
    [volume] = [r for r in info["resources"] if "disk" in r]
    assert volume == operations[1]["create"]["volumes"][0]


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_relaunch_creating_the_volume_on_the_reservation(principal: str) -> None:
    launch = spec(volume=True, port_names=("web",), agent=AGENT)
    assignment = Assignment(launch.task_id, "O1", AGENT, "127.0.0.2", {"web": 31500}, CREATE)
    the_offer = offer(unreserved() + reserved_group(principal, with_volume=False, with_disk=True))
    operations = mesos.volume_operations(task_of(launch), assignment, the_offer, ROLE, principal)
    assert [o["type"] for o in operations] == ["CREATE"]
    assert_valid_operations(operations, principal)
    info = mesos.task_info(task_of(launch), assignment, the_offer, EXECUTOR, FRAMEWORK_ID, ROLE, principal)
    assert_valid_task(info, principal)


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("unreserved_ports", [(), (31007,)], ids=["own-port", "stand-in-port"])
def test_relaunch_on_the_volume(principal: str, unreserved_ports: tuple[int, ...]) -> None:
    launch = spec(volume=True, port_names=("web",), agent=AGENT)
    port = unreserved_ports[0] if unreserved_ports else 31500
    assignment = Assignment(
        launch.task_id, "O1", AGENT, "127.0.0.2", {"web": port}, RESERVED, unreserved_ports
    )
    the_offer = offer(unreserved() + reserved_group(principal, with_volume=True))
    assert mesos.volume_operations(task_of(launch), assignment, the_offer, ROLE, principal) == []
    info = mesos.task_info(task_of(launch), assignment, the_offer, EXECUTOR, FRAMEWORK_ID, ROLE, principal)
    assert_valid_task(info, principal)
    [volume] = [r for r in info["resources"] if "disk" in r]
    assert volume["disk"]["persistence"]["id"] == "vol-0.v1"
    [ports] = [r for r in info["resources"] if r["name"] == "ports"]
    assert ("reservations" in ports) == (not unreserved_ports)


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("with_volume", [True, False], ids=["volume", "reservation-only"])
def test_release(principal: str, with_volume: bool) -> None:
    the_offer = offer(
        unreserved() + reserved_group(principal, with_volume=with_volume, with_disk=not with_volume)
    )
    operations = mesos.cleanup_operations(the_offer, ROLE, principal, [("vol", "vol-0", "vol-0.v1")])
    assert [o["type"] for o in operations] == (["DESTROY", "UNRESERVE"] if with_volume else ["UNRESERVE"])
    assert_valid_operations(operations, principal)
    unreserve = operations[-1]["unreserve"]["resources"]
    assert sorted(r["name"] for r in unreserve) == ["cpus", "disk", "mem", "ports"]
    assert all("persistence" not in (r.get("disk") or {}) for r in unreserve)
