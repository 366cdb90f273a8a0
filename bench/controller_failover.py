"""Controller failover: a leader killed with SIGKILL -> its standby acting, with the lease settings
the services use (services/mesos_stateful/clients/leadership.py LeadershipSettings defaults).

    .venv/bin/python bench/controller_failover.py --runs 10
    .venv/bin/python bench/controller_failover.py --runs 10 --output bench/results/controller_failover.txt

Starts a real state service (``python -m mesos_stateful.state`` with its embedded etcd, free
ports, a temp data dir) and two elector processes (this script with ``--elector``), each a
``LeaderElector`` for the role "bench" with its own StateClient, whose lead() makes a fenced write
every 50 ms (as a controller acting on the state). Per run: it waits until one leads and the other
has watched the lease for longer than a lease duration (steady state), waits a random fraction of
a retry period (so the kill falls anywhere in the renewal cycle), SIGKILLs the leader's process
group (no release, as a crash), and times from just before the kill to
  (a) the standby's lead() being called in a new term (``kill -> leading``), and
  (b) the standby's first fenced write acknowledged by the state service (``kill -> acting``).
The killed one is replaced by a fresh standby before the next run. Times are CLOCK_MONOTONIC
(``time.monotonic``, one clock for every process of the machine), read in each process.

A measurement, not a test: it prints numbers and asserts nothing; goal ``kill -> acting`` <= 2 s.
The table goes to stdout and to ``--output``. Exit code: 0 every run failed over; 1 some run did
not within ``--deadline``; 2 the setup failed; 130 interrupted. Everything it starts is stopped on
exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from failover_bench.procs import Children, run_main

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.leadership import LeaderElector, Leadership, LeadershipSettings, find_leader
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.testing.ports import free_ports

log = logging.getLogger("bench")

ROLE = "bench"
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="failovers to measure (default 10)")
    p.add_argument(
        "--output",
        default=str(HERE / "results" / "controller_failover.txt"),
        help="file the results table is written to (default bench/results/controller_failover.txt; '' none)",
    )
    p.add_argument(
        "--deadline", type=float, default=15.0, help="seconds after the kill by which the standby must act"
    )
    p.add_argument("--keep-files", action="store_true", help="keep the temp dir (logs, etcd data)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    # Child mode: one elector process.
    p.add_argument("--elector", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument("--state", metavar="HOST:PORT", help=argparse.SUPPRESS)
    p.add_argument("--events", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


# -- the elector process ----------------------------------------------------------------------


async def elector_main(name: str, state_endpoint: str, events: TextIO) -> None:
    """Campaign for ROLE; while leading, a fenced write every 50 ms. Events (JSON lines with the
    monotonic time) go to ``events`` (line-buffered): started, leading, acting."""

    def emit(event: str, term: int = 0) -> None:
        events.write(json.dumps({"event": event, "term": term, "t": time.monotonic()}) + "\n")

    client = StateClient(state_endpoint)
    await client.wait_ready(60)
    elector = LeaderElector(client, ROLE, f"{name}.bench:1", LeadershipSettings(), identity=name)

    async def lead(leadership: Leadership) -> None:
        emit("leading", leadership.term)
        acting = False
        while True:
            await client.put(
                types_pb2.Workload(name="controller-failover", endpoint=f"{name}:{leadership.term}")
            )
            if not acting:
                emit("acting", leadership.term)
                acting = True
            await asyncio.sleep(0.05)

    emit("started")
    await elector.run(lead)


# -- the bench --------------------------------------------------------------------------------


@dataclass
class Elector:
    name: str
    proc: Any  # subprocess.Popen[bytes]
    events: Path
    started: float  # monotonic, when its process was started

    def read(self) -> list[dict[str, Any]]:
        try:
            text = self.events.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def first(self, event: str, min_term: int = 0) -> dict[str, Any] | None:
        return next((e for e in self.read() if e["event"] == event and e["term"] >= min_term), None)


@dataclass
class Run:
    run: int
    killed: str
    standby: str
    old_term: int
    new_term: int = 0
    leading: float | None = None  # seconds from the kill
    acting: float | None = None
    error: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children = Children()
        self.settings = LeadershipSettings()
        self.tmp = Path(tempfile.mkdtemp(prefix="controller-failover-"))
        self.electors: dict[str, Elector] = {}
        self.runs: list[Run] = []
        self.state_endpoint = ""
        self._names = iter(f"elector-{i}" for i in range(1, 10_000))

    def start_elector(self) -> Elector:
        name = next(self._names)
        events = self.tmp / f"{name}.events"
        argv = [sys.executable, str(Path(__file__).resolve()), "--elector", name]
        argv += ["--state", self.state_endpoint, "--events", str(events)]
        proc = self.children.start(argv, log_path=self.tmp / f"{name}.log")
        elector = Elector(name, proc, events, time.monotonic())
        self.electors[name] = elector
        return elector

    async def run(self) -> int:
        try:
            return await self._run()
        except asyncio.CancelledError:
            log.info("interrupted")
            self.report()
            return 130
        finally:
            self.children.stop_all(grace=2.0)
            if self.args.keep_files:
                log.info("files kept in %s", self.tmp)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)

    async def _run(self) -> int:
        state_port, client_port, peer_port = free_ports(3)
        self.state_endpoint = f"127.0.0.1:{state_port}"
        self.children.start(
            [
                *(sys.executable, "-m", "mesos_stateful.state", "--listen", self.state_endpoint),
                *("--data-dir", str(self.tmp / "state"), "--embedded-client-port", str(client_port)),
                *("--embedded-peer-port", str(peer_port), "--log-level", "WARNING"),
            ],
            log_path=self.tmp / "state.log",
        )
        async with StateClient(self.state_endpoint) as client:
            try:
                await client.wait_ready(60)
            except errors.Unavailable as error:
                log.error("setup failed: %s\n%s", error.message, _tail(self.tmp / "state.log"))
                return 2
            log.info("state service at %s; lease settings %s", self.state_endpoint, self.settings)
            for _ in range(2):
                self.start_elector()
            for number in range(1, self.args.runs + 1):
                outcome = await self.measure(client, number)
                self.runs.append(outcome)
                log.info(
                    "run %d: %s killed (term %d) -> %s leading %s s, acting %s s%s",
                    number,
                    outcome.killed,
                    outcome.old_term,
                    outcome.standby,
                    _fmt(outcome.leading),
                    _fmt(outcome.acting),
                    f" ({outcome.error})" if outcome.error else "",
                )
                self.start_elector()  # the replacement standby
        self.report()
        return 0 if all(not r.error for r in self.runs) else 1

    async def steady(self, client: StateClient) -> tuple[Elector, Elector, int]:
        """Wait for a leader (acting) and a live standby that has watched it > a lease duration."""
        deadline = time.monotonic() + 60
        while True:
            lease = await find_leader(client, ROLE)
            alive = {n: e for n, e in self.electors.items() if e.proc.poll() is None}
            if lease is not None and lease.holder in alive:
                leader = alive[lease.holder]
                standbys = [e for n, e in alive.items() if n != lease.holder]
                wait = self.settings.lease_duration_seconds + 0.5
                if (
                    leader.first("acting", lease.term) is not None
                    and standbys
                    and all(e.first("started") is not None for e in standbys)
                    and time.monotonic() - max(e.started for e in standbys) > wait
                ):
                    return leader, standbys[0], lease.term
            if time.monotonic() > deadline:
                raise RuntimeError(f"no steady leader and standby within 60 s (lease {lease})")
            await asyncio.sleep(0.05)

    async def measure(self, client: StateClient, number: int) -> Run:
        leader, standby, term = await self.steady(client)
        await asyncio.sleep(random.uniform(0, self.settings.retry_period_seconds))
        killed_at = time.monotonic()
        self.children.stop(leader.proc, 0)  # SIGKILL of its process group
        outcome = Run(number, leader.name, standby.name, term)
        deadline = killed_at + self.args.deadline
        while time.monotonic() < deadline:
            leading = standby.first("leading", term + 1)
            acting = standby.first("acting", term + 1)
            if leading is not None:
                outcome.new_term = int(leading["term"])
                outcome.leading = leading["t"] - killed_at
            if acting is not None:
                outcome.acting = acting["t"] - killed_at
                return outcome
            await asyncio.sleep(0.01)
        outcome.error = f"the standby did not act within {self.args.deadline} s\n" + _tail(standby.events)
        return outcome

    def report(self) -> None:
        s = self.settings
        lines = [
            f"controller failover (bench/controller_failover.py), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"lease settings: lease_duration {s.lease_duration_seconds} s, renew_deadline "
            f"{s.renew_deadline_seconds} s, retry_period {s.retry_period_seconds} s "
            f"(takeover bound lease + retry = {s.takeover_bound_seconds:.2f} s)",
            "a real state service (embedded etcd) and two elector processes; the leader SIGKILLed",
            "",
            f"{'run':>4} {'kill -> leading':>16} {'kill -> acting':>15} {'term':>10}",
        ]
        for r in self.runs:
            lines.append(
                f"{r.run:>4} {_fmt(r.leading):>16} {_fmt(r.acting):>15} {f'{r.old_term}->{r.new_term}':>10}"
                + (f"  FAILED: {r.error.splitlines()[0]}" if r.error else "")
            )
        for label, values in (
            ("kill -> leading", [r.leading for r in self.runs if r.leading is not None]),
            ("kill -> acting", [r.acting for r in self.runs if r.acting is not None]),
        ):
            if values:
                lines.append(
                    f"{label}: median {statistics.median(values):.3f} s, max {max(values):.3f} s, "
                    f"min {min(values):.3f} s over {len(values)} run(s)"
                )
        acting = [r.acting for r in self.runs if r.acting is not None]
        if acting:
            verdict = "met" if max(acting) <= 2.0 else "NOT met"
            lines.append(f"goal kill -> acting <= 2 s: {verdict}")
        text = "\n".join(lines)
        print(text)
        if self.args.output:
            Path(self.args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.output).write_text(text + "\n")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.elector:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )
        with open(args.events, "a", buffering=1) as events:
            asyncio.run(elector_main(args.elector, args.state, events))
        return 0
    return run_main(Bench(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
