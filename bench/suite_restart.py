"""Restart of the whole suite: how long until every instance is back with its data.

    .venv/bin/python bench/suite_restart.py --runs 3
    .venv/bin/python bench/suite_restart.py --runs 3 --json > results.json

Starts an isolated `python -m mesos_stateful.suite` (free ports, agents on addresses of their own,
a temp data dir, the redis, mysql and etcd workloads), creates three 3-member instances (redis
`cache`, mysql `shop`, etcd `config`) with statefulctl, writes data into each (200 Redis keys
acknowledged with WAIT 2, 100 MariaDB rows, 50 etcd keys) and waits until every member holds it.
Then, per run: stops the suite as Ctrl-C does (SIGINT to the runner, wait for it), starts the runner
again on the same data dir and settings, and times from that start to
  (a) each instance RUNNING with 3 RUNNING members (GetInstance of the public API, polled), and
  (b) every member of every instance serving all the data written (each member polled directly).
A measurement, not a test: it prints numbers and asserts nothing. See bench/README.md.

Exit code: 0 every run brought every instance back with its data; 1 some run did not (the output
says what was seen: the instance JSON and the suite log tail); 2 the setup failed; 130 interrupted.
Everything it starts is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pymysql
import redis
from failover_bench.procs import Children
from failover_bench.suite_process import (
    StartedSuite,
    interrupt_suite,
    launch_suite,
    relaunch_suite,
    stop_suite,
    suite_processes,
    tail,
    wait_serving,
)
from google.protobuf.json_format import MessageToDict

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc

log = logging.getLogger("bench.restart")

INSTANCES = (("redis", "cache"), ("mysql", "shop"), ("etcd", "config"))
WORKLOADS = tuple(w for w, _ in INSTANCES)
REPLICAS = 3
REDIS_KEYS = {f"key-{i}": f"value-{i}" for i in range(200)}
MYSQL_ROWS = [(i, f"item-{i}") for i in range(100)]
ETCD_KEYS = {f"/k/{i:03d}": f"v{i}" for i in range(50)}
# Short reconnect backoff: the gateway is down at first; the default backoff (1 s, growing) would
# add its own delay to the time measured.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]

STATEFULCTL = (sys.executable, "-m", "mesos_stateful.cli")

Member = dict[str, Any]
Instance = dict[str, Any]


class SetupFailed(Exception):
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="restarts to measure (default 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument(
        "--start-timeout", type=float, default=180.0, help="seconds for the first start to serve (180)"
    )
    p.add_argument(
        "--create-timeout", type=float, default=300.0, help="seconds for the instances to be created (300)"
    )
    p.add_argument(
        "--restart-timeout",
        type=float,
        default=300.0,
        help="seconds after a restart for every instance RUNNING with its data (300)",
    )
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=120.0,
        help="seconds for the runner to stop after SIGINT (120; then it counts as failed)",
    )
    p.add_argument(
        "--poll-interval", type=float, default=0.05, help="seconds between polls of each check (0.05)"
    )
    p.add_argument("--keep-files", action="store_true", help="keep the suite's data dir and log")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


# --- the public API and statefulctl -------------------------------------------------------------


class Gateway:
    """GetInstance over a synchronous channel (used from poller threads)."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        self.stub = api_grpc.InstanceServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def get(self, name: str, secrets: bool = False, timeout: float = 2.0) -> tuple[Instance, dict[str, str]]:
        reply = self.stub.GetInstance(
            api.GetInstanceRequest(name=name, include_secrets=secrets), timeout=timeout
        )
        return MessageToDict(reply.instance), dict(reply.secrets)


def is_running(instance: Instance) -> bool:
    members = instance.get("members", [])
    return (
        instance.get("phase") == "INSTANCE_PHASE_RUNNING"
        and len(members) == REPLICAS
        and all(m.get("state") == "MEMBER_STATE_RUNNING" for m in members)
    )


def relaunched(instance: Instance, incarnations: dict[str, int]) -> bool:
    """Every member runs a task launched after the stop (its incarnation grew): the record is
    about this start, not what was stored before the stop."""
    return all(
        int(m.get("incarnation", 0)) > incarnations.get(m["id"], 0) for m in instance.get("members", [])
    )


def timeline_entry(instance: Instance, incarnations: dict[str, int]) -> dict[str, Any]:
    """What changes along a restart: phase, and per member state, role, relaunched or not."""
    return {
        "phase": instance.get("phase", "").removeprefix("INSTANCE_PHASE_"),
        "members": [
            f"{m['id']}:{m.get('state', '').removeprefix('MEMBER_STATE_')}"
            f"/{m.get('role', '').removeprefix('ROLE_')}"
            + ("" if int(m.get("incarnation", 0)) > incarnations.get(m["id"], 0) else "/old-task")
            for m in instance.get("members", [])
        ],
    }


def placement(instance: Instance) -> dict[str, tuple[Any, ...]]:
    """member id -> what a restart in place keeps: volume, its agent, host, ports."""
    return {
        m["id"]: (
            m.get("volume", {}).get("persistenceId"),
            m.get("volume", {}).get("agentId"),
            m.get("host"),
            json.dumps(m.get("ports", {}), sort_keys=True),
        )
        for m in instance.get("members", [])
    }


# --- the data, written once and checked on every member -------------------------------------------


def redis_client(member: Member, password: str, timeout: float) -> redis.Redis:
    return redis.Redis(
        host=member["host"],
        port=int(member["ports"]["redis"]),
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )


def mysql_connect(member: Member, password: str, timeout: float) -> pymysql.Connection:  # type: ignore[type-arg]
    return pymysql.connect(
        host=member["host"],
        port=int(member["ports"]["mysql"]),
        user="admin",
        password=password,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
        autocommit=True,
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def etcd_call(member: Member, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    url = f"http://{member['host']}:{member['ports']['client']}{path}"
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def master(instance: Instance) -> Member:
    masters = [m for m in instance["members"] if m.get("role") == "ROLE_MASTER"]
    if len(masters) != 1:
        raise SetupFailed(f"{instance['spec']['name']}: not exactly one master: {instance['members']}")
    return masters[0]


def write_data(gateway: Gateway) -> None:
    cache, secrets = gateway.get("cache", secrets=True)
    r = redis_client(master(cache), secrets["password"], 10)
    r.mset(REDIS_KEYS)
    acked = r.wait(REPLICAS - 1, 10000)
    if acked != REPLICAS - 1:
        raise SetupFailed(f"redis: WAIT {REPLICAS - 1} acknowledged by {acked} replicas only")
    log.info("redis: %d keys written, acknowledged by %d replicas (WAIT)", len(REDIS_KEYS), acked)

    shop, secrets = gateway.get("shop", secrets=True)
    with mysql_connect(master(shop), secrets["admin_password"], 10) as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE shop")
        cur.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40))")
        cur.executemany("INSERT INTO shop.orders VALUES (%s, %s)", MYSQL_ROWS)
    log.info("mysql: %d rows written", len(MYSQL_ROWS))

    config, _ = gateway.get("config")
    first = config["members"][0]
    for key, value in ETCD_KEYS.items():
        etcd_call(first, "/v3/kv/put", {"key": b64(key), "value": b64(value)}, 10)
    log.info("etcd: %d keys written", len(ETCD_KEYS))


def holds_data(workload: str, member: Member, secrets: dict[str, str], timeout: float) -> bool:
    """Whether the member answers with every key / row written, values included."""
    if workload == "redis":
        client = redis_client(member, secrets["password"], timeout)
        try:
            keys = sorted(REDIS_KEYS)
            return bool(client.mget(keys) == [REDIS_KEYS[k] for k in keys])
        finally:
            client.close()
    if workload == "mysql":
        with mysql_connect(member, secrets["admin_password"], timeout) as conn, conn.cursor() as cur:
            cur.execute("SELECT id, item FROM shop.orders ORDER BY id")
            return [tuple(row) for row in cur.fetchall()] == MYSQL_ROWS
    got = etcd_call(member, "/v3/kv/range", {"key": b64("/k/"), "range_end": b64("/k0")}, timeout)
    found = {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode()
        for kv in got.get("kvs", [])
    }
    return found == ETCD_KEYS


# --- one restart ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    run: int
    stop_seconds: float | None = None  # SIGINT -> the runner exited
    stop_exit_code: int | None = None
    gateway_seconds: float | None = None  # runner started -> first GetInstance answered
    running: dict[str, float] = field(default_factory=dict)  # instance -> RUNNING 3/3
    member_data: dict[str, float] = field(default_factory=dict)  # member id -> serving all the data
    data: dict[str, float] = field(default_factory=dict)  # instance -> every member serving the data
    # instance -> when the API first said RUNNING 3/3 about the tasks from before the stop
    stale_running: dict[str, float] = field(default_factory=dict)
    timeline: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # instance -> changes seen
    odd: list[str] = field(default_factory=list)
    failure: str | None = None

    @property
    def all_running(self) -> float | None:
        return max(self.running.values()) if len(self.running) == len(INSTANCES) else None

    @property
    def all_data(self) -> float | None:
        return max(self.data.values()) if len(self.data) == len(INSTANCES) else None

    @property
    def all_back(self) -> float | None:
        a, b = self.all_running, self.all_data
        return max(a, b) if a is not None and b is not None else None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.all_back is not None

    def rows(self) -> dict[str, float | None]:
        rows: dict[str, float | None] = {"stop: SIGINT -> runner exited": self.stop_seconds}
        rows["start -> gateway answers"] = self.gateway_seconds
        for workload, name in INSTANCES:
            rows[f"start -> {name} ({workload}) RUNNING 3/3"] = self.running.get(name)
        for workload, name in INSTANCES:
            rows[f"start -> {name} ({workload}) data on 3/3"] = self.data.get(name)
        rows["start -> all RUNNING"] = self.all_running
        rows["start -> all data on every member"] = self.all_data
        rows["start -> all RUNNING with their data"] = self.all_back
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "ok": self.ok,
            "failure": self.failure,
            "stop_seconds": self.stop_seconds,
            "stop_exit_code": self.stop_exit_code,
            "gateway_seconds": self.gateway_seconds,
            "running_seconds": self.running,
            "data_seconds": self.data,
            "member_data_seconds": self.member_data,
            "all_running_seconds": self.all_running,
            "all_data_seconds": self.all_data,
            "all_back_seconds": self.all_back,
            "stale_running_seconds": self.stale_running,
            "odd": self.odd,
            "timeline": self.timeline,
        }


class Restart:
    """Pollers for one restart: one thread per instance (GetInstance until RUNNING 3/3) and one per
    member (its data, at the address the API gives now, else the one from before the stop)."""

    def __init__(
        self,
        endpoint: str,
        before: dict[str, Instance],
        secrets: dict[str, dict[str, str]],
        started_at: float,
        result: RunResult,
        poll: float,
    ) -> None:
        self.gateway = Gateway(endpoint)
        self.before = before
        self.secrets = secrets
        self.t0 = started_at
        self.result = result
        self.poll = poll
        self.latest: dict[str, Instance] = {}
        self.last_errors: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for workload, name in INSTANCES:
            self._thread(f"api-{name}", lambda n=name: self._watch_instance(n))
            for m in self.before[name]["members"]:
                self._thread(
                    f"data-{m['id']}", lambda w=workload, n=name, i=m["id"]: self._watch_data(w, n, i)
                )

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def done(self) -> bool:
        return not any(t.is_alive() for t in self.threads)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        self.gateway.close()

    def _watch_instance(self, name: str) -> None:
        before = {m["id"]: int(m.get("incarnation", 0)) for m in self.before[name]["members"]}
        last_shape = None
        while not self.stop.is_set():
            try:
                instance, _ = self.gateway.get(name, timeout=1.0)
            except grpc.RpcError as error:
                self.last_errors[name] = f"{error.code().name}: {error.details()}"  # type: ignore[attr-defined]
            else:
                now = time.monotonic() - self.t0
                shape = timeline_entry(instance, before)
                with self.lock:
                    self.latest[name] = instance
                    if self.result.gateway_seconds is None:
                        self.result.gateway_seconds = now
                    if shape != last_shape:
                        self.result.timeline.setdefault(name, []).append({"t": round(now, 3), **shape})
                        last_shape = shape
                    stale = is_running(instance) and not relaunched(instance, before)
                    if stale and name not in self.result.stale_running:
                        self.result.stale_running[name] = now
                if is_running(instance) and relaunched(instance, before):
                    with self.lock:
                        self.result.running[name] = now
                    return
            self.stop.wait(self.poll)

    def _watch_data(self, workload: str, name: str, member_id: str) -> None:
        while not self.stop.is_set():
            with self.lock:
                current = self.latest.get(name, self.before[name])
            member = next((m for m in current["members"] if m["id"] == member_id), None)
            member = member or next(m for m in self.before[name]["members"] if m["id"] == member_id)
            try:
                ok = holds_data(workload, member, self.secrets[name], timeout=1.0)
                error = "answered, but not with all the data"
            except Exception as e:  # any client error: not serving yet
                ok, error = False, f"{type(e).__name__}: {e}"
            if ok:
                now = time.monotonic() - self.t0
                with self.lock:
                    self.result.member_data[member_id] = now
                    ids = {m["id"] for m in self.before[name]["members"]}
                    if ids <= set(self.result.member_data):
                        self.result.data[name] = max(self.result.member_data[i] for i in ids)
                return
            self.last_errors[member_id] = error
            self.stop.wait(self.poll)


# --- the bench ----------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children = Children()
        self.root = Path(tempfile.mkdtemp(prefix="bench-suite-restart-")).resolve()
        self.suite: StartedSuite | None = None
        self.results: list[RunResult] = []
        self.setup_error: str | None = None
        self.failure_detail: str | None = None
        self.interrupted = False
        self.leftovers_at_exit: list[str] = []
        self.before: dict[str, Instance] = {}
        self.secrets: dict[str, dict[str, str]] = {}

    def run(self) -> int:
        try:
            self._setup()
            for run in range(1, self.args.runs + 1):
                result = RunResult(run)
                self.results.append(result)
                self._restart(result)
                self._progress(result)
                if not result.ok:
                    break
        except KeyboardInterrupt:
            self.interrupted = True
            if self.results and self.results[-1].all_back is None and not self.results[-1].failure:
                self.results[-1].failure = "interrupted"
            log.warning("interrupted: stopping everything, reporting what was measured")
        except SetupFailed as error:
            self.setup_error = str(error)
            log.error("setup failed: %s", error)
        finally:
            self._cleanup()
        return self._report()

    # setup -------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        a = self.args
        self.suite = launch_suite(self.children, self.root / "suite", WORKLOADS)
        try:
            asyncio.run(wait_serving(self.suite, a.start_timeout))
        except RuntimeError as error:
            raise SetupFailed(str(error)) from None
        log.info("suite up after %.1fs; creating %s", time.monotonic() - self.suite.started_at, INSTANCES)
        started = time.monotonic()
        creates = {
            name: subprocess.Popen(
                [
                    *STATEFULCTL,
                    *("--endpoint", self.suite.endpoint, "create", workload, name),
                    *("--replicas", str(REPLICAS), "--wait", "--timeout", str(int(a.create_timeout))),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for workload, name in INSTANCES
        }
        try:
            for name, proc in creates.items():
                try:
                    out, _ = proc.communicate(timeout=a.create_timeout + 60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, _ = proc.communicate()
                if proc.returncode != 0:
                    raise SetupFailed(f"statefulctl create {name} exited {proc.returncode}:\n{out}")
        finally:
            for proc in creates.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        log.info("3 instances RUNNING after %.1fs", time.monotonic() - started)
        gateway = Gateway(self.suite.endpoint)
        try:
            write_data(gateway)
            for workload, name in INSTANCES:
                self.before[name], self.secrets[name] = gateway.get(name, secrets=True)
                self._wait_data_everywhere(workload, name, 120)
        finally:
            gateway.close()
        log.info("every member of every instance holds the data; measuring %d restarts", a.runs)

    def _wait_data_everywhere(self, workload: str, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for m in self.before[name]["members"]:
            while True:
                with contextlib.suppress(Exception):
                    if holds_data(workload, m, self.secrets[name], 2.0):
                        break
                if time.monotonic() > deadline:
                    raise SetupFailed(f"{m['id']} did not hold the data written within {timeout:.0f}s")
                time.sleep(0.2)

    # one run -----------------------------------------------------------------------------------------

    def _restart(self, result: RunResult) -> None:
        a, suite = self.args, self.suite
        assert suite is not None
        snapshot = Gateway(suite.endpoint)
        try:
            self.before = {name: snapshot.get(name)[0] for _, name in INSTANCES}
        finally:
            snapshot.close()

        stop_started = time.monotonic()
        code = interrupt_suite(self.children, suite, a.stop_timeout)
        if code is None:
            result.failure = f"the runner was still running {a.stop_timeout:.0f}s after SIGINT"
            self.failure_detail = f"suite log tail:\n{tail(suite.log_path, 60)}"
            return
        result.stop_seconds = time.monotonic() - stop_started
        result.stop_exit_code = code
        if code != 0:
            result.odd.append(f"the runner exited with code {code} after SIGINT")
        self._wait_for_no_leftovers(result, 30.0)

        relaunch_suite(self.children, suite)
        watch = Restart(suite.endpoint, self.before, self.secrets, suite.started_at, result, a.poll_interval)
        watch.start()
        deadline = suite.started_at + a.restart_timeout
        try:
            while not watch.done():
                if suite.process.poll() is not None:
                    result.failure = (
                        f"the runner exited with code {suite.process.returncode} during the restart"
                    )
                    break
                if time.monotonic() > deadline:
                    result.failure = (
                        "not every instance RUNNING 3/3 with its data "
                        f"{a.restart_timeout:.0f}s after the start"
                    )
                    break
                time.sleep(0.05)
        finally:
            watch.close()
        if result.failure:
            self.failure_detail = self._describe_failure(watch, result)
            return
        self._check_in_place(result)

    def _wait_for_no_leftovers(self, result: RunResult, timeout: float) -> None:
        """Every process of the suite should be gone once the runner exited; wait a little, then
        report (and kill, so the next start is not disturbed) what is still there."""
        assert self.suite is not None
        deadline = time.monotonic() + timeout
        while (pids := suite_processes(self.suite)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pids:
            result.odd.append(
                f"{len(pids)} process(es) of the suite still there {timeout:.0f}s after the runner exited, "
                f"killed: {[describe_pid(p) for p in pids]}"
            )
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _check_in_place(self, result: RunResult) -> None:
        """The same members on the same volumes, agents and ports, relaunched (not replaced)."""
        assert self.suite is not None
        gateway = Gateway(self.suite.endpoint)
        try:
            for _, name in INSTANCES:
                after, _ = gateway.get(name)
                before = self.before[name]
                if placement(after) != placement(before):
                    result.odd.append(f"{name}: placement changed: {placement(before)} -> {placement(after)}")
                for m in after["members"]:
                    old = next((b for b in before["members"] if b["id"] == m["id"]), None)
                    if not m.get("volume", {}).get("hasData"):
                        result.odd.append(f"{m['id']}: volume without hasData after the restart")
                    if old is not None and int(m.get("incarnation", 0)) <= int(old.get("incarnation", 0)):
                        result.odd.append(f"{m['id']}: incarnation did not grow ({old.get('incarnation')})")
                roles = sorted(m.get("role", "") for m in after["members"])
                if name != "config" and roles.count("ROLE_MASTER") != 1:
                    result.odd.append(f"{name}: roles after the restart: {roles}")
        finally:
            gateway.close()

    def _describe_failure(self, watch: Restart, result: RunResult) -> str:
        assert self.suite is not None
        lines = [f"run {result.run}: {result.failure}"]
        for workload, name in INSTANCES:
            if name in result.running and name in result.data:
                continue
            lines.append(f"--- {name} ({workload}): RUNNING at {result.running.get(name)}")
            for m in self.before[name]["members"]:
                at = result.member_data.get(m["id"])
                lines.append(
                    f"    {m['id']}: data "
                    + (f"at {at:.2f}s" if at is not None else f"NOT SERVED: {watch.last_errors.get(m['id'])}")
                )
            gateway = Gateway(self.suite.endpoint)
            try:
                instance, _ = gateway.get(name, timeout=5.0)
                lines.append(json.dumps(instance, indent=2))
            except grpc.RpcError as error:
                lines.append(f"GetInstance failed: {error}; last poll error: {watch.last_errors.get(name)}")
            finally:
                gateway.close()
        lines.append(f"--- suite log tail ({self.suite.log_path}):\n{tail(self.suite.log_path, 80)}")
        return "\n".join(lines)

    def _progress(self, result: RunResult) -> None:
        if result.ok:
            log.info(
                "run %d/%d: stop %.1fs; all RUNNING %.2fs, all data %.2fs (%s)",
                result.run,
                self.args.runs,
                result.stop_seconds,
                result.all_running,
                result.all_data,
                ", ".join(f"{n} {result.running[n]:.2f}/{result.data[n]:.2f}s" for _, n in INSTANCES),
            )
        else:
            log.error("run %d/%d FAILED: %s", result.run, self.args.runs, result.failure)
        for odd in result.odd:
            log.warning("run %d: %s", result.run, odd)

    # cleanup and report --------------------------------------------------------------------------------

    def _cleanup(self) -> None:
        # A second Ctrl-C (or a SIGTERM) must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.suite is not None:
            # As Ctrl-C does first (a clean stop), then SIGTERM/SIGKILL of anything still ours.
            with contextlib.suppress(Exception):
                interrupt_suite(self.children, self.suite, 60.0)
            killed = stop_suite(self.children, self.suite, grace=10.0)
            if killed:
                log.warning("killed %d leftover suite processes at the end: %s", len(killed), killed)
            self.leftovers_at_exit = [describe_pid(p) for p in suite_processes(self.suite)]
            if self.leftovers_at_exit:
                log.error("still running after the cleanup: %s", self.leftovers_at_exit)
            if self.setup_error:
                log.info("suite log tail:\n%s", tail(self.suite.log_path, 60))
        self.children.stop_all()
        if self.args.keep_files:
            log.info("files kept in %s", self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def _report(self) -> int:
        if self.interrupted:
            code = 130
        elif self.setup_error:
            code = 2
        else:
            code = 0 if self.results and all(r.ok for r in self.results) else 1
        machine = machine_info()
        if self.args.json:
            doc = {
                "machine": machine,
                "runs": self.args.runs,
                "exit_code": code,
                "interrupted": self.interrupted,
                "setup_error": self.setup_error,
                "failure_detail": self.failure_detail,
                "summary": summary(self.results),
                "results": [r.to_json() for r in self.results],
                "leftovers_at_exit": self.leftovers_at_exit,
                "settings": {k: v for k, v in vars(self.args).items() if k not in ("json", "verbose")},
            }
            print(json.dumps(doc, indent=2))
            return code
        print(
            f"machine: {machine['cpus']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
            f"{machine['system']}, load avg {machine['loadavg']}"
        )
        print(f"instances: {', '.join(f'{n} ({w})' for w, n in INSTANCES)}, {REPLICAS} members each")
        print(table(self.results))
        for r in self.results:
            for name, at in r.stale_running.items():
                print(
                    f"run {r.run}: odd: {name}: the API said RUNNING 3/3 at {at:.2f}s about the tasks "
                    "from before the stop (not counted as RUNNING)"
                )
            for odd in r.odd:
                print(f"run {r.run}: odd: {odd}")
            if r.failure:
                print(f"run {r.run}: FAILED: {r.failure}")
        print("\nwhat GetInstance showed after each start (seconds: phase, member:state/role):")
        for r in self.results:
            for _, name in INSTANCES:
                for e in r.timeline.get(name, []):
                    print(f"  run {r.run} {name:>6} {e['t']:6.2f}s {e['phase']:<10} {' '.join(e['members'])}")
        if self.failure_detail:
            print("\n" + self.failure_detail)
        if self.setup_error:
            print(f"\nNOT MEASURED: {self.setup_error}")
        if self.leftovers_at_exit:
            print(f"\nprocesses left running: {self.leftovers_at_exit}")
        return code


def describe_pid(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmdline = "(gone)"
    return f"{pid}: {cmdline.strip()[:160]}"


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 1024 / 1024
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model or platform.processor() or "unknown",
        "memory_gib": round(memory, 1),
        "system": f"{platform.system()} {platform.release()}",
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def summary(results: list[RunResult]) -> dict[str, dict[str, float | int | None]]:
    out: dict[str, dict[str, float | int | None]] = {}
    ok = [r for r in results if r.ok]
    names = list(results[0].rows()) if results else []
    for row in names:
        values = [v for r in ok if (v := r.rows()[row]) is not None]
        out[row] = {
            "n": len(values),
            "median": statistics.median(values) if values else None,
            "max": max(values) if values else None,
        }
    return out


def table(results: list[RunResult]) -> str:
    if not results:
        return "(no run)"
    sums = summary(results)
    rows = list(results[0].rows())
    width = max(len(r) for r in rows)

    def cell(v: float | int | None) -> str:
        return f"{v:8.2f}" if isinstance(v, float) else f"{'-':>8}" if v is None else f"{v:8d}"

    head = f"{'seconds':<{width}}" + "".join(f"{'run ' + str(r.run):>8}" for r in results)
    head += f"{'median':>8}{'max':>8}"
    lines = [head, "-" * len(head)]
    for row in rows:
        line = f"{row:<{width}}" + "".join(cell(r.rows()[row]) for r in results)
        line += cell(sums[row]["median"]) + cell(sums[row]["max"])
        lines.append(line)
    ok = sum(r.ok for r in results)
    lines.append(f"(median / max over the {ok} run(s) that brought every instance back; goal: < 10 s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    bench = Bench(args)
    started = time.monotonic()
    code = bench.run()
    log.info("done in %.0fs, exit code %d", time.monotonic() - started, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
