"""Unit tests of the avoid lists in matching: agents and ports learnt from failed launches
(``LaunchSpec.avoid``) are skipped, and never keep a launch off every known agent."""

from __future__ import annotations

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.offers import mesos
from mesos_stateful.offers.matching import (
    RESERVED,
    AgentCapacity,
    Assignment,
    Need,
    Offer,
    OfferedVolume,
    Reservation,
    VolumeNeed,
    avoid_map,
    match,
    relax_avoid,
)


def offer(n: int, ports: list[tuple[int, int]] | None = None, cpus: float = 4.0) -> Offer:
    return Offer(f"o{n}", f"a{n}", f"127.0.0.{n}", cpus, 4096, 10000, ports or [(31000, 31009)])


def need(avoid: dict[str, frozenset[int]], ports: tuple[str, ...] = ("redis",), **kw: object) -> Need:
    return Need(
        "cache-0.2",
        "cache",
        1.0,
        256,
        port_names=ports,
        member_id="cache-0",
        avoid=avoid,
        **kw,  # type: ignore[arg-type]
    )


def capacity(n: int, ports: int = 10) -> AgentCapacity:
    return AgentCapacity(f"a{n}", f"127.0.0.{n}", 4.0, 4096, 10000, ports)


def test_avoid_map_merges_ports_and_a_whole_agent_wins() -> None:
    got = avoid_map([("a1", [31000]), ("a1", [31002]), ("a2", [31000]), ("a2", []), ("", [1])])
    assert got == {"a1": frozenset({31000, 31002}), "a2": frozenset()}


def test_avoided_ports_are_not_taken_and_stay_for_others() -> None:
    offers = [offer(1, ports=[(31000, 31003)])]
    result = match(offers, [need({"a1": frozenset({31000, 31001})})])
    assert [a.ports for a in result.placed()] == [{"redis": 31002}]
    # The skipped ports are still in the offer (another launch may take them).
    assert offers[0].ports == [(31000, 31001), (31003, 31003)]
    other = Need("web-0.1", "web", 0.5, 128, port_names=("http",))
    assert match(offers, [other]).placed()[0].ports == {"http": 31000}


def test_ports_avoided_on_one_agent_are_free_on_another() -> None:
    # a1 has more cpus (preferred), but its only ports are avoided: a2, on the same port number.
    offers = [offer(1, ports=[(31000, 31000)], cpus=8), offer(2, ports=[(31000, 31000)])]
    result = match(offers, [need({"a1": frozenset({31000})})])
    assert [(a.agent_id, a.ports["redis"]) for a in result.placed()] == [("a2", 31000)]


def test_a_whole_agent_is_skipped() -> None:
    offers = [offer(1, cpus=8), offer(2)]
    result = match(offers, [need({"a1": frozenset()})])
    assert [a.agent_id for a in result.placed()] == ["a2"]


def test_pending_reasons_name_the_avoid_list() -> None:
    result = match([offer(1)], [need({"a1": frozenset()})])
    assert "agent 127.0.0.1 is avoided after failed launches of cache-0" in result.pending["cache-0.2"]
    result = match([offer(1, ports=[(31000, 31000)])], [need({"a1": frozenset({31000})})])
    assert "besides those avoided after failed launches (31000 on 127.0.0.1)" in result.pending["cache-0.2"]


def test_relax_keeps_the_list_while_some_agent_is_usable() -> None:
    n = need({"a1": frozenset(), "a2": frozenset({31000})})
    assert relax_avoid(n, [capacity(1), capacity(2)]) is n
    assert relax_avoid(n, []) is n  # nothing known: nothing proven


def test_relax_drops_whole_agents_first_then_everything() -> None:
    # Every known agent avoided: the agents come back, their avoided ports stay avoided.
    n = need({"a1": frozenset(), "a2": frozenset({31000})})
    n2 = need({"a1": frozenset(), "a2": frozenset()})
    assert relax_avoid(n, [capacity(1)]).avoid == {"a2": frozenset({31000})}
    assert relax_avoid(n2, [capacity(1), capacity(2)]).avoid == {}
    # Every port of the only agent avoided: nothing is left to avoid.
    small = need({"a1": frozenset({31000, 31001})})
    assert relax_avoid(small, [capacity(1, ports=2)]).avoid == {}


def test_relax_counts_the_instance_tasks_already_on_agents() -> None:
    # a2 and a3 already run a member of cache (1 per agent): a1, avoided, is the only place left.
    n = need({"a1": frozenset()})
    running = {("a2", "cache"): 1, ("a3", "cache"): 1}
    relaxed = relax_avoid(n, [capacity(1), capacity(2), capacity(3)], running)
    assert relaxed.avoid == {}
    assert [a.agent_id for a in match([offer(1), offer(2)], [relaxed], running).placed()] == ["a1"]


def test_a_pinned_launch_keeps_its_list_and_its_agent() -> None:
    volume = VolumeNeed("cache-0.abc.v1", 100, "data", agent_id="a1")
    n = need({"a1": frozenset({31000})}, volume=volume)
    assert relax_avoid(n, [capacity(1)]) is n


def _pinned_offer(reserved_ports: list[int]) -> Offer:
    o = offer(1, ports=[(31005, 31009)])
    o.reservations.append(
        Reservation(
            "cache",
            "cache-0",
            "cache-0.v1",
            cpus=1.0,
            mem=256,
            ports=reserved_ports,
            volumes=[OfferedVolume("cache-0.v1", 100, "data")],
        )
    )
    return o


def test_a_pinned_launch_replaces_an_avoided_reserved_port_with_an_unreserved_one() -> None:
    volume = VolumeNeed("cache-0.v1", 100, "data", agent_id="a1")
    # Its reserved port 31000 was taken on its agent: it restarts on its volume, on port 31005.
    n = need({"a1": frozenset({31000})}, volume=volume)
    offers = [_pinned_offer([31000])]
    [placed] = match(offers, [n]).placed()
    assert (placed.agent_id, placed.mode, placed.ports, placed.unreserved_ports) == (
        "a1",
        RESERVED,
        {"redis": 31005},
        (31005,),
    )
    assert offers[0].ports == [(31006, 31009)]
    # Nothing avoided: its own reserved port, nothing unreserved.
    [placed] = match([_pinned_offer([31000])], [need({}, volume=volume)]).placed()
    assert placed.ports == {"redis": 31000} and placed.unreserved_ports == ()
    # No other free port on its agent: it waits (never another agent), and says why.
    full = _pinned_offer([31000])
    full.ports = [(31005, 31005)]
    result = match([full], [need({"a1": frozenset({31000, 31005})}, volume=volume)])
    assert "its ports are avoided after failed launches" in result.pending["cache-0.2"]


def test_task_info_puts_stand_in_ports_in_an_unreserved_resource() -> None:
    spec = T.LaunchSpec(
        instance="cache",
        member_id="cache-0",
        task_id="cache-0.2",
        port_names=["redis", "bus"],
        resources=T.Resources(cpus=1, mem_mb=256),
        volume=T.Volume(persistence_id="cache-0.v1", container_path="data", size_mb=100, agent_id="a1"),
    )
    task = T.Task(task_id="cache-0.2", instance="cache", member_id="cache-0", launch=spec)
    offer_json = {
        "id": {"value": "O1"},
        "agent_id": {"value": "a1"},
        "hostname": "127.0.0.1",
        "resources": [
            {
                "name": "ports",
                "type": "RANGES",
                "ranges": {"range": [{"begin": 31005, "end": 31009}]},
                "role": "*",
            }
        ],
    }
    assignment = Assignment(
        "cache-0.2", "O1", "a1", "127.0.0.1", {"redis": 31001, "bus": 31005}, RESERVED, (31005,)
    )
    info = mesos.task_info(task, assignment, offer_json, "executor", "F1", "stateful", "p")
    ports = [r for r in info["resources"] if r["name"] == "ports"]
    reserved = [r for r in ports if r.get("reservations")]
    unreserved = [r for r in ports if not r.get("reservations")]
    assert [r["ranges"]["range"] for r in reserved] == [[{"begin": 31001, "end": 31001}]]
    assert [r["ranges"]["range"] for r in unreserved] == [[{"begin": 31005, "end": 31005}]]
    assert unreserved[0]["role"] == "*"
    named = {p["name"]: p["number"] for p in info["discovery"]["ports"]["ports"]}
    assert named == {"redis": 31001, "bus": 31005}
