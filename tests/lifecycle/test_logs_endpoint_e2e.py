"""`statefulctl logs` and `statefulctl endpoint` against the whole suite: real redis-server members on
the local cluster, their output read through their agent's /files/read, their URI used to connect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys

import pytest
import redis.asyncio as aioredis

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.testing import poll
from mesos_stateful.testing.lifecycle import Suite, master_of

pytestmark = pytest.mark.slow

TIMEOUT = 60.0
READY = "Ready to accept connections"


async def statefulctl(suite: Suite, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEFUL_")}
    env.update(STATEFUL_ENDPOINT=suite.gateway.endpoint, NO_COLOR="1")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesos_stateful.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def run(suite: Suite, *args: str) -> tuple[int, str, str]:
    process = await statefulctl(suite, *args)
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_logs_and_endpoint_of_a_redis_instance(suite: Suite) -> None:
    await suite.create("cache", 2)
    instance = await suite.wait_running("cache", 2)
    master = master_of(instance)
    replica = next(m for m in instance.members if m.id != master.id)
    framework = await suite.client.get(spb.KIND_FRAMEWORK, "")
    agents = {a.id: a for a in suite.cluster.cluster.agents}
    for m in instance.members:
        # Where its sandbox is served: its agent (the offer's url) and the virtual path of its run.
        assert m.agent_url == f"http://{agents[m.agent_id].ip}:{agents[m.agent_id].port}"
        fid = framework.framework.framework_id
        assert m.sandbox_directory == f"/frameworks/{fid}/executors/{m.task_id}/runs/latest"

    # endpoint: the URI reaches the master with the secret, the reads are the replica.
    code, out, err = await run(suite, "-o", "json", "endpoint", "cache", "--show-secret")
    assert code == 0, err
    endpoints = json.loads(out)
    assert endpoints["primary"]["memberId"] == master.id
    assert endpoints["primary"]["address"] == f"{master.host}:{master.ports['redis']}"
    assert [r["memberId"] for r in endpoints["reads"]] == [replica.id]
    assert endpoints["uri"] == f"redis://{master.host}:{master.ports['redis']}"
    client = aioredis.Redis.from_url(endpoints["uriWithSecret"], decode_responses=True)
    try:
        await client.set("k", "v")
        assert (await client.info("replication"))["role"] == "master"
    finally:
        await client.aclose()

    # logs: redis-server's own output, from its sandbox on its agent.
    code, out, err = await run(suite, "logs", master.id)
    assert code == 0, err
    assert READY in out, out[-2000:]
    code, whole, err = await run(suite, "logs", replica.id)
    assert code == 0 and READY in whole, err
    code, tail, err = await run(suite, "logs", replica.id, "--tail", "2")
    assert code == 0, err
    # The last two lines of what it printed so far (it may have printed more since).
    lines = tail.splitlines()
    assert len(lines) == 2 and lines[0] in whole.splitlines(), tail
    code, _, err = await run(suite, "logs", master.id, "--stderr")
    assert code == 0, err

    # -f: what the member writes later comes out while following.
    follower = await statefulctl(suite, "logs", master.id, "-f", "--tail", "0")
    assert follower.stdout is not None
    secret = (await suite.get("cache", secrets=True)).secrets["password"]
    client = aioredis.Redis(host=master.host, port=master.ports["redis"], password=secret)
    try:
        seen = ""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while "Background saving started" not in seen:
            assert asyncio.get_running_loop().time() < deadline, seen
            with contextlib.suppress(aioredis.ResponseError):  # a save already running
                await client.bgsave()
            try:
                seen += (await asyncio.wait_for(follower.stdout.readline(), 2.0)).decode()
            except TimeoutError:
                continue
    finally:
        await client.aclose()
    follower.send_signal(signal.SIGINT)
    await asyncio.wait_for(follower.wait(), TIMEOUT)
    assert follower.returncode == 130
    assert master.state == T.MEMBER_STATE_RUNNING


async def test_a_member_that_cannot_start_leaves_one_line_messages_and_its_output_in_logs(
    suite: Suite,
) -> None:
    # redis-server refuses the setting and exits before it is ready, its error on stderr.
    await suite.create("broken", 1, config={"save": "not-a-rule"})

    def failed_launch(i: T.Instance) -> bool:
        return bool(i.members and i.members[0].launch_failures and "statefulctl logs broken-0" in (
            i.members[0].message
        ))

    instance = await suite.wait_instance("broken", failed_launch, 120, "a failed launch")
    member = instance.members[0]
    # Messages stay on one line; the output is one command away.
    texts = [member.message, instance.plan.reason, instance.last_error]
    texts += [step.message for step in instance.plan.steps]
    texts += [f.message for f in member.launch_failures]
    assert all("\n" not in text for text in texts), texts
    assert "(output: statefulctl logs broken-0)" in member.message
    # Its current launch's stderr (a relaunch may have just begun: its sandbox is empty until
    # redis-server fails again, the same way).
    async def logged() -> bool:
        code, out, _ = await run(suite, "logs", "broken-0", "--stderr")
        return code == 0 and "Invalid save parameters" in out

    await poll.eventually(logged, "redis-server's error in `logs broken-0 --stderr`", TIMEOUT, interval=0.5)
