"""``statefulctl switchover | restart | replace`` (issue 15, item 7) run as subprocesses against the
whole suite (real etcd, local cluster, Redis): ``--wait`` returns once the action is done; errors
are one line without a traceback, exit 2 for bad input, 1 for a refused action."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.testing.lifecycle import Suite, master_of

pytestmark = pytest.mark.slow

TIMEOUT = 120.0


@dataclass
class Result:
    code: int
    out: str
    err: str


async def ctl(suite: Suite, *args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEFUL_")}
    env.update({"STATEFUL_ENDPOINT": suite.gateway.endpoint, "COLUMNS": "200", "NO_COLOR": "1"})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesos_stateful.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    result = Result(process.returncode, out.decode(), err.decode())
    assert "Traceback" not in result.out + result.err, result.out + result.err
    return result


async def test_switchover_restart_and_replace_from_the_command_line(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    old = master_of(instance)
    target = max((m for m in instance.members if m.id != old.id), key=lambda m: m.ordinal)

    switched = await ctl(suite, "switchover", "cache", "--to", target.id, "--wait", "--timeout", "90")
    assert switched.code == 0, switched.err
    assert f"master {old.id} -> {target.id}" in switched.out
    assert f"(master: {target.id})" in switched.out.strip().splitlines()[-1]
    now = await suite.instance("cache")
    assert now is not None and master_of(now).id == target.id

    restarted = await ctl(suite, "restart", old.id, "--wait", "--timeout", "90")
    assert restarted.code == 0, restarted.err
    assert restarted.out.strip().splitlines()[-1].startswith("restart done: restart replica")
    after = await suite.instance("cache")
    assert after is not None
    again = next(m for m in after.members if m.id == old.id)
    assert again.role == T.ROLE_SLAVE and again.task_id != old.task_id

    bad = await ctl(suite, "restart", "cache-x")
    assert bad.code == 2 and "member_id" in bad.err and "<ordinal>" in bad.err, bad.err
    other = await ctl(suite, "replace", "other-1")
    assert other.code == 1 and other.err.strip() == "error: instance 'other' not found"
    missing = await ctl(suite, "switchover", "cache", "--to", "cache-7")
    assert missing.code == 1 and missing.err.startswith("error: member 'cache-7' not found")
    master = master_of(after)
    refused = await ctl(suite, "switchover", "cache", "--to", master.id)
    assert refused.code == 1 and "already the master" in refused.err
