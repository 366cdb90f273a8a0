"""The scheduler's release decision with a fake driver and state (no cluster): nothing is
destroyed when the member records cannot be read or a task of ours uses the volume, and an
orphan gets DESTROY + UNRESERVE without suppressing offers."""

from __future__ import annotations

from typing import Any

from test_volumes import member_resources, raw_offer

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.offers.scheduler import OfferScheduler
from mesos_stateful.offers.settings import OffersSettings


class FakeClient:
    def __init__(self, members: list[types_pb2.Member] | None) -> None:
        self.members = members

    async def list(self, kind: int, prefix: str = "") -> tuple[list[spb.Record], int]:
        assert kind == spb.KIND_MEMBER
        if self.members is None:
            raise errors.Unavailable("state service down")
        return [spb.Record(member=m) for m in self.members], 7


class FakeStore:
    def __init__(self, client: FakeClient, tasks: tuple[types_pb2.Task, ...] = ()) -> None:
        self.client = client
        self.tasks = {t.task_id: t for t in tasks}


class FakeDriver:
    framework_id = "F1"
    subscribed = True
    current_master = "m:5050"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def accept(self, offer_ids: list[str], operations: list[dict[str, Any]], refuse: float) -> None:
        self.calls.append(("accept", [o["type"] for o in operations]))

    async def decline(self, offer_ids: list[str], refuse: float) -> None:
        self.calls.append(("decline", list(offer_ids)))

    async def suppress(self) -> None:
        self.calls.append(("suppress", None))


def scheduler(
    members: list[types_pb2.Member] | None, tasks: tuple[types_pb2.Task, ...] = ()
) -> tuple[OfferScheduler, FakeDriver]:
    driver = FakeDriver()
    sched = OfferScheduler(OffersSettings.model_validate({}), FakeStore(FakeClient(members), tasks), driver)  # type: ignore[arg-type]
    return sched, driver


OFFER = raw_offer(1, *member_resources("cache-0", "cache-0.v1", 31500))


async def test_orphan_is_destroyed_and_unreserved_and_offers_not_suppressed() -> None:
    sched, driver = scheduler([])
    await sched._on_offers([OFFER])
    assert driver.calls == [("accept", ["DESTROY", "UNRESERVE"])]
    assert "A1" in sched._agents_with_orphans
    assert sched.cluster().agents[0].reservations[0].orphaned
    # The next offer from the agent no longer holds it: forgotten, then suppressed.
    await sched._on_offers([raw_offer(1)])
    assert driver.calls[-2:] == [("decline", ["O1"]), ("suppress", None)]
    assert not sched.cluster().agents[0].reservations


async def test_nothing_released_when_members_cannot_be_read() -> None:
    sched, driver = scheduler(None)
    await sched._on_offers([OFFER])
    assert driver.calls == [("decline", ["O1"])]  # declined, and not suppressed: asked again
    assert not sched.cluster().agents[0].reservations[0].orphaned


async def test_nothing_released_that_a_member_or_a_task_wants() -> None:
    wanted = types_pb2.Member(
        id="cache-0", instance="cache", volume=types_pb2.Volume(persistence_id="cache-0.v1", agent_id="A1")
    )
    sched, driver = scheduler([wanted])
    await sched._on_offers([OFFER])
    assert driver.calls == [("decline", ["O1"]), ("suppress", None)]
    task = types_pb2.Task(
        task_id="cache-0.3",
        state=types_pb2.TASK_STATE_RUNNING,
        agent_id="A1",
        launch=types_pb2.LaunchSpec(
            instance="cache", member_id="cache-0", volume=types_pb2.Volume(persistence_id="cache-0.v1")
        ),
    )
    sched, driver = scheduler([], (task,))
    await sched._on_offers([OFFER])
    assert ("accept", ["DESTROY", "UNRESERVE"]) not in driver.calls
