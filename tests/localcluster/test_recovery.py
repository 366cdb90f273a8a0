"""Agent recovery as Mesos does it: the local cluster process is killed with SIGKILL and started
again on the same work dir; the executors of checkpointing frameworks (the suite's real executor,
``python -m mesos_stateful.executor``) re-subscribe, their members are never touched, and only an
executor that is gone or does not come back within ``executor_reregistration_timeout`` has its task
reported (docs/agent-recovery.md; src/slave/slave.cpp ``_recover``, ``reregisterExecutorTimeout``)."""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymesos import encode_data

from localcluster.cluster_process import ClusterProcess, alive, kill_left_behind, session_of, sessions_under
from localcluster.harness import Framework
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.localcluster.procs import session_members

pytestmark = pytest.mark.slow

REREGISTRATION = 5.0  # the agents' executor_reregistration_timeout in these tests (Mesos: 2 s)
TERMINAL = {"TASK_LOST", "TASK_FAILED", "TASK_GONE", "TASK_KILLED", "TASK_DROPPED", "TASK_FINISHED"}

SERVER = textwrap.dedent("""
    import os, socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((os.environ["HOST"], int(os.environ["PORT_CLIENT"]))); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(os.environ["MEMBER_ID"].encode()); c.close()
""")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterProcess]:
    proc = ClusterProcess(tmp_path, agents=2, executor_reregistration_timeout=REREGISTRATION)
    proc.start()
    sessions: set[int] = set()
    try:
        proc.wait_agents()
        yield proc
    finally:
        sessions.update(sessions_under(tmp_path))
        proc.stop()
        # Whatever the test did, nothing of the executors may be left (found by their sandboxes).
        left = kill_left_behind(sessions)
        assert not left, f"processes left behind: {left}"


def member_task(offer: Any, task_id: str) -> dict[str, Any]:
    """A TaskInfo as the offers service builds it: the real executor, a LaunchSpec whose member
    answers its member id on the port named ``client``, ready once it listens."""
    spec = types_pb2.LaunchSpec(
        instance="rec",
        member_id=task_id.split(".")[0],
        task_id=task_id,
        workload="test",
        role=types_pb2.ROLE_MASTER,
        argv=[sys.executable, "-c", SERVER],
        port_names=["client"],
        kill_grace_seconds=2,
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="client"), interval_ms=100),
    )
    ranges = [r for res in offer["resources"] if res["name"] == "ports" for r in res["ranges"]["range"]]
    port = ranges[0]["begin"]
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": offer["agent_id"]["value"]},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}},
        ],
        "executor": {
            "executor_id": {"value": task_id},
            "command": {"value": f"{sys.executable} -m mesos_stateful.executor", "shell": True},
        },
        "discovery": {
            "visibility": "FRAMEWORK",
            "name": task_id,
            "ports": {"ports": [{"number": port, "name": "client", "protocol": "tcp"}]},
        },
        "data": encode_data(spec.SerializeToString()),
    }


class Member:
    def __init__(self, task: dict[str, Any], hostname: str, starting: Any) -> None:
        self.task_id: str = task["task_id"]["value"]
        self.agent_id: str = task["agent_id"]["value"]
        self.host = hostname
        self.port: int = task["discovery"]["ports"]["ports"][0]["number"]
        self.pid = int(starting["message"].rsplit(" ", 1)[1])  # "started process <pid>"
        sid = session_of(self.pid)
        assert sid is not None
        self.executor_pid = sid  # the process the agent started (``sh -c``) leads the session
        self.executor = next(
            pid
            for pid in session_members(sid)
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3]
            == [b"-m", b"mesos_stateful.executor"]
        )  # the python process of the executor itself

    def answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=5) as conn:
                return conn.recv(100) == self.task_id.split(".")[0].encode()
        except OSError:
            return False


def launch_members(fw: Framework, task_ids: list[str]) -> list[Member]:
    """One member per offer (so on different agents while there are enough), RUNNING."""
    members = []
    used: set[str] = set()
    for task_id in task_ids:
        offer = fw.offer(lambda o: o["agent_id"]["value"] not in used or len(used) >= 2)
        used.add(offer["agent_id"]["value"])
        task = member_task(offer, task_id)
        fw.driver.launchTasks(offer["id"], [task])
        starting = fw.update(task_id, "TASK_STARTING", timeout=60)
        fw.update(task_id, "TASK_RUNNING", timeout=60)
        members.append(Member(task, offer["hostname"], starting))
    return members


def reconcile(fw: Framework, members: list[Member]) -> dict[str, Any]:
    """Explicit reconciliation: the answer for each member's task."""
    fw.clear("update")
    fw.driver.reconcileTasks(
        [{"task_id": {"value": m.task_id}, "agent_id": {"value": m.agent_id}} for m in members]
    )
    return {
        m.task_id: fw.wait("update", functools.partial(_reconciliation_of, m.task_id)) for m in members
    }


def _reconciliation_of(task_id: str, status: dict[str, Any]) -> bool:
    """``status`` (a TaskStatus as JSON) is the reconciliation answer for ``task_id``."""
    return bool(status["task_id"]["value"] == task_id and status.get("reason") == "REASON_RECONCILIATION")


def restart(cluster: ClusterProcess, fw: Framework, checkpoint: bool = True) -> Framework:
    """kill -9 of the cluster was done; start it again, re-subscribe the framework with its id."""
    cluster.start()
    cluster.wait_agents()
    again = Framework(
        cluster.address, failover_timeout=3600, framework_id=fw.framework_id, checkpoint=checkpoint
    )
    again.start()
    return again


def test_restart_recovers_running_executors_and_never_touches_members(cluster: ClusterProcess) -> None:
    fw = Framework(cluster.address, failover_timeout=3600)
    fw.start()
    members = launch_members(fw, ["rec-0.1", "rec-1.1"])
    agents = {a["id"]: a["port"] for a in cluster.state()["slaves"]}
    fw.stop(failover=True)

    cluster.kill9()
    # The cluster is down: the members keep serving and their executors wait for their agents.
    time.sleep(1.0)  # a real outage lasts; the executors must ride it out, not only poll past it
    for m in members:
        assert alive(m.executor) and alive(m.pid) and m.answers()

    cluster.start()
    # While its agents recover, the new master knows their ids (as its registry) but not their
    # tasks: explicit reconciliation gets no answer then (not TASK_LOST), as a failed-over Mesos
    # master's for agents that have not re-registered yet.
    deadline = time.monotonic() + 30
    while True:
        try:
            recovering = cluster.state()["recovered_slaves"]
            break
        except OSError:
            assert time.monotonic() < deadline, "the cluster did not come back"
            time.sleep(0.05)
    again = Framework(cluster.address, failover_timeout=3600, framework_id=fw.framework_id)
    again.start()
    again.driver.reconcileTasks([{"task_id": {"value": m.task_id}} for m in members])  # answered with 202
    assert {a["id"] for a in recovering} <= set(agents), "the registry's agents, by id"
    still = [a["id"] for a in cluster.state()["recovered_slaves"]]
    if sorted(a["id"] for a in recovering) == sorted(still) == sorted(agents):
        # The call came while no agent had re-registered yet (one that has answers for its task).
        again.none("update", within=0.5)
    cluster.wait_agents()
    try:
        # The same agents (ids and executor API ports) came back.
        assert {a["id"]: a["port"] for a in cluster.state()["slaves"]} == agents
        assert cluster.state()["recovered_slaves"] == []
        answers = reconcile(again, members)
        assert {t: s["state"] for t, s in answers.items()} == {m.task_id: "TASK_RUNNING" for m in members}
        again.none("update", lambda s: s["state"] in TERMINAL, within=2.0)
        for m in members:
            assert alive(m.executor) and alive(m.pid) and m.answers()
        # The master knows the tasks again (learned from the re-registered agents).
        tasks = {t["id"]: t["state"] for f in cluster.state()["frameworks"] for t in f["tasks"]}
        assert tasks == {m.task_id: "TASK_RUNNING" for m in members}
        # The executors re-subscribed: a kill reaches the member through its recovered executor.
        again.driver.killTask({"value": "rec-0.1"})
        killed = again.update("rec-0.1", "TASK_KILLED", timeout=60)
        assert killed["source"] == "SOURCE_EXECUTOR"
        # Its exit is a FAILURE with status -1 (not the agent's child: the exit code is unknown, as
        # Mesos' ``status.getOrElse(-1)``); pymesos' scheduler driver takes it (it needs the field).
        again.wait("executor_lost", lambda eid: eid == "rec-0.1", timeout=30)
        deadline = time.monotonic() + 30
        while alive(members[0].pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(members[0].pid) and members[1].answers()
    finally:
        again.stop(failover=True)


def test_only_executors_that_do_not_come_back_are_reported(cluster: ClusterProcess) -> None:
    fw = Framework(cluster.address, failover_timeout=3600)
    fw.start()
    gone, hung, fine, dies = launch_members(fw, ["gone-0.1", "hung-0.1", "fine-0.1", "dies-0.1"])
    fw.stop(failover=True)

    cluster.kill9()
    os.kill(gone.executor, signal.SIGKILL)  # exits while its agent is down
    os.kill(hung.executor, signal.SIGSTOP)  # alive, but never re-subscribes
    os.kill(dies.pid, signal.SIGKILL)  # the member dies while the agent is down: its executor
    # keeps the TASK_FAILED it cannot send, and sends it with its SUBSCRIBE when the agent is back
    started = time.monotonic()
    again = restart(cluster, fw)
    try:
        failed = again.update("gone-0.1", "TASK_FAILED", timeout=60)
        assert failed["reason"] == "REASON_EXECUTOR_TERMINATED" and failed["source"] == "SOURCE_AGENT"
        lost = again.update("hung-0.1", "TASK_LOST", timeout=60)
        assert lost["reason"] == "REASON_EXECUTOR_REREGISTRATION_TIMEOUT"
        assert lost["source"] == "SOURCE_AGENT"
        assert f"within {REREGISTRATION:g}secs" in lost["message"]
        assert time.monotonic() - started >= REREGISTRATION
        # Their containers were destroyed: no process of their sessions is left.
        deadline = time.monotonic() + 30
        while (session_members(gone.executor_pid) or session_members(hung.executor_pid)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert not session_members(gone.executor_pid) and not session_members(hung.executor_pid)
        died = again.update("dies-0.1", "TASK_FAILED", timeout=60)
        assert died["source"] == "SOURCE_EXECUTOR" and "signal 9" in died["message"], died
        # The third one is untouched and RUNNING.
        answers = reconcile(again, [fine])
        assert answers["fine-0.1"]["state"] == "TASK_RUNNING"
        again.none("update", lambda s: s["task_id"]["value"] == "fine-0.1" and s["state"] in TERMINAL)
        assert alive(fine.pid) and fine.answers()
    finally:
        again.stop(failover=True)


def test_framework_without_checkpoint_is_not_recovered(cluster: ClusterProcess) -> None:
    fw = Framework(cluster.address, failover_timeout=3600, checkpoint=False)
    fw.start()
    (member,) = launch_members(fw, ["nock-0.1"])
    fw.stop(failover=True)

    cluster.kill9()
    # Without checkpointing the executor does not wait for its agent: it kills its member and exits.
    deadline = time.monotonic() + 30
    while session_members(member.executor_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_members(member.executor_pid)
    again = restart(cluster, fw, checkpoint=False)
    try:
        answers = reconcile(again, [member])
        assert answers["nock-0.1"]["state"] == "TASK_LOST"  # unknown to its (re-registered) agent
    finally:
        again.stop(failover=True)
