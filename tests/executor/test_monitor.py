"""The monitor and the process runtime, with real processes and a recording status sink."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from pathlib import Path

from executor_helpers import PY, RecordingSink, Runner, eventually, make_launch, make_spec

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.executor.monitor import Monitor
from mesos_stateful.executor.process_runtime import ProcessRuntime
from mesos_stateful.executor.status import REASON_HEALTH

# A server that binds its port only after `delay` seconds (written to bound_at just before).
DELAYED_SERVER = textwrap.dedent("""
    import os, socket, sys, time
    time.sleep(float(sys.argv[1]))
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((os.environ["HOST"], int(os.environ["PORT_CLIENT"])))
    open("bound_at", "w").write(repr(time.time()))
    s.listen()
    while True:
        c, _ = s.accept(); c.close()
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_running_only_after_the_port_answers(tmp_path: Path, runner: Runner) -> None:
    readiness = types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="client"), interval_ms=100)
    spec = make_spec([PY, "-c", DELAYED_SERVER, "1.0"], port_names=["client"], readiness=readiness)
    run = runner.start(make_launch(spec, tmp_path))
    starting = await run.sink.wait_for("TASK_STARTING")
    running = await run.sink.wait_for("TASK_RUNNING")
    bound_at = float((tmp_path / "bound_at").read_text())
    assert starting.at < bound_at <= running.at
    assert run.sink.states == ["TASK_STARTING", "TASK_RUNNING"]
    assert "tcp client" in running.update.message


async def test_command_readiness_check(tmp_path: Path, runner: Runner) -> None:
    member = "import time; time.sleep(0.5); open('ready', 'w').write(repr(time.time())); time.sleep(600)"
    check = "import os, sys; sys.exit(0 if os.path.exists(os.environ['MESOS_SANDBOX'] + '/ready') else 1)"
    readiness = types_pb2.Check(command=types_pb2.CommandCheck(argv=[PY, "-c", check]), interval_ms=100)
    run = runner.start(make_launch(make_spec([PY, "-c", member], readiness=readiness), tmp_path))
    running = await run.sink.wait_for("TASK_RUNNING")
    assert float((tmp_path / "ready").read_text()) <= running.at
    assert "command" in running.update.message


async def test_no_readiness_check_is_running_at_once(tmp_path: Path, runner: Runner) -> None:
    run = runner.start(make_launch(make_spec(["sleep", "600"]), tmp_path))
    await run.sink.wait_for("TASK_RUNNING")
    assert run.sink.states == ["TASK_STARTING", "TASK_RUNNING"]


async def test_failing_health_check_kills_and_fails(tmp_path: Path, runner: Runner) -> None:
    # Serves until the file "stop" appears, then closes its port but keeps running.
    member = textwrap.dedent("""
        import os, socket, time
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((os.environ["HOST"], int(os.environ["PORT_CLIENT"]))); s.listen(); s.settimeout(0.05)
        while not os.path.exists("stop"):
            try:
                c, _ = s.accept(); c.close()
            except TimeoutError:
                pass
        s.close()
        time.sleep(600)
    """)
    tcp = types_pb2.TcpCheck(port_name="client")
    spec = make_spec(
        [PY, "-c", member], port_names=["client"],
        readiness=types_pb2.Check(tcp=tcp, interval_ms=50),
        health=types_pb2.Check(tcp=tcp, interval_ms=50, timeout_ms=500, max_consecutive_failures=3),
    )
    run = runner.start(make_launch(spec, tmp_path))
    await run.sink.wait_for("TASK_RUNNING")
    await run.sink.wait_until(lambda u: u.healthy is True)
    (tmp_path / "stop").write_text("now")
    failed = await run.sink.wait_for("TASK_FAILED")
    assert "health check failed 3 consecutive times" in failed.update.message
    assert failed.update.healthy is False and failed.update.reason == REASON_HEALTH
    assert run.runtime.handle is not None and not alive(run.runtime.handle.pid or 0)
    assert run.sink.states[-1] == "TASK_FAILED" and run.sink.states.count("TASK_FAILED") == 1


async def test_health_grace_period_ignores_early_failures(tmp_path: Path, runner: Runner) -> None:
    # The port only opens after 1 s, but the grace period is 20 s: no failure counts meanwhile.
    health = types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="client"), interval_ms=50,
                             grace_period_ms=20000, max_consecutive_failures=1)
    spec = make_spec([PY, "-c", DELAYED_SERVER, "1.0"], port_names=["client"], health=health)
    run = runner.start(make_launch(spec, tmp_path))
    await run.sink.wait_until(lambda u: u.healthy is True)
    assert "TASK_FAILED" not in run.sink.states


async def test_kill_sends_term_then_reports_killed(tmp_path: Path, runner: Runner) -> None:
    member = textwrap.dedent("""
        import signal, sys, time
        def term(*_):
            open("got", "w").write("TERM"); sys.exit(0)
        signal.signal(signal.SIGTERM, term)
        open("ready", "w").write("yes")
        while True:
            time.sleep(1)
    """)
    check = types_pb2.Check(command=types_pb2.CommandCheck(argv=["test", "-s", "ready"]), interval_ms=50)
    run = runner.start(make_launch(make_spec([PY, "-c", member], readiness=check), tmp_path))
    await run.sink.wait_for("TASK_RUNNING")
    run.monitor.kill()
    killed = await run.sink.wait_for("TASK_KILLED")
    assert (tmp_path / "got").read_text() == "TERM"
    assert "exited with code 0" in killed.update.message
    assert run.task.done() and run.task.result().state == "TASK_KILLED"


async def test_kill_of_a_stopped_member_does_not_wait_for_the_grace(tmp_path: Path, runner: Runner) -> None:
    # A frozen member (SIGSTOP) gets SIGCONT after SIGTERM: it handles the TERM at once instead of
    # leaving it pending until SIGKILL (a fence waiting on this kill would wait the whole grace).
    member = textwrap.dedent("""
        import os, signal, sys, time
        def term(*_):
            open("got", "w").write("TERM"); sys.exit(0)
        signal.signal(signal.SIGTERM, term)
        open("pid", "w").write(str(os.getpid()))
        while True:
            time.sleep(1)
    """)
    check = types_pb2.Check(command=types_pb2.CommandCheck(argv=["test", "-s", "pid"]), interval_ms=50)
    spec = make_spec([PY, "-c", member], readiness=check, kill_grace_seconds=60)
    run = runner.start(make_launch(spec, tmp_path))
    await run.sink.wait_for("TASK_RUNNING")
    pid = int((tmp_path / "pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        run.monitor.kill()
        killed = await asyncio.wait_for(run.sink.wait_for("TASK_KILLED"), 30)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert (tmp_path / "got").read_text() == "TERM"  # by its TERM handler, not SIGKILL
    assert "exited with code 0" in killed.update.message


async def test_kill_escalates_to_sigkill_after_grace(tmp_path: Path, runner: Runner) -> None:
    member = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
             "open('ready', 'w').write('yes'); time.sleep(600)"
    check = types_pb2.Check(command=types_pb2.CommandCheck(argv=["test", "-s", "ready"]), interval_ms=50)
    spec = make_spec([PY, "-c", member], readiness=check, kill_grace_seconds=30)
    run = runner.start(make_launch(spec, tmp_path))
    await run.sink.wait_for("TASK_RUNNING")
    began = time.monotonic()
    run.monitor.kill(grace=0.7)
    killed = await run.sink.wait_for("TASK_KILLED")
    assert time.monotonic() - began >= 0.7
    assert "killed by signal 9" in killed.update.message


async def test_a_second_kill_shortens_the_grace(tmp_path: Path, runner: Runner) -> None:
    member = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
             "open('ready', 'w').write('yes'); time.sleep(600)"
    check = types_pb2.Check(command=types_pb2.CommandCheck(argv=["test", "-s", "ready"]), interval_ms=50)
    run = runner.start(make_launch(make_spec([PY, "-c", member], readiness=check), tmp_path))
    await run.sink.wait_for("TASK_RUNNING")
    began = time.monotonic()
    run.monitor.kill(grace=60)  # as a KILL with a long policy...
    await asyncio.sleep(0)
    run.monitor.kill(grace=0.2)  # ...then a SHUTDOWN with little time left
    killed = await run.sink.wait_for("TASK_KILLED", timeout=20)
    assert time.monotonic() - began < 20
    assert "killed by signal 9" in killed.update.message


async def test_kill_reaches_the_whole_process_group(tmp_path: Path, runner: Runner) -> None:
    member = "import subprocess, time; p = subprocess.Popen(['sleep', '600']); " \
             "open('child', 'w').write(str(p.pid)); time.sleep(600)"
    check = types_pb2.Check(command=types_pb2.CommandCheck(argv=["test", "-s", "child"]), interval_ms=50)
    run = runner.start(make_launch(make_spec([PY, "-c", member], readiness=check), tmp_path))
    await run.sink.wait_for("TASK_RUNNING")
    child = int((tmp_path / "child").read_text())
    assert run.runtime.handle is not None and os.getpgid(child) == run.runtime.handle.pid
    assert os.getpgid(child) != os.getpgid(0) and os.getsid(child) == os.getsid(0)
    run.monitor.kill()
    await run.sink.wait_for("TASK_KILLED")
    await eventually(lambda: not alive(child))


async def test_crash_reports_exit_code_and_log_tail(tmp_path: Path, runner: Runner) -> None:
    member = "import sys\nfor i in range(30): print(f'line {i}', file=sys.stderr)\nsys.exit(3)"
    run = runner.start(make_launch(make_spec([PY, "-c", member]), tmp_path))
    failed = await run.sink.wait_for("TASK_FAILED")
    message = failed.update.message
    assert message.startswith("exited with code 3")
    assert "line 29" in message and "line 10" in message and "line 9\n" not in message
    assert "TASK_STARTING" in run.sink.states


async def test_killed_by_signal_uses_stdout_when_stderr_is_empty(tmp_path: Path, runner: Runner) -> None:
    member = "import os, signal; print('about to die', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    run = runner.start(make_launch(make_spec([PY, "-c", member]), tmp_path))
    failed = await run.sink.wait_for("TASK_FAILED")
    assert failed.update.message.startswith("killed by signal 9")
    assert "stdout" in failed.update.message and "about to die" in failed.update.message


async def test_exit_zero_is_finished(tmp_path: Path, runner: Runner) -> None:
    run = runner.start(make_launch(make_spec(["true"]), tmp_path))
    finished = await run.sink.wait_for("TASK_FINISHED")
    assert finished.update.message == "exited with code 0"


async def test_unknown_command_fails_to_start(tmp_path: Path, runner: Runner) -> None:
    run = runner.start(make_launch(make_spec(["no-such-command-anywhere"]), tmp_path))
    failed = await run.sink.wait_for("TASK_FAILED")
    assert "cannot start 'no-such-command-anywhere'" in failed.update.message
    assert run.sink.states == ["TASK_FAILED"]


async def test_files_env_and_expansion(tmp_path: Path, runner: Runner) -> None:
    files = [
        types_pb2.FileSpec(path="conf/app.conf", content=b"port ${PORT_CLIENT}\nhost ${HOST}\n"
                           b"keep $${PORT_CLIENT} ${NOT_DEFINED} $HOME\n", mode=0o600, expand=True),
        types_pb2.FileSpec(path="raw.txt", content=b"raw ${PORT_CLIENT}"),
        types_pb2.FileSpec(path="run.sh", content=b"#!/bin/sh\necho \"$1\" > arg.txt\n", mode=0o755),
    ]
    dump = "import json, os; json.dump(dict(os.environ), open('env.json', 'w'))"
    spec = make_spec(
        ["sh", "-c", f"./run.sh \"$0\" && {PY} -c \"{dump}\"", "member=${MEMBER_ID}:${PORT_CLIENT}"],
        port_names=["client", "peer-bus"], files=files,
        env={"GREETING": "hello ${INSTANCE} on ${HOST}", "PLAIN": "x"},
    )
    launch = make_launch(spec, tmp_path, ports={"client": 31001, "peer-bus": 31002})
    assert launch.unknown_references == frozenset({"NOT_DEFINED"})
    run = runner.start(launch)
    await run.sink.wait_for("TASK_FINISHED")

    conf = tmp_path / "conf" / "app.conf"
    assert conf.read_text() == "port 31001\nhost 127.0.0.1\nkeep ${PORT_CLIENT} ${NOT_DEFINED} $HOME\n"
    assert conf.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "raw.txt").read_text() == "raw ${PORT_CLIENT}"
    assert (tmp_path / "raw.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "arg.txt").read_text() == "member=cache-0:31001\n"

    import json
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["HOST"] == "127.0.0.1"
    assert env["PORT_CLIENT"] == "31001" and env["PORT_PEER_BUS"] == "31002"
    assert env["MEMBER_ID"] == "cache-0" and env["INSTANCE"] == "cache" and env["ROLE"] == "MASTER"
    assert env["MESOS_SANDBOX"] == str(launch.sandbox)
    assert env["GREETING"] == "hello cache on 127.0.0.1" and env["PLAIN"] == "x"
    assert (tmp_path / "stdout").exists() and (tmp_path / "stderr").exists()


async def test_kill_before_start_reports_killed_without_starting(tmp_path: Path) -> None:
    launch = make_launch(make_spec(["sleep", "600"]), tmp_path)
    runtime, sink = ProcessRuntime(), RecordingSink()
    monitor = Monitor(launch, runtime, sink)
    monitor.kill()
    update = await monitor.run()
    assert update.state == "TASK_KILLED" and sink.states == ["TASK_KILLED"] and runtime.handle is None


async def test_signal_after_exit_is_harmless(tmp_path: Path, runner: Runner) -> None:
    run = runner.start(make_launch(make_spec(["true"]), tmp_path))
    await run.sink.wait_for("TASK_FINISHED")
    await run.runtime.signal(signal.SIGTERM)
    run.runtime.force_kill_sync()


async def test_killing_is_announced_when_the_framework_can_take_it(tmp_path: Path) -> None:
    launch = make_launch(make_spec(["sleep", "600"]), tmp_path)
    runtime, sink = ProcessRuntime(), RecordingSink()
    monitor = Monitor(launch, runtime, sink, announce_killing=True)
    task = asyncio.create_task(monitor.run())
    try:
        await sink.wait_for("TASK_RUNNING")
        monitor.kill(grace=5)
        await sink.wait_for("TASK_KILLED")
        assert sink.states == ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_KILLED"]
    finally:
        runtime.force_kill_sync()
        await asyncio.gather(task, return_exceptions=True)
