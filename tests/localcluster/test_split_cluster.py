"""The local cluster split into processes: ``python -m mesos_stateful.localcluster master`` and two
``... agent`` processes (own loopback addresses, own work dirs) registered over the internal agent
protocol (``localcluster/remote.py``). A bare v1 scheduler (every event parsed strictly against
mesos.v1) gets offers from both, runs a real executor on a remote agent, reserves and creates a
volume there; the agent process is killed with SIGKILL (disconnected at once, unreachable after the
ping timeouts) and started again on its work dir: same id, volume offered with its data."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster_process import alive, sessions_under
from localcluster.harness import EXECUTOR
from localcluster.mesos_json import RawScheduler
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.ports import free_port

Json = dict[str, Any]
ROLE = "stateful"
PRINCIPAL = "mesos-stateful"
PING = 0.3  # agent_ping_timeout x max_agent_ping_timeouts = 0.6 s


class Split:
    """A master process and agent processes, each with its own folder under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        base = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}"
        self.ips = [f"{base}.2", f"{base}.3"]
        begin = random.randrange(10000, 29001, 1000)
        self.ports = [f"{begin}-{begin + 99}", f"{begin + 100}-{begin + 199}"]
        self.master: subprocess.Popen[bytes] | None = None
        self.agents: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "mesos_stateful.localcluster", *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()[-4000:]

    def start_master(self, *flags: str) -> None:
        self.master = self._spawn(
            "master",
            [
                "master",
                "--listen",
                self.address,
                "--work-dir",
                str(self.root / "master"),
                "--allocation-interval",
                "0.2",
                "--agent-ping-timeout",
                str(PING),
                "--max-agent-ping-timeouts",
                "2",
                *flags,
            ],
        )

    def work_dir(self, i: int) -> Path:
        return self.root / f"agent-{i}"

    def start_agent(self, i: int) -> None:
        argv = ["agent", "--master", self.address, "--ip", self.ips[i], "--port", "0"]
        argv += ["--work-dir", str(self.work_dir(i)), "--cpus", "2", "--mem", "1024", "--disk", "2000"]
        argv += ["--ports", self.ports[i], "--attributes", f"zone:z{i};rack:r1"]
        argv += [
            "--executor-reregistration-timeout",
            "5",
            "--kill-grace",
            "2",
            "--executor-shutdown-grace",
            "2",
        ]
        if i == 1:
            argv += ["--hostname", f"agent-{i}.test"]
        self.agents[i] = self._spawn(f"agent-{i}", argv)

    def kill9(self, i: int) -> None:
        proc = self.agents.pop(i)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def state(self) -> Json:
        import urllib.request

        with urllib.request.urlopen(f"http://{self.address}/master/state", timeout=5) as resp:
            data: Json = json.loads(resp.read())
            return data

    def agent(self, pred: Callable[[Json], bool]) -> Json | None:
        return next((a for a in self.state()["slaves"] if pred(a)), None)

    def wait(self, cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in [("master", self.master), *((f"agent-{i}", p) for i, p in self.agents.items())]:
                assert proc is not None and proc.poll() is None, f"{name} exited: {self.log(name)}"
            try:
                value = cond()
            except OSError:
                value = None
            if value:
                return value
            assert time.monotonic() < deadline, f"{what} not within {timeout}s; master: {self.log('master')}"
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in [*self.agents.values(), self.master]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a test may have stopped it
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.agents.values(), self.master]:
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def split(tmp_path: Path) -> Iterator[Split]:
    cluster = Split(tmp_path)
    cluster.start_master()
    try:
        cluster.wait(lambda: cluster.state(), "the master answering")
        cluster.start_agent(0)
        cluster.start_agent(1)
        cluster.wait(lambda: len([a for a in cluster.state()["slaves"] if a["active"]]) == 2, "two agents")
        yield cluster
    finally:
        # An agent process leaves its executors running when it stops (as a Mesos agent): the
        # test kills what runs in its sandboxes.
        sessions = sessions_under(tmp_path)
        cluster.stop()
        sessions |= sessions_under(tmp_path)
        for sid in sessions:
            for pid in session_members(sid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sched(split: Split) -> Iterator[RawScheduler]:
    s = RawScheduler(split.address)
    s.info["capabilities"].append({"type": "PARTITION_AWARE"})
    s.start()
    try:
        yield s
    finally:
        s.check()
        s.stop()


def reservation() -> Json:
    return {"type": "DYNAMIC", "role": ROLE, "principal": PRINCIPAL}


def scalar(name: str, value: float) -> Json:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, "reservations": [reservation()]}


def volume(pid: str) -> Json:
    out = scalar("disk", 100)
    out["disk"] = {
        "persistence": {"id": pid, "principal": PRINCIPAL},
        "volume": {"mode": "RW", "container_path": "data"},
    }
    return out


def task(offer: Json, tid: str, resources: list[Json], spec: Json) -> Json:
    return {
        "name": tid,
        "task_id": {"value": tid},
        "agent_id": offer["agent_id"],
        "resources": resources,
        "executor": {
            "executor_id": {"value": f"exec-{tid}"},
            "command": {"value": f"{sys.executable} {EXECUTOR}", "shell": True},
        },
        "data": base64.b64encode(json.dumps(spec).encode()).decode(),
    }


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unreserved(name: str, value: float) -> Json:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


def volumes_of(offer: Json) -> list[Json]:
    return [r for r in offer["resources"] if "persistence" in r.get("disk", {})]


def test_split_remote_agents_are_offered_and_run_a_real_executor(split: Split, sched: RawScheduler) -> None:
    state = split.state()
    agents = {a["pid"].split("@")[1].rsplit(":", 1)[0]: a for a in state["slaves"]}
    assert set(agents) == set(split.ips)
    assert agents[split.ips[0]]["hostname"] == split.ips[0]
    assert agents[split.ips[1]]["hostname"] == "agent-1.test"
    assert agents[split.ips[1]]["attributes"] == {"zone": "z1", "rack": "r1"}
    assert agents[split.ips[0]]["resources"]["cpus"] == 2.0
    assert all(a["active"] and a["state"] == "ACTIVE" for a in agents.values())

    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        offer = sched.offer(lambda o: o["agent_id"]["value"] not in seen)
        seen.add(offer["agent_id"]["value"])
        if len(seen) < 2:
            sched.decline(offer)
    assert seen == {a["id"] for a in agents.values()}

    # A real executor (pymesos' MesosExecutorDriver) on the remote agent (the last offer's).
    aid = offer["agent_id"]["value"]
    index = next(i for i, ip in enumerate(split.ips) if agents[ip]["id"] == aid)
    spec = {"write": {"hello": "from the agent process"}, "read": "hello", "child": True}
    sched.accept(
        offer,
        [
            {
                "type": "LAUNCH",
                "launch": {
                    "task_infos": [
                        task(offer, "t-run", [unreserved("cpus", 0.5), unreserved("mem", 64)], spec)
                    ]
                },
            }
        ],
    )
    running = sched.update("t-run", "TASK_RUNNING", timeout=60)
    assert running["message"] == "from the agent process"
    assert running["agent_id"]["value"] == aid and running["source"] == "SOURCE_EXECUTOR"
    sandboxes = list(
        split.work_dir(index).glob(f"slaves/{aid}/frameworks/*/executors/exec-t-run/runs/*/hello")
    )
    assert len(sandboxes) == 1, sandboxes

    # Framework messages both ways (FrameworkToExecutorMessage, ExecutorToFrameworkMessage).
    body = {"agent_id": {"value": aid}, "executor_id": {"value": "exec-t-run"}, "data": encode(b"ping")}
    assert sched.call("MESSAGE", body) == 202
    echo = sched.wait("MESSAGE")["message"]
    assert base64.b64decode(echo["data"]) == b"echo:ping" and echo["agent_id"]["value"] == aid

    fw = next(f for f in split.state()["frameworks"] if f["id"] == sched.framework_id)
    assert [e["executor_id"] for e in fw["executors"]] == ["exec-t-run"]
    assert [(t["id"], t["slave_id"], t["state"]) for t in fw["tasks"]] == [("t-run", aid, "TASK_RUNNING")]

    assert sched.call("KILL", {"task_id": {"value": "t-run"}, "agent_id": {"value": aid}}) == 202
    sched.update("t-run", "TASK_KILLED", timeout=60)
    # The executor ends; its resources come back (the master's mirror of the agent's executors).
    split.wait(
        lambda: split.agent(lambda a: a["id"] == aid)["used_resources"]["cpus"] == 0.0,  # type: ignore[index]
        "the executor's resources freed",
    )


def test_split_agent_killed_and_restarted_keeps_its_id_volume_and_executor(
    split: Split, sched: RawScheduler
) -> None:
    offer = sched.offer(lambda o: o["hostname"] == split.ips[0])
    aid = offer["agent_id"]["value"]
    pid = f"m-{uuid.uuid4().hex[:6]}"
    resources = [scalar("cpus", 0.5), scalar("mem", 64), scalar("disk", 100)]
    sched.accept(
        offer,
        [
            {"type": "RESERVE", "reserve": {"resources": resources}},
            {"type": "CREATE", "create": {"volumes": [volume(pid)]}},
            {
                "type": "LAUNCH",
                "launch": {
                    "task_infos": [
                        task(
                            offer,
                            "t-vol",
                            [*resources[:2], volume(pid)],
                            {"write": {"data/hello": "kept"}, "child": True},
                        )
                    ]
                },
            },
        ],
    )
    sched.update("t-vol", "TASK_RUNNING", timeout=60)
    target = split.work_dir(0) / "volumes" / "roles" / ROLE / pid
    assert (target / "hello").read_text() == "kept"
    executor_sessions = sessions_under(split.work_dir(0))
    assert executor_sessions

    split.kill9(0)
    # The connection closed: disconnected at once (Master::exited), not yet unreachable.
    gone = split.wait(lambda: split.agent(lambda a: a["id"] == aid and not a["active"]), "disconnected", 5)
    assert gone["state"] == "DISCONNECTED"
    # After the ping timeouts: unreachable, the task TASK_UNREACHABLE (a PARTITION_AWARE framework).
    status = sched.update("t-vol", "TASK_UNREACHABLE", timeout=10)
    assert status["reason"] == "REASON_AGENT_REMOVED" and status["source"] == "SOURCE_MASTER"
    assert split.agent(lambda a: a["id"] == aid) is None and split.state()["unreachable_slaves"] == 1
    # Its executor (a checkpointing framework's) outlives the agent process.
    assert any(session_members(s) for s in executor_sessions)

    split.start_agent(0)
    back = split.wait(lambda: split.agent(lambda a: a["id"] == aid and a["active"]), "the agent back", 30)
    assert back["pid"].startswith(f"slave(1)@{split.ips[0]}:")
    # It recovered the executor: the task is RUNNING again (Master::__reregisterSlave).
    again = sched.update("t-vol", "TASK_RUNNING", timeout=30)
    assert again["reason"] == "REASON_AGENT_REREGISTERED"

    assert sched.call("KILL", {"task_id": {"value": "t-vol"}, "agent_id": {"value": aid}}) == 202
    sched.update("t-vol", "TASK_KILLED", timeout=60)
    with_volume = sched.offer(lambda o: o["agent_id"]["value"] == aid and bool(volumes_of(o)), timeout=30)
    (vol,) = volumes_of(with_volume)
    assert vol["disk"]["persistence"]["id"] == pid
    held = [r for r in with_volume["resources"] if r.get("reservations") and "disk" not in r]
    reader = task(with_volume, "t-read", [*held, vol], {"read": "data/hello", "finish": True})
    sched.accept(with_volume, [{"type": "LAUNCH", "launch": {"task_infos": [reader]}}])
    assert sched.update("t-read", "TASK_FINISHED", timeout=60)["message"] == "kept"

    # DESTROY + UNRESERVE: the agent process deletes the volume's directory (CheckpointResources).
    last = sched.offer(lambda o: o["agent_id"]["value"] == aid and bool(volumes_of(o)), timeout=30)
    (vol,) = volumes_of(last)
    sched.accept(
        last,
        [
            {"type": "DESTROY", "destroy": {"volumes": [vol]}},
            {"type": "UNRESERVE", "unreserve": {"resources": resources}},
        ],
    )
    split.wait(lambda: not target.exists(), "the volume's directory deleted")
    split.wait(
        lambda: not split.agent(lambda a: a["id"] == aid)["reserved_resources_full"],  # type: ignore[index]
        "no reservation left",
    )
    meta = json.loads((split.work_dir(0) / "meta" / "resources.json").read_text())
    assert meta == []


def test_split_non_checkpointing_tasks_lost_at_once_and_orphans_destroyed(split: Split) -> None:
    sched = RawScheduler(split.address, name="nocheckpoint")
    sched.info["checkpoint"] = False
    sched.start()
    try:
        offer = sched.offer(lambda o: o["hostname"] == "agent-1.test")
        aid = offer["agent_id"]["value"]
        launch = task(offer, "t-orphan", [unreserved("cpus", 0.5), unreserved("mem", 64)], {"child": True})
        sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [launch]}}])
        sched.update("t-orphan", "TASK_RUNNING", timeout=60)
        sessions = {s for s in sessions_under(split.work_dir(1)) if session_members(s)}
        assert sessions

        split.kill9(1)
        lost = sched.update("t-orphan", "TASK_LOST", timeout=5)  # at once: no ping timeout
        assert lost["reason"] == "REASON_AGENT_DISCONNECTED"

        # The restarted agent destroys what it does not recover (its executor, if still alive).
        split.start_agent(1)
        split.wait(lambda: split.agent(lambda a: a["id"] == aid and a["active"]), "the agent back", 30)
        split.wait(lambda: not any(session_members(s) for s in sessions), "orphans destroyed", 30)
        assert not any(alive(s) for s in sessions)
    finally:
        sched.check()
        sched.stop()


def test_split_silent_agent_is_unreachable_then_reregisters(split: Split, sched: RawScheduler) -> None:
    offer = sched.offer(lambda o: o["hostname"] == split.ips[0])
    aid = offer["agent_id"]["value"]
    sched.decline(offer)
    # The fault endpoint acts on in-process agents only, and says so.
    import urllib.error
    import urllib.request

    fault = urllib.request.Request(f"http://{split.address}/faults/agents/{aid}/stop", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(fault, timeout=10)
    assert refused.value.code == 404 and "runs in a process of its own" in refused.value.read().decode()

    proc = split.agents[0]
    proc.send_signal(signal.SIGSTOP)
    try:
        # Connected but silent: still active until the ping timeouts, then unreachable.
        split.wait(lambda: split.state()["unreachable_slaves"] == 1, "unreachable", 10)
        assert split.agent(lambda a: a["id"] == aid) is None
    finally:
        proc.send_signal(signal.SIGCONT)
    back = split.wait(lambda: split.agent(lambda a: a["id"] == aid and a["active"]), "re-registered", 30)
    assert back["reregistered_time"] >= back["registered_time"]
    assert split.state()["unreachable_slaves"] == 0


def operator(split: Split, call: Json) -> Json:
    """One operator API call (``POST /api/v1``, JSON); its Response parsed strictly."""
    import urllib.request

    from google.protobuf import json_format

    from mesos_stateful.api.mesos.v1.master import master_pb2

    request = urllib.request.Request(
        f"http://{split.address}/api/v1",
        data=json.dumps(call).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        body = resp.read()
    if not body:
        return {}
    answer: Json = json.loads(body)
    json_format.ParseDict(answer, master_pb2.Response())
    return answer


def exits(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    return proc.wait(timeout)


def test_split_suite_executor_and_operator_api_on_remote_agents(split: Split, sched: RawScheduler) -> None:
    from mesos_stateful.api.stateful.v1 import types_pb2

    agents = operator(split, {"type": "GET_AGENTS"})["get_agents"]["agents"]
    assert sorted(a["pid"].split("@")[1].rsplit(":", 1)[0] for a in agents) == sorted(split.ips)
    assert all(a["active"] for a in agents)

    offer = sched.offer(lambda o: o["hostname"] == "agent-1.test")
    aid = offer["agent_id"]["value"]
    spec = types_pb2.LaunchSpec(
        instance="split",
        member_id="split-0",
        task_id="split-0.1",
        workload="test",
        role=types_pb2.ROLE_MASTER,
        argv=["sleep", "1000"],
        kill_grace_seconds=2,
    )
    member = task(offer, "split-0.1", [unreserved("cpus", 0.5), unreserved("mem", 64)], {})
    member["executor"]["command"]["value"] = f"{sys.executable} -m mesos_stateful.executor"
    member["data"] = encode(spec.SerializeToString())
    sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [member]}}])
    sched.update("split-0.1", "TASK_RUNNING", timeout=60)
    sessions = {s for s in sessions_under(split.work_dir(1)) if session_members(s)}
    assert sessions and all(len(session_members(s)) >= 2 for s in sessions)  # the executor and its member

    executors = operator(split, {"type": "GET_EXECUTORS"})["get_executors"]["executors"]
    assert [(e["agent_id"]["value"], e["executor_info"]["executor_id"]["value"]) for e in executors] == [
        (aid, "exec-split-0.1")
    ]
    tasks = operator(split, {"type": "GET_TASKS"})["get_tasks"]["tasks"]
    assert [(t["task_id"]["value"], t["agent_id"]["value"], t["state"]) for t in tasks] == [
        ("split-0.1", aid, "TASK_RUNNING")
    ]

    assert sched.call("KILL", {"task_id": {"value": "split-0.1"}, "agent_id": {"value": aid}}) == 202
    sched.update("split-0.1", "TASK_KILLED", timeout=60)
    split.wait(lambda: not any(session_members(s) for s in sessions), "the executor and member gone")


def test_split_machine_down_shuts_the_agent_process_down(split: Split, sched: RawScheduler) -> None:
    offer = sched.offer(lambda o: o["hostname"] == split.ips[0])
    aid = offer["agent_id"]["value"]
    launch = task(offer, "t-down", [unreserved("cpus", 0.5), unreserved("mem", 64)], {"child": True})
    sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [launch]}}])
    sched.update("t-down", "TASK_RUNNING", timeout=60)
    sessions = {s for s in sessions_under(split.work_dir(0)) if session_members(s)}
    assert sessions

    machine = {"hostname": split.ips[0], "ip": split.ips[0]}
    window = {
        "machine_ids": [machine],
        "unavailability": {
            "start": {"nanoseconds": time.time_ns()},
            "duration": {"nanoseconds": 3600 * 10**9},
        },
    }
    schedule = {
        "type": "UPDATE_MAINTENANCE_SCHEDULE",
        "update_maintenance_schedule": {"schedule": {"windows": [window]}},
    }
    operator(split, schedule)
    # DRAINING: the framework with a task there gets an inverse offer for that agent.
    inverse = sched.wait("INVERSE_OFFERS", timeout=10)["inverse_offers"]["inverse_offers"]
    assert [i["agent_id"]["value"] for i in inverse] == [aid]
    operator(split, {"type": "START_MAINTENANCE", "start_maintenance": {"machines": [machine]}})
    lost = sched.update("t-down", "TASK_LOST", timeout=10)
    assert lost["reason"] == "REASON_AGENT_REMOVED"
    # ShutdownMessage: the agent shuts its executors down and exits 0.
    proc = split.agents.pop(0)
    assert exits(proc) == 0, split.log("agent-0")
    assert not any(session_members(s) for s in sessions)
    assert split.agent(lambda a: a["id"] == aid) is None

    # Started again while its machine is DOWN: refused and shut down.
    split.start_agent(0)
    assert exits(split.agents.pop(0)) == 0
    assert "Machine is `DOWN`" in split.log("agent-0")

    operator(split, {"type": "STOP_MAINTENANCE", "stop_maintenance": {"machines": [machine]}})
    split.start_agent(0)
    back = split.wait(lambda: split.agent(lambda a: a["id"] == aid and a["active"]), "the agent back", 30)
    assert back["hostname"] == split.ips[0]


def test_split_master_restart_agents_reregister_with_their_tasks(split: Split) -> None:
    sched = RawScheduler(split.address, name="failover")
    sched.info["capabilities"].append({"type": "PARTITION_AWARE"})
    sched.start()
    try:
        offer = sched.offer(lambda o: o["hostname"] == "agent-1.test")
        aid = offer["agent_id"]["value"]
        launch = task(offer, "t-failover", [unreserved("cpus", 0.5), unreserved("mem", 64)], {"child": True})
        sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [launch]}}])
        sched.update("t-failover", "TASK_RUNNING", timeout=60)
        sched.check()
    finally:
        # The scheduler goes away without TEARDOWN (its failover timeout keeps the task).
        sched._closed = True
        if sched._conn is not None:
            sched._conn.close()
    ids = sorted(a["id"] for a in split.state()["slaves"])

    assert split.master is not None
    split.master.send_signal(signal.SIGKILL)
    split.master.wait(30)
    for proc in split.agents.values():
        proc.send_signal(signal.SIGSTOP)  # the agents are slow to come back
    try:
        split.start_master("--agent-reregister-timeout", "4")
        # A new master (new id) knows the agent processes from its registry: recovered, not offered.
        recovered = split.wait(lambda: split.state()["recovered_slaves"], "recovered agents", 30)
        assert sorted(a["id"] for a in recovered) == ids
        assert split.state()["slaves"] == []
        again = RawScheduler(split.address, name="failover", framework_id=sched.framework_id)
        again.info["capabilities"].append({"type": "PARTITION_AWARE"})
        again.start()
        # Its task is on an agent that has not re-registered: reconciliation gets no answer (not
        # TASK_UNKNOWN / TASK_LOST), as a failed-over Mesos master's.
        asked = {"tasks": [{"task_id": {"value": "t-failover"}, "agent_id": {"value": aid}}]}
        assert again.call("RECONCILE", asked) == 202
        with pytest.raises(AssertionError, match="no UPDATE event"):
            again.wait("UPDATE", timeout=1.0)
        split.agents[1].send_signal(signal.SIGCONT)
    finally:
        split.agents[1].send_signal(signal.SIGCONT)
    try:
        split.wait(lambda: split.agent(lambda a: a["id"] == aid and a["active"]), "agent-1 back", 30)
        fw = split.wait(
            lambda: next((f for f in split.state()["frameworks"] if f["id"] == sched.framework_id), None),
            "the framework's task learnt from its agent",
        )
        assert [(t["id"], t["slave_id"], t["state"]) for t in fw["tasks"]] == [
            ("t-failover", aid, "TASK_RUNNING")
        ]
        assert again.call("RECONCILE", asked) == 202
        # (An update the agent still holds unacknowledged may come first: it is sent again.)
        reconciled = again.wait(
            "UPDATE", lambda e: e["update"]["status"].get("reason") == "REASON_RECONCILIATION"
        )["update"]["status"]
        assert (reconciled["task_id"]["value"], reconciled["state"]) == ("t-failover", "TASK_RUNNING")

        # The other agent does not re-register within agent_reregister_timeout: unreachable.
        split.wait(lambda: split.state()["unreachable_slaves"] == 1, "agent-0 unreachable", 15)
        other = next(i for i in ids if i != aid)
        split.agents[0].send_signal(signal.SIGCONT)
        split.wait(lambda: split.agent(lambda a: a["id"] == other and a["active"]), "agent-0 back", 30)

        assert again.call("KILL", {"task_id": {"value": "t-failover"}, "agent_id": {"value": aid}}) == 202
        again.update("t-failover", "TASK_KILLED", timeout=60)
    finally:
        split.agents[0].send_signal(signal.SIGCONT)
        again.check()
        again.stop()


def test_split_agent_settings_and_ip_auto() -> None:
    import socket

    from mesos_stateful.localcluster.agent_process import resolve_ip
    from mesos_stateful.localcluster.settings import AgentSettings

    settings = AgentSettings.load(["--ports", "31000-31099", "--attributes", "zone:a; rack:r1"])
    assert settings.port_range() == (31000, 31099)
    assert settings.attribute_map() == {"zone": "a", "rack": "r1"}
    assert resolve_ip("auto") == socket.gethostbyname(socket.gethostname())
    assert resolve_ip("127.0.0.9") == "127.0.0.9"
    for bad in (["--ports", "9-1"], ["--attributes", "novalue"], ["--master", "nohostport"]):
        with pytest.raises(SystemExit, match="AgentSettings: invalid settings"):
            AgentSettings.load(bad)


def test_split_sigterm_of_an_agent_leaves_its_executor_to_its_restart(
    split: Split, sched: RawScheduler
) -> None:
    offer = sched.offer(lambda o: o["hostname"] == split.ips[0])
    aid = offer["agent_id"]["value"]
    launch = task(offer, "t-term", [unreserved("cpus", 0.5), unreserved("mem", 64)], {"child": True})
    sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [launch]}}])
    running = sched.update("t-term", "TASK_RUNNING", timeout=60)
    executor = json.loads(base64.b64decode(running["data"]))["pid"]
    proc = split.agents.pop(0)
    proc.send_signal(signal.SIGTERM)
    assert exits(proc) == 0
    assert alive(executor)  # a stopped agent leaves its executors running, as a Mesos agent
    split.wait(lambda: not split.agent(lambda a: a["id"] == aid and a["active"]), "the agent disconnected")

    split.start_agent(0)
    split.wait(lambda: split.agent(lambda a: a["id"] == aid and a["active"]), "the agent back", 30)
    # The executor re-subscribed: the task is still RUNNING and can be killed through the agent.
    assert alive(executor)
    assert sched.call("KILL", {"task_id": {"value": "t-term"}, "agent_id": {"value": aid}}) == 202
    sched.update("t-term", "TASK_KILLED", timeout=60)
    split.wait(lambda: not alive(executor), "the executor gone")
    # (The restart takes longer than these tests' ping timeouts: TASK_UNREACHABLE meanwhile, then
    # RUNNING again; never a terminal state.)
    states = [e["update"]["status"]["state"] for e in sched.seen if e.get("type") == "UPDATE"]
    assert not {"TASK_LOST", "TASK_FAILED", "TASK_GONE", "TASK_DROPPED"} & set(states), states


def test_split_pymesos_scheduler_gets_offers_from_both_agent_processes(split: Split) -> None:
    from localcluster.harness import Framework, task_info

    fw = Framework(split.address, partition_aware=True)
    fw.start()
    try:
        ids = {a["id"] for a in split.state()["slaves"]}
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while set(seen) != ids and time.monotonic() < deadline:
            offer = fw.offer(lambda o: o["agent_id"]["value"] not in seen)
            seen[offer["agent_id"]["value"]] = offer
        assert set(seen) == ids
        fw.driver.launchTasks(offer["id"], [task_info(offer, task_id="t-pymesos", spec={"child": True})])
        running = fw.update("t-pymesos", "TASK_RUNNING", timeout=60)
        assert running["agent_id"]["value"] == offer["agent_id"]["value"]
        fw.driver.killTask({"value": "t-pymesos"})
        fw.update("t-pymesos", "TASK_KILLED", timeout=60)
    finally:
        fw.stop()
