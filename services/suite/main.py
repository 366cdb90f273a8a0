"""Run the whole suite locally: etcd (owned by the state service), state, local cluster, offers,
gateway, lifecycle and the workload services. Ctrl-C stops them in reverse order; the local
cluster kills every member it started, so nothing is left behind."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.common.server import wait_for_signal
from mesos_stateful.common.tracing import ENV_DIR
from mesos_stateful.suite.processes import COLORS, Child
from mesos_stateful.suite.settings import SuiteSettings

log = logging.getLogger("suite")


def plan_children(s: SuiteSettings) -> list[list[Child]]:
    """The services in start order; each inner list starts together."""
    py = sys.executable
    data = Path(s.data_dir).resolve()

    def module(name: str) -> list[str]:
        return [py, "-m", f"mesos_stateful.{name}"]

    state = Child(
        "state",
        module("state"),
        {"STATEFUL_STATE_LISTEN": s.state, "STATEFUL_STATE_DATA_DIR": str(data)},
        grpc_address=s.state,
    )
    cluster = Child(
        "cluster",
        module("localcluster"),
        {
            "STATEFUL_CLUSTER_LISTEN": s.master,
            "STATEFUL_CLUSTER_MASTER_LISTEN": s.master,
            "STATEFUL_CLUSTER_AGENTS": str(s.agents),
            "STATEFUL_CLUSTER_WORK_DIR": str(data / "cluster"),
        },
        http_health_url=f"http://{s.master}/health",
    )
    gateway = Child(
        "gateway",
        module("gateway"),
        {"STATEFUL_GATEWAY_LISTEN": s.gateway, "STATEFUL_GATEWAY_STATE_ENDPOINT": s.state},
        grpc_address=s.gateway,
    )
    offers = Child(
        "offers",
        module("offers"),
        {
            "STATEFUL_OFFERS_LISTEN": s.offers,
            "STATEFUL_OFFERS_STATE_ENDPOINT": s.state,
            "STATEFUL_OFFERS_MASTER": s.master,
        },
        grpc_address=s.offers,
    )
    workloads = []
    for index, name in enumerate(s.workloads):
        address = f"127.0.0.1:{s.workload_base_port + index}"
        prefix = f"STATEFUL_{name.upper()}_"
        workloads.append(
            Child(
                name,
                module(f"workloads.{name}"),
                {f"{prefix}LISTEN": address, f"{prefix}STATE_ENDPOINT": s.state},
                grpc_address=address,
            )
        )
    lifecycle = Child(
        "lifecycle",
        module("lifecycle"),
        {
            "STATEFUL_LIFECYCLE_LISTEN": s.lifecycle,
            "STATEFUL_LIFECYCLE_STATE_ENDPOINT": s.state,
            "STATEFUL_LIFECYCLE_OFFERS_ENDPOINT": s.offers,
        },
        grpc_address=s.lifecycle,
    )
    groups = [[state, cluster], [gateway, offers, *workloads], [lifecycle]]
    for index, child in enumerate(c for group in groups for c in group):
        child.color = COLORS[index % len(COLORS)]
    return groups


async def run(settings: SuiteSettings) -> int:
    groups = plan_children(settings)
    started: list[Child] = []
    stop: asyncio.Future[object] = asyncio.ensure_future(wait_for_signal())
    try:
        for group in groups:
            for child in group:
                await child.start()
                started.append(child)
            waits: asyncio.Future[object] = asyncio.ensure_future(
                _all_healthy(group, settings.start_timeout_seconds)
            )
            done, _ = await asyncio.wait([waits, stop], return_when=asyncio.FIRST_COMPLETED)
            if stop in done:
                waits.cancel()
                return 130
            waits.result()
        log.info(
            "suite is up: statefulctl --endpoint %s (try: statefulctl workloads). Ctrl-C stops everything.",
            settings.gateway,
        )
        while not stop.done():
            dead = [c for c in started if not c.running]
            if dead:
                log.error("%s exited; stopping the suite", ", ".join(c.name for c in dead))
                return 1
            await asyncio.wait({stop}, timeout=1.0)
        return 0
    except RuntimeError as error:
        log.error("%s; stopping the suite", error)
        return 1
    finally:
        stop.cancel()
        log.info("stopping %d services", len(started))
        for group in reversed(groups):
            await asyncio.gather(*(c.stop(settings.stop_grace_seconds) for c in group if c in started))
        log.info("stopped")


async def _all_healthy(group: list[Child], timeout: float) -> object:
    return await asyncio.gather(*(c.wait_healthy(timeout) for c in group))


def main() -> None:
    settings = SuiteSettings.load()
    setup_logging("suite", settings.log_level)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    # The children inherit it: each writes its spans to <data_dir>/traces/<service>.jsonl.
    os.environ.setdefault(ENV_DIR, str(Path(settings.data_dir).resolve() / "traces"))
    sys.exit(asyncio.run(run(settings)))
