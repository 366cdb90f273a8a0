"""Integer flags are range-checked by the CLI itself: a value outside its protobuf field's range is a
usage error naming the flag (exit 2), never ``unexpected ValueError: Value out of range``."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass

import pytest


@dataclass
class Result:
    code: int
    err: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ctl(endpoint: str, *args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEFUL_")}
    env.update({"STATEFUL_ENDPOINT": endpoint, "COLUMNS": "200", "NO_COLOR": "1"})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesos_stateful.cli", *args, stderr=asyncio.subprocess.PIPE, env=env
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
    return Result(process.returncode, err.decode())


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("scale", "cache", "--replicas", "999999999999"), "--replicas"),
        (("scale", "cache", "--replicas", "-1"), "--replicas"),
        (("create", "redis", "cache", "--replicas", "4294967296"), "--replicas"),
        (("create", "redis", "cache", "--mem", "18446744073709551616"), "--mem"),
        (("create", "redis", "cache", "--disk", "-5"), "--disk"),
        (("create", "redis", "cache", "--cpus", "-1"), "--cpus"),
        (("scale", "cache", "--replicas", "2", "--wait", "--timeout", "-1"), "--timeout"),
    ],
)
async def test_out_of_range_flag_is_a_usage_error(args: tuple[str, ...], flag: str) -> None:
    # Nothing listens there: the flag must be refused before any call is made.
    result = await ctl(f"127.0.0.1:{free_port()}", *args)
    assert result.code == 2, result
    assert f"Invalid value for '{flag}'" in result.err, result.err
    assert "unexpected" not in result.err and "Value out of range" not in result.err
    assert "cannot reach the gateway" not in result.err


async def test_largest_replicas_in_range_reaches_the_gateway() -> None:
    # The bound is the field's, not a guess: the top of uint32 passes the CLI and fails only on
    # the (absent) gateway.
    result = await ctl(f"127.0.0.1:{free_port()}", "scale", "cache", "--replicas", str(2**32 - 1))
    assert result.code == 1, result
    assert "cannot reach the gateway" in result.err
