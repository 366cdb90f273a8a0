"""Unit tests of the pure matching logic."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mesos_stateful.offers.matching import AgentCapacity, Need, Offer, match, never_fits


def offer(
    n: int,
    cpus: float = 4.0,
    mem: float = 4096,
    disk: float = 10000,
    ports: Iterable[tuple[int, int]] = ((31000, 31009),),
    **attrs: str,
) -> Offer:
    return Offer(f"o{n}", f"a{n}", f"127.0.0.{n}", cpus, mem, disk, list(ports), dict(attrs))


def need(
    task_id: str,
    instance: str = "cache",
    cpus: float = 1.0,
    mem: float = 256,
    ports: Iterable[str] = ("web",),
    **kw: Any,
) -> Need:
    """A Need; ``kw``: its other fields (member_id, volume, ...)."""
    return Need(task_id, instance, cpus, mem, port_names=tuple(ports), **kw)


def test_packs_several_launches_into_one_offer_subtracting_each() -> None:
    offers = [offer(1, cpus=2.0, mem=1024)]
    result = match(offers, [need("a-0.1", "a"), need("b-0.1", "b"), need("c-0.1", "c")])
    placed = result.placed()
    assert [p.task_id for p in placed] == ["a-0.1", "b-0.1"]
    assert "c-0.1" in result.pending and "cpus" in result.pending["c-0.1"]
    assert offers[0].cpus == 0.0 and offers[0].mem == 512


def test_ports_come_from_the_offer_ranges_and_are_distinct() -> None:
    offers = [offer(1, ports=[(31000, 31001), (32000, 32005)])]
    result = match(offers, [need("a-0.1", "a", ports=("p", "q")), need("b-0.1", "b", ports=("p", "q", "r"))])
    ports = [port for a in result.placed() for port in a.ports.values()]
    assert len(ports) == 5 and len(set(ports)) == 5
    assert all(31000 <= p <= 31001 or 32000 <= p <= 32005 for p in ports)
    assert result.placed()[0].ports == {"p": 31000, "q": 31001}


def test_not_enough_ports() -> None:
    result = match([offer(1, ports=[(31000, 31000)])], [need("a-0.1", ports=("p", "q"))])
    assert result.pending["a-0.1"] == "waiting: no agent has 2 free ports"


def test_at_most_one_member_per_agent_by_default_and_spread() -> None:
    offers = [offer(1), offer(2)]
    result = match(offers, [need("cache-0.1"), need("cache-1.1"), need("cache-2.1")])
    agents = [a.agent_id for a in result.placed()]
    assert sorted(agents) == ["a1", "a2"]
    assert "cache-2.1" in result.pending
    assert "already run 1 task(s) of cache" in result.pending["cache-2.1"]


def test_running_tasks_count_against_the_limit() -> None:
    result = match([offer(1), offer(2)], [need("cache-1.1")], running={("a1", "cache"): 1})
    assert [a.agent_id for a in result.placed()] == ["a2"]


def test_max_members_per_agent_above_one() -> None:
    result = match([offer(1)], [need(f"cache-{i}.1", max_per_agent=2) for i in range(3)])
    assert len(result.placed()) == 2


def test_zero_max_means_one() -> None:
    result = match([offer(1)], [need("cache-0.1", max_per_agent=0), need("cache-1.1", max_per_agent=0)])
    assert len(result.placed()) == 1


def test_required_attributes() -> None:
    offers = [offer(1, zone="a"), offer(2, zone="b")]
    result = match(offers, [need("x-0.1", required_attributes={"zone": "b"})])
    assert [a.agent_id for a in result.placed()] == ["a2"]
    result = match([offer(3, zone="a")], [need("y-0.1", required_attributes={"zone": "c"})])
    assert "attributes zone=c" in result.pending["y-0.1"]


def test_mem_and_disk() -> None:
    result = match([offer(1, mem=100)], [need("a-0.1", mem=256)])
    assert result.pending["a-0.1"] == "waiting: no agent has 256.0 MiB mem free"
    n = Need("b-0.1", "b", 0.1, 10, disk=500)
    assert "disk" in match([offer(1, disk=100)], [n]).pending["b-0.1"]


def test_pending_reason_without_offers() -> None:
    assert match([], [need("a-0.1")]).pending["a-0.1"] == "waiting for offers"
    assert match([offer(1, cpus=2)], [need("a-0.1", cpus=4)]).pending["a-0.1"] == (
        "waiting: no agent has 4.0 cpus free"
    )


def test_never_fits() -> None:
    agents = [AgentCapacity("a1", "h1", 4, 4096, 10000, 100, {"zone": "a"})]
    assert never_fits(need("a-0.1", cpus=1000), []) is None
    assert never_fits(need("a-0.1"), agents) is None
    reason = never_fits(need("a-0.1", cpus=1000), agents)
    assert reason is not None and "1000.0 cpus" in reason and "4.0" in reason
    reason = never_fits(need("a-0.1", required_attributes={"zone": "b"}), agents)
    assert reason == "no agent has attributes zone=b"
    assert never_fits(need("a-0.1", ports=tuple(str(i) for i in range(101))), agents) is not None
