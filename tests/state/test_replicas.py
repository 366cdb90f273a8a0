"""Stateless state replicas: two state services on one etcd, and clients given both addresses keep
reading, writing and watching when either is killed (issue 10, item 2: state runs as several
replicas)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from state_helpers import eventually, instance, task
from test_etcd_restart import StateProcess
from test_watch import Collector, Writer, assert_in_order, current_revision

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.clients import endpoints
from mesos_stateful.clients.state import StateClient
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.ports import free_port
from mesos_stateful.workloads.base import WorkloadSettings


def replica(tmp_path: Path, name: str, etcd_endpoint: str) -> StateProcess:
    return StateProcess(
        tmp_path / name, tmp_path / f"{name}.log", extra_args=[f"--etcd-endpoints={etcd_endpoint}"]
    )


@pytest_asyncio.fixture
async def replicas(tmp_path: Path, etcd: EtcdProcess) -> AsyncIterator[list[StateProcess]]:
    started = [replica(tmp_path, name, etcd.endpoint) for name in ("a", "b")]
    for service in started:
        await service.start()
    try:
        yield started
    finally:
        for service in started:
            await service.stop()


async def serving(endpoint: str) -> None:
    client = StateClient(endpoint)
    try:
        await client.wait_ready(60)
    finally:
        await client.close()


async def test_clients_of_two_replicas_survive_either_being_killed(replicas: list[StateProcess]) -> None:
    a, b = replicas
    for service in replicas:
        await serving(service.endpoint)
    client = StateClient(f"{a.endpoint},{b.endpoint}")  # the plain comma-separated form
    collector: Collector | None = None
    try:
        kept = await client.put(instance("kept"), expected_revision=0)
        collector = Collector(client.watch([pb.KIND_TASK], start_revision=await current_revision(client) + 1))
        writer = Writer(client)
        await writer.tasks(0, 5)
        await collector.wait_for(5)
        written = 5
        # Kill one, go on, bring it back; then the other: the watch stream was on one of them, so
        # it is resumed through the other at least once.
        for victim in (a, b):
            await victim.kill()
            killed_at = time.monotonic()
            await writer.tasks(written, written + 5)
            # Writes go on through the other replica at once (the client's backoff, not a timeout).
            assert time.monotonic() - killed_at < 5.0, time.monotonic() - killed_at
            assert await client.get(pb.KIND_INSTANCE, "kept") == kept
            written += 5
            await victim.start()  # on the same port
            await serving(victim.endpoint)
        await writer.put(task(f"w-{written}.1"))  # a last marker: a gap or a repeat before it shows
        await collector.wait_for(written + 1)
        assert collector.names() == [f"w-{i}.1" for i in range(written + 1)]
        assert_in_order(collector.events)
    finally:
        if collector is not None:
            await collector.stop()
        await client.close()


async def health_of(endpoint: str) -> int:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=endpoints.STATE_SERVICE), timeout=2
            )
        except grpc.RpcError:
            return -1
        return int(reply.status)


async def test_a_replica_without_etcd_gets_no_calls(tmp_path: Path, etcd: EtcdProcess) -> None:
    """A replica that cannot reach etcd says NOT_SERVING; clients given both (gRPC client-side
    health checking) send it nothing, so every write goes through at the first try."""
    good = replica(tmp_path, "good", etcd.endpoint)
    cut_off = replica(tmp_path, "cut-off", f"127.0.0.1:{free_port()}")  # nothing listens there
    for service in (good, cut_off):
        await service.start()
    client = StateClient(f"ipv4:{cut_off.endpoint},{good.endpoint}")  # the gRPC target form
    try:
        await serving(good.endpoint)

        async def not_serving() -> bool:
            return await health_of(cut_off.endpoint) == health_pb2.HealthCheckResponse.NOT_SERVING

        await eventually(not_serving, 30, "the replica without etcd to say NOT_SERVING")
        for i in range(30):  # each write once, no retry: an UNAVAILABLE would fail the test
            await client.put(task(f"h-{i}.1"), expected_revision=0)
        assert len((await client.list(pb.KIND_TASK))[0]) == 30
    finally:
        await client.close()
        for service in (good, cut_off):
            await service.stop()


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("127.0.0.1:7100", "127.0.0.1:7100"),
        ("state.example:7100", "state.example:7100"),
        ("127.0.0.1:7100,127.0.0.1:7101", "ipv4:127.0.0.1:7100,127.0.0.1:7101"),
        ("localhost:7100, 127.0.0.2:7101", "ipv4:127.0.0.1:7100,127.0.0.2:7101"),
        ("[::1]:7100,[::1]:7101", "ipv6:[::1]:7100,[::1]:7101"),
        ("ipv4:127.0.0.1:7100,127.0.0.1:7101", "ipv4:127.0.0.1:7100,127.0.0.1:7101"),
        ("dns:///state.example:7100", "dns:///state.example:7100"),
    ],
)
def test_state_endpoint_forms(value: str, target: str) -> None:
    endpoints.check_endpoint("state_endpoint", value)
    assert endpoints.grpc_target(value) == target
    assert bool(endpoints.channel_options(target)) == ("," in value or value.startswith("dns:"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("127.0.0.1", "host:port"),
        ("127.0.0.1:0", "bad port"),
        ("a.example:1,b.example:2", "need IP addresses"),
        ("127.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6"),
        ("ipv4:state.example:7100", "not an IP address"),
    ],
)
def test_bad_state_endpoints_are_named(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        endpoints.check_endpoint("state_endpoint", value)


def test_service_settings_take_several_state_replicas() -> None:
    both = "127.0.0.1:7100,127.0.0.1:7101"
    assert LifecycleSettings(state_endpoint=both).state_endpoint == both
    assert WorkloadSettings(state_endpoint=both).state_endpoint == both
    with pytest.raises(ValueError, match="state_endpoint"):
        LifecycleSettings(state_endpoint="a.example:1,b.example:2")
