"""Client keepalive and server ping policy agree: a quiet stream on a connection that pings lives
on (no GOAWAY too_many_pings), while the same client against gRPC's default server policy is
cut off, which is what interrupted state watches about once a minute."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from mesos_stateful.common.channels import Keepalive, channel_options, server_options
from mesos_stateful.common.server import Served, build_server

# Short periods for the test: the client pings after 1 s of silence (gRPC core's client never pings
# more often than once a second), the server accepts pings 0.5 s apart.
FAST = Keepalive(time_ms=1_000, timeout_ms=5_000, server_min_interval_ms=500)
# gRPC core's own server default: one ping per 5 minutes without data.
GRPC_DEFAULT_SERVER = Keepalive(time_ms=300_000, server_min_interval_ms=300_000)
# Six keepalive periods: a server that counts every ping as a strike sends GOAWAY at the fourth
# (more than grpc.http2.max_ping_strikes = 2).
QUIET_SECONDS = 6.0


async def _served(keepalive: Keepalive) -> Served:
    return await build_server("127.0.0.1:0", [], ["test.Quiet"], keepalive=keepalive)


async def _watch_quietly(served: Served, client: Keepalive) -> tuple[list[int], grpc.ChannelConnectivity]:
    """Open a Health Watch (a server stream that stays silent until the status changes), stay
    quiet for QUIET_SECONDS, then flip the status: the statuses the stream delivered and the
    channel's state at the end."""
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{served.port}", options=channel_options(client)
    ) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        call = stub.Watch(health_pb2.HealthCheckRequest(service="test.Quiet"))
        seen: list[int] = []
        try:
            seen.append((await call.read()).status)
            await asyncio.sleep(QUIET_SECONDS)  # nothing to poll: the point is to stay idle
            await served.set_serving(False)
            reply = await asyncio.wait_for(call.read(), 5.0)
            if reply is not grpc.aio.EOF:
                seen.append(reply.status)
        finally:
            call.cancel()
        return seen, channel.get_state()


async def test_agreeing_keepalive_keeps_a_quiet_stream_open() -> None:
    served = await _served(FAST)
    try:
        started = time.monotonic()
        seen, state = await _watch_quietly(served, FAST)
        assert time.monotonic() - started >= QUIET_SECONDS
    finally:
        await served.stop(0)
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert seen == [serving, not_serving], "the quiet stream was interrupted"
    assert state == grpc.ChannelConnectivity.READY


async def test_a_client_pinging_faster_than_the_server_allows_is_cut_off() -> None:
    """The control: the test can fail. The same client against gRPC's default server policy gets
    GOAWAY too_many_pings and its stream ends with UNAVAILABLE."""
    served = await _served(GRPC_DEFAULT_SERVER)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _watch_quietly(served, FAST)
    finally:
        await served.stop(0)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
    assert "too many pings" in (raised.value.details() or "").lower(), raised.value


def test_defaults_agree_and_disagreement_is_refused() -> None:
    k = Keepalive()
    assert k.server_min_interval_ms <= k.time_ms
    client = dict(channel_options(k))
    server = dict(server_options(k))
    client_ping = client["grpc.keepalive_time_ms"]
    server_min = server["grpc.http2.min_ping_interval_without_data_ms"]
    assert isinstance(client_ping, int) and isinstance(server_min, int)  # options hold int or str
    assert client_ping >= server_min
    assert server["grpc.so_reuseport"] == 0
    with pytest.raises(ValidationError, match="too_many_pings"):
        Keepalive(time_ms=10_000, server_min_interval_ms=300_000)


async def test_a_port_in_use_is_refused_not_shared() -> None:
    """gRPC's SO_REUSEPORT default let a second suite's services bind the first one's ports."""
    first = await _served(Keepalive())
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            await build_server(f"127.0.0.1:{first.port}", [], [])
    finally:
        await first.stop(0)
