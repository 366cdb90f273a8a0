"""Building the state server: the store, the servicer, and health that follows etcd reachability."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import state_service_pb2_grpc as pb_grpc
from mesos_stateful.common.server import Served, build_server
from mesos_stateful.state.request_metrics import RequestMetricsInterceptor
from mesos_stateful.state.servicer import StateServicer
from mesos_stateful.state.settings import StateSettings
from mesos_stateful.state.store import Store

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StateService"].full_name


@dataclass
class StateServed(Served):
    """A running state server; ``stop()`` also stops the health monitor and (if owned) the store."""

    store: Store | None = None
    owns_store: bool = False
    monitor: asyncio.Task[None] | None = None
    etcd_down: str | None = None  # why etcd is known to be down (the embedded etcd's supervisor)
    recheck: asyncio.Event = field(default_factory=asyncio.Event)

    def etcd_lost(self, reason: str) -> None:
        """etcd is down (its process exited): NOT_SERVING at once, until :meth:`etcd_back`."""
        self.etcd_down = reason
        self.recheck.set()

    def etcd_back(self) -> None:
        """etcd answers again: health follows reachability again; watches reconnect now."""
        self.etcd_down = None
        self.recheck.set()
        if self.store is not None:
            self.store.hub.retry_now()

    async def stop(self, grace_seconds: float = 5.0) -> None:
        if self.monitor is not None:
            self.monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.monitor
        await super().stop(grace_seconds)
        if self.owns_store and self.store is not None:
            await self.store.close()


async def _monitor(served: StateServed, store: Store, interval: float) -> None:
    # Health follows etcd: NOT_SERVING while it is down or unreachable, SERVING when it is back.
    # Checked every ``interval`` seconds, and at once when the supervisor reports a change.
    serving = True
    while True:
        served.recheck.clear()
        healthy = served.etcd_down is None and await store.healthy(timeout=max(interval, 1.0))
        if healthy != serving:
            log.warning(
                "etcd %s: health %s",
                "reachable"
                if healthy
                else (f"down ({served.etcd_down})" if served.etcd_down else "unreachable"),
                "SERVING" if healthy else "NOT_SERVING",
            )
            await served.set_serving(healthy)
            serving = healthy
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(served.recheck.wait(), interval)


async def build_state_server(
    source: StateSettings | Store, address: str | None = None, health_interval: float | None = None
) -> StateServed:
    """Start a state server on ``address`` (default: the settings' listen). Given settings, it owns
    a new store on their etcd endpoints (which must be set: main starts the embedded etcd)."""
    if isinstance(source, Store):
        store, owns = source, False
        listen = address or "127.0.0.1:0"
        interval = health_interval or 1.0
    else:
        if not source.endpoints:
            raise ValueError("etcd_endpoints is empty: start the embedded etcd first")
        store = Store(
            source.endpoints,
            timeout=source.etcd_timeout_seconds,
            use_cache=source.cache,
            watch_limits=source.watch_limits(),
            keys=source.keys(),
        )
        owns = True
        listen = address or source.listen
        interval = health_interval or source.health_interval_seconds
    await store.start()
    served = await build_server(
        listen,
        [lambda server: pb_grpc.add_StateServiceServicer_to_server(StateServicer(store), server)],
        [SERVICE_NAME],
        interceptors=[RequestMetricsInterceptor()],
    )
    state_served = StateServed(
        server=served.server,
        port=served.port,
        health=served.health,
        service_names=served.service_names,
        store=store,
        owns_store=owns,
    )
    state_served.monitor = asyncio.create_task(_monitor(state_served, store, interval), name="state-health")
    return state_served
