"""statefulctl's generic output as a subprocess with pipes: -o yaml, --version, shell completion,
tables not cut when piped, `get --watch` and `--wait` streaming plain lines outside a terminal,
and `endpoint` / `logs` against a live gateway (real etcd and state service)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_cli_statefulctl import TIMEOUT, ctl, eventually, finish, make_running, start

from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.gateway import RunningGateway, register_workload

# No COLUMNS: what a pipe gets by itself (the helpers of test_cli_statefulctl set 200).
NO_COLUMNS = {"COLUMNS": ""}
LONG = "replication link down since 12:00:00 " + " ".join(f"detail-{i:03d}" for i in range(40))


async def redis_members(state: StateClient, name: str, replicas: int) -> None:
    """Members on the "redis" port (the fake workload is named redis), the first the master."""
    await make_running(state, name, replicas)
    for ordinal in range(replicas):
        record = await state.get(st.KIND_MEMBER, f"{name}/{name}-{ordinal}")
        m = record.member
        m.ports.clear()
        m.ports["redis"] = 31000 + ordinal
        m.message = LONG if ordinal == 1 else ""
        await state.put(m)


async def test_yaml_is_the_json_data(gateway: RunningGateway, state_client: StateClient) -> None:
    ep = gateway.endpoint
    await register_workload(state_client)
    assert (await ctl(ep, "create", "redis", "cache", "--replicas", "2")).code == 0
    await redis_members(state_client, "cache", 2)
    for command in (["get", "cache"], ["list"], ["workloads"], ["endpoint", "cache"]):
        as_json = await ctl(ep, *command, "-o", "json")
        as_yaml = await ctl(ep, *command, "-o", "yaml")
        assert as_json.code == as_yaml.code == 0, (as_json, as_yaml)
        assert yaml.safe_load(as_yaml.out) == json.loads(as_json.out), command
    # The global option works too, and a stream is one YAML document per change.
    watcher = await start(ep, "-o", "yaml", "watch", "cache")
    assert watcher.stdout is not None
    first = await asyncio.wait_for(watcher.stdout.readuntil(b"\n...\n"), TIMEOUT)
    document = yaml.safe_load(first.decode())
    assert document["type"] == "INSTANCE_EVENT_TYPE_ADDED"
    assert document["instance"]["endpoints"]["uri"] == "redis://127.0.0.2:31000"
    watcher.kill()
    await watcher.wait()


def _statefulctl() -> str:
    return str(Path(sys.executable).with_name("statefulctl"))


def test_version_and_completion() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "mesos_stateful.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0
    assert version.stdout == f"statefulctl {importlib.metadata.version('mesos-stateful')}\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("_STATEFULCTL")}
    script = subprocess.run(
        [_statefulctl(), "--show-completion", "bash"], capture_output=True, text=True, timeout=60, env=env
    )
    assert script.returncode == 0, script.stderr
    assert "_statefulctl_completion" in script.stdout and "complete " in script.stdout
    # What bash asks when TAB is pressed after "statefulctl end": the command's name.
    asked = subprocess.run(
        [_statefulctl()],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "_STATEFULCTL_COMPLETE": "complete_bash", "COMP_WORDS": "statefulctl end"}
        | {"COMP_CWORD": "1"},
    )
    assert asked.stdout.split() == ["endpoint"], asked


async def test_piped_tables_are_not_cut(gateway: RunningGateway, state_client: StateClient) -> None:
    ep = gateway.endpoint
    await register_workload(state_client)
    assert (await ctl(ep, "create", "redis", "cache", "--replicas", "2")).code == 0
    await redis_members(state_client, "cache", 2)
    shown = await ctl(ep, "get", "cache", **NO_COLUMNS)
    assert shown.code == 0
    row = next(line for line in shown.out.splitlines() if line.startswith("cache-1 "))
    assert row.rstrip().endswith(LONG), row  # the whole message, on the member's own line
    assert "…" not in shown.out
    # COLUMNS still wins when given.
    narrow = await ctl(ep, "get", "cache", COLUMNS="100")
    assert all(len(line) <= 100 for line in narrow.out.splitlines())


async def test_get_watch_streams_lines_into_a_pipe(
    gateway: RunningGateway, state_client: StateClient
) -> None:
    ep = gateway.endpoint
    await register_workload(state_client)
    assert (await ctl(ep, "create", "redis", "cache")).code == 0
    process = await start(ep, "get", "cache", "--watch")
    assert process.stdout is not None
    # Written at once (not at the end): the first change is readable while the watch runs.
    first = (await asyncio.wait_for(process.stdout.readline(), TIMEOUT)).decode()
    assert first.startswith("cache: PENDING, 0/1 ready"), first
    await make_running(state_client, "cache", 1)
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), TIMEOUT)).decode()
        assert line, "the watch ended early"
        if line.startswith("cache: RUNNING, 1/1 ready"):
            break
    await state_client.delete(st.KIND_INSTANCE, "cache")
    result = await finish(process)
    assert result.code == 0, result
    assert result.out.splitlines()[-1] == "instance cache deleted"


async def test_wait_into_a_pipe_ends_with_the_final_line(
    gateway: RunningGateway, state_client: StateClient
) -> None:
    ep = gateway.endpoint
    await register_workload(state_client)
    process = await start(ep, "create", "redis", "cache", "--replicas", "2", "--wait")

    async def created() -> bool:
        return await state_client.find(st.KIND_INSTANCE, "cache") is not None

    await eventually(created)
    await make_running(state_client, "cache", 2)
    result = await finish(process)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[-1] == "instance cache is RUNNING (2/2 ready)", result.out
    assert any(line.startswith("cache: PENDING, 0/2 ready") for line in lines), result.out
    # No live-view frames (spinners, the details table) in a pipe: progress lines only.
    assert not any(line.startswith(("NAME", "⠋", "members")) for line in lines), result.out


async def test_endpoint_and_logs_refusals(gateway: RunningGateway, state_client: StateClient) -> None:
    ep = gateway.endpoint
    await register_workload(state_client)
    assert (await ctl(ep, "create", "redis", "cache", "--replicas", "2")).code == 0
    await redis_members(state_client, "cache", 2)
    await state_client.put(types_pb2.InstanceSecrets(instance="cache", values={"password": "pw"}))
    shown = await ctl(ep, "endpoint", "cache")
    assert shown.code == 0
    assert "redis://127.0.0.2:31000" in shown.out and "pw" not in shown.out
    assert "cache-0 127.0.0.2:31000" in shown.out and "cache-1 127.0.0.2:31001" in shown.out
    secret = await ctl(ep, "endpoint", "cache", "--show-secret")
    assert "redis://:pw@127.0.0.2:31000" in secret.out
    missing = await ctl(ep, "endpoint", "nothing")
    assert missing.code == 1 and "not found" in missing.err

    bad = await ctl(ep, "logs", "Cache_0")
    assert bad.code == 2 and "is not a member id" in bad.err
    unknown = await ctl(ep, "logs", "cache-7")
    assert unknown.code == 1 and "has no member cache-7 (members: cache-0, cache-1)" in unknown.err
    # Members written by make_running never ran on an agent: no sandbox to read.
    no_sandbox = await ctl(ep, "logs", "cache-0")
    assert no_sandbox.code == 1 and "has no sandbox to read" in no_sandbox.err
    unreachable = await state_client.get(st.KIND_MEMBER, "cache/cache-1")
    unreachable.member.agent_url = "http://127.0.0.1:1"
    unreachable.member.sandbox_directory = "/frameworks/F/executors/cache-1.1/runs/latest"
    await state_client.put(unreachable.member)
    down = await ctl(ep, "logs", "cache-1")
    assert down.code == 1 and "cannot reach the agent at http://127.0.0.1:1" in down.err
