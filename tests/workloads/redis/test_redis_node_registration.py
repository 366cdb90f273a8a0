"""Registration of the Node.js Redis workload (services/redis-node, its own process) in a real
state service on a real etcd: registered with its description, kept past several TTLs, registered
again when its lease is revoked behind its back, gone at once after SIGTERM, left to expire
after SIGKILL."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest_asyncio

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import workload_service_pb2_grpc as pb_grpc
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.node_workload import REDIS_NODE_NAME, NodeWorkload, redis_node
from mesos_stateful.testing.state import StateService
from mesos_stateful.testing.workloads import wait_for

TTL = 3


@pytest_asyncio.fixture
async def node_service(state_service: StateService, tmp_path: Path) -> AsyncIterator[NodeWorkload]:
    service = redis_node(state_service.endpoint, tmp_path, lease_ttl_seconds=TTL)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def registered(client: StateClient) -> spb.Record | None:
    return await client.find(spb.KIND_WORKLOAD, REDIS_NODE_NAME)


async def test_registers_keeps_and_renews_its_lease(
    node_service: NodeWorkload, state_client: StateClient
) -> None:
    await node_service.wait_registered(state_client, REDIS_NODE_NAME)
    first = await registered(state_client)
    assert first is not None
    workload = first.workload
    assert workload.endpoint == node_service.endpoint and workload.registered_at.seconds > 0
    assert workload.description.topology == types_pb2.TOPOLOGY_MASTER_REPLICA
    async with grpc.aio.insecure_channel(workload.endpoint) as channel:
        described = await pb_grpc.WorkloadServiceStub(channel).Describe(pb.DescribeRequest(), timeout=10)
    assert described.description == workload.description

    # Past three TTLs the same record is there: the lease is kept alive.
    deadline = time.monotonic() + 3 * TTL

    async def kept() -> bool:
        now = await registered(state_client)
        assert now is not None and now.create_revision == first.create_revision, "the lease lapsed"
        return time.monotonic() >= deadline

    await wait_for(kept, 3 * TTL + 5, 0.3, "three TTLs")

    # Its lease revoked behind its back (as when etcd lost it): it registers again.
    await state_client.revoke_lease(_lease_of(node_service))

    async def again() -> bool:
        record = await registered(state_client)
        return record is not None and record.create_revision > first.create_revision

    await wait_for(again, 4 * TTL, 0.2, "registered again after the lease was revoked")

    # SIGKILL: the record outlives the process until its lease expires (TTL).
    await node_service.stop(deregister=False)
    assert await registered(state_client) is not None

    async def gone() -> bool:
        return await registered(state_client) is None

    await wait_for(gone, 4 * TTL, 0.2, "the record expired with its lease")
    # Back on the same port: registered again; SIGTERM revokes the lease at once.
    await node_service.start()
    await node_service.wait_registered(state_client, REDIS_NODE_NAME)
    await node_service.stop()
    assert await registered(state_client) is None


def _lease_of(service: NodeWorkload) -> int:
    """The registration's lease id, as the service logged it ("... (lease <id>, ttl 3s)")."""
    leases = re.findall(r"\(lease (\d+), ttl", service.log_text())
    assert leases, f"no registration in the log:\n{service.log_text()[-2000:]}"
    return int(leases[-1])


async def test_a_second_copy_never_takes_the_name_over_and_a_deleted_record_is_put_again(
    node_service: NodeWorkload, state_service: StateService, state_client: StateClient, tmp_path: Path
) -> None:
    """As the Python workload base: a second copy under the same name waits instead of taking the
    record over, and its stop leaves the first one's record; a record deleted behind the first's
    back is put again on its lease."""
    await node_service.wait_registered(state_client, REDIS_NODE_NAME)
    copy = redis_node(state_service.endpoint, tmp_path / "copy", lease_ttl_seconds=TTL)
    await copy.start()
    try:
        await wait_for(
            lambda: "not taking it over" in copy.log_text(), 30, 0.2, "the copy's refused registration"
        )
        record = await registered(state_client)
        assert record is not None and record.workload.endpoint == node_service.endpoint
    finally:
        await copy.stop()
    record = await registered(state_client)
    assert record is not None and record.workload.endpoint == node_service.endpoint

    await state_client.delete(spb.KIND_WORKLOAD, REDIS_NODE_NAME)

    async def back() -> bool:
        again = await registered(state_client)
        return again is not None and again.workload.endpoint == node_service.endpoint

    await wait_for(back, 4 * TTL, 0.2, "the record put again")
