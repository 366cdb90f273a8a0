"""Issue 13's acceptance for metrics: a real Prometheus (Debian's ``prometheus``) scrapes the suite
started as `make run` starts it (every service on a metrics port of its own, from
STATEFUL_SUITE_METRICS_BASE_PORT), a Redis master's redis-server is killed with SIGKILL, and the
failover-duration histogram is read back through Prometheus's HTTP API, with the member gauges and
the task status updates that show the same failover.

Before Prometheus: every service's own /metrics page answers with the catalogue metrics that
service owns, and the suite's <data_dir>/prometheus.yml names every service and passes
``promtool check config``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from suite.suite_helpers import (
    create_when_up,
    ctl,
    processes_under,
    service_ports,
    start_suite,
    stop_suite,
    suite_env,
    wait_until,
)

from mesos_stateful.suite.main import PROMETHEUS_NAME, prometheus_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
# The services `make run` starts with one workload (redis) and two replicas of each controller.
SERVICES = ("state", "gateway", "offers-1", "offers-2", "redis", "lifecycle-1", "lifecycle-2")
# Catalogue metrics each service shows once the instance is created (labelled metrics appear at
# their first observation; the member gauges come from the gateway's collector).
OWNED = {
    "state": ("stateful_state_request_duration_seconds", "stateful_watch_lag_seconds"),
    "gateway": ("stateful_members", "stateful_replication_lag_bytes", "stateful_member_condition_failing"),
}
OFFERS_LEADER = (
    "stateful_offers_received_total",
    "stateful_launches_pending",
    "stateful_task_status_updates_total",
)
# The lifecycle leader's, after the create plan ran.
LIFECYCLE_LEADER = ("stateful_plans_total", "stateful_plan_step_duration_seconds")


def page(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
    return text


def names(text: str) -> set[str]:
    """Metric family names on a /metrics page (from its ``# TYPE`` lines)."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def query(port: int, expression: str) -> list[dict[str, Any]]:
    """An instant query through Prometheus's HTTP API (/api/v1/query): its result vector."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as reply:
        answer = json.loads(reply.read())
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def scalar(port: int, expression: str) -> float:
    """The value of a one-element result (0 when empty)."""
    result = query(port, expression)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else 0.0


def get(endpoint: str, name: str) -> dict[str, Any] | None:
    shown = ctl(endpoint, "get", name, "-o", "json")
    if shown.returncode != 0:
        return None
    instance: dict[str, Any] = json.loads(shown.stdout)["instance"]
    return instance


def master_of(instance: dict[str, Any]) -> dict[str, Any] | None:
    masters = [m for m in instance.get("members", []) if m.get("role") == "ROLE_MASTER"]
    return masters[0] if len(masters) == 1 else None


def test_install_script_installs_prometheus() -> None:
    # `make test` runs the script; here it only checks (root installs what is missing).
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/install_system_deps.sh")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert Path(PROMETHEUS).exists() and Path(PROMTOOL).exists()


def test_prometheus_scrapes_a_failover_from_the_suite(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    endpoint, env = suite_env(data_dir, ("redis",))
    (metrics_base,) = service_ports([len(SERVICES)])
    env["STATEFUL_SUITE_METRICS_BASE_PORT"] = str(metrics_base)
    log = tmp_path / "suite.log"
    runner = start_suite(env, log)
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        create_when_up(runner, log, endpoint)

        # Every service's metrics address, in the status file, on consecutive ports.
        status = json.loads((data_dir / "suite-status.json").read_text())["services"]
        targets = {name: status[name]["metrics"] for name in SERVICES}
        assert sorted(int(a.rpartition(":")[2]) for a in targets.values()) == list(
            range(metrics_base, metrics_base + len(SERVICES))
        ), targets
        assert status["cluster"]["metrics"] is None

        # Each /metrics answers; each service shows the metrics it owns.
        pages = {name: page(address) for name, address in targets.items()}
        for name, owned in OWNED.items():
            assert set(owned) <= names(pages[name]), (name, sorted(names(pages[name])))
        # Only the offers leader receives offers and status updates.
        assert any(set(OFFERS_LEADER) <= names(pages[n]) for n in ("offers-1", "offers-2")), [
            sorted(names(pages[n])) for n in ("offers-1", "offers-2")
        ]
        assert any(set(LIFECYCLE_LEADER) <= names(pages[n]) for n in ("lifecycle-1", "lifecycle-2")), [
            sorted(names(pages[n])) for n in ("lifecycle-1", "lifecycle-2")
        ]
        assert all("process_cpu_seconds_total" in names(text) for text in pages.values())

        # The suite's own scrape config names every service and is valid for Prometheus.
        written = (data_dir / PROMETHEUS_NAME).read_text()
        assert all(f'"{address}"' in written for address in targets.values()), written
        checked = subprocess.run(
            [PROMTOOL, "check", "config", str(data_dir / PROMETHEUS_NAME)], capture_output=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

        # A real Prometheus scraping every service every 0.5 s.
        config = tmp_path / "prometheus.yml"
        config.write_text(prometheus_config(targets, scrape_interval="500ms"))
        (web,) = service_ports([1])
        with (tmp_path / "prometheus.log").open("wb") as out:
            prometheus = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{web}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        running = prometheus

        def all_up() -> bool:
            assert running.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                result = query(web, 'up{job="stateful"}')
            except OSError:
                return False
            return len(result) == len(SERVICES) and all(r["value"][1] == "1" for r in result)

        wait_until(all_up, 60, "Prometheus to scrape every service")
        wait_until(
            lambda: scalar(web, 'stateful_members{instance="cache",role="master",state="running"}') == 1,
            30,
            "the master counted",
        )
        failed_before = scalar(web, 'sum(stateful_task_status_updates_total{state="failed"})')

        # SIGKILL the master's redis-server (the suite's own process, found by its host:port).
        before = get(endpoint, "cache")
        assert before is not None
        old = master_of(before)
        assert old is not None, before
        address = f"{old['host']}:{old['ports']['redis']}"
        pids = [
            int(line.partition(": ")[0])
            for line in processes_under(data_dir)
            if "redis-server" in line.partition(": ")[2].split(" ", 1)[0]
            and line.partition(": ")[2].split(" ")[1] == address
        ]
        assert len(pids) == 1, processes_under(data_dir)
        killed_at = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)

        def failed_over() -> bool:
            instance = get(endpoint, "cache")
            if instance is None:
                return False
            new = master_of(instance)
            return (
                new is not None
                and new["id"] != old["id"]
                and new.get("state") == "MEMBER_STATE_RUNNING"
                and instance.get("phase") == "INSTANCE_PHASE_RUNNING"
            )

        wait_until(failed_over, 120, "a new master")
        print(f"\nfailover seen through the API {time.monotonic() - killed_at:.2f} s after the kill")

        # The failover through Prometheus: its duration histogram, the master's task update,
        # one running master again.
        wait_until(
            lambda: scalar(web, 'sum(stateful_failover_duration_seconds_count{workload="redis"})') >= 1,
            30,
            "the failover-duration histogram in Prometheus",
        )
        seconds = scalar(web, 'sum(stateful_failover_duration_seconds_sum{workload="redis"})')
        assert 0 < seconds < 120, seconds
        print(f"failover duration in Prometheus: {seconds:.3f} s")
        wait_until(
            lambda: scalar(web, 'sum(stateful_task_status_updates_total{state="failed"})') > failed_before,
            30,
            "the master's TASK_FAILED counted",
        )
        wait_until(
            lambda: (
                scalar(web, 'sum(stateful_members{instance="cache",role="master"})') == 1
                and scalar(web, 'sum(stateful_members{instance="cache"})') == 3
            ),
            60,
            "one master among three members",
        )
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(30)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait(10)
        code = stop_suite(runner, 120)
        assert code == 0, log.read_text()[-5000:]
        wait_until(lambda: not processes_under(data_dir), 60, "every process of the suite to end")
