"""Maintenance drain of a Redis master (issue 11): the switchover, as a writer and the servers see it.

    .venv/bin/python bench/drain_switchover.py --runs 3

A measurement, not a test: it prints numbers; its exit code says whether every run kept the promise
(nothing acknowledged lost, never two masters). Per run it starts the suite in this process as the
end-to-end tests do (``tests/lifecycle/test_drain_e2e.py``, helpers of ``mesos_stateful.testing``):
a real etcd, the state service, a local cluster with ``--agents`` (5) agents, the offers service (real
pymesos driver), the gateway, the Redis workload service (real redis-servers) and the lifecycle, on
free ports in a temp dir, with the tests' fast retry settings (``testing.lifecycle.TEST_SETTINGS``,
``testing.offers.TEST_SETTINGS``). Then:

1. ``CreateInstance`` of a 3-member Redis instance (one member per agent), wait until RUNNING;
2. a **probe process** (this script with ``--probe``, so the in-process services and this process's
   GIL do not hold up its loops) runs a **writer**: ``SET k<n>`` + ``WAIT 1 1000`` in one pipeline
   (blocking redis-py) in a tight loop to whoever is master; after an error it asks ``ROLE`` of every
   address the instance's members ever had (read from the state service every 0.1 s) and writes to
   the one saying ``master``. A write is *acknowledged* when ``WAIT`` answers >= 1 (a replica has it);
3. and a **sampler** (a thread of the probe, its own event loop): ``ROLE`` to every such address at
   once every 20 ms (``--sample-interval``); it counts the rounds where more than one said ``master``
   (the table shows the interval it kept);
4. after 50 acknowledged writes, ``UPDATE_MAINTENANCE_SCHEDULE`` on the local cluster's master
   (``testing.lifecycle.schedule_maintenance``): the master's machine, a window an hour ahead. The
   inverse offer reaches the offers service, which marks the tasks there; the lifecycle drains the
   master by switchover (after ``drain_settle_seconds``, 2 s: mesos_stateful.lifecycle's README, "Drains").

Measured from just before the schedule (CLOCK_MONOTONIC):

- ``write gap``: the longest time between two consecutive acknowledged writes (reply times), from
  the last one before the schedule to the drain's end;
- ``schedule -> writer found new master``: the writer's ``ROLE`` round found another master;
- ``schedule -> new master writable``: the first ``SET`` answered OK by another server than the old
  master (the writer moved there);
- ``schedule -> drain done``: the drain plan COMPLETE (every member RUNNING, none on that agent, a
  new master) and the offers service's ACCEPT of the agent's inverse offer seen in the master's
  maintenance status (``GET_MAINTENANCE_STATUS``), whichever comes last;
- ``acked lost``: acknowledged keys missing or different on the new master at the end (must be 0);
- ``two masters``: sampler rounds with two servers answering ``ROLE`` master (must be 0).

Output: one line per run on stderr as it ends, then the table (median and max of each) on stdout.
Exit code: 0 every run drained with nothing lost and never two masters; 1 otherwise (a run that did
not finish within ``--deadline`` counts as failed); 130 interrupted. Everything started is stopped
at the end of each run (the instance deleted, every service and the cluster stopped).

The services run with the tests' settings (fast retries, 0.2 s allocation interval, lifecycle
``drain_settle_seconds`` default 2 s: most of ``schedule -> writable`` is that wait).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis
import redis.asyncio as aioredis

# pymesos must be imported on the main thread (it installs a SIGINT handler): testing.offers does.
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.channels import channel_options
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.cluster import RunningCluster, start_local_cluster
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.gateway import running_gateway
from mesos_stateful.testing.lifecycle import (
    LifecycleRunner,
    RedisService,
    Suite,
    delete_everything,
    inverse_offer_answers,
    is_running,
    master_of,
    schedule_maintenance,
)
from mesos_stateful.testing.offers import OffersService
from mesos_stateful.testing.state import StateService

log = logging.getLogger("bench")

PORT = "redis"  # the member's port name of the Redis workload
NAME = "cache"
WARMUP_ACKS = 50  # acknowledged writes before the schedule


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="drains to measure, each on a fresh suite (default 3)")
    p.add_argument("--agents", type=int, default=5, help="agents of the local cluster (default 5)")
    p.add_argument(
        "--deadline",
        type=float,
        default=180.0,
        help="seconds after the schedule by which the drain must be done",
    )
    p.add_argument(
        "--sample-interval",
        type=float,
        default=0.02,
        help="seconds between ROLE rounds of the sampler (0.02)",
    )
    p.add_argument(
        "--keep-files", action="store_true", help="keep each run's temp dir (etcd, cluster work dir)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="the services' logs (INFO) on stderr")
    # Child mode: the probe process (writer and sampler).
    p.add_argument("--probe", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--probe-first", metavar="HOST:PORT", help=argparse.SUPPRESS)
    p.add_argument("--probe-prefix", metavar="PREFIX", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.agents < 4:
        p.error("--agents must be at least 4 (3 members, one per agent, and a free agent to move to)")
    return args


# -- the probe process: writer and sampler -------------------------------------------------------------
#
# They run in a process of their own (this script with --probe DIR), so that the in-process services
# (and this process's GIL) do not hold up their loops. The parent writes DIR/secret and DIR/addresses
# (every "host:port" a member of the instance ever had, one a line, replaced atomically) and creates
# DIR/stop to end it; the probe appends its events to DIR/events, one a line, with CLOCK_MONOTONIC
# times (one clock for every process of the machine):
#   A <t> <address> <key>   a write acknowledged (WAIT answered >= 1); t: the reply's arrival
#   O <t> <address>         a SET answered OK (acknowledged or not)
#   M <t> <address>         the writer found this master (ROLE) after an error
#   E <t> <error>           a write failed (READONLY, NOREPLICAS, the connection, ...)
#   R <t> <masters> [<address>,...]   a sampler round: how many answered ROLE master, and which


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class ProbeFiles:
    """The probe's side of DIR: the addresses, the stop file, the events (thread-safe)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.secret = (folder / "secret").read_text()
        self._lock = threading.Lock()
        self._events = open(folder / "events", "a", buffering=1)  # noqa: SIM115 (closed by close())

    def addresses(self) -> list[str]:
        try:
            return [a for a in (self.folder / "addresses").read_text().split() if ":" in a]
        except OSError:
            return []

    def stopping(self) -> bool:
        return (self.folder / "stop").exists()

    def emit(self, *fields: object) -> None:
        line = " ".join(str(f) for f in fields) + "\n"
        with self._lock:
            self._events.write(line)

    def close(self) -> None:
        with self._lock:
            self._events.close()


class Writer(threading.Thread):
    """``SET`` + ``WAIT 1 1000`` (one pipeline, one connection per server) in a tight loop to the
    current master; follows the master by asking ``ROLE`` of every address after an error."""

    def __init__(self, files: ProbeFiles, first: str, prefix: str) -> None:
        super().__init__(name="writer", daemon=True)
        self.files = files
        self.target: str | None = first
        self.prefix = prefix
        self._clients: dict[str, redis.Redis] = {}

    def client(self, address: str) -> redis.Redis:
        if address not in self._clients:
            host, port = _split(address)
            self._clients[address] = redis.Redis(
                host=host,
                port=port,
                password=self.files.secret or None,
                socket_timeout=1.5,  # > WAIT's 1000 ms
                socket_connect_timeout=0.5,
                decode_responses=True,
            )
        return self._clients[address]

    def find_master(self) -> str | None:
        for address in self.files.addresses():
            try:
                role = self.client(address).execute_command("ROLE")  # type: ignore[no-untyped-call]
            except Exception:
                continue
            if role and role[0] == "master":
                return address
        return None

    def run(self) -> None:
        n = 0
        while not self.files.stopping():
            if self.target is None:
                self.target = self.find_master()
                if self.target is None:
                    time.sleep(0.005)
                    continue
                self.files.emit("M", time.monotonic(), self.target)
            target = self.target
            key = f"{self.prefix}-{n}"
            n += 1
            try:
                pipe = self.client(target).pipeline(transaction=False)
                pipe.set(key, key)
                pipe.execute_command("WAIT", 1, 1000)  # type: ignore[no-untyped-call]
                stored, acked = pipe.execute(raise_on_error=False)
            except Exception as error:  # the connection dropped: whether SET landed is unknown
                self.files.emit("E", time.monotonic(), _error_name(error))
                self.target = None
                continue
            received = time.monotonic()
            if isinstance(stored, Exception):  # READONLY once demoted, NOREPLICAS, ...
                self.files.emit("E", received, _error_name(stored))
                self.target = None
                time.sleep(0.002)
                continue
            self.files.emit("O", received, target)
            if isinstance(acked, int) and acked >= 1:
                self.files.emit("A", received, target, key)
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()


def _error_name(error: BaseException) -> str:
    """Redis's error code (READONLY, NOREPLICAS, ...) when the text starts with one, else the
    exception's class (redis-py words READONLY as ReadOnlyError "You can't write against ...")."""
    word = str(error).split(" ", 1)[0]
    return word if word.isupper() and word.isalpha() else type(error).__name__


class Sampler(threading.Thread):
    """``ROLE`` of every address at once every ``interval`` seconds (own event loop)."""

    def __init__(self, files: ProbeFiles, interval: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.files = files
        self.interval = interval

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        clients: dict[str, aioredis.Redis] = {}

        async def role(address: str) -> str:
            if address not in clients:
                host, port = _split(address)
                clients[address] = aioredis.Redis(
                    host=host,
                    port=port,
                    password=self.files.secret or None,
                    socket_timeout=0.5,
                    socket_connect_timeout=0.5,
                    decode_responses=True,
                )
            try:
                answer = await clients[address].execute_command("ROLE")  # type: ignore[no-untyped-call]
            except Exception:  # stopped, killed, not listening yet: not a master taking writes
                return ""
            return str(answer[0]) if answer else ""

        try:
            while not self.files.stopping():
                addresses = self.files.addresses()
                roles = await asyncio.gather(*(role(a) for a in addresses))
                masters = [a for a, r in zip(addresses, roles, strict=True) if r == "master"]
                self.files.emit("R", time.monotonic(), len(masters), ",".join(masters) or "-")
                await asyncio.sleep(self.interval)
        finally:
            for client in clients.values():
                with contextlib.suppress(Exception):
                    await client.aclose()


def probe_main(folder: Path, first: str, prefix: str, interval: float) -> int:
    files = ProbeFiles(folder)
    threads = [Writer(files, first, prefix), Sampler(files, interval)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files.close()
    return 0


@dataclass
class Events:
    """What the probe recorded (parsed DIR/events)."""

    acked: list[tuple[float, str, str]] = field(default_factory=list)  # (t, address, key)
    oks: list[tuple[float, str]] = field(default_factory=list)
    found: list[tuple[float, str]] = field(default_factory=list)  # M lines
    errors: dict[str, int] = field(default_factory=dict)
    rounds: list[float] = field(default_factory=list)  # round times
    two_masters: list[tuple[float, str]] = field(default_factory=list)


class Probe:
    """The parent's side: starts the probe process, keeps DIR/addresses up to date, stops it."""

    def __init__(self, folder: Path, secret: str, first: str, prefix: str, interval: float) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "secret").write_text(secret)
        self.seen: set[str] = set()
        argv = [sys.executable, str(Path(__file__).resolve()), "--probe", str(folder)]
        argv += ["--probe-first", first, "--probe-prefix", prefix, "--sample-interval", str(interval)]
        self.log = open(folder / "probe.log", "wb")  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def update(self, instance: T.Instance) -> None:
        now = {f"{m.host}:{m.ports[PORT]}" for m in instance.members if m.host and PORT in m.ports}
        if now - self.seen:
            self.seen |= now
            tmp = self.folder / "addresses.tmp"
            tmp.write_text("\n".join(sorted(self.seen)) + "\n")
            tmp.replace(self.folder / "addresses")

    def events(self) -> Events:
        out = Events()
        try:
            text = (self.folder / "events").read_text()
        except OSError:
            return out
        for line in text.splitlines():
            kind, *rest = line.split(" ")
            try:
                t = float(rest[0])
            except (IndexError, ValueError):
                continue  # a line being written
            if kind == "A" and len(rest) == 3:
                out.acked.append((t, rest[1], rest[2]))
            elif kind == "O" and len(rest) == 2:
                out.oks.append((t, rest[1]))
            elif kind == "M" and len(rest) == 2:
                out.found.append((t, rest[1]))
            elif kind == "E" and len(rest) >= 2:
                out.errors[rest[1]] = out.errors.get(rest[1], 0) + 1
            elif kind == "R" and len(rest) == 3:
                out.rounds.append(t)
                if int(rest[1]) > 1:
                    out.two_masters.append((t, rest[2]))
        return out

    def stop(self) -> None:
        (self.folder / "stop").touch()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


# -- one run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    run: int
    gap: float | None = None  # seconds
    promoted: float | None = None  # seconds from the schedule: the writer found another master
    writable: float | None = None  # seconds from the schedule
    plan_done: float | None = None
    accepted: float | None = None
    done: float | None = None
    acked: int = 0
    lost: int = 0
    rounds: int = 0  # sampler rounds from the schedule to the drain's end
    round_interval: float | None = None  # their mean interval, seconds
    two_masters: int = 0
    old: str = ""
    new: str = ""
    errors: dict[str, int] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.lost == 0 and self.two_masters == 0


@contextlib.asynccontextmanager
async def running_suite(folder: Path, agents: int) -> Any:
    """The suite as ``testing.lifecycle``'s ``suite`` fixture builds it (with ``agents`` agents)."""
    async with contextlib.AsyncExitStack() as stack:
        etcd = EtcdProcess(folder / "etcd")
        await etcd.start()
        stack.push_async_callback(etcd.kill)
        state = StateService(etcd.endpoint)
        await state.start()
        stack.push_async_callback(state.stop)
        cluster: RunningCluster = await asyncio.to_thread(
            start_local_cluster, folder / "cluster", agents=agents
        )
        stack.push_async_callback(asyncio.to_thread, cluster.stop)
        offers = OffersService(state.endpoint, cluster.master_address)
        await offers.start()
        stack.push_async_callback(offers.stop)
        gateway = await stack.enter_async_context(running_gateway(state.endpoint))
        client = StateClient(state.endpoint)
        await client.wait_ready()
        stack.push_async_callback(client.close)
        workload = RedisService(state.endpoint)
        await workload.start()
        stack.push_async_callback(workload.stop)
        await workload.running.registration.wait_registered()
        lifecycle = LifecycleRunner(state.endpoint, offers.endpoint)
        await lifecycle.start()
        stack.push_async_callback(lifecycle.stop)
        await offers.wait_subscribed()
        channel = grpc.aio.insecure_channel(gateway.endpoint, options=channel_options())
        stack.push_async_callback(channel.close)
        suite = Suite(
            state=state,
            cluster=cluster,
            offers=offers,
            lifecycle=lifecycle,
            gateway=gateway,
            redis=workload,
            client=client,
            channel=channel,
        )
        stack.push_async_callback(delete_everything, suite)
        yield suite


async def measure(args: argparse.Namespace, number: int) -> Run:
    outcome = Run(number)
    folder = Path(tempfile.mkdtemp(prefix="drain-switchover-"))
    try:
        async with running_suite(folder, args.agents) as suite:
            await _measure(args, suite, outcome, folder)
    except Exception as error:  # a run that could not finish: reported, the next one goes on
        if not outcome.error:
            outcome.error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        log.exception("run %d failed", number)
    finally:
        if args.keep_files:
            log.info("run %d: files kept in %s", number, folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return outcome


async def _measure(args: argparse.Namespace, suite: Suite, outcome: Run, folder: Path) -> None:
    await suite.create(NAME, 3)
    instance = await suite.wait_running(NAME, 3, timeout=180)
    secret = (await suite.get(NAME, secrets=True)).secrets.get("password", "")
    old = master_of(instance)
    old_address = f"{old.host}:{old.ports[PORT]}"
    outcome.old = old.id
    probe = Probe(folder / "probe", secret, old_address, f"k{outcome.run}", args.sample_interval)
    probe.update(instance)
    try:
        deadline = time.monotonic() + 60
        while len(probe.events().acked) < WARMUP_ACKS:
            if probe.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{WARMUP_ACKS} writes not acknowledged within 60 s: {probe.events().errors}"
                )
            await asyncio.sleep(0.1)

        scheduled = time.monotonic()
        schedule_maintenance(suite, [old.agent_id], time.time() + 3600)
        log.info(
            "run %d: maintenance of %s (agent of master %s) scheduled", outcome.run, old.agent_id, old.id
        )

        plan_done: float | None = None
        accepted: float | None = None
        last: T.Instance | None = None
        deadline = scheduled + args.deadline
        while plan_done is None or accepted is None:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(
                    f"drain not done within {args.deadline:.0f} s (plan done: {plan_done is not None}, "
                    f"inverse offer accepted: {accepted is not None}); "
                    f"plan {last.plan.name if last else '-'} {last.plan.reason if last else ''}"
                )
            last = await suite.instance(NAME)
            if last is not None:
                probe.update(last)
                if plan_done is None and _drained(last, old):
                    plan_done = time.monotonic()
            if accepted is None:
                answers = await asyncio.to_thread(inverse_offer_answers, suite, old.agent_id)
                if any(a.get("status") == "ACCEPT" for a in answers):
                    accepted = time.monotonic()
            await asyncio.sleep(0.1)
        assert plan_done is not None and accepted is not None and last is not None
        done = max(plan_done, accepted)
        new = master_of(last)
        outcome.new = new.id
    finally:
        await asyncio.to_thread(probe.stop)

    events = probe.events()
    outcome.plan_done = plan_done - scheduled
    outcome.accepted = accepted - scheduled
    outcome.done = done - scheduled
    outcome.errors = events.errors
    rounds = [t for t in events.rounds if scheduled <= t <= done]
    outcome.rounds = len(rounds)
    outcome.round_interval = (rounds[-1] - rounds[0]) / (len(rounds) - 1) if len(rounds) > 1 else None
    outcome.two_masters = len(events.two_masters)
    for at, masters in events.two_masters[:3]:
        log.error("run %d: two masters %.3f s after the schedule: %s", outcome.run, at - scheduled, masters)

    times = [t for t, _, _ in events.acked]
    before = [t for t in times if t <= scheduled]
    during = [t for t in times if scheduled < t <= done]
    points = before[-1:] + during
    outcome.gap = max((b - a for a, b in itertools.pairwise(points)), default=None)
    found = next((t for t, a in events.found if t > scheduled and a != old_address), None)
    outcome.promoted = None if found is None else found - scheduled
    first_new = next((t for t, a in events.oks if t > scheduled and a != old_address), None)
    outcome.writable = None if first_new is None else first_new - scheduled

    # Every acknowledged key is on the new master, with its value.
    outcome.acked = len(events.acked)
    keys = [key for _, _, key in events.acked]
    host, port = _split(f"{new.host}:{new.ports[PORT]}")
    async with aioredis.Redis(host=host, port=port, password=secret or None, decode_responses=True) as client:
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            values = await client.mget(chunk)
            outcome.lost += sum(1 for k, v in zip(chunk, values, strict=True) if v != k)


def _drained(instance: T.Instance, old: T.Member) -> bool:
    """The drain plan COMPLETE: 3 members RUNNING, none (nor its volume) on the old master's agent,
    another member master."""
    return (
        instance.plan.name == plans.DRAIN
        and instance.plan.status == plans.COMPLETE
        and is_running(instance, 3)
        and all(m.agent_id != old.agent_id and m.volume.agent_id != old.agent_id for m in instance.members)
        and master_of(instance).id != old.id
    )


# -- report --------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def report(runs: list[Run], args: argparse.Namespace, load: tuple[float, float, float]) -> str:
    lines = [
        f"drain switchover of a Redis master (bench/drain_switchover.py --runs {args.runs}), "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        f"machine: {platform.node()}, {os.cpu_count()} cpus, load average at start "
        f"{' '.join(f'{x:.2f}' for x in load)}, at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"{args.agents} agents, 3 members; writer SET + WAIT 1 1000; "
        f"ROLE sampled every {args.sample_interval * 1000:.0f} ms",
        "",
        f"{'run':>4} {'gap s':>7} {'promoted s':>11} {'writable s':>11} {'plan done s':>12} "
        f"{'accepted s':>11} {'done s':>7} {'acked':>6} {'lost':>5} {'rounds':>7} {'every ms':>9} "
        f"{'2 masters':>9}  switchover",
    ]
    for r in runs:
        lines.append(
            f"{r.run:>4} {_fmt(r.gap):>7} {_fmt(r.promoted):>11} {_fmt(r.writable):>11} "
            f"{_fmt(r.plan_done):>12} {_fmt(r.accepted):>11} {_fmt(r.done):>7} {r.acked:>6} {r.lost:>5} "
            f"{r.rounds:>7} {_ms(r.round_interval):>9} {r.two_masters:>9}  {r.old}->{r.new or '?'}"
            + (f"  FAILED: {r.error}" if r.error else "")
        )
    lines.append("")
    lines.append(f"{'measurement':<36} {'median s':>9} {'max s':>8} {'runs':>5}")
    for label, values in (
        ("write gap (acknowledged writes)", [r.gap for r in runs]),
        ("schedule -> writer found new master", [r.promoted for r in runs]),
        ("schedule -> new master writable", [r.writable for r in runs]),
        ("schedule -> drain done", [r.done for r in runs]),
    ):
        got = [v for v in values if v is not None]
        if got:
            lines.append(f"{label:<36} {statistics.median(got):>9.3f} {max(got):>8.3f} {len(got):>5}")
        else:
            lines.append(f"{label:<36} {'-':>9} {'-':>8} {0:>5}")
    lost = [r.lost for r in runs]
    two = [r.two_masters for r in runs]
    lines.append(
        f"acknowledged writes lost: median {statistics.median(lost):g}, max {max(lost)} "
        f"(of {sum(r.acked for r in runs)} acknowledged in all)"
    )
    lines.append(f"rounds with two masters: median {statistics.median(two):g}, max {max(two)}")
    for r in runs:
        if r.errors:
            lines.append(
                f"run {r.run} writer errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(r.errors.items()))
            )
    lines.append("verdict: " + ("OK" if all(r.ok for r in runs) else "FAILED (see the runs)"))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    load = os.getloadavg()
    runs: list[Run] = []
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    code = 0
    try:
        for number in range(1, args.runs + 1):
            outcome = await measure(args, number)
            runs.append(outcome)
            log.info(
                "run %d: gap %s s, writable %s s, done %s s, acked %d, lost %d, two-master rounds %d/%d%s",
                number,
                _fmt(outcome.gap),
                _fmt(outcome.writable),
                _fmt(outcome.done),
                outcome.acked,
                outcome.lost,
                outcome.two_masters,
                outcome.rounds,
                f" FAILED: {outcome.error}" if outcome.error else "",
            )
    except asyncio.CancelledError:
        log.info("interrupted")
        code = 130
    if runs:
        print(report(runs, args, load))
    if code:
        return code
    return 0 if runs and all(r.ok for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        return probe_main(Path(args.probe), args.probe_first, args.probe_prefix, args.sample_interval)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    log.setLevel(logging.INFO)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
