"""Unit tests of maintenance on the framework side (pure logic): offers carrying an
``unavailability`` take no new placement (docs/maintenance.md), inverse offers become
``Task.maintenance``, and when an agent may be handed back."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from pydantic import ValidationError

from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.api.mesos.v1.scheduler import scheduler_pb2
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.offers import driver as drv
from mesos_stateful.offers import mesos
from mesos_stateful.offers.maintenance import MaintenanceBook
from mesos_stateful.offers.matching import (
    CREATE,
    RESERVED,
    Need,
    Offer,
    OfferedVolume,
    Reservation,
    VolumeNeed,
    match,
)
from mesos_stateful.offers.settings import OffersSettings

Json = dict[str, Any]
START_NS = 1_900_000_000_000_000_000  # 2030-03-17T17:46:40Z
HOUR_NS = 3_600_000_000_000


def offer(n: int, draining: bool = False, **kw: Any) -> Offer:
    return Offer(
        f"o{n}",
        f"a{n}",
        f"127.0.0.{n}",
        4.0,
        4096,
        10000,
        [(31000, 31009)],
        unavailable_at=START_NS / 1e9 if draining else None,
        **kw,
    )


def need(task_id: str, instance: str = "cache", **kw: Any) -> Need:
    return Need(task_id, instance, 1.0, 256, port_names=("web",), **kw)


def volume_need(agent_id: str = "", host: str = "") -> VolumeNeed:
    return VolumeNeed("cache-0.v1", 100.0, "data", agent_id, host)


def reservation(with_volume: bool = True) -> Reservation:
    return Reservation(
        "cache",
        "cache-0",
        "cache-0.v1",
        cpus=1.0,
        mem=256,
        disk=0.0 if with_volume else 100.0,
        ports=[31005],
        volumes=[OfferedVolume("cache-0.v1", 100.0, "data")] if with_volume else [],
    )


# -- matching -------------------------------------------------------------------------------------


def test_a_draining_agent_takes_no_new_placement() -> None:
    result = match([offer(1, draining=True), offer(2)], [need("cache-0.1")])
    assert [a.agent_id for a in result.placed()] == ["a2"]


def test_a_launch_waits_rather_than_go_to_a_draining_agent_and_says_why() -> None:
    result = match([offer(1, draining=True)], [need("cache-0.1")])
    assert not result.placed()
    assert result.pending["cache-0.1"] == (
        "waiting: agent 127.0.0.1 is scheduled for maintenance (unavailable from 2030-03-17T17:46:40+00:00)"
    )


def test_a_first_launch_with_a_volume_is_not_placed_on_a_draining_agent() -> None:
    result = match([offer(1, draining=True)], [need("cache-0.1", member_id="cache-0", volume=volume_need())])
    assert not result.placed() and "maintenance" in result.pending["cache-0.1"]


def test_a_reservation_left_on_a_draining_agent_is_not_used_for_a_first_launch() -> None:
    """A leftover reservation is a new placement too: the member goes to an agent staying up."""
    draining = offer(1, draining=True, reservations=[reservation()])
    result = match([draining, offer(2)], [need("cache-0.1", member_id="cache-0", volume=volume_need())])
    (placed,) = result.placed()
    assert placed.agent_id == "a2" and placed.mode == "reserve"
    assert not draining.reservations[0].used


def test_a_restart_in_place_may_use_its_volume_on_a_draining_agent() -> None:
    """Pinned to its volume (data-safety rule 4): lifecycle moves the member off afterwards."""
    draining = offer(1, draining=True, reservations=[reservation()])
    result = match([draining, offer(2)], [need("cache-0.2", member_id="cache-0", volume=volume_need("a1"))])
    (placed,) = result.placed()
    assert placed.agent_id == "a1" and placed.mode == RESERVED and placed.ports == {"web": 31005}


def test_a_reserved_disk_left_on_a_draining_agent_gets_no_volume_created_for_a_first_launch() -> None:
    up = match(
        [offer(1, reservations=[reservation(with_volume=False)])],
        [need("cache-0.1", member_id="cache-0", volume=volume_need())],
    )
    assert [a.mode for a in up.placed()] == [CREATE]  # on an agent staying up it would be used
    draining = offer(1, draining=True, reservations=[reservation(with_volume=False)])
    result = match([draining], [need("cache-0.1", member_id="cache-0", volume=volume_need())])
    assert result.placed() == [] and "maintenance" in result.pending["cache-0.1"]


# -- Mesos JSON -----------------------------------------------------------------------------------


def raw_offer(unavailability: Json | None) -> Json:
    raw: Json = {
        "id": {"value": "o1"},
        "framework_id": {"value": "f"},
        "agent_id": {"value": "a1"},
        "hostname": "127.0.0.1",
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}}],
    }
    if unavailability is not None:
        raw["unavailability"] = unavailability
    return raw


def test_an_offer_with_unavailability_is_draining_also_with_int64_as_strings() -> None:
    assert mesos.parse_offer(raw_offer(None)).unavailable_at is None
    parsed = mesos.parse_offer(raw_offer({"start": {"nanoseconds": START_NS}}))
    assert parsed.draining and parsed.unavailable_at == START_NS / 1e9
    # protobuf's JSON mapping writes int64 as a string
    parsed = mesos.parse_offer(raw_offer({"start": {"nanoseconds": str(START_NS)}}))
    assert parsed.unavailable_at == START_NS / 1e9


def inverse_offer(offer_id: str = "io-1", agent: str = "a1", duration: bool = True) -> Json:
    unavailability: Json = {"start": {"nanoseconds": str(START_NS)}}
    if duration:
        unavailability["duration"] = {"nanoseconds": HOUR_NS}
    return {
        "id": {"value": offer_id},
        "framework_id": {"value": "f"},
        "agent_id": {"value": agent},
        "unavailability": unavailability,
        "resources": [],
    }


def test_the_json_fixtures_are_what_mesos_sends() -> None:
    """Both shapes parse strictly against the mesos.v1 protos (int64 as a number or a string)."""
    json_format.ParseDict(inverse_offer(), mesos_pb2.InverseOffer(), ignore_unknown_fields=False)
    json_format.ParseDict(
        raw_offer({"start": {"nanoseconds": START_NS}}), mesos_pb2.Offer(), ignore_unknown_fields=False
    )


async def test_accept_inverse_offers_is_a_valid_call_with_the_filter() -> None:
    """What the driver adapter sends through pymesos (its ``_send`` captured) parses strictly as a
    ``mesos.v1.scheduler.Call``."""
    config = drv.FrameworkConfig("mesos-stateful", "stateful", "u", "h", 60.0)
    adapter = drv.MesosDriver("127.0.0.1:1", config)
    pymesos_driver = drv._BoundedDriver(
        drv._Callbacks(adapter, 0), config.info("fw-1"), "127.0.0.1:1", use_addict=True, failover=True
    )
    sent: list[Json] = []
    pymesos_driver._send = sent.append
    pymesos_driver._stream_id = "stream-1"
    adapter._driver = pymesos_driver
    try:
        await adapter.accept_inverse_offers(["io-1"], 3600.0)
    finally:
        await adapter.stop()
    (body,) = sent
    call = json_format.ParseDict(body, scheduler_pb2.Call(), ignore_unknown_fields=False)
    assert call.type == scheduler_pb2.Call.ACCEPT_INVERSE_OFFERS
    assert [i.value for i in call.accept_inverse_offers.inverse_offer_ids] == ["io-1"]
    assert call.accept_inverse_offers.filters.refuse_seconds == 3600.0
    assert call.framework_id.value == "fw-1"


def test_an_inverse_offer_becomes_agent_maintenance() -> None:
    maintenance = mesos.agent_maintenance(inverse_offer(), "127.0.0.1", 1_800_000_000.5)
    assert maintenance is not None
    assert maintenance.start.ToNanoseconds() == START_NS
    assert maintenance.duration.ToNanoseconds() == HOUR_NS
    assert maintenance.inverse_offer_id == "io-1" and maintenance.hostname == "127.0.0.1"
    assert maintenance.announced_at.ToNanoseconds() == 1_800_000_000_500_000_000
    until_further_notice = mesos.agent_maintenance(inverse_offer(duration=False), "h", 0.0)
    assert until_further_notice is not None and not until_further_notice.HasField("duration")
    assert mesos.agent_maintenance({"id": {"value": "x"}, "agent_id": {"value": "a1"}}, "h", 0.0) is None


# -- the book ---------------------------------------------------------------------------------------


def task(
    task_id: str, agent: str, state: int = types_pb2.TASK_STATE_RUNNING, pinned_to: str = ""
) -> types_pb2.Task:
    t = types_pb2.Task(task_id=task_id, agent_id=agent, state=state)  # type: ignore[arg-type]
    t.launch.volume.agent_id = pinned_to
    if pinned_to:
        t.launch.volume.persistence_id = "v"
    return t


def announced(book: MaintenanceBook, offer_id: str = "io-1", agent: str = "a1", at: float = 100.0) -> None:
    maintenance = mesos.agent_maintenance(inverse_offer(offer_id, agent), "127.0.0.1", at)
    assert maintenance is not None
    book.announce(agent, maintenance)


def test_maintenance_goes_on_every_non_terminal_task_of_the_agent_only() -> None:
    book = MaintenanceBook()
    announced(book)
    tasks = [
        task("on-a1", "a1"),
        task("staging-a1", "a1", types_pb2.TASK_STATE_STAGING),
        task("unreachable-a1", "a1", types_pb2.TASK_STATE_UNREACHABLE),
        task("ended-a1", "a1", types_pb2.TASK_STATE_FINISHED),
        task("on-a2", "a2"),
        task("queued", "", types_pb2.TASK_STATE_QUEUED),
    ]
    updates = {u.task_id: u for u in book.updates(tasks)}
    assert set(updates) == {"on-a1", "staging-a1", "unreachable-a1"}
    assert all(u.maintenance.inverse_offer_id == "io-1" for u in updates.values())
    # Once written, nothing more to write.
    assert book.updates(list(updates.values())) == []


def test_a_new_inverse_offer_for_the_same_window_keeps_when_it_was_first_announced() -> None:
    book = MaintenanceBook()
    announced(book, "io-1", at=100.0)
    announced(book, "io-2", at=200.0)
    maintenance = book.get("a1")
    assert maintenance is not None
    assert maintenance.inverse_offer_id == "io-2" and maintenance.announced_at.seconds == 100


def test_the_agent_is_handed_back_only_when_none_of_our_tasks_is_left_there() -> None:
    book = MaintenanceBook()
    announced(book)
    running = task("cache-0.1", "a1")
    assert book.to_accept([running]) == []
    assert book.to_accept([task("cache-0.1", "a1", types_pb2.TASK_STATE_UNREACHABLE)]) == []
    assert book.to_accept([task("cache-0.1", "a1", types_pb2.TASK_STATE_KILLING)]) == []
    # queued to restart in place on its volume there: not yet either
    queued = task("cache-0.2", "", types_pb2.TASK_STATE_QUEUED, pinned_to="a1")
    assert book.to_accept([queued]) == []
    ended = task("cache-0.1", "a1", types_pb2.TASK_STATE_KILLED)
    elsewhere = task("cache-0.2", "a2")
    (drain,) = book.to_accept([ended, elsewhere])
    assert drain.inverse_offer_id == "io-1"
    drain.accepted_id = "io-1"
    assert book.to_accept([ended]) == []  # accepted once


def test_inverse_offers_of_an_earlier_subscription_are_never_accepted() -> None:
    book = MaintenanceBook()
    announced(book)
    book.resubscribed()
    assert book.to_accept([]) == []
    assert book.get("a1") is not None  # the maintenance stays on the tasks
    announced(book, "io-7")
    assert [d.inverse_offer_id for d in book.to_accept([])] == ["io-7"]


def test_a_rescind_clears_the_maintenance_only_if_no_new_inverse_offer_follows() -> None:
    book = MaintenanceBook()
    announced(book)
    assert book.rescind("io-unknown", 10.0) is None
    assert book.rescind("io-1", 10.0) is not None
    assert book.to_accept([]) == []  # nothing outstanding to accept
    assert book.next_expiry(11.0, 5.0) == 4.0
    assert book.expire(14.0, 5.0) == [] and book.get("a1") is not None
    # Mesos re-sends inverse offers on every schedule update: still scheduled.
    announced(book, "io-2")
    assert book.expire(20.0, 5.0) == [] and book.next_expiry(20.0, 5.0) is None
    book.rescind("io-2", 30.0)
    assert [d.agent_id for d in book.expire(35.0, 5.0)] == ["a1"]
    assert book.get("a1") is None
    scheduled = task("cache-0.1", "a1")
    scheduled.maintenance.hostname = "127.0.0.1"
    cleared = book.updates([scheduled])
    assert [u.task_id for u in cleared] == ["cache-0.1"] and not cleared[0].HasField("maintenance")


def test_restore_from_the_task_records_keeps_the_latest_and_has_nothing_outstanding() -> None:
    book = MaintenanceBook()
    announced(book, "io-old", at=100.0)
    older = book.updates([task("cache-0.1", "a1")])[0]
    book = MaintenanceBook()
    announced(book, "io-new", at=200.0)
    newer = book.updates([task("cache-1.1", "a1")])[0]
    # An agent that went DOWN: only terminal records are left there; they keep their maintenance.
    lost = task("cache-2.1", "a2", types_pb2.TASK_STATE_LOST)
    lost.maintenance.CopyFrom(newer.maintenance)
    restored = MaintenanceBook()
    restored.restore([older, newer, lost])
    assert set(restored.drains) == {"a1", "a2"}
    maintenance = restored.get("a1")
    assert maintenance is not None and maintenance.inverse_offer_id == "io-new"
    assert restored.to_accept([]) == []
    assert restored.updates([older]) and not restored.updates([newer, lost])


def test_an_agent_removed_while_its_inverse_offer_was_rescinded_keeps_its_maintenance() -> None:
    """START_MAINTENANCE (machine DOWN) removes the agent: Mesos rescinds its inverse offers, then
    says the agent is lost. Not a cancellation: the LOST records keep their maintenance."""
    book = MaintenanceBook()
    announced(book)
    book.rescind("io-1", 10.0)
    book.agent_lost("a1")
    assert book.expire(100.0, 5.0) == [] and book.get("a1") is not None
    lost = task("cache-0.1", "a1", types_pb2.TASK_STATE_LOST)
    kept = book.get("a1")
    assert kept is not None  # (asserted above)
    lost.maintenance.CopyFrom(kept)
    assert book.updates([lost]) == []


def test_an_offer_without_unavailability_cancels_the_agents_maintenance() -> None:
    book = MaintenanceBook()
    announced(book)
    assert book.cancel("a2") is None
    assert book.cancel("a1") is not None and book.get("a1") is None


def test_the_maintenance_settings_are_checked() -> None:
    base = {"master": "127.0.0.1:5050"}
    settings = OffersSettings.model_validate(base)
    assert (
        settings.maintenance_rescind_grace_seconds == 5.0 and settings.inverse_offer_refuse_seconds == 3600.0
    )
    with pytest.raises(ValidationError):
        OffersSettings.model_validate({**base, "maintenance_rescind_grace_seconds": -1})
