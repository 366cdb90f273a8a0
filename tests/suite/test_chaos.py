"""The acceptance run of issue 10 ("a crash of any service never touches a database"): the real
suite (`make run`'s runner, two replicas of lifecycle and of offers, the redis, mysql and etcd
workload services) with a 3-member Redis instance under continuous WAIT-acknowledged writes.

Each service is killed with SIGKILL in turn: state, gateway, the offers leader, the offers
standby, the lifecycle leader, the lifecycle standby, each workload service, the local cluster
process and the embedded etcd. Every pid is the suite's own (``<data_dir>/suite-status.json``,
the embedded etcd as the state service's child), leaders are read from their KIND_LEADER record.
After each kill: the service is back (restarted and healthy, or a standby leads) within a stated
bound, no member was relaunched (same task ids, same redis-server processes), the instance stays
RUNNING, the writes go on, and every acknowledged key is on the master. Then, right after a kill
of the lifecycle leader, of the offers leader, of the redis workload service, of the local
cluster and of the state service, the Redis master is killed too: each time it is failed over (a
new master, the old one back as a replica, the other members untouched) with nothing
acknowledged lost.

The measured recovery times are printed (``-s``); they are asserted only with bounds that catch
a hang.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as ipb_grpc
from mesos_stateful.api.stateful.v1 import offer_service_pb2 as opb
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as opb_grpc
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import state_service_pb2_grpc as spb_grpc
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.leadership import LeadershipSettings
from mesos_stateful.common.channels import channel_options
from mesos_stateful.common.server import is_serving
from mesos_stateful.localcluster.settings import LocalClusterSettings

from .suite_helpers import (
    create_when_up,
    processes_under,
    start_suite,
    stop_suite,
    suite_env,
    wait_until,
)

pytestmark = pytest.mark.slow

WORKLOADS = ("redis", "mysql", "etcd")
REPLICAS = 2  # the default controller_replicas of `make run`
# The local cluster's executor re-registration timeout as `make run` has it (Mesos' default, 2 s).
REREGISTRATION_TIMEOUT: float = LocalClusterSettings.model_fields["executor_reregistration_timeout"].default
# Bounds that catch a hang (seconds), not goals: a killed service is restarted after 0.25-0.5 s
# of backoff and serves within a few seconds; a standby leads within the lease's takeover bound.
RESTART_BOUND = 45.0
TAKEOVER_BOUND = LeadershipSettings.model_validate({}).takeover_bound_seconds + 10.0
FAILOVER_BOUND = 120.0
# After a service is back, the members are watched this long for a relaunch: a restarted local
# cluster waits up to the re-registration timeout for the executors before it reports any lost.
QUIET_SECONDS = REREGISTRATION_TIMEOUT + 3.0
# Acknowledged writes that must follow every recovery (the writer is not stuck).
PROGRESS = 50
TIMINGS: dict[str, float] = {}


def _instance_stub(endpoint: str) -> tuple[grpc.Channel, ipb_grpc.InstanceServiceStub]:
    channel = grpc.insecure_channel(endpoint, options=channel_options())
    return channel, ipb_grpc.InstanceServiceStub(channel)


def get_instance(endpoint: str, secrets: bool = False) -> ipb.GetInstanceResponse:
    channel, stub = _instance_stub(endpoint)
    with channel:
        reply: ipb.GetInstanceResponse = stub.GetInstance(
            ipb.GetInstanceRequest(name="cache", include_secrets=secrets), timeout=5
        )
        return reply


def master_of(instance: T.Instance) -> T.Member:
    masters = [m for m in instance.members if m.role == T.ROLE_MASTER]
    assert len(masters) == 1, [(m.id, T.Role.Name(m.role)) for m in instance.members]
    return masters[0]


def redis_client(member: T.Member, password: str) -> redis.Redis:
    return redis.Redis(
        host=member.host,
        port=member.ports["redis"],
        password=password,
        socket_timeout=5,
        socket_connect_timeout=2,
        decode_responses=True,
    )


class Writer(threading.Thread):
    """Writes increasing keys ``w-<i>`` to the current master, each as ``SET`` then ``WAIT 1
    <wait_ms>`` in one pipeline; a key is acknowledged only when WAIT returned >= 1. The master is
    looked up through the gateway API on the first write and after every error (a killed or
    demoted master: connection refused, READONLY), so the writer follows a master change."""

    def __init__(self, endpoint: str, password: str, wait_ms: int = 1000) -> None:
        super().__init__(name="acknowledged-writer", daemon=True)
        self.endpoint = endpoint
        self.password = password
        self.wait_ms = wait_ms
        self.acknowledged: dict[str, str] = {}
        self.unacknowledged = 0
        self.errors: Counter[str] = Counter()
        self.masters: list[str] = []  # member ids written to, in order (a change appends)
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def acked(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self.acknowledged)

    def run(self) -> None:
        i = 0
        client: redis.Redis | None = None
        while not self._stopping.is_set():
            if client is None:
                try:
                    member = master_of(get_instance(self.endpoint).instance)
                except (grpc.RpcError, AssertionError) as error:
                    self._count(error)
                    self._stopping.wait(0.1)
                    continue
                if not self.masters or self.masters[-1] != member.id:
                    self.masters.append(member.id)
                client = redis_client(member, self.password)
            key, value = f"w-{i}", f"value-{i}"
            i += 1
            try:
                pipe = client.pipeline(transaction=False)
                pipe.set(key, value)
                pipe.execute_command("WAIT", 1, self.wait_ms)  # type: ignore[no-untyped-call]
                stored, acked = pipe.execute(raise_on_error=False)
            except redis.RedisError as error:  # the connection dropped: whether SET landed is unknown
                self._count(error)
                client.close()
                client = None
                self._stopping.wait(0.05)
                continue
            if isinstance(stored, Exception):  # READONLY once demoted, ...
                self._count(stored)
                client.close()
                client = None
                self._stopping.wait(0.05)
                continue
            if isinstance(acked, int) and acked >= 1:
                with self._lock:
                    self.acknowledged[key] = value
            else:
                self.unacknowledged += 1
            self._stopping.wait(0.005)
        if client is not None:
            client.close()

    def _count(self, error: BaseException) -> None:
        self.errors[type(error).__name__ + ": " + str(error).split("\n", 1)[0][:60]] += 1

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)


@dataclass
class Chaos:
    endpoint: str
    env: dict[str, str]
    runner: Any
    data_dir: Path
    log: Path
    password: str
    writer: Writer
    tasks: dict[str, str] = field(default_factory=dict)  # member id -> task id
    pids: dict[str, int] = field(default_factory=dict)  # redis-server host:port -> pid

    # --- the suite's own view -------------------------------------------------------------
    def alive(self) -> bool:
        assert self.runner.poll() is None, self.log.read_text()[-5000:]
        return True

    def status(self) -> dict[str, Any]:
        services: dict[str, Any] = json.loads((self.data_dir / "suite-status.json").read_text())["services"]
        return services

    def address(self, service: str) -> str:
        """The listen address of a replica (``offers-2``) or service, as the suite assigns it."""
        base, _, index = service.rpartition("-")
        host, _, port = self.env[f"STATEFUL_SUITE_{base.upper()}"].rpartition(":")
        return f"{host}:{int(port) + int(index) - 1}"

    def lease(self, role: str) -> T.LeaderLease | None:
        """The role's KIND_LEADER record, read from the state service (None while it is down)."""
        with grpc.insecure_channel(self.env["STATEFUL_SUITE_STATE"], options=channel_options()) as channel:
            try:
                reply = spb_grpc.StateServiceStub(channel).Get(
                    spb.GetRequest(key=spb.RecordKey(kind=spb.KIND_LEADER, name=role)), timeout=3
                )
            except grpc.RpcError:
                return None
        return reply.record.leader if reply.record.leader.holder else None

    def leader(self, role: str) -> tuple[str, T.LeaderLease]:
        """(replica name, lease) of the role's leader."""
        lease = self.lease(role)
        assert lease is not None, f"no {role} leader"
        names = [f"{role}-{i + 1}" for i in range(REPLICAS)]
        name = next((n for n in names if self.address(n) == lease.address), None)
        assert name is not None, f"{role} leader at {lease.address}, not one of {names}"
        return name, lease

    def offers_subscribed(self, name: str) -> bool:
        with grpc.insecure_channel(self.address(name), options=channel_options()) as channel:
            try:
                reply = opb_grpc.OfferServiceStub(channel).GetCluster(opb.GetClusterRequest(), timeout=2)
            except grpc.RpcError:
                return False
        return bool(reply.subscribed)

    # --- the members ------------------------------------------------------------------------
    def member_pids(self) -> dict[str, int]:
        """redis-server's ``host:port`` argument -> pid, for the members under the data dir."""
        found = {}
        for line in processes_under(self.data_dir):
            pid, _, cmdline = line.partition(": ")
            if "redis-server" in cmdline.split(" ", 1)[0]:
                found[cmdline.split(" ")[1]] = int(pid)
        return found

    def instance(self) -> T.Instance | None:
        """The instance through the gateway (None while the API does not answer)."""
        try:
            return get_instance(self.endpoint).instance
        except grpc.RpcError:
            return None

    def untouched(self) -> bool:
        """No member relaunched (same tasks, same processes) and the instance RUNNING; an API
        that does not answer (its service is down) checks only the processes."""
        assert self.member_pids() == self.pids, "a redis-server was stopped or started"
        instance = self.instance()
        if instance is not None:
            assert {m.id: m.task_id for m in instance.members} == self.tasks, "a member was relaunched"
            assert instance.phase == T.INSTANCE_PHASE_RUNNING, T.InstancePhase.Name(instance.phase)
            assert all(m.state == T.MEMBER_STATE_RUNNING for m in instance.members), instance.members
        return True

    def baseline(self) -> None:
        instance = self.instance()
        assert instance is not None
        self.tasks = {m.id: m.task_id for m in instance.members}
        self.pids = self.member_pids()
        assert len(self.tasks) == 3 and len(self.pids) == 3, (self.tasks, self.pids)

    def master_pid(self) -> tuple[T.Member, int]:
        instance = self.instance()
        assert instance is not None
        master = master_of(instance)
        return master, self.member_pids()[f"{master.host}:{master.ports['redis']}"]

    # --- the checks after each kill ---------------------------------------------------------
    def writes_go_on(self) -> None:
        target = self.writer.acked() + PROGRESS
        wait_until(
            lambda: self.writer.acked() >= target,
            60,
            f"{PROGRESS} more acknowledged writes (errors: {dict(self.writer.errors)})",
        )

    def nothing_lost(self) -> None:
        """Every acknowledged key is on the current master with its value."""
        written = self.writer.snapshot()
        instance = self.instance()
        assert instance is not None
        client = redis_client(master_of(instance), self.password)
        try:
            keys = list(written)
            missing = []
            for start in range(0, len(keys), 5000):
                chunk = keys[start : start + 5000]
                values = client.mget(chunk)
                missing += [k for k, v in zip(chunk, values, strict=True) if v != written[k]]
        finally:
            client.close()
        assert missing == [], f"{len(missing)} of {len(keys)} acknowledged writes lost: {missing[:10]}"


def holds_for(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check()
        time.sleep(0.25)


def wait_checked(chaos: Chaos, condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds (returns the seconds it took), checking at every poll
    that the suite runs and the members are untouched."""
    started = time.monotonic()

    def done() -> bool:
        chaos.alive()
        chaos.untouched()
        return condition()

    wait_until(done, timeout, what)
    return time.monotonic() - started


def restarted(chaos: Chaos, name: str, before: dict[str, Any]) -> Callable[[], bool]:
    def check() -> bool:
        now = chaos.status()[name]
        return bool(
            now["restarts"] == before["restarts"] + 1 and now["healthy"] and now["pid"] != before["pid"]
        )

    return check


def report(what: str, seconds: float) -> None:
    TIMINGS[what] = seconds
    print(f"\nchaos: {what}: {seconds:.2f} s")


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    folder = tmp_path_factory.mktemp("chaos")
    data_dir = folder / "state"
    endpoint, env = suite_env(data_dir, WORKLOADS)
    # `make run`'s defaults: two replicas of each controller, Mesos' re-registration timeout.
    env.pop("STATEFUL_SUITE_CONTROLLER_REPLICAS", None)
    env.pop("STATEFUL_CLUSTER_EXECUTOR_REREGISTRATION_TIMEOUT", None)
    log = folder / "suite.log"
    runner = start_suite(env, log)
    writer: Writer | None = None
    try:
        create_when_up(runner, log, endpoint)
        password = get_instance(endpoint, secrets=True).secrets["password"]
        writer = Writer(endpoint, password)
        chaos = Chaos(endpoint, env, runner, data_dir, log, password, writer)
        # state, gateway, cluster, console; offers and lifecycle replicas; the workload services.
        assert len(chaos.status()) == 4 + 2 * REPLICAS + len(WORKLOADS), sorted(chaos.status())
        chaos.baseline()
        writer.start()
        chaos.writes_go_on()
        yield chaos
    finally:
        if writer is not None:
            writer.stop()
            print(
                f"\nchaos: writer: {len(writer.acknowledged)} acknowledged, {writer.unacknowledged} not "
                f"acknowledged by WAIT, masters {writer.masters}, errors {dict(writer.errors)}"
            )
        print("chaos: timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in TIMINGS.items()))
        code = stop_suite(runner, 120)
        assert code == 0, log.read_text()[-5000:]
        wait_until(lambda: not processes_under(data_dir), 60, "every process of the suite to end")


def _kill_service(chaos: Chaos, name: str) -> float:
    """SIGKILL the suite's service ``name``; returns the monotonic time of the kill."""
    before = chaos.status()[name]
    # "healthy" is the supervisor's latest probe (one slow probe on a loaded machine can clear it
    # for a second); the pid is what the kill needs.
    assert before["pid"], before
    killed_at = time.monotonic()
    os.kill(before["pid"], signal.SIGKILL)
    return killed_at


def _after(chaos: Chaos, acked_before: int) -> None:
    """The members stay untouched past the re-registration window, the writes go on, and every
    acknowledged write is on the master."""
    holds_for(lambda: chaos.alive() and chaos.untouched(), QUIET_SECONDS)
    assert chaos.writer.acked() > acked_before
    chaos.writes_go_on()
    chaos.untouched()
    chaos.nothing_lost()


# In the order; each kill is checked before the next.
TARGETS = [
    "state",
    "gateway",
    "offers leader",
    "offers standby",
    "lifecycle leader",
    "lifecycle standby",
    *WORKLOADS,
    "cluster",
    "embedded etcd",
]


# Hang timeouts from the deadlines below: a kill takes at most RESTART_BOUND twice (or the
# takeover bound and RESTART_BOUND twice), QUIET_SECONDS, 60 s for the writes and the read-back;
# the first one also waits for the suite's start (240 s), redis (60 s), the create (240 s) and the
# first writes (60 s).
KILL_TIMEOUT = 240


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(t, marks=pytest.mark.timeout(KILL_TIMEOUT + 600 if i == 0 else KILL_TIMEOUT))
        for i, t in enumerate(TARGETS)
    ],
)
def test_kill_9(chaos: Chaos, target: str) -> None:
    chaos.untouched()
    acked = chaos.writer.acked()
    role, _, kind = target.partition(" ")
    if target == "embedded etcd":
        _etcd(chaos)
    elif kind == "leader":
        _leader(chaos, role)
    elif kind == "standby":
        _standby(chaos, role)
    else:
        _service(chaos, target)
    _after(chaos, acked)


def _service(chaos: Chaos, name: str) -> None:
    before = chaos.status()[name]
    others = {k: v["restarts"] for k, v in chaos.status().items() if k != name}
    killed_at = _kill_service(chaos, name)
    wait_checked(chaos, restarted(chaos, name, before), RESTART_BOUND, f"{name} restarted and healthy")
    report(f"{name}: restarted and healthy", time.monotonic() - killed_at)
    # The API answers through it again (state and gateway are on its path).
    wait_checked(chaos, lambda: chaos.instance() is not None, RESTART_BOUND, "the API to answer")
    report(f"{name}: API answers", time.monotonic() - killed_at)
    assert {k: v["restarts"] for k, v in chaos.status().items() if k != name} == others, "another restarted"


def _leader(chaos: Chaos, role: str) -> None:
    name, lease = chaos.leader(role)
    before = chaos.status()[name]
    killed_at = _kill_service(chaos, name)

    def standby_leads() -> bool:
        now = chaos.lease(role)
        return now is not None and now.term > lease.term and now.address != lease.address

    wait_checked(chaos, standby_leads, TAKEOVER_BOUND, f"the {role} standby to lead")
    report(f"{role} leader {name} killed: standby leads", time.monotonic() - killed_at)
    new, now = chaos.leader(role)
    # ... and acts: it says it runs the controller / subscribes in that term.
    acting = f"{role} {chaos.address(new)} leads (term {now.term})"
    wait_checked(chaos, lambda: acting in chaos.log.read_text(), RESTART_BOUND, f"{new} acting")
    if role == "offers":
        wait_checked(chaos, lambda: chaos.offers_subscribed(new), RESTART_BOUND, f"{new} subscribed")
        report(f"{role} leader {name} killed: {new} subscribed", time.monotonic() - killed_at)
    wait_checked(chaos, restarted(chaos, name, before), RESTART_BOUND, f"{name} restarted and healthy")
    report(f"{role} leader {name} killed: restarted as standby", time.monotonic() - killed_at)
    assert chaos.leader(role)[0] == new, "the restarted replica took the lease back"


def _standby(chaos: Chaos, role: str) -> None:
    leader, lease = chaos.leader(role)
    standby = next(f"{role}-{i + 1}" for i in range(REPLICAS) if f"{role}-{i + 1}" != leader)
    before = chaos.status()[standby]
    killed_at = _kill_service(chaos, standby)
    wait_checked(chaos, restarted(chaos, standby, before), RESTART_BOUND, f"{standby} restarted and healthy")
    report(f"{role} standby {standby} killed: restarted", time.monotonic() - killed_at)
    now = chaos.lease(role)
    assert now is not None and (now.address, now.term) == (lease.address, lease.term), "the leader changed"


def _etcd(chaos: Chaos) -> None:
    """The state service's embedded etcd (its child): restarted on the same data, the state
    service serving again and accepting writes (each leader's lease renewals)."""
    state_pid = chaos.status()["state"]["pid"]
    etcd = _children(state_pid)
    assert len(etcd) == 1, etcd
    killed_at = time.monotonic()
    os.kill(etcd[0], signal.SIGKILL)
    state = chaos.env["STATEFUL_SUITE_STATE"]

    def back() -> bool:
        now = _children(state_pid)
        return len(now) == 1 and now[0] != etcd[0] and asyncio.run(is_serving(state))

    wait_checked(chaos, back, RESTART_BOUND, "etcd restarted and the state service serving")
    report("embedded etcd: restarted, state serving", time.monotonic() - killed_at)
    assert chaos.status()["state"]["pid"] == state_pid, "the state service itself was restarted"
    leases = {role: chaos.leader(role)[1] for role in ("offers", "lifecycle")}

    def renewed() -> bool:
        now = {role: chaos.lease(role) for role in leases}
        return all(
            n is not None and n.renewed_at.ToNanoseconds() > leases[r].renewed_at.ToNanoseconds()
            for r, n in now.items()
        )

    wait_checked(chaos, renewed, RESTART_BOUND, "the leaders renewing their leases")
    report("embedded etcd: leases renewed", time.monotonic() - killed_at)


def _children(pid: int) -> list[int]:
    """The etcd children of the state service ``pid`` (its embedded etcd)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            try:
                argv0 = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0", 1)[0]
            except OSError:
                continue
            if Path(argv0.decode()).name == "etcd":
                found.append(child)
    return found


# Right before the master: the controllers' leaders (the acceptance), and the services a failover
# goes through: the workload service (its MasterLost and promotion callbacks), the local cluster
# (the master's end is reported by its executor once the agent is back), the state service.
MASTER_AFTER = ["lifecycle leader", "offers leader", "redis", "cluster", "state"]


# FAILOVER_BOUND, RESTART_BOUND, the writes (60 s), QUIET_SECONDS; the last one also stops the
# suite (120 s) and waits for its processes to end (60 s).
@pytest.mark.parametrize(
    "target",
    [
        pytest.param(t, marks=pytest.mark.timeout(480 if i == len(MASTER_AFTER) - 1 else 300))
        for i, t in enumerate(MASTER_AFTER)
    ],
)
def test_a_master_killed_right_after_a_service_is_failed_over(chaos: Chaos, target: str) -> None:
    """A service and, right after, the Redis master: (for a controller, the standby leads and)
    a replica holding every acknowledged write is promoted, and the old master comes back as a
    replica (its relaunch goes through the offers leader); no other member is relaunched."""
    chaos.untouched()
    role, _, kind = target.partition(" ")
    lease = None
    if kind == "leader":
        name, lease = chaos.leader(role)
    else:
        name = target
    old, master_pid = chaos.master_pid()
    others = {k: v for k, v in chaos.tasks.items() if k != old.id}
    acked = chaos.writer.acked()
    before = chaos.status()[name]
    killed_at = _kill_service(chaos, name)
    os.kill(master_pid, signal.SIGKILL)

    def failed_over() -> bool:
        chaos.alive()
        instance = chaos.instance()
        if instance is None:
            return False
        masters = [m for m in instance.members if m.role == T.ROLE_MASTER]
        assert len(masters) <= 1, "two MASTER members"
        assert {m.id: m.task_id for m in instance.members if m.id != old.id} == others, "a replica relaunched"
        back = next(m for m in instance.members if m.id == old.id)
        return (
            instance.phase == T.INSTANCE_PHASE_RUNNING
            and len(masters) == 1
            and masters[0].id != old.id
            and back.task_id != old.task_id
            and all(m.state == T.MEMBER_STATE_RUNNING for m in instance.members)
        )

    wait_until(failed_over, FAILOVER_BOUND, f"the master failed over after the kill of {name}")
    report(f"{target} ({name}) and master killed: failed over", time.monotonic() - killed_at)
    if lease is not None:
        now = chaos.lease(role)
        assert now is not None and now.term > lease.term
    wait_until(restarted(chaos, name, before), RESTART_BOUND, f"{name} restarted")
    # The writer follows the new master; nothing acknowledged before or after is lost.
    assert chaos.writer.acked() > acked
    chaos.writes_go_on()
    assert chaos.writer.masters[-1] != old.id
    chaos.baseline()
    holds_for(lambda: chaos.alive() and chaos.untouched(), QUIET_SECONDS)
    chaos.nothing_lost()
