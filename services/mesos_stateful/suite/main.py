"""Run the whole suite locally: etcd (owned by the state service), state, local cluster, offers,
gateway, lifecycle, the workload services and the web console. A service that exits is restarted
with backoff (``processes.Supervisor``), and so is one that stops answering its liveness probes (a hung
process: killed with SIGKILL first); only Ctrl-C / SIGTERM stops the suite: the services in
reverse order, the local cluster last but one, killing every member it started, so nothing is
left behind.
Before anything starts, the data dir is locked (one suite per data dir) and every port checked
(``preflight``)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.common.server import wait_for_signal
from mesos_stateful.common.tracing import ENV_DIR, check_otlp_settings
from mesos_stateful.localcluster.settings import LocalClusterSettings
from mesos_stateful.state.settings import StateSettings
from mesos_stateful.suite.preflight import (
    Port,
    PreflightError,
    check_docker,
    check_ports,
    lock_data_dir,
    port_error,
)
from mesos_stateful.suite.processes import COLORS, Child, Supervisor
from mesos_stateful.suite.settings import SuiteSettings

log = logging.getLogger("suite")

STATUS_NAME = "suite-status.json"


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
        {
            "STATEFUL_GATEWAY_LISTEN": s.gateway,
            "STATEFUL_GATEWAY_STATE_ENDPOINT": s.state,
            # Instances created without a runtime get the suite's (`--runtime docker`).
            "STATEFUL_GATEWAY_DEFAULT_RUNTIME": s.runtime,
        },
        grpc_address=s.gateway,
    )

    def replica_addresses(first: str) -> list[str]:
        # Replica i listens on the first address's port + i (7200, 7201, ...).
        host, _, port = first.rpartition(":")
        return [f"{host}:{int(port) + i}" for i in range(s.controller_replicas)]

    # Offers and lifecycle run as a leader and standbys (a lease in state); only the offers
    # leader holds the Mesos framework connection, and lifecycle finds it from its lease.
    offers = [
        Child(
            f"offers-{i + 1}",
            module("offers"),
            {
                "STATEFUL_OFFERS_LISTEN": address,
                "STATEFUL_OFFERS_STATE_ENDPOINT": s.state,
                "STATEFUL_OFFERS_MASTER": s.master,
            },
            grpc_address=address,
        )
        for i, address in enumerate(replica_addresses(s.offers))
    ]
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
    lifecycle = [
        Child(
            f"lifecycle-{i + 1}",
            module("lifecycle"),
            {
                "STATEFUL_LIFECYCLE_LISTEN": address,
                "STATEFUL_LIFECYCLE_STATE_ENDPOINT": s.state,
                "STATEFUL_LIFECYCLE_OFFERS_ENDPOINT": s.offers,
            },
            grpc_address=address,
        )
        for i, address in enumerate(replica_addresses(s.lifecycle))
    ]
    console_env = {
        "STATEFUL_CONSOLE_LISTEN": s.console,
        "STATEFUL_CONSOLE_GATEWAY_ENDPOINT": s.gateway,
    }
    token = os.environ.get("STATEFUL_GATEWAY_AUTH_TOKEN")
    if token and not os.environ.get("STATEFUL_CONSOLE_TOKEN"):
        console_env["STATEFUL_CONSOLE_TOKEN"] = token  # the same bearer token the gateway checks
    console = Child("console", module("console"), console_env, http_health_url=f"http://{s.console}/health")
    groups = [[state, cluster], [gateway, *offers, *workloads], [*lifecycle, console]]
    for index, child in enumerate(c for group in groups for c in group):
        child.color = COLORS[index % len(COLORS)]
    if s.metrics_base_port:
        # Consecutive ports in start order (the local cluster serves none): state, gateway,
        # offers-1.., the workload services, lifecycle-1..; each as its STATEFUL_<X>_METRICS_LISTEN.
        served = [c for group in groups for c in group if c is not cluster and c is not console]
        for index, child in enumerate(served):
            child.metrics_address = f"127.0.0.1:{s.metrics_base_port + index}"
            prefix = child.name.split("-")[0].upper()
            child.env[f"STATEFUL_{prefix}_METRICS_LISTEN"] = child.metrics_address
    return groups


PROMETHEUS_NAME = "prometheus.yml"


def prometheus_config(targets: Mapping[str, str], scrape_interval: str = "5s") -> str:
    """A Prometheus configuration scraping every service: ``targets`` maps a service name (its
    ``service`` label) to its metrics ``host:port``. ``honor_labels``: the suite's metrics have
    an ``instance`` label of their own (the stateful instance's name), which must not be renamed
    ``exported_instance``; a metric without one gets the target's address as usual.
    https://prometheus.io/docs/prometheus/latest/configuration/configuration/#scrape_config"""
    lines = [
        "# Prometheus scrape config of the suite's services (written by `make run`).",
        "# prometheus --config.file=<data_dir>/prometheus.yml",
        "global:",
        f"  scrape_interval: {scrape_interval}",
        "scrape_configs:",
        "  - job_name: stateful",
        "    honor_labels: true",
        "    static_configs:",
    ]
    for name, address in targets.items():
        lines.append(f"      - targets: [{json.dumps(address)}]")
        lines.append(f"        labels: {{service: {json.dumps(name)}}}")
    return "\n".join(lines) + "\n"


def _write_prometheus_config(settings: SuiteSettings, groups: list[list[Child]]) -> Path | None:
    """<data_dir>/prometheus.yml for the services' metrics addresses (None: metrics are off)."""
    targets = {c.name: c.metrics_address for group in groups for c in group if c.metrics_address}
    if not targets:
        return None
    path = Path(settings.data_dir).resolve() / PROMETHEUS_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(prometheus_config(targets))
    tmp.replace(path)
    return path


async def run(settings: SuiteSettings, lock_fd: int | None = None) -> int:
    """Start the services group by group (each group once the previous one is healthy), keep
    every one running (an exited service is restarted with backoff, never taking others down),
    and stop them in reverse order on SIGINT / SIGTERM, the only way the suite stops."""
    groups = plan_children(settings)
    for child in (c for group in groups for c in group):
        if child.name == "cluster":
            # Its members must outlive it if the runner dies (agent recovery re-adopts them).
            child.parent_death_signal = "KILL"
        if lock_fd is not None:
            child.pass_fds = (lock_fd,)
    stopping = asyncio.Event()
    policy = settings.restart_policy()
    liveness = settings.liveness_policy()
    status_path = _status_path(settings)
    prometheus = _write_prometheus_config(settings, groups)
    supervisors: list[Supervisor] = []
    started: list[list[Supervisor]] = []

    def write_status() -> None:
        _write_status(status_path, supervisors)

    stop: asyncio.Future[object] = asyncio.ensure_future(wait_for_signal())
    try:
        for group in groups:
            members = [Supervisor(c, policy, stopping, write_status, liveness) for c in group]
            supervisors.extend(members)
            started.append(members)
            for supervisor in members:
                supervisor.start()
            waits: asyncio.Future[object] = asyncio.ensure_future(
                _all_healthy(members, settings.start_timeout_seconds)
            )
            done, _ = await asyncio.wait([waits, stop], return_when=asyncio.FIRST_COMPLETED)
            if stop in done:
                waits.cancel()
                return 130
        # Every service at once (one of an earlier group may have been restarted meanwhile).
        waits = asyncio.ensure_future(_all_healthy(supervisors, settings.start_timeout_seconds))
        done, _ = await asyncio.wait([waits, stop], return_when=asyncio.FIRST_COMPLETED)
        if stop in done:
            waits.cancel()
            return 130
        log.info(
            "suite is up: statefulctl --endpoint %s (try: statefulctl workloads); members run as %s. "
            "Ctrl-C stops everything.",
            settings.gateway,
            "Docker containers" if settings.runtime == "docker" else "processes",
        )
        log.info("console: http://%s/", settings.console)
        if prometheus is not None:
            log.info(
                "metrics: %s; Prometheus scrape config: %s",
                ", ".join(
                    f"{c.name} http://{c.metrics_address}/metrics"
                    for group in groups
                    for c in group
                    if c.metrics_address
                ),
                prometheus,
            )
        await stop
        return 0
    finally:
        stop.cancel()
        stopping.set()
        log.info("stopping %d services", len(supervisors))
        for members in reversed(started):
            await asyncio.gather(*(s.stop(settings.stop_grace_seconds) for s in members))
        restarted = ", ".join(f"{s.child.name} {s.restarts}" for s in supervisors if s.restarts)
        log.info("stopped%s", f" (restarts: {restarted})" if restarted else "")
        write_status()


async def _all_healthy(supervisors: list[Supervisor], timeout: float) -> object:
    """Wait until every one is healthy; say which are still not, every ``timeout`` seconds."""
    while True:
        pending = [s for s in supervisors if not s.healthy.is_set()]
        if not pending:
            return None
        waits = [asyncio.ensure_future(s.healthy.wait()) for s in pending]
        done, not_done = await asyncio.wait(waits, timeout=timeout)
        for w in not_done:
            w.cancel()
        if not done:
            log.warning(
                "still waiting for %s to become healthy (%s); Ctrl-C stops the suite",
                ", ".join(s.child.name for s in pending),
                ", ".join(f"{s.child.name}: {s.restarts} restarts" for s in pending),
            )


def _status_path(settings: SuiteSettings) -> Path:
    return Path(settings.data_dir).resolve() / STATUS_NAME


def _write_status(path: Path, supervisors: list[Supervisor]) -> None:
    """<data_dir>/suite-status.json: the runner's pid and, per service, pid, restarts, last exit
    code, health (the latest probe answered SERVING), unanswered liveness probes in a row and
    kills for not answering them (for people and tests; written on every change)."""
    status = {"pid": os.getpid(), "services": {s.child.name: s.status() for s in supervisors}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1))
    tmp.replace(path)


def _ports(settings: SuiteSettings, groups: list[list[Child]]) -> list[Port]:
    """Every address the suite will listen on, with the setting that moves it."""
    ports: list[Port] = []
    for child in (c for group in groups for c in group):
        address = child.listen_address
        if address is None:
            continue
        host, _, port = address.rpartition(":")
        base = child.name.split("-")[0]
        if base == "cluster":
            setting = "STATEFUL_SUITE_MASTER"
        elif base in settings.workloads:
            setting = "STATEFUL_SUITE_WORKLOAD_BASE_PORT"
        else:
            setting = f"STATEFUL_SUITE_{base.upper()}"
        ports.append(Port(host, int(port), child.name, setting))
        if child.metrics_address is not None:
            host, _, port = child.metrics_address.rpartition(":")
            ports.append(Port(host, int(port), f"{child.name} metrics", "STATEFUL_SUITE_METRICS_BASE_PORT"))
    state = StateSettings.load([])
    if not state.etcd_endpoints:
        for name, number in (("client", state.embedded_client_port), ("peer", state.embedded_peer_port)):
            ports.append(
                Port(
                    "127.0.0.1",
                    number,
                    f"embedded etcd {name}",
                    f"STATEFUL_STATE_EMBEDDED_{name.upper()}_PORT",
                )
            )
    cluster = LocalClusterSettings.load([])
    if cluster.agent_port:
        first = ipaddress.IPv4Address(cluster.agent_ip_base)
        for index in range(settings.agents):
            ports.append(
                Port(
                    str(first + index),
                    cluster.agent_port,
                    f"agent {index} executor API",
                    "STATEFUL_CLUSTER_AGENT_IP_BASE",
                )
            )
    return ports


def member_images(settings: SuiteSettings) -> list[str]:
    """The images members of the suite's workloads run from by default (each workload service's
    ``default_image`` setting, as it will read it from this environment)."""
    from mesos_stateful.workloads.etcd.settings import EtcdSettings
    from mesos_stateful.workloads.mysql.settings import MysqlSettings
    from mesos_stateful.workloads.redis.settings import RedisSettings

    known: dict[str, type[RedisSettings | MysqlSettings | EtcdSettings]] = {
        "redis": RedisSettings,
        "mysql": MysqlSettings,
        "etcd": EtcdSettings,
    }
    images: list[str] = []
    for name in settings.workloads:
        workload = known.get(name)
        if workload is not None:
            image = workload.load([]).default_image
            if image not in images:
                images.append(image)
    return images


def preflight(settings: SuiteSettings) -> int:
    """The lock on the data dir, every port, and with ``--runtime docker`` the Docker engine and
    the members' images: PreflightError before anything is started."""
    otlp = check_otlp_settings()
    if otlp:
        raise PreflightError(otlp)
    fd = lock_data_dir(Path(settings.data_dir).resolve())
    checked = check_ports(_ports(settings, plan_children(settings)))
    if checked.in_use:
        os.close(fd)
        raise PreflightError(port_error(checked.in_use))
    if settings.runtime == "docker":
        try:
            check_docker(member_images(settings), settings.docker_timeout_seconds)
        except PreflightError:
            os.close(fd)
            raise
    for p in checked.busy:
        log.warning(
            "port %d (%s) is still held by a closing connection; %s is retried until it is free",
            p.port,
            p.owner,
            p.owner,
        )
    return fd


def main() -> None:
    settings = SuiteSettings.load()
    setup_logging("suite", settings.log_level)
    try:
        lock_fd = preflight(settings)
    except PreflightError as error:
        log.error("%s", error)
        sys.exit(2)
    # The children inherit it: each writes its spans to <data_dir>/traces/<service>.jsonl.
    os.environ.setdefault(ENV_DIR, str(Path(settings.data_dir).resolve() / "traces"))
    sys.exit(asyncio.run(run(settings, lock_fd)))
