"""Unit tests of the placement rule (members of an instance per agent, counting every member's
current agent: live task, pinned launch, volume) and of the summary of why a launch waits."""

from __future__ import annotations

from mesos_stateful.offers.matching import (
    AgentCapacity,
    Need,
    Offer,
    OfferedVolume,
    Reservation,
    VolumeNeed,
    match,
    members_at,
    relax_avoid,
    summarize,
)


def offer(n: int, cpus: float = 4.0, unavailable_at: float | None = None) -> Offer:
    return Offer(
        f"o{n}", f"a{n}", f"127.0.0.{n}", cpus, 4096, 10000, [(31000, 31009)], unavailable_at=unavailable_at
    )


def need(member: str, incarnation: int = 1, volume: VolumeNeed | None = None, **kw: object) -> Need:
    instance = member.rsplit("-", 1)[0]
    return Need(
        f"{member}.{incarnation}",
        instance,
        1.0,
        256,
        disk=64.0 if volume is not None else 0.0,
        port_names=("web",),
        member_id=member,
        volume=volume,
        **kw,  # type: ignore[arg-type]
    )


def test_members_at_counts_other_members_not_the_launching_one() -> None:
    occupancy = {("a1", "cache"): {"cache-0", "cache-2"}, ("a2", "cache"): 3}
    assert members_at(occupancy, "a1", need("cache-1")) == 2
    assert members_at(occupancy, "a1", need("cache-2")) == 1  # its own old place does not count
    assert members_at(occupancy, "a2", need("cache-1")) == 3  # plain counts (anonymous tasks)
    assert members_at(occupancy, "a3", need("cache-1")) == 0
    assert members_at(occupancy, "a1", need("other-0")) == 0


def test_an_unpinned_launch_never_goes_where_another_member_is_even_if_its_task_is_down() -> None:
    # cache-0's task is down (LOST / ended); its volume is on a1: a1 holds cache-0.
    occupancy = {("a1", "cache"): {"cache-0"}}
    result = match([offer(1, cpus=8.0), offer(2), offer(3)], [need("cache-2", 2)], occupancy)
    assert [a.agent_id for a in result.placed()] == ["a2"] or [a.agent_id for a in result.placed()] == ["a3"]
    # Only a1 offers: the launch waits, and says why.
    result = match([offer(1)], [need("cache-2", 2)], occupancy)
    assert not result.placed()
    assert result.misfits["cache-2.2"] == {"a1": "hold another member of cache"}
    assert summarize(result.misfits["cache-2.2"]) == "no offer fits: 1 agent holds another member of cache"


def test_a_pinned_launch_restarts_in_place_where_another_member_already_is() -> None:
    # The user's sequence: cache-2 was placed on a1 (wrongly) while cache-0's task was down; the
    # rule keeps the unpinned launch off; the pinned one of cache-0 is its own place.
    reservation = Reservation(
        "cache",
        "cache-0",
        "cache-0.v1",
        cpus=1.0,
        mem=256,
        ports=[31000],
        volumes=[OfferedVolume("cache-0.v1", 64)],
    )
    a1 = offer(1)
    a1.reservations.append(reservation)
    occupancy = {("a1", "cache"): {"cache-0", "cache-2"}}
    pinned = need("cache-0", 2, VolumeNeed("cache-0.v1", 64, "data", agent_id="a1", host="127.0.0.1"))
    result = match([a1], [pinned], occupancy)
    assert [(a.task_id, a.agent_id) for a in result.placed()] == [("cache-0.2", "a1")]


def test_a_leftover_reservation_is_not_used_next_to_another_member() -> None:
    # cache-1's fresh volume was reserved on a1 by an attempt that was dropped; meanwhile cache-0
    # (down, volume on a1) holds a1: the reservation is not a way around the rule.
    left = Reservation("cache", "cache-1", "cache-1.v2", cpus=1.0, mem=256, ports=[31000], disk=64.0)
    a1 = offer(1)
    a1.reservations.append(left)
    occupancy = {("a1", "cache"): {"cache-0"}}
    result = match([a1, offer(2)], [need("cache-1", 2, VolumeNeed("cache-1.v2", 64, "data"))], occupancy)
    assert [a.agent_id for a in result.placed()] == ["a2"]
    # Without another member there it is used.
    result = match(
        [offer(2), _with(offer(1), left)], [need("cache-1", 2, VolumeNeed("cache-1.v2", 64, "data"))]
    )
    assert [a.agent_id for a in result.placed()] == ["a1"]


def _with(o: Offer, r: Reservation) -> Offer:
    r.used = False
    o.reservations.append(r)
    return o


def test_members_placed_in_one_round_count_for_the_next() -> None:
    occupancy = {("a1", "cache"): {"cache-0"}}
    result = match(
        [offer(1), offer(2), offer(3)], [need("cache-1"), need("cache-2"), need("cache-3")], occupancy
    )
    placed = {a.task_id: a.agent_id for a in result.placed()}
    assert sorted(placed.values()) == ["a2", "a3"]
    (waiting,) = result.misfits
    assert summarize(result.misfits[waiting]) == "no offer fits: 3 agents hold another member of cache"


def test_relax_avoid_counts_members_by_their_volumes_too() -> None:
    capacities = [AgentCapacity(f"a{n}", f"127.0.0.{n}", 4.0, 4096, 10000, 10) for n in (1, 2)]
    n = need("cache-1", avoid={"a2": frozenset()})
    # a1 holds cache-0 (its volume): the avoided a2 is the only place left, so the avoid goes.
    assert relax_avoid(n, capacities, {("a1", "cache"): {"cache-0"}}).avoid == {}
    # a1 holds only cache-1's own old volume: a1 is usable, the avoid list stays.
    assert relax_avoid(n, capacities, {("a1", "cache"): {"cache-1"}}) is n


def test_summary_counts_agents_per_reason_most_frequent_first() -> None:
    labels = {
        "a1": "scheduled for maintenance",
        "a2": "scheduled for maintenance",
        "a3": "hold another member of extra",
        "a4": "hold another member of extra",
        "a5": "hold another member of extra",
    }
    assert summarize(labels) == (
        "no offer fits: 3 agents hold another member of extra, 2 scheduled for maintenance"
    )
    assert summarize({"a1": "lack 2.0 free cpus"}) == "no offer fits: 1 agent lacks 2.0 free cpus"
    assert summarize({}) == "waiting for offers"


def test_misfit_labels_of_a_round() -> None:
    draining = offer(1, unavailable_at=1.0e9)
    small = offer(2, cpus=0.5)
    taken = offer(3)
    occupancy = {("a3", "extra"): {"extra-0"}}
    result = match([draining, small, taken], [need("extra-3")], occupancy)
    assert result.misfits["extra-3.1"] == {
        "a1": "scheduled for maintenance",
        "a2": "lack 1.0 free cpus",
        "a3": "hold another member of extra",
    }
    assert summarize(result.misfits["extra-3.1"]) == (
        "no offer fits: 1 agent scheduled for maintenance, 1 lacks 1.0 free cpus, "
        "1 holds another member of extra"
    )
    # GetCluster.pending keeps its longer list of reasons.
    assert "is scheduled for maintenance (unavailable from" in result.pending["extra-3.1"]
    assert "already run 1 task(s) of extra" in result.pending["extra-3.1"]
