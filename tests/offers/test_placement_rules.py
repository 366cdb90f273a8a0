"""Unit tests of the placement rule (members of an instance per agent, counting every member's
current agent: live task, pinned launch, volume) and of the summary of why a launch waits."""

from __future__ import annotations

from collections.abc import Collection

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
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
from mesos_stateful.offers.scheduler import member_place, occupancy


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
    occupancy: dict[tuple[str, str], Collection[str] | int] = {
        ("a1", "cache"): {"cache-0", "cache-2"},
        ("a2", "cache"): 3,
    }
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


def _task(task_id: str, member: str, state: int, agent: str = "", pinned_to: str = "") -> types_pb2.Task:
    task = types_pb2.Task(task_id=task_id, instance="cache", member_id=member, agent_id=agent, state=state)  # type: ignore[arg-type]
    if pinned_to:
        task.launch.volume.agent_id = pinned_to
    return task


def _member_record(member: str, volume_agent: str) -> spb.Record:
    record = spb.Record(key=spb.RecordKey(kind=spb.KIND_MEMBER, name=f"cache/{member}"))
    record.member.id = member
    record.member.instance = "cache"
    record.member.volume.agent_id = volume_agent
    return record


def test_occupancy_counts_each_member_once_at_its_true_place() -> None:
    # Regression (4197ea9): member records are keyed "<instance>/<member id>" and were counted
    # under that key next to the member's task ("cache-0" and "cache/cache-0"): with
    # max_members_per_agent=2, three members on three agents filled all three, and a scale to 5
    # left cache-3 queued ("3 agents hold 2 members of cache").
    T = types_pb2
    tasks = [
        _task("cache-0.1", "cache-0", T.TASK_STATE_RUNNING, "a1"),
        _task("cache-1.1", "cache-1", T.TASK_STATE_RUNNING, "a2"),
        _task("cache-2.1", "cache-2", T.TASK_STATE_RUNNING, "a3"),
        _task("cache-3.1", "cache-3", T.TASK_STATE_QUEUED),
    ]
    records = [_member_record(f"cache-{i}", f"a{i + 1}") for i in range(3)]
    places = occupancy(tasks, [member_place(r) for r in records])
    assert places == {
        ("a1", "cache"): {"cache-0"},
        ("a2", "cache"): {"cache-1"},
        ("a3", "cache"): {"cache-2"},
    }
    result = match([offer(1), offer(2), offer(3)], [need("cache-3", max_per_agent=2)], places)
    assert len(result.placed()) == 1, result.pending

    # cache-0 runs on a4 now while its member record still names a1 (a volume left by an earlier
    # attempt): it is at a4 only. cache-1's task is LOST: it is at its volume's agent (a2), and at
    # the agent its relaunch is pinned to, once.
    tasks = [
        _task("cache-0.1", "cache-0", T.TASK_STATE_FAILED, "a1"),
        _task("cache-0.2", "cache-0", T.TASK_STATE_RUNNING, "a4"),
        _task("cache-1.1", "cache-1", T.TASK_STATE_LOST, "a2"),
        _task("cache-1.2", "cache-1", T.TASK_STATE_QUEUED, pinned_to="a2"),
    ]
    places = occupancy(
        tasks,
        [member_place(_member_record("cache-0", "a1")), member_place(_member_record("cache-1", "a2"))],
    )
    assert places == {("a4", "cache"): {"cache-0"}, ("a2", "cache"): {"cache-1"}}
