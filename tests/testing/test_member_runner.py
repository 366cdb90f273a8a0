"""The test member runner (mesos_stateful.testing.workloads.MemberRunner) runs a member by the
executor's rules: ``${VAR}`` expansion with the ``$${VAR}`` escape, unknown references left as they
are, files and checks, the process started and killed as a group by the executor's runtime."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.executor.launch import InvalidTask
from mesos_stateful.testing.poll import eventually
from mesos_stateful.testing.workloads import MemberRunner

SCRIPT = 'printf "%s\\n" "$@" > argv.txt; exec sleep 60'


def spec(**fields: object) -> types_pb2.LaunchSpec:
    launch = types_pb2.LaunchSpec(
        instance="box", member_id="box-0", task_id="box-0.1", workload="test", role=types_pb2.ROLE_MASTER,
        port_names=["main"],
        argv=["sh", "-c", SCRIPT, "sh", "${MEMBER_ID}", "$${MEMBER_ID}", "${NOT_SET}", "${PORT_MAIN}"],
    )
    for name, value in fields.items():
        if isinstance(value, types_pb2.Check):
            getattr(launch, name).CopyFrom(value)
        elif isinstance(value, list):
            getattr(launch, name)[:] = value
        else:
            setattr(launch, name, value)
    return launch


async def test_escape_and_unknown_references_follow_the_executor(tmp_path: Path) -> None:
    runner = MemberRunner(tmp_path)
    launch = spec()
    conf = b"id=${MEMBER_ID}\nraw=$${HOST}\nother=${UNKNOWN}\n"
    launch.files.add(path="conf/app.conf", content=conf, expand=True)
    launch.files.add(path="plain", content=b"${MEMBER_ID}", mode=0o600)
    launch.env["GREETING"] = "hi ${INSTANCE} $${INSTANCE}"
    try:
        member = runner.prepare(launch)
        # Unknown references are left as they are (and reported), not an error: the executor's rule.
        assert member.prepared.unknown_references == {"NOT_SET", "UNKNOWN"}
        assert member.env["GREETING"] == "hi box ${INSTANCE}"
        assert member.env["ROLE"] == "MASTER" and member.env["PORT_MAIN"] == str(member.port("main"))
        await member.start()
        argv_file = member.sandbox / "argv.txt"
        await eventually(argv_file.exists, "the member to write its argv", timeout=10)
        expected = ["box-0", "${MEMBER_ID}", "${NOT_SET}", str(member.port("main"))]
        assert argv_file.read_text().splitlines() == expected
        assert (member.sandbox / "conf/app.conf").read_text() == "id=box-0\nraw=${HOST}\nother=${UNKNOWN}\n"
        assert (member.sandbox / "plain").read_text() == "${MEMBER_ID}"
        assert (member.sandbox / "plain").stat().st_mode & 0o777 == 0o600
        assert member.process is not None and member.running
        # Its own process group, killed as a group.
        assert os.getpgid(member.process.pid) == member.process.pid
        await member.kill()
        assert not member.running
    finally:
        await runner.close()


async def test_readiness_is_the_executors_check_and_a_restart_keeps_ports_and_sandbox(tmp_path: Path) -> None:
    runner = MemberRunner(tmp_path)
    serve = (
        "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
        "time.sleep(0.3); s.listen(); time.sleep(60)"
    )
    launch = spec(
        argv=[sys.executable, "-c", serve, "${PORT_MAIN}"],
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="main"), interval_ms=100),
    )
    try:
        member = await runner.start(launch, timeout=20)
        port, first = member.port("main"), member.process
        assert await member.ready()
        # A stateful.v1.Check is prepared by the executor's rules (${VAR} expanded) and run once.
        in_sandbox = types_pb2.CommandCheck(argv=["test", "-d", "${MESOS_SANDBOX}"])
        sandbox_exists = types_pb2.Check(command=in_sandbox)
        assert await member.check(sandbox_exists) and await member.check(launch.readiness)
        assert not await member.check(types_pb2.Check(command=types_pb2.CommandCheck(argv=["false"])))
        await member.stop(grace_seconds=2)
        assert not await member.ready()
        await member.start()
        await member.wait_ready(20)
        assert member.port("main") == port and member.process is not first and member.starts == 2
    finally:
        await runner.close()


async def test_a_member_that_exits_fails_wait_ready_with_its_log(tmp_path: Path) -> None:
    runner = MemberRunner(tmp_path)
    launch = spec(
        argv=["sh", "-c", "echo broken config >&2; exit 3"],
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="main")),
    )
    with pytest.raises(RuntimeError, match=r"(?s)box-0 exited \(exited with code 3\).*broken config"):
        await runner.start(launch, timeout=20)
    await runner.close()


def test_a_launch_the_executor_refuses_is_refused(tmp_path: Path) -> None:
    runner = MemberRunner(tmp_path)
    launch = spec()
    launch.files.add(path="../escape", content=b"x")
    with pytest.raises(InvalidTask, match="relative to the sandbox"):
        runner.prepare(launch)
