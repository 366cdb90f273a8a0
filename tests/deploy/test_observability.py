"""The observability override of the Compose suite (deploy/compose.observability.yaml) and what it
mounts (deploy/observability/), checked without any image: as Compose reads it (``docker compose
config``, no engine needed), as Prometheus's own ``promtool`` checks it, and the Grafana dashboard
against the metric catalogue (``mesos_stateful.common.metrics``).

- every service of compose.yaml gets the OTEL_* variables, and every one that serves metrics its
  ``STATEFUL_<SERVICE>_METRICS_LISTEN`` (the name its settings class reads, loaded for real);
- prometheus.yml passes ``promtool check config`` and has a job for every such service (and etcd);
- every metric in the dashboard's queries is in the catalogue, with labels it has, and every query
  parses as PromQL (``promtool check rules``).

promtool comes from Debian's ``prometheus`` package (scripts/install_system_deps.sh): missing, the
tests FAIL saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from deploy.compose_helpers import load_settings
from mesos_stateful.common import metrics
from mesos_stateful.common.settings import ServiceSettings
from mesos_stateful.console.settings import ConsoleSettings
from mesos_stateful.gateway.settings import GatewaySettings
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.localcluster.settings import AgentSettings, LocalClusterSettings
from mesos_stateful.offers.settings import OffersSettings
from mesos_stateful.state.settings import StateSettings
from mesos_stateful.workloads.etcd.settings import EtcdSettings
from mesos_stateful.workloads.mysql.settings import MysqlSettings
from mesos_stateful.workloads.redis.settings import RedisSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OBSERVABILITY = DEPLOY / "observability"
PROMETHEUS_YML = OBSERVABILITY / "prometheus.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "mesos-stateful.json"
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS = OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
STACK = {"jaeger", "prometheus", "grafana"}
METRICS_LISTEN = "0.0.0.0:9464"

# The program a Compose service runs (`python -m <module>`) -> the settings class it loads.
SETTINGS: dict[str, type[ServiceSettings]] = {
    "mesos_stateful.state": StateSettings,
    "mesos_stateful.gateway": GatewaySettings,
    "mesos_stateful.offers": OffersSettings,
    "mesos_stateful.lifecycle": LifecycleSettings,
    "mesos_stateful.workloads.redis": RedisSettings,
    "mesos_stateful.workloads.mysql": MysqlSettings,
    "mesos_stateful.workloads.etcd": EtcdSettings,
}
# The local stand-in for Mesos (master, agents) serves no /metrics: no variable, no scrape job.
NO_METRICS: dict[str, tuple[type[ServiceSettings], ...]] = {
    "mesos_stateful.localcluster": (LocalClusterSettings, AgentSettings),
    # The console is a read-only client of the gateway: no /metrics, and no spans of its own.
    "mesos_stateful.console": (ConsoleSettings,),
}
NO_SPANS = {"mesos_stateful.console"}
# Metrics the brief of the dashboard asks for (issue 13, part 4).
DASHBOARD_MUST_SHOW = {
    "stateful_failover_duration_seconds",
    "stateful_failure_detection_seconds",
    "stateful_members",
    "stateful_plan_step_duration_seconds",
    "stateful_callback_duration_seconds",
    "stateful_replication_lag_bytes",
    "stateful_launches_pending",
    "stateful_state_request_duration_seconds",
}
# Labels Prometheus adds to every series of prometheus.yml's jobs (job, the target's labels; with
# honor_labels a metric's own `instance` wins, one without gets the target's address).
TARGET_LABELS = {"job", "service", "component", "instance"}
# Grafana's variables, with values that make the queries plain PromQL for promtool.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$window": "15m",
    "$workload": ".*",
    "$instance": ".*",
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan",
}  # fmt: skip


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without variables the Compose files read (their defaults apply)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STATEFUL_"))}
    return {**env, **(extra or {})}


def compose_config(*files: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    docker = shutil.which("docker")
    assert docker, "the docker CLI is not installed: run `make docker-engine`"
    args = [a for name in files for a in ("-f", str(DEPLOY / name))]
    run = subprocess.run(
        [docker, "compose", *args, "-p", "msci-observability", "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, f"docker compose config failed (Compose v2: make docker-engine): {run.stderr}"
    config: dict[str, Any] = json.loads(run.stdout)
    return config


def observed() -> dict[str, Any]:
    return compose_config("compose.yaml", "compose.observability.yaml")


def module_of(service: dict[str, Any]) -> str:
    """The module of `python -m <module>` in a service's command (also inside `sh -c`)."""
    found = re.search(r"(?:^|\s)-m\s+(\S+)", " ".join(service.get("command") or []))
    assert found, f"no `python -m` in {service.get('command')}"
    return found.group(1)


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail(
            "promtool is missing (Debian's `prometheus` package): run scripts/install_system_deps.sh "
            "(as root; `make test` runs it)",
            pytrace=False,
        )
    return found


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def job_targets(job: dict[str, Any]) -> list[str]:
    return [t for static in job.get("static_configs", []) for t in static["targets"]]


# --- Compose -----------------------------------------------------------------------------------------


def test_override_adds_the_stack_and_keeps_the_suite() -> None:
    base = compose_config("compose.yaml")["services"]
    services = observed()["services"]
    assert set(services) == set(base) | STACK
    for name, service in base.items():
        merged = services[name]
        for key in ("image", "command", "healthcheck", "depends_on", "volumes", "networks"):
            assert merged.get(key) == service.get(key), f"the override changed {name}'s {key}"
        env = merged.get("environment") or {}
        for key, value in (service.get("environment") or {}).items():
            assert env.get(key) == value, f"the override lost {name}'s {key}"
        assert not set(merged.get("depends_on") or {}) & STACK, f"{name} must not wait for {STACK}"


def test_every_suite_service_exports_spans_to_jaeger() -> None:
    services = observed()["services"]
    suite = {
        n: s
        for n, s in services.items()
        if s["image"].startswith("mesos-stateful/suite:") and module_of(s) not in NO_SPANS
    }
    assert len(suite) >= 10, sorted(suite)
    for name, service in suite.items():
        env = service["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317", name
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc", name
        assert env["OTEL_SERVICE_NAME"], name
        assert f"service.instance.id={name}" in env["OTEL_RESOURCE_ATTRIBUTES"].split(","), name
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_always_on", name
    # A controller and its standby are one service in Jaeger, told apart by service.instance.id.
    assert suite["offers"]["environment"]["OTEL_SERVICE_NAME"] == "offers"
    assert suite["offers-standby"]["environment"]["OTEL_SERVICE_NAME"] == "offers"
    assert suite["lifecycle-standby"]["environment"]["OTEL_SERVICE_NAME"] == "lifecycle"


def test_otel_variables_point_the_suite_elsewhere() -> None:
    """README "Observability": an existing collector through the standard variables."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example.com:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=secret",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    services = compose_config("compose.yaml", "compose.observability.yaml", env=env)["services"]
    for name, service in services.items():
        if name in STACK or name == "etcd" or module_of(service) in NO_SPANS:
            continue
        for key, value in env.items():
            assert service["environment"][key] == value, (name, key)


def test_every_service_with_metrics_listens_where_it_reads() -> None:
    """The variable the override sets is the one the service's settings class reads: each is
    loaded from the service's merged environment (as the container would) and must bind 9464."""
    services = observed()["services"]
    with_metrics = set()
    for name, service in services.items():
        if name in STACK or name == "etcd":
            continue
        module = module_of(service)
        env = service["environment"]
        listens = {k for k in env if k.endswith("_METRICS_LISTEN")}
        if module in NO_METRICS:
            for cls in NO_METRICS[module]:
                assert "metrics_listen" not in cls.model_fields, (
                    f"{cls.__name__} has metrics_listen now: set it on {name} in "
                    "compose.observability.yaml and give it a job in prometheus.yml"
                )
            assert not listens, name
            continue
        assert module in SETTINGS, f"{name} runs {module}: which settings class reads its variables?"
        cls = SETTINGS[module]
        variable = f"{cls.model_config.get('env_prefix')}METRICS_LISTEN"
        assert listens == {variable}, (name, listens)
        assert env[variable] == METRICS_LISTEN, name
        settings = load_settings(cls, env)
        assert settings.model_dump()["metrics_listen"] == METRICS_LISTEN, name
        with_metrics.add(name)
    assert with_metrics >= {"state", "gateway", "offers", "lifecycle", "redis", "mysql", "etcd-workload"}


def test_stack_images_ports_and_mounts() -> None:
    services = observed()["services"]
    pinned = re.compile(r"^[a-z0-9./-]+:v?\d+\.\d+\.\d+$")
    expected = {
        "jaeger": "jaegertracing/all-in-one:",
        "prometheus": "prom/prometheus:",
        "grafana": "grafana/grafana:",
    }
    for name, prefix in expected.items():
        service = services[name]
        assert service["image"].startswith(prefix) and pinned.match(service["image"]), service["image"]
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] == "CMD", name
        for port in service["ports"]:
            assert port["host_ip"] == "127.0.0.1", (name, port)  # unauthenticated UIs: local by default
        for mount in service.get("volumes") or []:
            if mount["type"] == "bind":
                assert Path(mount["source"]).exists(), f"{name} mounts {mount['source']}, which is missing"
    jaeger = services["jaeger"]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert {p["target"] for p in jaeger["ports"]} == {4317, 4318, 16686}
    prometheus = services["prometheus"]
    mounts = {m["target"]: m["source"] for m in prometheus["volumes"]}
    assert Path(mounts["/etc/prometheus/prometheus.yml"]) == PROMETHEUS_YML
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana = services["grafana"]
    mounts = {m["target"]: m["source"] for m in grafana["volumes"] if m["type"] == "bind"}
    assert Path(mounts["/etc/grafana/provisioning"]) == OBSERVABILITY / "grafana" / "provisioning"
    [provider] = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert Path(mounts[provider["options"]["path"]]) == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_stack_ports_are_variables() -> None:
    env = {
        "STATEFUL_OBSERVABILITY_ADDRESS": "0.0.0.0",
        "STATEFUL_JAEGER_UI_PORT": "26686",
        "STATEFUL_PROMETHEUS_PORT": "19090",
        "STATEFUL_GRAFANA_PORT": "13000",
    }
    services = compose_config("compose.yaml", "compose.observability.yaml", env=env)["services"]
    published = {
        (name, p["target"]): (p["host_ip"], p["published"]) for name in STACK for p in services[name]["ports"]
    }
    assert published[("jaeger", 16686)] == ("0.0.0.0", "26686")
    assert published[("prometheus", 9090)] == ("0.0.0.0", "19090")
    assert published[("grafana", 3000)] == ("0.0.0.0", "13000")


# --- Prometheus --------------------------------------------------------------------------------------


def test_prometheus_config_passes_promtool() -> None:
    run = subprocess.run(
        [promtool(), "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_every_compose_service_with_metrics_has_a_scrape_job() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert config["global"]["scrape_interval"] == "5s"
    jobs = scrape_jobs()
    services = observed()["services"]
    scraped = set()
    for name, service in services.items():
        env = service.get("environment") or {}
        listens = [v for k, v in env.items() if k.endswith("_METRICS_LISTEN")]
        if not listens:
            continue
        port = listens[0].rpartition(":")[2]
        assert name in jobs, f"prometheus.yml has no job for {name}"
        assert job_targets(jobs[name]) == [f"{name}:{port}"], name
        assert jobs[name].get("honor_labels") is True, f"{name}: the metrics' own label `instance` must win"
        scraped.add(name)
    assert scraped, "no service has a metrics address"
    # etcd serves its own metrics on its client port.
    assert job_targets(jobs["etcd"]) == ["etcd:2379"]
    assert "--listen-client-urls=http://0.0.0.0:2379" in services["etcd"]["command"]
    # No job points at a service that does not exist.
    for job in jobs.values():
        for target in job_targets(job):
            host = target.rpartition(":")[0]
            assert host in services or host == "localhost", f"{job['job_name']} scrapes {target}"


# --- Grafana -----------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard: the panels' targets and the variables' selectors."""
    board = dashboard()
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert found, variable["query"]
            queries.append(found.group(1))
    return queries


def catalogue() -> dict[str, tuple[str, set[str]]]:
    """Series names the catalogue's metrics expose -> (metric name, its label names)."""
    names: dict[str, tuple[str, set[str]]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        labels = set(value._labelnames)  # the label names given to the constructor
        for family in value.describe():
            suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
            assert family.type in suffixes, family
            for suffix in suffixes[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                names[family.name + suffix] = (family.name, labels | extra)
    return names


def plain(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    assert "$" not in query, f"unknown Grafana variable in {query}"
    return query


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    prometheus = next(d for d in datasources if d["type"] == "prometheus")
    assert prometheus["url"] == "http://prometheus:9090"
    assert next(d for d in datasources if d["type"] == "jaeger")["url"] == "http://jaeger:16686"
    [selector] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert selector["query"] == "prometheus"
    assert selector["current"]["value"] == prometheus["uid"]
    cells: set[tuple[int, int]] = set()
    graphs = 0
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        graphs += 1
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
    assert graphs >= 12


def test_dashboard_uses_only_catalogue_metrics_and_labels() -> None:
    known = catalogue()
    shown = set()
    for query in dashboard_queries():
        text = plain(query)
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # strings out (regexes of label matchers)
        used_labels: set[str] = set()
        for selector in re.findall(r"\{([^}]*)\}", bare):
            used_labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", selector))
        for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", bare):
            used_labels |= {label.strip() for label in grouping.split(",") if label.strip()}
        stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)", " ", bare)
        names = {
            m.group(1)
            for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", stripped)
            if m.group(1).lower() not in PROMQL_WORDS
        }
        assert names, f"no metric in {query}"
        allowed_labels = set(TARGET_LABELS)
        for name in names:
            assert name in known, f"{name} (in {query}) is not in services/mesos_stateful/common/metrics.py"
            shown.add(known[name][0])
            allowed_labels |= known[name][1]
        assert used_labels <= allowed_labels, (
            f"{query}: labels {used_labels - allowed_labels} not on its metrics"
        )
    assert shown >= DASHBOARD_MUST_SHOW, f"the dashboard does not show {DASHBOARD_MUST_SHOW - shown}"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{n}", "expr": plain(q)}
                    for n, q in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    run = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
