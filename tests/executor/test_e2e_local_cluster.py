"""End to end: a pymesos scheduler launches members through the local cluster, whose agent starts
``python -m mesos_stateful.executor`` with the MESOS_* environment of a Mesos agent."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scheduler_helpers import E2EFramework, task_for

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.testing.cluster import RunningCluster, local_cluster  # noqa: F401

pytestmark = pytest.mark.slow

SERVER = textwrap.dedent("""
    import os, socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((os.environ["HOST"], int(os.environ["PORT_CLIENT"]))); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(os.environ["MEMBER_ID"].encode()); c.close()
""")


@pytest.fixture
def framework(local_cluster: RunningCluster) -> Iterator[E2EFramework]:  # noqa: F811
    fw = E2EFramework(local_cluster.master_address)
    fw.start()
    try:
        yield fw
    finally:
        fw.stop()


def spec(task_id: str, argv: list[str], **fields: Any) -> types_pb2.LaunchSpec:
    s = types_pb2.LaunchSpec(instance="e2e", member_id=task_id.split(".")[0], task_id=task_id,
                             workload="test", role=types_pb2.ROLE_MASTER, argv=argv, **fields)
    return s


def test_starting_running_then_killed(framework: E2EFramework) -> None:
    launch = spec(
        "e2e-0.1", [sys.executable, "-c", SERVER], port_names=["client"], kill_grace_seconds=2,
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="client"), interval_ms=100),
    )
    offer = framework.wait("offer")
    task = task_for(offer, launch)
    framework.driver.launchTasks(offer["id"], [task])
    framework.update("e2e-0.1", "TASK_STARTING")
    running = framework.update("e2e-0.1", "TASK_RUNNING")
    assert running["source"] == "SOURCE_EXECUTOR"
    assert framework.states("e2e-0.1") == ["TASK_STARTING", "TASK_RUNNING"]

    # The member listens on its agent's address and the port the task was given.
    port = task["discovery"]["ports"]["ports"][0]["number"]
    with socket.create_connection((offer["hostname"], port), timeout=10) as conn:
        assert conn.recv(100) == b"e2e-0"

    framework.driver.killTask({"value": "e2e-0.1"})
    killed = framework.update("e2e-0.1", "TASK_KILLED")
    assert killed["source"] == "SOURCE_EXECUTOR" and "killed on request" in killed["message"]


def test_crash_is_failed_with_the_log_tail(framework: E2EFramework) -> None:
    member = "import sys; print('boom: cannot open data dir', file=sys.stderr); sys.exit(7)"
    offer = framework.wait("offer")
    task = task_for(offer, spec("e2e-1.1", [sys.executable, "-c", member]))
    framework.driver.launchTasks(offer["id"], [task])
    failed = framework.update("e2e-1.1", "TASK_FAILED")
    assert failed["source"] == "SOURCE_EXECUTOR"
    assert "exited with code 7" in failed["message"] and "boom: cannot open data dir" in failed["message"]


def test_invalid_data_is_task_error(framework: E2EFramework) -> None:
    offer = framework.wait("offer")
    framework.driver.launchTasks(offer["id"], [task_for(offer, None, data="bm90IGEgbGF1bmNoIHNwZWM=")])
    error = framework.update("bad-0.1", "TASK_ERROR")
    assert error["source"] == "SOURCE_EXECUTOR" and "invalid task" in error["message"]


def test_framework_teardown_shuts_the_executor_down_cleanly(
    local_cluster: RunningCluster, framework: E2EFramework  # noqa: F811
) -> None:
    # The member ignores SIGTERM: the executor must SIGKILL it within the agent's shutdown grace.
    member = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
             "open('ready', 'w').write('y'); time.sleep(600)"
    ready = types_pb2.Check(command=types_pb2.CommandCheck(argv=["test", "-s", "ready"]), interval_ms=50)
    offer = framework.wait("offer")
    task = task_for(offer, spec("e2e-2.1", [sys.executable, "-c", member], readiness=ready))
    framework.driver.launchTasks(offer["id"], [task])
    starting = framework.update("e2e-2.1", "TASK_STARTING")
    framework.update("e2e-2.1", "TASK_RUNNING")
    member_pid = int(starting["message"].rsplit(" ", 1)[1])
    executor = next(ex for agent in local_cluster.agents for ex in agent.executors.values()
                    if ex.executor_id == "e2e-2.1")
    assert executor.proc is not None

    framework.stop()

    deadline = time.monotonic() + 30
    while executor.proc.returncode is None or alive(member_pid):
        assert time.monotonic() < deadline, "executor or member still running 30 s after the teardown"
        time.sleep(0.05)
    assert executor.proc.returncode == 0  # it exited by itself: the agent did not have to kill it


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] not in "ZX"
    except (FileNotFoundError, IndexError):
        return False


def test_member_survives_an_agent_partition_and_the_executor_reconnects(
    local_cluster: RunningCluster, framework: E2EFramework  # noqa: F811
) -> None:
    launch = spec(
        "e2e-3.1", [sys.executable, "-c", SERVER], port_names=["client"], kill_grace_seconds=2,
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="client"), interval_ms=100),
    )
    offer = framework.wait("offer")
    task = task_for(offer, launch)
    framework.driver.launchTasks(offer["id"], [task])
    starting = framework.update("e2e-3.1", "TASK_STARTING")
    framework.update("e2e-3.1", "TASK_RUNNING")
    member_pid = int(starting["message"].rsplit(" ", 1)[1])
    agent_id = offer["agent_id"]["value"]
    agent = local_cluster.stop_agent(agent_id)
    executor = agent.executors[(framework.framework_id, "e2e-3.1")]

    local_cluster.start_agent(agent_id)
    deadline = time.monotonic() + 60
    while executor.stream is None:  # pymesos re-subscribes with a back-off
        assert time.monotonic() < deadline, "the executor did not re-subscribe"
        time.sleep(0.1)
    assert alive(member_pid) and executor.proc is not None and executor.proc.returncode is None
    port = task["discovery"]["ports"]["ports"][0]["number"]
    with socket.create_connection((offer["hostname"], port), timeout=10) as conn:
        assert conn.recv(100) == b"e2e-3"

    framework.driver.killTask({"value": "e2e-3.1"})
    framework.update("e2e-3.1", "TASK_KILLED")
    assert not alive(member_pid)
