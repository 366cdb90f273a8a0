"""``deploy/compose.cluster.yaml`` started for real: its services against a Mesos master and an
etcd that are not theirs. Stand-ins here: the etcd and the local cluster's master of a
``compose.yaml`` project (only those two services), whose network the cluster project joins as an
external network (an override file), as a deployment joins the network its master and etcd are on.
Every service becomes healthy, the offers service subscribes to the master as the framework
``mesos-stateful`` and the public API lists the workloads. (Launching needs agents with Mesos's
Docker containerizer, which the local cluster does not emulate: the ExecutorInfo it would get is
checked in ``test_deploy_executor_container.py``.)"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from deploy.compose_helpers import COMPOSE_FILE, UP_TIMEOUT, Project, wait_until
from mesos_stateful.common.images import TAG
from mesos_stateful.testing.docker import free_subnet
from mesos_stateful.testing.ports import free_port

CLUSTER_FILE = COMPOSE_FILE.parent / "compose.cluster.yaml"


@pytest.fixture
def projects(
    docker_images: None, docker_client: docker.DockerClient, tmp_path: Path
) -> Iterator[tuple[Project, Project]]:
    suffix = secrets.token_hex(4)
    subnet = free_subnet(docker_client)
    base = {**os.environ, "STATEFUL_SUBNET": subnet, "STATEFUL_TAG": TAG}
    mesos = Project(
        f"msci{suffix}m", {**base, "STATEFUL_GATEWAY_PORT": str(free_port())}, "", subnet, docker_client
    )
    override = tmp_path / "external-network.yaml"
    override.write_text(f"networks:\n  default:\n    name: {mesos.name}_suite\n    external: true\n")
    port = free_port()
    env = {**base, "STATEFUL_GATEWAY_PORT": str(port), "MESOS_MASTER": f"{subnet}.10:5050"}
    env["STATEFUL_ETCD_ENDPOINTS"] = "etcd:2379"
    suite = Project(
        f"msci{suffix}s", env, f"127.0.0.1:{port}", subnet, docker_client, files=[CLUSTER_FILE, override]
    )
    try:
        yield mesos, suite
    finally:
        for project in (suite, mesos):
            with contextlib.suppress(Exception):
                project.compose("down", "-v", "--timeout", "10", timeout=300)


def test_cluster_compose_against_a_master_and_etcd(projects: tuple[Project, Project]) -> None:
    mesos, suite = projects
    up = mesos.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT), "etcd", "master")
    assert up.returncode == 0, f"{up.stderr[-4000:]}\n{mesos.diagnostics()}"
    up = suite.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT), timeout=UP_TIMEOUT + 60)
    assert up.returncode == 0, f"{up.stderr[-4000:]}\n{suite.diagnostics()}"
    services = {
        "state",
        "gateway",
        "offers",
        "lifecycle",
        "offers-standby",
        "lifecycle-standby",
        "redis",
        "mysql",
        "etcd-workload",
    }
    for service in services:
        assert suite.container(service).attrs["State"]["Health"]["Status"] == "healthy", service

    def subscribed() -> bool:
        with urllib.request.urlopen(f"http://{mesos.subnet}.10:5050/master/state", timeout=5) as answer:
            state: dict[str, Any] = json.load(answer)
        return any(f.get("name") == "mesos-stateful" and f.get("active") for f in state.get("frameworks", []))

    wait_until(subscribed, 60, "the offers service to subscribe to the master")

    def workloads() -> set[str]:
        listed = suite.ctl("-o", "json", "workloads")
        if listed.returncode != 0:
            return set()
        return {w["name"] for w in json.loads(listed.stdout).get("workloads", [])}

    wait_until(lambda: workloads() >= {"redis", "mysql", "etcd"}, 60, "the workloads through the gateway")
    down = suite.compose("down", "-v", "--timeout", "10")
    assert down.returncode == 0, down.stderr
    assert suite.leftovers() == []
