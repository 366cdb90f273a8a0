"""Leases: expiry removes their records, keepalive keeps them, revoke deletes them."""

from __future__ import annotations

import asyncio
import time

import pytest
from state_helpers import eventually

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors


def workload(name: str) -> types_pb2.Workload:
    return types_pb2.Workload(name=name, endpoint="127.0.0.1:7401")


async def test_lease_expiry_removes_the_record(state_client: StateClient) -> None:
    lease = await state_client.grant_lease(1)
    assert lease > 0
    await state_client.put(workload("redis"), lease_id=lease)
    assert await state_client.find(pb.KIND_WORKLOAD, "redis") is not None

    async def gone() -> bool:
        return await state_client.find(pb.KIND_WORKLOAD, "redis") is None

    await eventually(gone, 30, "the leased record to vanish")
    with pytest.raises(errors.NotFound):
        await state_client.keep_alive(lease)


async def test_keepalive_keeps_the_record(state_client: StateClient) -> None:
    lease = await state_client.grant_lease(2)
    await state_client.put(workload("mysql"), lease_id=lease)
    # Keep it alive for well past its ttl: the record must stay.
    until = time.monotonic() + 5
    while time.monotonic() < until:
        assert await state_client.keep_alive(lease) > 0
        assert await state_client.find(pb.KIND_WORKLOAD, "mysql") is not None
        await asyncio.sleep(0.5)  # the keepalive cadence (a third of the ttl or less)


async def test_revoke_deletes_the_records(state_client: StateClient) -> None:
    lease = await state_client.grant_lease(60)
    await state_client.put(workload("etcd"), lease_id=lease)
    await state_client.put(workload("redis"), lease_id=lease)
    await state_client.put(workload("mysql"))
    await state_client.revoke_lease(lease)
    names = [r.key.name for r in (await state_client.list(pb.KIND_WORKLOAD))[0]]
    assert names == ["mysql"]


async def test_put_under_an_unknown_lease_fails(state_client: StateClient) -> None:
    with pytest.raises(errors.NotFound):
        await state_client.put(workload("x"), lease_id=123456789)
