"""Each service's /metrics (prometheus_client's server, ``serve_metrics``) answers with the
catalogue metrics it owns, observed on a real state service and etcd: request latency by method
and outcome, etcd errors, watch lag; the member gauges of the gateway's collector; the offers
scheduler's pending launches by reason."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from suite.suite_helpers import service_ports, suite_env

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.common.metrics_server import serve_metrics
from mesos_stateful.gateway.member_metrics import MemberMetrics
from mesos_stateful.gateway.settings import GatewaySettings
from mesos_stateful.offers.scheduler import PENDING_REASONS, PendingLaunches, pending_reason
from mesos_stateful.suite.main import plan_children, prometheus_config
from mesos_stateful.suite.settings import SuiteSettings
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.poll import eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metrics_port() -> Iterator[int]:
    server, port = serve_metrics("127.0.0.1:0")
    assert server is not None and port > 0
    yield port
    server.shutdown()


def scrape(port: int) -> Samples:
    """Every sample of the /metrics page: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def poll(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    await eventually(check, what, timeout, interval=0.05)


def test_each_service_page_holds_its_own_metrics_with_fixed_vocabularies_from_zero() -> None:
    """A service's /metrics shows its part of the catalogue (and the process collectors), not
    every other service's metrics at 0; counters of a fixed label vocabulary start at 0."""
    import mesos_stateful.state.request_metrics  # noqa: F401  (its etcd error kinds)
    from mesos_stateful.common import metrics

    pages: dict[str, Samples] = {}
    for name, own in (("offers", metrics.OFFERS), ("state", metrics.STATE), ("lifecycle", metrics.LIFECYCLE)):
        server, port = serve_metrics("127.0.0.1:0", own)
        assert server is not None
        try:
            pages[name] = scrape(port)
        finally:
            server.shutdown()
    names = {page: {n for n, _ in samples} for page, samples in pages.items()}
    assert "stateful_offers_received_total" in names["offers"]
    assert "stateful_offers_received_total" not in names["state"] | names["lifecycle"]
    assert not any(n.startswith("stateful_failover") for n in names["offers"] | names["state"])
    assert all("process_cpu_seconds_total" in n for n in names.values())
    for reason in ("nothing_queued", "unfit", "maintenance"):
        assert value(pages["offers"], "stateful_offers_declined_total", reason=reason) is not None
    for kind in ("range", "txn", "lease_keepalive", "watch", "other"):
        assert value(pages["state"], "stateful_etcd_errors_total", kind=kind) is not None


def test_metrics_off_by_default_and_listen_checked() -> None:
    assert serve_metrics("") == (None, 0)
    assert GatewaySettings.load([]).metrics_listen == ""
    with pytest.raises(SystemExit, match="metrics_listen"):
        GatewaySettings.load(["--metrics-listen", "nothing"])


async def test_state_service_requests_watch_lag_and_etcd_errors(
    metrics_port: int,
    etcd: EtcdProcess,
    state_client: StateClient,
) -> None:
    before = scrape(metrics_port)

    def count(samples: Samples, method: str, outcome: str) -> float:
        found = value(
            samples, "stateful_state_request_duration_seconds_count", method=method, outcome=outcome
        )
        return found or 0.0

    watched: list[spb.WatchResponse] = []

    _, revision = await state_client.list(spb.KIND_MEMBER)

    async def watch() -> None:
        async for event in state_client.watch([spb.KIND_MEMBER], start_revision=revision + 1):
            watched.append(event)

    watcher = asyncio.create_task(watch())
    try:
        member = T.Member(id="m-0", instance="m", ordinal=0)
        member.updated_at.GetCurrentTime()
        await state_client.put(member)
        assert await state_client.find(spb.KIND_INSTANCE, "nosuch") is None
        await poll(lambda: bool(watched), "the watch event")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    # An aborted call's status reaches the client before the interceptor's ``finally`` observes
    # it: poll the page.
    await poll(
        lambda: count(scrape(metrics_port), "Get", "NOT_FOUND") >= count(before, "Get", "NOT_FOUND") + 1,
        "the Get NOT_FOUND counted",
    )
    after = scrape(metrics_port)
    assert count(after, "Put", "ok") >= count(before, "Put", "ok") + 1
    lag = value(after, "stateful_watch_lag_seconds_count") or 0.0
    assert lag >= (value(before, "stateful_watch_lag_seconds_count") or 0.0) + 1

    # etcd gone: the write fails UNAVAILABLE and the etcd error is counted.
    await etcd.kill()
    with pytest.raises(errors.StatefulError):
        await state_client.put(T.Member(id="m-1", instance="m", ordinal=1))
    failed = scrape(metrics_port)
    assert count(failed, "Put", "UNAVAILABLE") >= 1
    assert sum(v for (n, _), v in failed.items() if n == "stateful_etcd_errors_total") > sum(
        v for (n, _), v in before.items() if n == "stateful_etcd_errors_total"
    )


async def test_member_gauges_follow_the_stored_members(
    metrics_port: int,
    state_client: StateClient,
) -> None:
    instance = T.Instance()
    instance.spec.name = "gauged"
    instance.spec.workload = "redis"
    await state_client.put(instance)
    master = T.Member(id="gauged-0", instance="gauged", role=T.ROLE_MASTER, state=T.MEMBER_STATE_RUNNING)
    replica = T.Member(
        id="gauged-1", instance="gauged", ordinal=1, role=T.ROLE_SLAVE, state=T.MEMBER_STATE_RUNNING
    )
    replica.health.lag = 42
    replica.health.conditions.add(type=T.CONDITION_TYPE_CAUGHT_UP, ok=False)
    replica.health.conditions.add(type=T.CONDITION_TYPE_REACHABLE, ok=True)
    await state_client.put(master)
    collector = asyncio.create_task(MemberMetrics(state_client).run())
    try:

        def members(role: str) -> float | None:
            return value(
                scrape(metrics_port),
                "stateful_members",
                workload="redis",
                instance="gauged",
                role=role,
                state="running",
            )

        await poll(lambda: members("master") == 1, "the master counted")
        await state_client.put(replica)  # after the collector's list: seen through its watch
        await poll(lambda: members("slave") == 1, "the replica counted")
        samples = scrape(metrics_port)
        assert value(samples, "stateful_replication_lag_bytes", instance="gauged", member="gauged-1") == 42
        failing = "stateful_member_condition_failing"
        assert value(samples, failing, instance="gauged", member="gauged-1", condition="caught-up") == 1
        assert value(samples, failing, instance="gauged", member="gauged-1", condition="reachable") == 0
        await state_client.delete(spb.KIND_MEMBER, "gauged/gauged-1")
        await poll(lambda: members("slave") is None, "the deleted replica's gauges removed")
        assert (
            value(
                scrape(metrics_port), "stateful_replication_lag_bytes", instance="gauged", member="gauged-1"
            )
            is None
        )
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector


def test_pending_launches_by_reason(metrics_port: int) -> None:
    assert pending_reason("waiting for offers") == "no_offers"
    assert pending_reason("waiting: 2 agents have too little memory") == "no_fit"
    assert pending_reason("waiting for agent a1 that holds volume v1") == "volume"
    assert pending_reason("waiting for volume v1 to be offered by agent a1 (still in use)") == "volume"
    assert pending_reason("waiting: the state service is unavailable (down)") == "state_unavailable"
    pending = PendingLaunches({"a": "waiting for offers"})
    pending["b"] = "waiting: no ports"
    pending["c"] = "waiting: no ports"

    def gauges() -> dict[str, float | None]:
        samples = scrape(metrics_port)
        return {r: value(samples, "stateful_launches_pending", reason=r) for r in PENDING_REASONS}

    assert gauges() == {"no_offers": 1, "no_fit": 2, "volume": 0, "state_unavailable": 0, "other": 0}
    pending.pop("b", None)
    del pending["a"]
    assert gauges()["no_fit"] == 1 and gauges()["no_offers"] == 0
    pending.clear()
    assert set(gauges().values()) == {0}


def test_make_run_gives_every_service_a_metrics_port_checked_by_its_preflight(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    _, env = suite_env(data_dir, ("redis", "mysql"))
    (base,) = service_ports([9])
    env["STATEFUL_SUITE_METRICS_BASE_PORT"] = str(base)
    names = ["state", "gateway", "offers-1", "offers-2", "redis", "mysql", "lifecycle-1", "lifecycle-2"]
    with patched_environ(env):
        children = {c.name: c for group in plan_children(SuiteSettings.load([])) for c in group}
    assert children["cluster"].metrics_address is None
    for index, name in enumerate(names):
        address = f"127.0.0.1:{base + index}"
        assert children[name].metrics_address == address
        prefix = name.split("-")[0].upper()
        assert children[name].env[f"STATEFUL_{prefix}_METRICS_LISTEN"] == address
    # A metrics port in use: the runner refuses to start, naming the setting that moves it.
    with socket.socket() as held:
        held.bind(("127.0.0.1", base + 4))
        held.listen()
        done = subprocess.run(
            [sys.executable, "-m", "mesos_stateful.suite"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {base + 4} (redis metrics) is in use" in done.stdout + done.stderr
    assert "STATEFUL_SUITE_METRICS_BASE_PORT" in done.stdout + done.stderr
    assert not (data_dir / "suite-status.json").exists()


def test_prometheus_config_is_valid_for_promtool(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config({"state": "127.0.0.1:7500", "gateway": "127.0.0.1:7501"}))
    checked = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "honor_labels: true" in config.read_text()


@contextlib.contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
