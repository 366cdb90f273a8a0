"""Unit tests of reservations and persistent volumes (pure logic): parsing offers in the
post-refinement format, matching pinned / first / leftover launches, the ACCEPT operations, the
orphan rule, and the settings and FrameworkInfo they rely on."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.offers import mesos
from mesos_stateful.offers.driver import FrameworkConfig
from mesos_stateful.offers.matching import (
    CREATE,
    PLAIN,
    RESERVE,
    RESERVED,
    Need,
    Offer,
    OfferedVolume,
    Reservation,
    VolumeNeed,
    WantedVolume,
    match,
    never_fits,
    orphaned,
)
from mesos_stateful.offers.settings import OffersSettings
from mesos_stateful.offers.validation import validate_launch

ROLE = "stateful"
PRINCIPAL = "mesos-stateful"
Json = dict[str, Any]


def reservations(member: str, pid: str, instance: str = "cache", principal: str = PRINCIPAL) -> list[Json]:
    return [
        {
            "type": "DYNAMIC",
            "role": ROLE,
            "principal": principal,
            "labels": {
                "labels": [
                    {"key": "instance", "value": instance},
                    {"key": "member_id", "value": member},
                    {"key": "persistence_id", "value": pid},
                ]
            },
        }
    ]


def scalar(name: str, value: float, reserved: list[Json] | None = None) -> Json:
    resource: Json = {"name": name, "type": "SCALAR", "scalar": {"value": value}}
    if reserved:
        resource["reservations"] = reserved
    resource["allocation_info"] = {"role": ROLE}
    return resource


def ports(begin: int, end: int, reserved: list[Json] | None = None) -> Json:
    resource: Json = {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": begin, "end": end}]}}
    if reserved:
        resource["reservations"] = reserved
    resource["allocation_info"] = {"role": ROLE}
    return resource


def volume(pid: str, size: float, reserved: list[Json]) -> Json:
    return {
        **scalar("disk", size, reserved),
        "disk": {
            "persistence": {"id": pid, "principal": PRINCIPAL},
            "volume": {"mode": "RW", "container_path": "data"},
        },
    }


def member_resources(member: str, pid: str, port: int, with_volume: bool = True) -> list[Json]:
    res = reservations(member, pid)
    out = [scalar("cpus", 0.5, res), scalar("mem", 256, res), ports(port, port + 1, res)]
    out.append(volume(pid, 1024, res) if with_volume else scalar("disk", 1024, res))
    return out


def raw_offer(n: int, *extra: Json) -> Json:
    return {
        "id": {"value": f"O{n}"},
        "agent_id": {"value": f"A{n}"},
        "hostname": f"127.0.0.{n}",
        "resources": [
            scalar("cpus", 4.0),
            scalar("mem", 4096),
            scalar("disk", 10000),
            ports(31000, 31099),
            # someone else's: another role, a static reservation of ours, ours without labels
            {
                "name": "cpus",
                "type": "SCALAR",
                "scalar": {"value": 8},
                "reservations": [{"type": "STATIC", "role": "x"}],
            },
            {
                "name": "cpus",
                "type": "SCALAR",
                "scalar": {"value": 8},
                "reservations": [{"type": "STATIC", "role": ROLE}],
            },
            scalar("mem", 999, [{"type": "DYNAMIC", "role": ROLE, "principal": PRINCIPAL}]),
            *extra,
        ],
    }


def parse(offer: Json) -> Offer:
    return mesos.parse_offer(offer, ROLE, PRINCIPAL)


def spec(
    member: str = "cache-0", incarnation: int = 1, agent: str = "", pid: str = ""
) -> types_pb2.LaunchSpec:
    instance = member.rsplit("-", 1)[0]
    return types_pb2.LaunchSpec(
        instance=instance,
        member_id=member,
        task_id=f"{member}.{incarnation}",
        resources=types_pb2.Resources(cpus=0.5, mem_mb=256, disk_mb=1024),
        port_names=["client", "bus"],
        argv=["redis-server"],
        volume=types_pb2.Volume(
            persistence_id=pid or f"{member}.v1",
            container_path="data",
            size_mb=1024,
            agent_id=agent,
            host=agent and "127.0.0.9",
        ),
    )


def task_of(launch: types_pb2.LaunchSpec) -> types_pb2.Task:
    return types_pb2.Task(
        task_id=launch.task_id, instance=launch.instance, member_id=launch.member_id, launch=launch
    )


def need_of(launch: types_pb2.LaunchSpec) -> Need:
    return mesos.need_of(task_of(launch))


# -- parsing ----------------------------------------------------------------------------------------


def test_parse_separates_unreserved_our_reservations_and_volumes() -> None:
    offer = parse(
        raw_offer(
            1,
            *member_resources("cache-0", "cache-0.v1", 31500),
            *member_resources("cache-1", "cache-1.v1", 31600, False),
        )
    )
    assert (offer.cpus, offer.mem, offer.disk, offer.ports) == (4.0, 4096, 10000, [(31000, 31099)])
    by_member = {r.member_id: r for r in offer.reservations}
    assert set(by_member) == {"cache-0", "cache-1"}
    first = by_member["cache-0"]
    assert first.key == ("cache", "cache-0", "cache-0.v1")
    assert (first.cpus, first.mem, first.disk, first.ports) == (0.5, 256, 0.0, [31500, 31501])
    assert first.volumes == [OfferedVolume("cache-0.v1", 1024, "data")]
    second = by_member["cache-1"]
    assert second.volumes == [] and second.disk == 1024


def test_parse_ignores_reservations_of_another_principal() -> None:
    res = reservations("cache-0", "cache-0.v1", principal="someone-else")
    offer = parse(raw_offer(1, scalar("cpus", 1, res)))
    assert offer.reservations == [] and offer.cpus == 4.0


def test_parse_pre_refinement_unreserved_role_star() -> None:
    offer = parse({"id": {"value": "O"}, "agent_id": {"value": "A"}, "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}, "role": "*"},
    ]})  # fmt: skip
    assert offer.cpus == 2


# -- matching -----------------------------------------------------------------------------------------


def test_first_launch_takes_unreserved_resources_and_the_volume_size() -> None:
    offers = [parse(raw_offer(1))]
    result = match(offers, [need_of(spec())])
    [assignment] = result.placed()
    assert assignment.mode == RESERVE and assignment.ports == {"client": 31000, "bus": 31001}
    assert (offers[0].cpus, offers[0].mem, offers[0].disk) == (3.5, 3840, 10000 - 1024)


def test_first_launch_with_too_little_disk_waits() -> None:
    raw = raw_offer(1)
    raw["resources"][2] = scalar("disk", 100)
    result = match([parse(raw)], [need_of(spec())])
    assert result.pending["cache-0.1"] == "waiting: no agent has 1024.0 MiB disk free"


def test_first_launch_prefers_a_leftover_volume_of_the_member() -> None:
    offers = [parse(raw_offer(1)), parse(raw_offer(2, *member_resources("cache-0", "cache-0.v1", 31500)))]
    [assignment] = match(offers, [need_of(spec())]).placed()
    assert (assignment.agent_id, assignment.mode) == ("A2", RESERVED)
    assert assignment.ports == {"client": 31500, "bus": 31501}
    assert offers[1].cpus == 4.0  # nothing unreserved taken


def test_leftover_reservation_without_volume_gets_the_volume_created() -> None:
    offers = [parse(raw_offer(2, *member_resources("cache-0", "cache-0.v1", 31500, with_volume=False)))]
    [assignment] = match(offers, [need_of(spec())]).placed()
    assert assignment.mode == CREATE and assignment.ports == {"client": 31500, "bus": 31501}


def test_pinned_launch_uses_only_its_reservation_and_keeps_its_ports() -> None:
    offers = [
        parse(raw_offer(1, *member_resources("cache-0", "cache-0.v1", 31700))),
        parse(raw_offer(2, *member_resources("cache-0", "cache-0.v1", 31500))),
    ]
    [assignment] = match(offers, [need_of(spec(incarnation=2, agent="A2"))]).placed()
    assert (assignment.agent_id, assignment.mode) == ("A2", RESERVED)
    assert assignment.ports == {"client": 31500, "bus": 31501}
    assert offers[1].cpus == 4.0 and offers[1].ports == [(31000, 31099)]


def test_pinned_launch_never_takes_unreserved_or_another_members_reservation() -> None:
    offers = [
        parse(raw_offer(2, *member_resources("cache-1", "cache-1.v1", 31500))),
    ]
    result = match(offers, [need_of(spec(incarnation=2, agent="A2"))])
    assert result.placed() == []
    assert result.pending["cache-0.2"] == (
        "waiting for volume cache-0.v1 to be offered by agent 127.0.0.9 (still in use by a task, or gone)"
    )
    # Not a first launch either: another member's leftover volume is never used.
    result = match(offers, [need_of(spec(member="cache-0", pid="cache-1.v1"))])
    assert result.placed()[0].mode == RESERVE


def test_pinned_launch_waits_for_its_agent() -> None:
    result = match([parse(raw_offer(1))], [need_of(spec(incarnation=2, agent="A2"))])
    assert result.pending["cache-0.2"] == "waiting for agent 127.0.0.9 that holds volume cache-0.v1"
    assert (
        match([], [need_of(spec(incarnation=2, agent="A2"))])
        .pending["cache-0.2"]
        .startswith("waiting for agent 127.0.0.9")
    )


def test_pinned_launch_needing_more_than_reserved_says_so() -> None:
    launch = spec(incarnation=2, agent="A2")
    launch.resources.cpus = 2
    result = match(
        [parse(raw_offer(2, *member_resources("cache-0", "cache-0.v1", 31500)))], [need_of(launch)]
    )
    assert result.pending["cache-0.2"] == (
        "waiting: the reservation of cache-0 (cache-0.v1) holds 0.5 cpus, the launch needs 2.0"
    )


def test_a_reservation_is_used_by_one_launch_only() -> None:
    offers = [parse(raw_offer(2, *member_resources("cache-0", "cache-0.v1", 31500)))]
    result = match(offers, [need_of(spec(agent="A2")), need_of(spec(incarnation=2, agent="A2"))])
    assert [a.task_id for a in result.placed()] == ["cache-0.1"]
    assert "cache-0.2" in result.pending


def test_pinned_launch_is_never_proven_impossible() -> None:
    from mesos_stateful.offers.matching import AgentCapacity

    launch = spec(agent="A9")
    launch.resources.cpus = 100
    assert never_fits(need_of(launch), [AgentCapacity("A1", "h", 1, 1, 1, 1)]) is None


def test_plain_launch_ignores_reservations() -> None:
    offers = [parse(raw_offer(1, *member_resources("cache-0", "cache-0.v1", 31500)))]
    plain = Need("web-0.1", "web", 0.25, 64, port_names=("web",))
    [assignment] = match(offers, [plain]).placed()
    assert assignment.mode == PLAIN and assignment.ports == {"web": 31000}
    assert offers[0].reservations[0].used is False


# -- operations -----------------------------------------------------------------------------------------


def test_first_launch_operations_reserve_create_and_launch() -> None:
    raw = raw_offer(1)
    task = task_of(spec())
    [assignment] = match([parse(raw)], [mesos.need_of(task)]).placed()
    operations = mesos.volume_operations(task, assignment, raw, ROLE, PRINCIPAL)
    assert [o["type"] for o in operations] == ["RESERVE", "CREATE"]
    reserved = {r["name"]: r for r in operations[0]["reserve"]["resources"]}
    assert set(reserved) == {"cpus", "mem", "ports", "disk"}
    for resource in reserved.values():
        assert resource["reservations"] == reservations("cache-0", "cache-0.v1")
        assert resource["allocation_info"] == {"role": ROLE}
        assert "role" not in resource
    assert reserved["cpus"]["scalar"] == {"value": 0.5} and reserved["disk"]["scalar"] == {"value": 1024}
    assert reserved["ports"]["ranges"] == {"range": [{"begin": 31000, "end": 31001}]}
    [created] = operations[1]["create"]["volumes"]
    assert created["disk"] == {
        "persistence": {"id": "cache-0.v1", "principal": PRINCIPAL},
        "volume": {"mode": "RW", "container_path": "data"},
    }
    assert created["reservations"] == reservations("cache-0", "cache-0.v1")
    info = mesos.task_info(task, assignment, raw, "executor", "F1", ROLE, PRINCIPAL)
    launched = {r["name"]: r for r in info["resources"]}
    assert launched["cpus"] == reserved["cpus"] and launched["ports"] == reserved["ports"]
    assert launched["disk"] == created
    assert (
        types_pb2.LaunchSpec.FromString(base64.b64decode(info["data"])).volume.persistence_id == "cache-0.v1"
    )


def test_relaunch_uses_the_offered_reservation_and_volume() -> None:
    raw = raw_offer(2, *member_resources("cache-0", "cache-0.v1", 31500))
    task = task_of(spec(incarnation=2, agent="A2"))
    [assignment] = match([parse(raw)], [mesos.need_of(task)]).placed()
    assert mesos.volume_operations(task, assignment, raw, ROLE, PRINCIPAL) == []
    info = mesos.task_info(task, assignment, raw, "executor", "F1", ROLE, PRINCIPAL)
    launched = {r["name"]: r for r in info["resources"]}
    offered_volume = next(r for r in raw["resources"] if "persistence" in r.get("disk", {}))
    assert launched["disk"] == offered_volume
    assert launched["ports"]["reservations"] == reservations("cache-0", "cache-0.v1")
    assert launched["ports"]["ranges"] == {"range": [{"begin": 31500, "end": 31501}]}
    assert launched["cpus"]["scalar"] == {"value": 0.5}


def test_create_on_a_leftover_reservation() -> None:
    raw = raw_offer(2, *member_resources("cache-0", "cache-0.v1", 31500, with_volume=False))
    task = task_of(spec())
    [assignment] = match([parse(raw)], [mesos.need_of(task)]).placed()
    [create] = mesos.volume_operations(task, assignment, raw, ROLE, PRINCIPAL)
    assert create["type"] == "CREATE"
    assert create["create"]["volumes"][0]["reservations"] == reservations("cache-0", "cache-0.v1")


def test_plain_launch_task_info_uses_unreserved_resources() -> None:
    raw = raw_offer(1, *member_resources("cache-0", "cache-0.v1", 31500))
    launch = spec()
    launch.ClearField("volume")
    task = task_of(launch)
    [assignment] = match([parse(raw)], [mesos.need_of(task)]).placed()
    info = mesos.task_info(task, assignment, raw, "executor", "F1", ROLE, PRINCIPAL)
    assert all("reservations" not in r for r in info["resources"])
    assert {r["name"] for r in info["resources"]} == {"cpus", "mem", "disk", "ports"}


def test_cleanup_destroys_then_unreserves() -> None:
    raw = raw_offer(
        1,
        *member_resources("cache-0", "cache-0.v1", 31500),
        *member_resources("cache-1", "cache-1.v1", 31600),
    )
    operations = mesos.cleanup_operations(raw, ROLE, PRINCIPAL, [("cache", "cache-0", "cache-0.v1")])
    assert [o["type"] for o in operations] == ["DESTROY", "UNRESERVE"]
    [destroyed] = operations[0]["destroy"]["volumes"]
    assert destroyed["disk"]["persistence"]["id"] == "cache-0.v1"
    unreserved = operations[1]["unreserve"]["resources"]
    assert sorted(r["name"] for r in unreserved) == ["cpus", "disk", "mem", "ports"]
    assert all(r["reservations"] == reservations("cache-0", "cache-0.v1") for r in unreserved)
    assert all("disk" not in r for r in unreserved)  # the destroyed volume is plain reserved disk
    # Reserved without a volume: UNRESERVE only.
    raw = raw_offer(1, *member_resources("cache-2", "cache-2.v1", 31700, with_volume=False))
    operations = mesos.cleanup_operations(raw, ROLE, PRINCIPAL, [("cache", "cache-2", "cache-2.v1")])
    assert [o["type"] for o in operations] == ["UNRESERVE"]


# -- the orphan rule --------------------------------------------------------------------------------------


def test_orphaned() -> None:
    key = ("cache", "cache-0", "cache-0.v1")
    assert orphaned(key, "A1", {})  # the member is gone
    assert orphaned(key, "A1", {"cache-0": WantedVolume("cache-0.v2", "A2")})  # replaced
    assert orphaned(key, "A1", {"cache-0": WantedVolume("cache-0.v1", "A2")})  # its volume is elsewhere
    assert not orphaned(key, "A1", {"cache-0": WantedVolume("cache-0.v1", "A1")})
    assert not orphaned(key, "A1", {"cache-0": WantedVolume("cache-0.v1", "")})  # first launch pending
    assert not orphaned(key, "A1", {}, in_use=[("cache-0", "cache-0.v1")])  # a task of ours uses it


# -- settings, FrameworkInfo, validation ---------------------------------------------------------------------


def test_settings_defaults_and_role_star_refused() -> None:
    settings = OffersSettings.model_validate({})
    assert (settings.role, settings.principal) == ("stateful", "mesos-stateful")
    with pytest.raises(ValidationError, match="reservations for '\\*'"):
        OffersSettings.model_validate({"role": "*"})


def test_framework_info_multi_role_with_refinement_and_principal() -> None:
    info = FrameworkConfig("fw", "stateful", "me", "host", 10.0, principal="mesos-stateful").info(None)
    assert info["roles"] == ["stateful"] and "role" not in info
    assert info["principal"] == "mesos-stateful"
    assert {c["type"] for c in info["capabilities"]} >= {"MULTI_ROLE", "RESERVATION_REFINEMENT"}


def test_volume_validation() -> None:
    validate_launch(spec())
    bad = spec()
    bad.volume.container_path = "/abs"
    bad.volume.size_mb = 0
    with pytest.raises(errors.InvalidArgument) as raised:
        validate_launch(bad)
    assert set(raised.value.fields) == {"launch.volume.container_path", "launch.volume.size_mb"}


def test_reservation_dataclass_sizes() -> None:
    reservation = Reservation(
        "c", "c-0", "c-0.v1", volumes=[OfferedVolume("c-0.v1", 10), OfferedVolume("x", 5)]
    )
    assert reservation.volume_size() == 15 and reservation.volume("x") is not None
    assert VolumeNeed("p", 1, "data").agent_id == ""
