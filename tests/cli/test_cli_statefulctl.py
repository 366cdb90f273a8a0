"""statefulctl run as a subprocess against a live gateway (real etcd and state service)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing import poll
from mesos_stateful.testing.gateway import RunningGateway, register_workload, running_gateway
from mesos_stateful.testing.ports import free_port
from mesos_stateful.testing.state import StateService

TIMEOUT = 60.0


@dataclass
class Result:
    code: int
    out: str
    err: str

    def assert_clean(self) -> None:
        assert "Traceback" not in self.out + self.err, self.out + self.err


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEFUL_")}
    env.update({"STATEFUL_ENDPOINT": endpoint, "COLUMNS": "200", "NO_COLOR": "1", **extra})
    return env


async def start(endpoint: str, *args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesos_stateful.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(endpoint, **env),
    )


async def finish(process: asyncio.subprocess.Process) -> Result:
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    result = Result(process.returncode, out.decode(), err.decode())
    result.assert_clean()
    return result


async def ctl(endpoint: str, *args: str, **env: str) -> Result:
    return await finish(await start(endpoint, *args, **env))


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    await poll.eventually(check, "the condition", TIMEOUT, interval=0.05)


async def make_running(state: StateClient, name: str, replicas: int) -> None:
    """Do what lifecycle would: members RUNNING, plan complete, phase RUNNING."""
    for ordinal in range(replicas):
        await state.put(
            types_pb2.Member(
                id=f"{name}-{ordinal}",
                instance=name,
                ordinal=ordinal,
                role=types_pb2.ROLE_MASTER if ordinal == 0 else types_pb2.ROLE_SLAVE,
                state=types_pb2.MEMBER_STATE_RUNNING,
                host="127.0.0.2",
                ports={"client": 31000 + ordinal},
                task_id=f"{name}-{ordinal}.1",
                volume=types_pb2.Volume(
                    persistence_id=f"{name}-{ordinal}.v1",
                    container_path="data",
                    size_mb=1024,
                    agent_id="agent-2",
                    host="127.0.0.2",
                    has_data=ordinal != 2,
                ),
            )
        )

    def running(value: object) -> object:
        assert isinstance(value, types_pb2.Instance)
        value.phase = types_pb2.INSTANCE_PHASE_RUNNING
        value.plan.CopyFrom(
            types_pb2.Plan(
                name="deploy",
                status=types_pb2.STEP_STATUS_COMPLETE,
                steps=[
                    types_pb2.Step(
                        name=f"launch {name}-{i}",
                        member_id=f"{name}-{i}",
                        status=types_pb2.STEP_STATUS_COMPLETE,
                    )
                    for i in range(replicas)
                ],
            )
        )
        return value

    await state.update(st.KIND_INSTANCE, name, running)  # type: ignore[arg-type]


async def test_round_trip_tables_and_json(gateway: RunningGateway, state_client: StateClient) -> None:
    ep = gateway.endpoint
    await register_workload(state_client)

    workloads = await ctl(ep, "workloads")
    assert workloads.code == 0, workloads
    assert "redis" in workloads.out and "MASTER_REPLICA" in workloads.out

    created = await ctl(
        ep,
        "create",
        "redis",
        "cache",
        "--replicas",
        "3",
        "--mem",
        "512",
        "--config",
        "appendonly=yes",
        "--label",
        "team=web",
    )
    assert created.code == 0, created
    assert "cache" in created.out and "PENDING" in created.out and "0/3" in created.out

    as_json = await ctl(ep, "-o", "json", "create", "redis", "other", "--replicas", "1")
    assert as_json.code == 0, as_json
    instance = json.loads(as_json.out)["instance"]
    assert instance["spec"]["name"] == "other"
    assert instance["phase"] == "INSTANCE_PHASE_PENDING"
    assert instance["spec"]["resources"]["memMb"] == "256"

    await make_running(state_client, "cache", 3)
    shown = await ctl(ep, "get", "cache")
    assert shown.code == 0, shown
    for text in (
        "RUNNING",
        "3/3",
        "deploy: COMPLETE",
        "cache-0",
        "MASTER",
        "SLAVE",
        "127.0.0.2:31000 (client)",
        "cache-1.1",
        "launch cache-2",
        "appendonly=yes",
        "AGENT",
        "VOLUME",
        "cache-1.v1 1024 MiB",
        "cache-2.v1 1024 MiB (no data yet)",
    ):
        assert text in shown.out, (text, shown.out)

    got = await ctl(ep, "-o", "json", "get", "cache")
    data = json.loads(got.out)
    assert [m["id"] for m in data["instance"]["members"]] == ["cache-0", "cache-1", "cache-2"]
    assert "secrets" not in data
    # -o also works after the command, as users type it.
    after = await ctl(ep, "get", "cache", "-o", "json")
    assert json.loads(after.out)["instance"]["spec"]["name"] == "cache"

    listed = await ctl(ep, "list")
    assert listed.code == 0
    assert listed.out.index("cache") < listed.out.index("other")
    filtered = await ctl(ep, "-o", "json", "list", "--label", "team=web")
    assert [i["spec"]["name"] for i in json.loads(filtered.out)["instances"]] == ["cache"]

    scaled = await ctl(ep, "scale", "cache", "--replicas", "5")
    assert scaled.code == 0 and "5 members" in scaled.out, scaled
    deleted = await ctl(ep, "delete", "other")
    assert deleted.code == 0 and "DELETING" in deleted.out, deleted


async def test_bad_argument_message_and_exit_code(gateway: RunningGateway, state_client: StateClient) -> None:
    await register_workload(state_client)
    result = await ctl(gateway.endpoint, "create", "redis", "Bad_Name", "--replicas", "0", "--cpus", "99")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("error: invalid instance spec")
    assert any(line.startswith("  spec.name: ") for line in lines), lines
    assert any(line.startswith("  spec.replicas: ") for line in lines), lines
    assert any(line.startswith("  spec.resources.cpus: ") for line in lines), lines

    unknown = await ctl(gateway.endpoint, "create", "mongo", "db")
    assert unknown.code == 2
    assert "registered workloads: redis" in unknown.err

    malformed = await ctl(gateway.endpoint, "create", "redis", "db", "--config", "novalue")
    assert malformed.code == 2
    assert malformed.err.startswith("error: --config expects key=value")

    missing = await ctl(gateway.endpoint, "get", "nope")
    assert missing.code == 1
    assert missing.err.strip() == "error: instance 'nope' not found"


async def test_unreachable_gateway() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    for args in (("list",), ("get", "x"), ("watch",), ("create", "redis", "x", "--wait")):
        result = await ctl(endpoint, *args)
        assert result.code == 1, (args, result)
        assert (
            result.err.strip() == f"error: cannot reach the gateway at {endpoint}: is it running? (make run)"
        )


async def test_wait_until_running_and_timeout(gateway: RunningGateway, state_client: StateClient) -> None:
    ep = gateway.endpoint
    await register_workload(state_client)
    process = await start(ep, "create", "redis", "cache", "--replicas", "2", "--wait", "--timeout", "60")

    async def created() -> bool:
        return await state_client.find(st.KIND_INSTANCE, "cache") is not None

    await eventually(created)
    await make_running(state_client, "cache", 2)
    result = await finish(process)
    assert result.code == 0, result
    assert "instance cache is RUNNING (2/2 ready)" in result.out

    timed_out = await ctl(ep, "scale", "cache", "--replicas", "3", "--wait", "--timeout", "1")
    assert timed_out.code == 1
    assert "timed out after 1s waiting for cache to be RUNNING" in timed_out.err

    def failed(value: object) -> object:
        assert isinstance(value, types_pb2.Instance)
        value.phase = types_pb2.INSTANCE_PHASE_FAILED
        value.last_error = "no offers"
        return value

    await state_client.update(st.KIND_INSTANCE, "cache", failed)  # type: ignore[arg-type]
    failure = await ctl(ep, "scale", "cache", "--replicas", "2", "--wait")
    assert failure.code == 1
    assert "FAILED: no offers" in failure.err
    # The live view's last line is ended: with 2>&1 the error starts a line of its own.
    assert failure.out.endswith("\n") and timed_out.out.endswith("\n"), (
        failure.out[-200:],
        timed_out.out[-200:],
    )


async def test_delete_wait_and_ctrl_c(gateway: RunningGateway, state_client: StateClient) -> None:
    ep = gateway.endpoint
    await register_workload(state_client)
    assert (await ctl(ep, "create", "redis", "cache")).code == 0

    watcher = await start(ep, "-o", "json", "watch")
    assert watcher.stdout is not None
    line = await asyncio.wait_for(watcher.stdout.readline(), TIMEOUT)
    assert json.loads(line)["type"] == "INSTANCE_EVENT_TYPE_ADDED"

    deleting = await start(ep, "delete", "cache", "--wait")

    async def marked() -> bool:
        record = await state_client.get(st.KIND_INSTANCE, "cache")
        return record.instance.phase == types_pb2.INSTANCE_PHASE_DELETING

    await eventually(marked)
    await state_client.delete(st.KIND_INSTANCE, "cache")  # what lifecycle does at the end
    result = await finish(deleting)
    assert result.code == 0, result
    assert "instance cache deleted" in result.out

    watcher.send_signal(signal.SIGINT)
    stopped = await finish(watcher)
    assert stopped.code == 130
    events = [json.loads(x)["type"] for x in stopped.out.splitlines() if x.strip()]
    assert "INSTANCE_EVENT_TYPE_DELETED" in events


async def test_token(state_service: StateService, state_client: StateClient) -> None:
    await register_workload(state_client)
    async with running_gateway(state_service.endpoint, auth_token="s3cret") as gw:
        denied = await ctl(gw.endpoint, "workloads")
        assert denied.code == 1
        assert denied.err.startswith("error: missing or wrong token")
        allowed = await ctl(gw.endpoint, "--token", "s3cret", "workloads")
        assert allowed.code == 0 and "redis" in allowed.out
        from_env = await ctl(gw.endpoint, "workloads", STATEFUL_TOKEN="s3cret")
        assert from_env.code == 0


async def test_get_watch_follows_until_deleted(gateway: RunningGateway, state_client: StateClient) -> None:
    ep = gateway.endpoint
    await register_workload(state_client)
    missing = await ctl(ep, "get", "cache", "--watch")
    assert missing.code == 1 and "not found" in missing.err

    assert (await ctl(ep, "create", "redis", "cache")).code == 0
    process = await start(ep, "-o", "json", "get", "cache", "--watch")
    assert process.stdout is not None
    first = json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT))
    assert first["type"] == "INSTANCE_EVENT_TYPE_ADDED"
    await make_running(state_client, "cache", 1)
    await state_client.delete(st.KIND_INSTANCE, "cache")
    result = await finish(process)
    assert result.code == 0, result
    types = [json.loads(line)["type"] for line in result.out.splitlines()]
    assert types[-1] == "INSTANCE_EVENT_TYPE_DELETED"
    assert "INSTANCE_EVENT_TYPE_MODIFIED" in types


class RestartableGateway:
    """An in-process gateway that can be stopped and started again on the same port (as a gateway
    process killed and restarted by the suite's supervisor)."""

    def __init__(self, state_endpoint: str) -> None:
        self.state_endpoint = state_endpoint
        self.port = 0
        self.stack: contextlib.AsyncExitStack | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        running = await self.stack.enter_async_context(
            running_gateway(self.state_endpoint, listen=f"127.0.0.1:{self.port}")
        )
        self.port = running.served.port

    async def stop(self) -> None:
        if self.stack is not None:
            await self.stack.aclose()
            self.stack = None


async def test_streams_resume_across_a_gateway_restart(
    state_service: StateService, state_client: StateClient
) -> None:
    """`watch`, `get --watch` and `scale --wait` keep going when the gateway goes away and comes
    back on the same port: one "reconnecting" line on stderr, no change missed, the right exit."""
    await register_workload(state_client)
    gw = RestartableGateway(state_service.endpoint)
    await gw.start()
    try:
        ep = gw.endpoint
        assert (await ctl(ep, "create", "redis", "cache")).code == 0
        watcher = await start(ep, "-o", "json", "watch")
        follower = await start(ep, "-o", "json", "get", "cache", "--watch")
        for process in (watcher, follower):
            assert process.stdout is not None
            first = json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT))
            assert first["type"] == "INSTANCE_EVENT_TYPE_ADDED"
        await make_running(state_client, "cache", 1)
        scaling = await start(ep, "scale", "cache", "--replicas", "2", "--wait", "--timeout", "60")

        async def scaled() -> bool:
            record = await state_client.get(st.KIND_INSTANCE, "cache")
            return record.instance.spec.replicas == 2

        await eventually(scaled)
        await asyncio.sleep(0.5)  # the three streams are open (a gateway restart mid-stream)

        await gw.stop()
        # While the gateway is down: the scale completes (as lifecycle would do it).
        await make_running(state_client, "cache", 2)
        await asyncio.sleep(1.0)
        await gw.start()
        assert gw.endpoint == ep

        result = await finish(scaling)
        assert result.code == 0, result
        assert "instance cache is RUNNING (2/2 ready)" in result.out, result
        assert result.err.count("gateway unreachable; reconnecting...") == 1, result.err

        await state_client.delete(st.KIND_INSTANCE, "cache")
        followed = await finish(follower)
        assert followed.code == 0, followed
        types = [json.loads(line)["type"] for line in followed.out.splitlines() if line.strip()]
        assert types[-1] == "INSTANCE_EVENT_TYPE_DELETED", types
        assert followed.err.count("gateway unreachable; reconnecting...") == 1, followed.err

        assert watcher.stdout is not None
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "INSTANCE_EVENT_TYPE_DELETED":
            seen.append(json.loads(await asyncio.wait_for(watcher.stdout.readline(), TIMEOUT)))
        # The 2-member state written while the gateway was down was delivered after the restart.
        assert any(len(e["instance"].get("members", [])) == 2 for e in seen), seen
        watcher.send_signal(signal.SIGINT)
        stopped = await finish(watcher)
        assert stopped.code == 130, stopped
        assert stopped.err.count("gateway unreachable; reconnecting...") == 1, stopped.err
    finally:
        await gw.stop()


async def test_a_scale_sent_while_the_gateway_restarts_is_retried(
    state_service: StateService, state_client: StateClient
) -> None:
    """ScaleInstance (an absolute member count, safe to repeat) is retried on UNAVAILABLE for
    about 4 s (gRPC retry policy), so a gateway restarted by the supervisor under it is not an
    error."""
    await register_workload(state_client)
    gw = RestartableGateway(state_service.endpoint)
    await gw.start()
    try:
        assert (await ctl(gw.endpoint, "create", "redis", "cache")).code == 0
        await gw.stop()
        scaler = await start(gw.endpoint, "scale", "cache", "--replicas", "2")
        await asyncio.sleep(1.0)  # the outage: the supervisor restarts a gateway in about a second
        await gw.start()
        result = await finish(scaler)
        assert result.code == 0, result
        assert "scaled to 2 members" in result.out, result
        stored = await state_client.get(st.KIND_INSTANCE, "cache")
        assert stored.instance.spec.replicas == 2
    finally:
        await gw.stop()


async def test_stream_gives_up_after_the_reconnect_bound(
    state_service: StateService, state_client: StateClient
) -> None:
    """A gateway that does not come back: `watch` reports it unreachable after the bound (30 s,
    wait.RECONNECT_BOUND_SECONDS) with exit 1 and one reconnect line."""
    await register_workload(state_client)
    gw = RestartableGateway(state_service.endpoint)
    await gw.start()
    try:
        assert (await ctl(gw.endpoint, "create", "redis", "cache")).code == 0
        watcher = await start(gw.endpoint, "-o", "json", "watch")
        assert watcher.stdout is not None
        await asyncio.wait_for(watcher.stdout.readline(), TIMEOUT)
        await gw.stop()
        stopped_at = time.monotonic()
        result = await finish(watcher)
        elapsed = time.monotonic() - stopped_at
        assert result.code == 1, result
        assert 29.0 <= elapsed <= 40.0, elapsed
        assert result.err.count("gateway unreachable; reconnecting...") == 1, result.err
        assert f"cannot reach the gateway at {gw.endpoint}" in result.err, result.err
    finally:
        await gw.stop()
