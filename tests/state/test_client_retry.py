"""The state client's retries (policies in mesos_stateful.common.retry) against a real state
service and etcd: a read waits out a restart of the state service, a write is never retried."""

from __future__ import annotations

import asyncio
import time

import pytest
from state_helpers import instance

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors, retry
from mesos_stateful.testing.state import StateService

# How long the state service stays down: well inside the read policy's deadline.
OUTAGE_SECONDS = 1.5


async def test_a_read_waits_out_a_state_service_restart(
    state_client: StateClient, state_service: StateService
) -> None:
    assert retry.STATE_READ.deadline_seconds is not None
    assert retry.STATE_READ.deadline_seconds / 2 > OUTAGE_SECONDS
    stored = await state_client.put(instance("keep"))
    await state_service.stop()

    started = time.monotonic()
    read = asyncio.create_task(state_client.get(pb.KIND_INSTANCE, "keep"))
    list_read = asyncio.create_task(state_client.list(pb.KIND_INSTANCE))
    # The outage itself (not a wait for a condition): the reads must still be retrying after it.
    await asyncio.sleep(OUTAGE_SECONDS)
    assert not read.done() and not list_read.done(), "a read gave up while the service was down"
    await state_service.start()

    assert await asyncio.wait_for(read, retry.STATE_READ.deadline_seconds + 5) == stored
    records, revision = await asyncio.wait_for(list_read, 5)
    assert [r.key.name for r in records] == ["keep"] and revision >= stored.mod_revision
    assert time.monotonic() - started >= OUTAGE_SECONDS


async def test_a_read_gives_up_after_its_deadline_and_a_write_at_once(
    state_client: StateClient, state_service: StateService
) -> None:
    await state_client.put(instance("keep"))
    await state_service.stop()
    try:
        # A write that may have been applied is never repeated: it fails at once.
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            await state_client.put(instance("other"))
        assert time.monotonic() - started < 2.0, "a write was retried"

        assert retry.STATE_READ.deadline_seconds is not None
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            await state_client.get(pb.KIND_INSTANCE, "keep")
        took = time.monotonic() - started
        # It retried for most of its deadline and started no attempt after it.
        assert retry.STATE_READ.deadline_seconds - 1.5 <= took < retry.STATE_READ.deadline_seconds + 3
    finally:
        await state_service.start()
    assert (await state_client.get(pb.KIND_INSTANCE, "keep")).key.name == "keep"
    assert await state_client.find(pb.KIND_INSTANCE, "other") is None
