"""Single check attempts against real sockets and processes."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from mesos_stateful.executor.checks import CheckSpec, CommandTarget, TcpTarget, run_check
from mesos_stateful.testing.ports import free_port


async def test_tcp_check_passes_on_a_listening_port_and_fails_on_a_closed_one() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert (await run_check(CheckSpec(TcpTarget("127.0.0.1", port, "client")))).ok
    closed = await run_check(CheckSpec(TcpTarget("127.0.0.1", free_port(), "client")))
    assert not closed.ok and "tcp client" in closed.detail


async def test_command_check_exit_code_output_and_timeout(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "WHO": "member"}
    ok = await run_check(CheckSpec(CommandTarget(("sh", "-c", 'test "$WHO" = member'), env, tmp_path)))
    assert ok.ok
    bad = await run_check(CheckSpec(CommandTarget(("sh", "-c", "echo not yet; exit 4"), env, tmp_path)))
    assert not bad.ok and "exited with code 4: not yet" in bad.detail
    began = time.monotonic()
    sleeper = CommandTarget(("sh", "-c", "sleep 30; true"), env, tmp_path)
    slow = await run_check(CheckSpec(sleeper, timeout=0.3))
    assert not slow.ok and "timed out after 0.3s" in slow.detail
    assert time.monotonic() - began < 10
    missing = await run_check(CheckSpec(CommandTarget(("no-such-check-command",), env, tmp_path)))
    assert not missing.ok and "cannot start" in missing.detail
