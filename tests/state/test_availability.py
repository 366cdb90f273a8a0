"""Outages: UNAVAILABLE (not a hang) while etcd is down, health follows etcd, data survives restarts."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from state_helpers import eventually, instance, member

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import state_service_pb2_grpc as pb_grpc
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.state import StateService


async def health(endpoint: str) -> int:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
        return int(reply.status)


async def test_unavailable_while_etcd_is_down(
    state_client: StateClient, state_service: StateService, etcd: EtcdProcess
) -> None:
    stored = await state_client.put(instance("keep"))
    await etcd.kill()

    # The service itself answers UNAVAILABLE at once (the client then retries reads briefly).
    async with grpc.aio.insecure_channel(state_service.endpoint) as channel:
        stub = pb_grpc.StateServiceStub(channel)
        for _ in range(3):
            started = time.monotonic()
            request = pb.GetRequest(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name="keep"))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Get(request, timeout=20)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 5

    started = time.monotonic()
    with pytest.raises(errors.Unavailable):
        await state_client.get(pb.KIND_INSTANCE, "keep")
    with pytest.raises(errors.Unavailable):
        await state_client.put(instance("new"))
    with pytest.raises(errors.Unavailable):
        await state_client.list(pb.KIND_INSTANCE)
    assert time.monotonic() - started < 30, "calls must fail fast, not hang"

    async def not_serving() -> bool:
        return await health(state_service.endpoint) == health_pb2.HealthCheckResponse.NOT_SERVING

    await eventually(not_serving, 30, "health NOT_SERVING")

    await etcd.restart()
    await state_client.wait_ready(30)
    assert await health(state_service.endpoint) == health_pb2.HealthCheckResponse.SERVING
    assert (await state_client.get(pb.KIND_INSTANCE, "keep")).mod_revision == stored.mod_revision
    await state_client.put(instance("new"), expected_revision=0)


async def test_records_survive_restarts(
    state_client: StateClient, state_service: StateService, etcd: EtcdProcess
) -> None:
    first = await state_client.put(instance("cache", 1))
    await state_client.put(member("cache", 0))

    await state_service.restart()
    assert await state_client.get(pb.KIND_INSTANCE, "cache") == first

    await etcd.stop()
    await etcd.restart()
    await state_client.wait_ready(30)
    assert await state_client.get(pb.KIND_INSTANCE, "cache") == first
    members, _ = await state_client.list(pb.KIND_MEMBER, "cache/")
    assert [r.key.name for r in members] == ["cache/cache-0"]
    # Compare-and-swap still works against the revision read before the restarts.
    updated = await state_client.put(instance("cache", 2), expected_revision=first.mod_revision)
    assert updated.mod_revision > first.mod_revision


async def test_test_etcd_takes_new_ports_when_another_process_took_its_port(tmp_path: Path) -> None:
    # Test ports come from the ephemeral range, so another process can take one between the pick
    # and etcd's bind; the first start then moves to new ports instead of failing the test.
    process = EtcdProcess(tmp_path / "etcd")
    taken = process.etcd.client_port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        await process.start()
        try:
            assert process.etcd.client_port != taken
            assert process.running
        finally:
            await process.kill()
