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
2. a **writer** (its own thread, blocking redis-py client) sends ``SET k<n>`` + ``WAIT 1 1000`` in one
   pipeline, in a tight loop, to whoever is master: after an error it asks ``ROLE`` of every address
   the instance's members ever had (read from the state service every 0.1 s) and writes to the one
   saying ``master``. A write is *acknowledged* when ``WAIT`` answers >= 1 (a replica has it);
3. a **sampler** (its own thread and event loop) sends ``ROLE`` to every such address at once every
   20 ms (``--sample-interval``) and counts the rounds where more than one answered ``master``;
4. after 50 acknowledged writes, ``UPDATE_MAINTENANCE_SCHEDULE`` on the local cluster's master
   (``testing.lifecycle.schedule_maintenance``): the master's machine, a window an hour ahead. The
   inverse offer reaches the offers service, which marks the tasks there; the lifecycle drains the
   master by switchover (after ``drain_settle_seconds``, 2 s: services/lifecycle/README.md, "Drains").

Measured from just before the schedule (CLOCK_MONOTONIC):

- ``write gap``: the longest time between two consecutive acknowledged writes (reply times), from
  the last one before the schedule to the drain's end;
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

Caveat: the writer and the sampler share this process (and its GIL) with the in-process services,
so on a loaded machine their own latency is part of the numbers (as in the e2e tests).
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
from mesos_stateful.common.channels import channel_options
from mesos_stateful.lifecycle import plans
from mesos_stateful.state.client import StateClient
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
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.agents < 4:
        p.error("--agents must be at least 4 (3 members, one per agent, and a free agent to move to)")
    return args


# -- addresses, writer, sampler ----------------------------------------------------------------------


class Addresses:
    """Every "host:port" a member of the instance ever had (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def update(self, instance: T.Instance) -> None:
        with self._lock:
            self._seen |= {
                f"{m.host}:{m.ports[PORT]}" for m in instance.members if m.host and PORT in m.ports
            }

    def all(self) -> list[str]:
        with self._lock:
            return sorted(self._seen)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class Writer(threading.Thread):
    """``SET`` + ``WAIT 1 1000`` (one pipeline, one connection per server) in a tight loop to the
    current master; follows the master by asking ``ROLE`` of every address after an error."""

    def __init__(self, secret: str, addresses: Addresses, first: str, prefix: str) -> None:
        super().__init__(name="writer", daemon=True)
        self.secret = secret
        self.addresses = addresses
        self.target: str | None = first
        self.prefix = prefix
        self.acked: list[tuple[float, str, str]] = []  # (reply time, address, key)
        self.oks: list[tuple[float, str]] = []  # every SET answered OK: (reply time, address)
        self.errors: dict[str, int] = {}
        self.stopping = threading.Event()
        self._clients: dict[str, redis.Redis] = {}

    def client(self, address: str) -> redis.Redis:
        if address not in self._clients:
            host, port = _split(address)
            self._clients[address] = redis.Redis(
                host=host,
                port=port,
                password=self.secret or None,
                socket_timeout=1.5,  # > WAIT's 1000 ms
                socket_connect_timeout=0.5,
                decode_responses=True,
            )
        return self._clients[address]

    def find_master(self) -> str | None:
        for address in self.addresses.all():
            try:
                role = self.client(address).execute_command("ROLE")
            except Exception:
                continue
            if role and role[0] == "master":
                return address
        return None

    def _count(self, error: BaseException) -> None:
        name = str(error).split(" ", 1)[0] or type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            target = self.target or self.find_master()
            if target is None:
                time.sleep(0.005)
                continue
            self.target = target
            key = f"{self.prefix}-{n}"
            n += 1
            try:
                pipe = self.client(target).pipeline(transaction=False)
                pipe.set(key, key)
                pipe.execute_command("WAIT", 1, 1000)
                stored, acked = pipe.execute(raise_on_error=False)
            except Exception as error:  # the connection dropped: whether SET landed is unknown
                self._count(error)
                self.target = None
                continue
            received = time.monotonic()
            if isinstance(stored, Exception):  # READONLY once demoted, ...
                self._count(stored)
                self.target = None
                continue
            self.oks.append((received, target))
            if isinstance(acked, int) and acked >= 1:
                self.acked.append((received, target, key))
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()


class Sampler(threading.Thread):
    """``ROLE`` of every address at once every ``interval`` seconds (own event loop); counts the
    rounds where more than one server answered master."""

    def __init__(self, secret: str, addresses: Addresses, interval: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.secret = secret
        self.addresses = addresses
        self.interval = interval
        self.rounds = 0
        self.two_masters: list[tuple[float, list[str]]] = []
        self.stopping = threading.Event()

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
                    password=self.secret or None,
                    socket_timeout=0.5,
                    socket_connect_timeout=0.5,
                    decode_responses=True,
                )
            try:
                answer = await clients[address].execute_command("ROLE")
            except Exception:  # stopped, killed, not listening yet: not a master taking writes
                return ""
            return str(answer[0]) if answer else ""

        try:
            while not self.stopping.is_set():
                addresses = self.addresses.all()
                roles = await asyncio.gather(*(role(a) for a in addresses))
                masters = [a for a, r in zip(addresses, roles, strict=True) if r == "master"]
                self.rounds += 1
                if len(masters) > 1:
                    self.two_masters.append((time.monotonic(), masters))
                await asyncio.sleep(self.interval)
        finally:
            for client in clients.values():
                with contextlib.suppress(Exception):
                    await client.aclose()


# -- one run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    run: int
    gap: float | None = None  # seconds
    writable: float | None = None  # seconds from the schedule
    plan_done: float | None = None
    accepted: float | None = None
    done: float | None = None
    acked: int = 0
    lost: int = 0
    rounds: int = 0
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
            await _measure(args, suite, outcome)
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


async def _measure(args: argparse.Namespace, suite: Suite, outcome: Run) -> None:
    await suite.create(NAME, 3)
    instance = await suite.wait_running(NAME, 3, timeout=180)
    secret = (await suite.get(NAME, secrets=True)).secrets.get("password", "")
    old = master_of(instance)
    old_address = f"{old.host}:{old.ports[PORT]}"
    outcome.old = old.id
    addresses = Addresses()
    addresses.update(instance)
    writer = Writer(secret, addresses, old_address, f"k{outcome.run}")
    sampler = Sampler(secret, addresses, args.sample_interval)
    writer.start()
    sampler.start()
    try:
        deadline = time.monotonic() + 30
        while len(writer.acked) < WARMUP_ACKS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{WARMUP_ACKS} writes not acknowledged within 30 s: {writer.errors}")
            await asyncio.sleep(0.05)

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
                addresses.update(last)
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
        writer.stopping.set()
        sampler.stopping.set()
        await asyncio.to_thread(writer.join, 10)
        await asyncio.to_thread(sampler.join, 10)

    outcome.plan_done = plan_done - scheduled
    outcome.accepted = accepted - scheduled
    outcome.done = done - scheduled
    outcome.errors = dict(writer.errors)
    outcome.rounds = sampler.rounds
    outcome.two_masters = len(sampler.two_masters)
    for at, masters in sampler.two_masters[:3]:
        log.error("run %d: two masters %.3f s after the schedule: %s", outcome.run, at - scheduled, masters)

    times = [t for t, _, _ in writer.acked]
    before = [t for t in times if t <= scheduled]
    during = [t for t in times if scheduled < t <= done]
    points = before[-1:] + during
    outcome.gap = max((b - a for a, b in itertools.pairwise(points)), default=None)
    first_new = next((t for t, a in writer.oks if t > scheduled and a != old_address), None)
    outcome.writable = None if first_new is None else first_new - scheduled

    # Every acknowledged key is on the new master, with its value.
    outcome.acked = len(writer.acked)
    keys = [key for _, _, key in writer.acked]
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


def report(runs: list[Run], args: argparse.Namespace, load: tuple[float, float, float]) -> str:
    lines = [
        f"drain switchover of a Redis master (bench/drain_switchover.py --runs {args.runs}), "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        f"machine: {platform.node()}, {os.cpu_count()} cpus, load average at start "
        f"{' '.join(f'{x:.2f}' for x in load)}, at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"{args.agents} agents, 3 members; writer SET + WAIT 1 1000; "
        f"ROLE sampled every {args.sample_interval * 1000:.0f} ms",
        "",
        f"{'run':>4} {'gap s':>7} {'writable s':>11} {'plan done s':>12} {'accepted s':>11} {'done s':>7} "
        f"{'acked':>6} {'lost':>5} {'rounds':>7} {'2 masters':>9}  switchover",
    ]
    for r in runs:
        lines.append(
            f"{r.run:>4} {_fmt(r.gap):>7} {_fmt(r.writable):>11} {_fmt(r.plan_done):>12} "
            f"{_fmt(r.accepted):>11} "
            f"{_fmt(r.done):>7} {r.acked:>6} {r.lost:>5} {r.rounds:>7} {r.two_masters:>9}  "
            f"{r.old}->{r.new or '?'}" + (f"  FAILED: {r.error}" if r.error else "")
        )
    lines.append("")
    lines.append(f"{'measurement':<36} {'median s':>9} {'max s':>8} {'runs':>5}")
    for label, values in (
        ("write gap (acknowledged writes)", [r.gap for r in runs]),
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
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    log.setLevel(logging.INFO)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
