"""The Compose files as Compose reads them (``docker compose config``, no engine needed): every
service from the images ``make images`` builds (no build), a health check, a restart policy and
healthy dependencies; the agents with the Docker socket and the executor's Docker variables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from deploy.compose_helpers import load_settings
from mesos_stateful.common.images import ALL_IMAGES, ETCD_IMAGE, SUITE_IMAGE
from mesos_stateful.console.settings import ConsoleSettings
from mesos_stateful.gateway.settings import GatewaySettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERVICES = {
    "etcd",
    "state",
    "gateway",
    "offers",
    "lifecycle",
    "offers-standby",  # a standby for each controller
    "lifecycle-standby",
    "redis",
    "mysql",
    "etcd-workload",
}
AGENTS = {"agent-0", "agent-1", "agent-2"}


def compose_config(name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    docker = shutil.which("docker")
    assert docker, "the docker CLI is not installed: run `make docker-engine`"
    run = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / name), "-p", "msci-config", "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, f"docker compose config failed (Compose v2: make docker-engine): {run.stderr}"
    config: dict[str, Any] = json.loads(run.stdout)
    return config


def check_service(name: str, service: dict[str, Any]) -> None:
    assert "build" not in service, f"{name} is built by Compose; images come from `make images`"
    assert service["image"] in ALL_IMAGES, f"{name}: {service['image']} is not one of {ALL_IMAGES}"
    assert service.get("restart") == "unless-stopped", name
    test = service.get("healthcheck", {}).get("test")
    assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    for dependency, condition in (service.get("depends_on") or {}).items():
        assert condition["condition"] == "service_healthy", (name, dependency)


def test_local_compose() -> None:
    config = compose_config("compose.yaml")
    services = config["services"]
    assert set(services) == SERVICES | {"master", "console"} | AGENTS
    for name, service in services.items():
        check_service(name, service)
    assert services["etcd"]["image"] == ETCD_IMAGE
    assert {services[n]["image"] for n in services if n != "etcd"} == {SUITE_IMAGE}
    [published] = services["gateway"]["ports"]
    assert (published["target"], published["published"]) == (7000, "7000")
    addresses = set()
    for name in AGENTS:
        agent = services[name]
        env = agent["environment"]
        assert env["STATEFUL_EXECUTOR_DOCKER_NETWORK"] == "container:self"
        assert env["STATEFUL_EXECUTOR_DOCKER_HOST_PATHS"] == "auto"
        mounts = {(m["type"], m["source"], m["target"]) for m in agent["volumes"]}
        assert ("bind", "/var/run/docker.sock", "/var/run/docker.sock") in mounts
        assert ("volume", f"{name}-work", "/var/lib/mesos-stateful/agent") in mounts
        assert agent["depends_on"]["master"]["condition"] == "service_healthy"
        address = agent["networks"]["suite"]["ipv4_address"]
        assert address == env["AGENT_IP"]
        addresses.add(address)
    assert len(addresses) == len(AGENTS)
    assert set(config["volumes"]) >= {"etcd-data", "agent-0-work", "agent-1-work", "agent-2-work"}


def test_console_is_a_service_of_the_suite() -> None:
    """The console: the suite's image, its port published (STATEFUL_CONSOLE_PORT, default 8080),
    the gateway's address on the compose network, healthy after the gateway, an HTTP health check
    on the port it listens on; its settings, loaded from its environment as in the container,
    reach the gateway's listen port."""
    services = compose_config("compose.yaml")["services"]
    console = services["console"]
    assert console["image"] == SUITE_IMAGE
    assert console["command"] == ["python", "-m", "mesos_stateful.console"]
    [published] = console["ports"]
    assert (published["target"], published["published"]) == (8080, "8080")
    assert set(console["depends_on"]) == {"gateway"}
    env = console["environment"]
    settings = load_settings(ConsoleSettings, env)
    listen_port = int(settings.listen.rpartition(":")[2])
    assert settings.listen.startswith("0.0.0.0:") and listen_port == published["target"]
    gateway_listen = services["gateway"]["environment"]["STATEFUL_GATEWAY_LISTEN"]
    assert settings.gateway_endpoint == f"gateway:{gateway_listen.rpartition(':')[2]}"
    assert console["healthcheck"]["test"][-1] == f"http://127.0.0.1:{listen_port}/health"
    # `STATEFUL_GATEWAY_AUTH_TOKEN:` with no value: taken from the shell running compose, else unset.
    assert env["STATEFUL_GATEWAY_AUTH_TOKEN"] is None and settings.token is None, "no auth unless asked"
    assert services["gateway"]["environment"]["STATEFUL_GATEWAY_AUTH_TOKEN"] is None
    moved = compose_config("compose.yaml", {"STATEFUL_CONSOLE_PORT": "18080"})["services"]["console"]
    assert moved["ports"][0]["published"] == "18080"


def test_the_gateway_token_reaches_the_console() -> None:
    """One variable: the gateway wants the token, the console sends it (its settings read the
    gateway's variable when STATEFUL_CONSOLE_TOKEN is not set)."""
    services = compose_config("compose.yaml", {"STATEFUL_GATEWAY_AUTH_TOKEN": "s3cret"})["services"]
    gateway = load_settings(GatewaySettings, services["gateway"]["environment"])
    console = load_settings(ConsoleSettings, services["console"]["environment"])
    assert gateway.auth_token == "s3cret" and console.token == "s3cret"


def test_local_compose_variables() -> None:
    config = compose_config("compose.yaml", {"STATEFUL_GATEWAY_PORT": "17000", "STATEFUL_SUBNET": "10.99.7"})
    services = config["services"]
    assert services["gateway"]["ports"][0]["published"] == "17000"
    assert services["agent-1"]["networks"]["suite"]["ipv4_address"] == "10.99.7.21"
    assert config["networks"]["suite"]["ipam"]["config"] == [{"subnet": "10.99.7.0/24"}]


def test_cluster_compose() -> None:
    env = {"MESOS_MASTER": "10.0.0.5:5050", "STATEFUL_ETCD_ENDPOINTS": "10.0.0.6:2379,10.0.0.7:2379"}
    services = compose_config("compose.cluster.yaml", env)["services"]
    assert set(services) == SERVICES - {"etcd"}
    for name, service in services.items():
        check_service(name, service)
    offers = services["offers"]["environment"]
    assert offers["STATEFUL_OFFERS_MASTER"] == "10.0.0.5:5050"
    assert offers["STATEFUL_OFFERS_EXECUTOR_IMAGE"] == SUITE_IMAGE
    assert services["state"]["environment"]["STATEFUL_STATE_ETCD_ENDPOINTS"] == env["STATEFUL_ETCD_ENDPOINTS"]


@pytest.mark.parametrize("missing", ["MESOS_MASTER", "STATEFUL_ETCD_ENDPOINTS"])
def test_cluster_compose_names_what_is_missing(missing: str) -> None:
    docker = shutil.which("docker")
    assert docker
    env = {k: v for k, v in os.environ.items() if k not in ("MESOS_MASTER", "STATEFUL_ETCD_ENDPOINTS")}
    env.update({"MESOS_MASTER": "m:5050", "STATEFUL_ETCD_ENDPOINTS": "e:2379"})
    del env[missing]
    run = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "compose.cluster.yaml"), "-p", "msci-config", "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0
    assert f"set {missing}" in run.stderr
