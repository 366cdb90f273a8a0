"""``statefulctl create --runtime process|docker`` and ``get`` showing the runtime, run as a
subprocess against a live gateway (real etcd and state service)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass

import pytest

from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.gateway import register_workload, running_gateway
from mesos_stateful.testing.state import StateService


@dataclass
class Result:
    code: int
    out: str
    err: str


async def ctl(endpoint: str, *args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEFUL_")}
    env.update({"STATEFUL_ENDPOINT": endpoint, "COLUMNS": "200", "NO_COLOR": "1"})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesos_stateful.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    result = Result(process.returncode, out.decode(), err.decode())
    assert "Traceback" not in result.out + result.err, result
    return result


@pytest.mark.parametrize(("default", "shown"), [("process", "process"), ("docker", "docker")])
async def test_create_runtime_flag_and_get_shows_it(
    state_service: StateService, state_client: StateClient, default: str, shown: str
) -> None:
    await register_workload(state_client)
    async with running_gateway(state_service.endpoint, default_runtime=default) as gateway:
        ep = gateway.endpoint
        for name, flags in (("as-docker", ["--runtime", "docker"]), ("as-process", ["--runtime", "process"])):
            created = await ctl(ep, "create", "redis", name, *flags)
            assert created.code == 0, created
        image = await ctl(ep, "create", "redis", "own-image", "--runtime", "docker", "--image", "my/redis:7")
        assert image.code == 0, image
        defaulted = await ctl(ep, "create", "redis", "defaulted")
        assert defaulted.code == 0, defaulted

        docker = await ctl(ep, "get", "as-docker")
        assert "runtime: docker (the workload's image)" in docker.out, docker.out
        process = await ctl(ep, "get", "as-process")
        assert "runtime: process" in process.out, process.out
        own = await ctl(ep, "get", "own-image")
        assert "runtime: docker (image my/redis:7)" in own.out, own.out
        # No flag: the gateway's default_runtime, stored in the spec.
        plain = await ctl(ep, "get", "defaulted")
        assert f"runtime: {shown}" in plain.out, plain.out
        as_json = json.loads((await ctl(ep, "-o", "json", "get", "defaulted")).out)
        assert as_json["instance"]["spec"]["runtime"] == f"RUNTIME_{shown.upper()}"


async def test_unknown_runtime_is_a_usage_error(
    state_service: StateService, state_client: StateClient
) -> None:
    await register_workload(state_client)
    async with running_gateway(state_service.endpoint) as gateway:
        result = await ctl(gateway.endpoint, "create", "redis", "vm", "--runtime", "vm")
        assert result.code == 2, result
        assert "--runtime" in result.err and "process" in result.err and "docker" in result.err, result.err
