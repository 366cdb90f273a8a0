"""gRPC keepalive and reconnect options of every channel and server of the suite, in one place.

A gRPC server answers a client that pings more often than it allows with an HTTP/2 GOAWAY
``too_many_pings`` and closes the connection, failing every call on it (a state watch included).
gRPC core's server default is one ping per 5 minutes without data
(``grpc.http2.min_ping_interval_without_data_ms`` = 300000) and 2 strikes
(``grpc.http2.max_ping_strikes``); a client pinging every 10 s was therefore cut off about once a
minute. Here the client's keepalive period and the server's permitted interval come from one
:class:`Keepalive`, whose invariant (client period >= server minimum) is checked when it is built.
Source of the rules: gRPC core ``doc/keepalive.md`` and proposal A8 (client-side keepalive).

``channel_options()`` is for channels to the suite's own services; ``server_options()`` is what
``build_server`` uses. ``etcd_channel_options()`` is for channels to etcd, whose server applies its
own policy (``--grpc-keepalive-min-time``, 5 s by default, and no pings without an active stream:
etcd ``server/etcdserver/api/v3rpc/grpc.go``, ``PermitWithoutStream: false``).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ChannelOptions = list[tuple[str, int | str]]


class Keepalive(BaseSettings):
    """Keepalive of the suite's gRPC connections, all in milliseconds; environment variables
    ``STATEFUL_GRPC_KEEPALIVE_TIME_MS`` etc. (every process of a suite inherits the same ones)."""

    model_config = SettingsConfigDict(env_prefix="STATEFUL_GRPC_KEEPALIVE_", extra="ignore", frozen=True)

    time_ms: int = Field(
        20_000, description="client: a ping after this long without activity on the connection (ms)"
    )
    timeout_ms: int = Field(
        10_000, description="client: the connection is closed when a ping is not answered within this (ms)"
    )
    server_min_interval_ms: int = Field(
        10_000,
        description="server: pings closer together than this without data are strikes (ms); "
        "must not exceed time_ms",
    )
    server_max_strikes: int = Field(
        2, description="server: strikes tolerated before GOAWAY too_many_pings (gRPC default 2)"
    )
    reconnect_initial_ms: int = Field(
        200, description="client: first reconnect delay after a connection is lost (ms; gRPC default 1000)"
    )
    reconnect_max_ms: int = Field(
        2_000, description="client: longest reconnect delay (ms; gRPC's default grows to 120000)"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if min(self.time_ms, self.timeout_ms, self.server_min_interval_ms, self.reconnect_initial_ms) <= 0:
            raise ValueError("keepalive and reconnect times must be positive")
        if self.server_min_interval_ms > self.time_ms:
            raise ValueError(
                f"server_min_interval_ms ({self.server_min_interval_ms}) > time_ms ({self.time_ms}): "
                "servers would answer the clients' keepalive pings with GOAWAY too_many_pings"
            )
        if self.server_max_strikes < 0:
            raise ValueError("server_max_strikes must be >= 0 (0: unlimited)")
        if self.reconnect_max_ms < self.reconnect_initial_ms:
            raise ValueError("reconnect_max_ms must be >= reconnect_initial_ms")
        return self


_default: Keepalive | None = None


def keepalive() -> Keepalive:
    """The process's keepalive settings (from the environment, read once)."""
    global _default
    if _default is None:
        _default = Keepalive()  # pydantic-settings reads the environment variables
    return _default


def channel_options(settings: Keepalive | None = None) -> ChannelOptions:
    """Options for every channel to a service of the suite: keepalive the servers accept, pings
    also while idle or on a quiet stream (a watch), and a quick reconnect after a restart."""
    k = settings or keepalive()
    return [
        ("grpc.keepalive_time_ms", k.time_ms),
        ("grpc.keepalive_timeout_ms", k.timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC core stops pinging after 2 pings without data by default; a quiet watch stream
        # must keep being checked (the server side allows it: see server_options).
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", k.reconnect_initial_ms),
        # Not grpc.min_reconnect_backoff_ms: gRPC core also uses it as the deadline of one
        # connection attempt (min_connect_timeout, 20 s by default); at 0.2 s a loaded server that
        # is slow to finish the handshake would never be reached.
        ("grpc.max_reconnect_backoff_ms", k.reconnect_max_ms),
    ]


def server_options(settings: Keepalive | None = None) -> ChannelOptions:
    """Options of every server of the suite (``build_server``): accept the clients' keepalive,
    and never share a port with another process (gRPC sets SO_REUSEPORT by default on Linux, so a
    second suite's service would bind a port the first one holds and take half its calls)."""
    k = settings or keepalive()
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", k.server_min_interval_ms),
        ("grpc.http2.max_ping_strikes", k.server_max_strikes),
        ("grpc.so_reuseport", 0),
    ]


# etcd's default --grpc-keepalive-min-time (5 s); pinging at twice that leaves room for timer jitter.
ETCD_KEEPALIVE_TIME_MS = 10_000


def etcd_channel_options(settings: Keepalive | None = None) -> ChannelOptions:
    """Options of a channel to etcd: ping every 10 s only while a call (a watch, a lease
    keepalive) is open, as etcd refuses pings without a stream; reconnect quickly."""
    k = settings or keepalive()
    return [
        ("grpc.keepalive_time_ms", ETCD_KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", k.timeout_ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.initial_reconnect_backoff_ms", k.reconnect_initial_ms),
        ("grpc.max_reconnect_backoff_ms", min(k.reconnect_max_ms, 1_000)),
    ]
