"""The console as a service of ``deploy/compose.yaml`` on the real Docker engine: ``up -d --wait
console`` brings up the console and what it depends on (etcd, state, gateway) from the images
``make images`` builds, healthy; from the host, its published port serves the instance list,
which it read from the gateway with the gateway's token (one variable,
STATEFUL_GATEWAY_AUTH_TOKEN, for both: a console without it would get a 401 page, and a
gateway refusing it would give the console a 401 from the API). A project of its own (name,
ports, subnet); ``down -v`` leaves nothing of it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import docker
import grpc
import pytest
from console.http import http_get

from deploy.compose_helpers import Project, wait_until
from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.common.images import TAG
from mesos_stateful.testing.docker import free_subnet
from mesos_stateful.testing.ports import free_port

pytestmark = pytest.mark.slow

TOKEN = secrets.token_hex(8)


@pytest.fixture
def project(docker_images: None, docker_client: docker.DockerClient) -> Iterator[tuple[Project, str]]:
    name = f"msci{secrets.token_hex(4)}"
    gateway_port, console_port = free_port(), free_port()
    subnet = free_subnet(docker_client)
    env = {
        **os.environ,
        "STATEFUL_GATEWAY_PORT": str(gateway_port),
        "STATEFUL_CONSOLE_PORT": str(console_port),
        "STATEFUL_SUBNET": subnet,
        "STATEFUL_TAG": TAG,
        "STATEFUL_GATEWAY_AUTH_TOKEN": TOKEN,
    }
    proj = Project(name, env, f"127.0.0.1:{gateway_port}", subnet, docker_client)
    try:
        yield proj, f"http://127.0.0.1:{console_port}"
    finally:
        proj.compose("down", "-v", "--timeout", "10", timeout=300)
        assert not proj.leftovers(), proj.leftovers()


def test_the_console_comes_up_with_the_suite_and_the_gateways_token(project: tuple[Project, str]) -> None:
    proj, console = project
    up = proj.compose("up", "-d", "--wait", "console", timeout=420)
    assert up.returncode == 0, up.stdout + up.stderr + proj.diagnostics()
    running = {
        c.labels["com.docker.compose.service"]
        for c in proj.client.containers.list(filters={"label": f"com.docker.compose.project={proj.name}"})
    }
    assert running == {"etcd", "state", "gateway", "console"}, running
    assert proj.container("console").attrs["State"]["Health"]["Status"] == "healthy"

    # The gateway wants the token: without it, the public API refuses.
    with grpc.insecure_channel(proj.gateway) as channel:
        stub = api_grpc.InstanceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListInstances(ipb.ListInstancesRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # The console, from the host on its published port, lists the instances through the gateway.
    _, page = wait_until(lambda: (r := http_get(f"{console}/"))[0] == 200 and r, 60, "the console's page")
    assert "<h2>Instances</h2>" in page and "No instances" in page, page
    assert http_get(f"{console}/health")[0] == 200
