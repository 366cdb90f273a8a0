"""Registration of the Redis workload service in a real state service (on a real etcd)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from mesos_stateful.api.stateful.v1 import state_service_pb2, types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import workload_service_pb2_grpc as pb_grpc
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.state import StateService
from mesos_stateful.testing.workloads import wait_for
from mesos_stateful.workloads.base import RunningWorkload, start_workload
from mesos_stateful.workloads.redis.servicer import RedisWorkload
from mesos_stateful.workloads.redis.settings import RedisSettings

TTL = 3


@pytest_asyncio.fixture
async def registered(state_service: StateService) -> AsyncIterator[RunningWorkload]:
    settings = RedisSettings(
        listen="127.0.0.1:0",
        state_endpoint=state_service.endpoint,
        lease_ttl_seconds=TTL,
        register_in_state=True,
    )
    running = await start_workload(RedisWorkload(settings), settings)
    try:
        yield running
    finally:
        await running.stop(grace_seconds=1)


async def record(client: StateClient) -> types_pb2.Workload | None:
    found = await client.find(state_service_pb2.KIND_WORKLOAD, "redis")
    return found.workload if found is not None else None


async def test_registers_and_deregisters(registered: RunningWorkload, state_client: StateClient) -> None:
    assert registered.registration is not None
    await wait_for(lambda: _present(state_client), 30, what="registration")
    workload = await record(state_client)
    assert workload is not None
    assert workload.endpoint == f"127.0.0.1:{registered.port}"
    assert workload.description.name == "redis"
    assert workload.registered_at.seconds > 0
    # The registered endpoint serves the workload.
    async with grpc.aio.insecure_channel(workload.endpoint) as channel:
        d = await pb_grpc.WorkloadServiceStub(channel).Describe(pb.DescribeRequest())
    assert d.description == workload.description
    # It stays registered past several TTLs (keepalive works).
    start = registered.registration.registrations
    await wait_for(lambda: _keepalives(registered, 2 * TTL), 30, what="keepalives")
    assert await record(state_client) is not None
    assert registered.registration.registrations == start
    # A clean stop revokes the lease: the record is gone at once.
    await registered.registration.stop()
    assert await record(state_client) is None


async def _present(client: StateClient) -> bool:
    return await record(client) is not None


async def _absent(client: StateClient) -> bool:
    return await record(client) is None


async def _keepalives(running: RunningWorkload, seconds: float) -> bool:
    # Keepalives run every TTL/3: wait until enough have happened to cover `seconds`.
    assert running.registration is not None
    return running.registration.keepalives * (TTL / 3) >= seconds


async def test_record_expires_without_keepalive(
    registered: RunningWorkload, state_client: StateClient
) -> None:
    assert registered.registration is not None
    await wait_for(lambda: _present(state_client), 30, what="registration")
    await registered.registration.stop(revoke=False)  # as if the service hung or died
    await wait_for(lambda: _absent(state_client), 30, what="lease expiry")


async def test_registers_again_when_lease_lost(
    registered: RunningWorkload, state_client: StateClient
) -> None:
    registration = registered.registration
    assert registration is not None
    await wait_for(lambda: _present(state_client), 30, what="registration")
    old_lease = registration.lease_id
    await state_client.revoke_lease(old_lease)  # what an expiry during an outage looks like
    await wait_for(lambda: _registered_again(registered, state_client, 2), 30, what="re-registration")
    assert registration.lease_id != old_lease


async def _registered_again(running: RunningWorkload, client: StateClient, times: int) -> bool:
    assert running.registration is not None
    return running.registration.registrations >= times and await record(client) is not None


async def test_registers_again_after_state_service_outage(
    registered: RunningWorkload, state_service: StateService, state_client: StateClient
) -> None:
    registration = registered.registration
    assert registration is not None
    await wait_for(lambda: _present(state_client), 30, what="registration")
    await state_service.stop()
    # Each failed keepalive takes longer than the TTL (the client retries reads for 5 s), so
    # after one failure the lease has expired in etcd.
    await wait_for(lambda: _failed(registered), 60, what="a failed keepalive")
    await state_service.start()
    await wait_for(lambda: _registered_again(registered, state_client, 2), 60, what="re-registration")


async def _failed(running: RunningWorkload) -> bool:
    assert running.registration is not None
    return running.registration.failures >= 1


async def test_stays_registered_across_quick_state_service_restart(
    registered: RunningWorkload, state_service: StateService, state_client: StateClient
) -> None:
    registration = registered.registration
    assert registration is not None
    await wait_for(lambda: _present(state_client), 30, what="registration")
    lease, before = registration.lease_id, registration.keepalives
    await state_service.restart()  # same port; the lease in etcd outlives the restart
    await wait_for(lambda: _more_keepalives(registered, before + 2), 30, what="keepalives after restart")
    assert registration.lease_id == lease
    assert await record(state_client) is not None


async def _more_keepalives(running: RunningWorkload, count: int) -> bool:
    assert running.registration is not None
    return running.registration.keepalives >= count


async def test_a_second_copy_never_takes_the_name_over(
    registered: RunningWorkload, state_service: StateService, state_client: StateClient
) -> None:
    """A second service registering a name that a live service holds waits instead of taking it
    over; stopping it leaves the first one's record alone (new-user finding: the copy's stop
    deleted the record and the first never registered again, so failovers stalled)."""
    await wait_for(lambda: _present(state_client), 30, what="registration")
    first = f"127.0.0.1:{registered.port}"
    settings = RedisSettings(
        listen="127.0.0.1:0",
        state_endpoint=state_service.endpoint,
        lease_ttl_seconds=TTL,
        register_in_state=True,
    )
    copy = await start_workload(RedisWorkload(settings), settings)
    try:
        assert copy.registration is not None
        await wait_for(lambda: _failed_once(copy), 30, what="the copy's refused attempt")
        assert not copy.registration.registered.is_set()
        workload = await record(state_client)
        assert workload is not None and workload.endpoint == first
    finally:
        await copy.stop(grace_seconds=1)
    workload = await record(state_client)
    assert workload is not None and workload.endpoint == first


async def test_a_record_deleted_behind_its_back_is_put_again(
    registered: RunningWorkload, state_client: StateClient
) -> None:
    await wait_for(lambda: _present(state_client), 30, what="registration")
    assert registered.registration is not None
    lease = registered.registration.lease_id
    await state_client.delete(state_service_pb2.KIND_WORKLOAD, "redis")
    await wait_for(lambda: _present(state_client), 30, what="the record put again")
    assert registered.registration.lease_id == lease  # the same lease: it never lapsed


async def _failed_once(running: RunningWorkload) -> bool:
    assert running.registration is not None
    return running.registration.failures >= 1
