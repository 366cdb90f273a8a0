"""Partition failover benchmark: a silent master, the suite against Redis Sentinel.

    .venv/bin/python bench/partition_failover.py --runs 10
    .venv/bin/python bench/partition_failover.py --runs 10 --json > results.json

It starts its own suite (isolated as redis_failover.py --start-suite; the local cluster's agent
ping timeouts set by --agent-ping-timeout / --max-agent-ping-timeouts) and per run measures:

- suite-sigstop: SIGSTOP of the master's redis-server (Mesos sees nothing; lifecycle's health
  monitor must declare the master failed, fence it and promote a replica), SIGCONT once a new
  master accepts writes;
- suite-stop-agent: the master's agent cut off from the Mesos master (members stay reachable; the
  local cluster notices after the ping timeouts), healed after the run;
- sentinel-<ms>-sigstop: Redis Sentinel (3 sentinels, quorum 2, down-after-milliseconds <ms>),
  the same SIGSTOP and SIGCONT.

each under the same write load (SET + WAIT 1 on one connection to the master, every 10 ms): the
time from the cut until a new master accepts a write, the acknowledged writes lost on the new
master, and the old master's OK replies after the new master's first accepted write. See
bench/README.md.

Exit code: 0 every run succeeded (time measured, 0 acknowledged writes lost, and for the suite
no write accepted by the old master after the new master's first); 1 some run failed (see the
table); 2 the suite could not be started; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from failover_bench import partition_report
from failover_bench.partition import (
    SCENARIOS,
    CutOptions,
    PartitionSuiteRun,
    measurement,
    sentinel_once,
    sentinel_side,
)
from failover_bench.procs import Children, run_main
from failover_bench.results import Sample, percentile, summarize
from failover_bench.sentinel import SentinelOptions
from failover_bench.suite import Api, SuiteOptions
from failover_bench.suite_process import StartedSuite, start_suite, stop_suite, tail

log = logging.getLogger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="runs of every measurement (default 10)")
    p.add_argument(
        "--scenarios",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="suite scenarios (default: sigstop stop-agent)",
    )
    p.add_argument("--skip-suite", action="store_true", help="measure only Sentinel")
    p.add_argument("--skip-sentinel", action="store_true", help="measure only the suite")
    p.add_argument(
        "--sentinel-down-after",
        type=int,
        nargs="+",
        default=[1000],
        metavar="MS",
        help="Sentinel down-after-milliseconds values (default 1000)",
    )
    p.add_argument(
        "--agent-ping-timeout",
        type=float,
        default=1.0,
        help="the local cluster's agent_ping_timeout in seconds (Mesos default 15; default here 1)",
    )
    p.add_argument(
        "--max-agent-ping-timeouts",
        type=int,
        default=3,
        help="the local cluster's max_agent_ping_timeouts (Mesos default 5; default here 3)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of write load before the cut")
    p.add_argument(
        "--window",
        type=float,
        default=3.0,
        help="seconds of writes to the old master after the new master's first write (default 3)",
    )
    p.add_argument("--failover-deadline", type=float, default=120.0, help="seconds for a new master")
    p.add_argument("--poll-interval", type=float, default=0.01, help="seconds between writes (0.01)")
    p.add_argument("--suite-start-timeout", type=float, default=180.0)
    p.add_argument("--create-timeout", type=float, default=180.0)
    p.add_argument("--recovery-timeout", type=float, default=120.0)
    p.add_argument("--keep-files", action="store_true", help="keep the suite's and Sentinel's dirs")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--out", type=Path, help="also write the JSON document to this file")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.skip_suite and args.skip_sentinel:
        p.error("--skip-suite and --skip-sentinel leave nothing to measure")
    return args


def lifecycle_env() -> dict[str, str]:
    """The lifecycle / cluster settings the suite runs with (inherited from this environment)."""
    return {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith(("STATEFUL_LIFECYCLE_", "STATEFUL_REDIS_"))
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children = Children()
        self.samples: list[Sample] = []
        self.suite_error: str | None = None
        self.started: StartedSuite | None = None
        self.interrupted = False
        self.tag = secrets.token_hex(3)
        self.root = Path(tempfile.mkdtemp(prefix="bench-partition-")).resolve()

    def order(self) -> list[str]:
        a = self.args
        names: list[str] = []
        if not a.skip_suite:
            for sc in a.scenarios:
                names += [
                    measurement("suite", sc),
                    f"suite-{sc}: create -> all members RUNNING",
                    f"suite-{sc}: delete -> gone",
                ]
        if not a.skip_sentinel:
            names += [measurement(sentinel_side(ms), "sigstop") for ms in a.sentinel_down_after]
        return names

    async def run(self) -> int:
        try:
            await self._measure()
        except asyncio.CancelledError:
            self.interrupted = True
            log.warning("interrupted: stopping everything, reporting what was measured")
        finally:
            self._cleanup()
        return self._report()

    async def _start(self) -> Api | None:
        a = self.args
        os.environ["STATEFUL_CLUSTER_AGENT_PING_TIMEOUT"] = str(a.agent_ping_timeout)
        os.environ["STATEFUL_CLUSTER_MAX_AGENT_PING_TIMEOUTS"] = str(a.max_agent_ping_timeouts)
        try:
            self.started = await start_suite(self.children, self.root / "suite", a.suite_start_timeout)
        except RuntimeError as error:
            self.suite_error = f"starting the suite: {error}"
            log.error("%s", self.suite_error)
            return None
        return Api(self.started.endpoint, None, 10.0)

    async def _measure(self) -> None:
        a = self.args
        api = None if a.skip_suite else await self._start()
        suite_opts = SuiteOptions(
            create_timeout=a.create_timeout,
            failover_deadline=a.failover_deadline,
            recovery_timeout=a.recovery_timeout,
            poll_interval=a.poll_interval,
        )
        cut_opts = CutOptions(
            warmup=a.warmup,
            window=a.window,
            deadline=a.failover_deadline,
            poll_interval=a.poll_interval,
            recovery_timeout=a.recovery_timeout,
        )
        sentinel_opts = SentinelOptions(
            failover_deadline=a.failover_deadline, poll_interval=a.poll_interval, keep_dirs=a.keep_files
        )
        master_url = f"http://{self.started.env['STATEFUL_SUITE_MASTER']}" if self.started else None
        try:
            for run in range(1, a.runs + 1):
                if api is not None:
                    for sc in a.scenarios:
                        await PartitionSuiteRun(
                            api,
                            f"cut-{self.tag}-{sc}-{run}",
                            run,
                            sc,
                            suite_opts,
                            cut_opts,
                            self.samples,
                            master_url,
                        ).execute()
                if not a.skip_sentinel:
                    for ms in a.sentinel_down_after:
                        self.samples.append(
                            await sentinel_once(run, ms, sentinel_opts, cut_opts, self.children)
                        )
                self._progress(run)
        finally:
            if api is not None:
                await api.close()

    def _progress(self, run: int) -> None:
        parts = []
        for s in self.samples:
            if s.run != run or "cut ->" not in s.measurement:
                continue
            value = f"{s.seconds:.3f}s" if s.seconds is not None else "-"
            parts.append(
                f"{s.measurement.split(':')[0]}={value}{'' if s.ok else ' FAIL'}"
                f" lost={s.info.get('lost_acked_keys', '-')}"
                f" old-OKs={s.info.get('old_master_oks_after_new_master', '-')}"
            )
        log.info("run %d/%d: %s", run, self.args.runs, "; ".join(parts))

    def _cleanup(self) -> None:
        if self.started is not None:
            killed = stop_suite(self.children, self.started, grace=60.0)
            if killed:
                log.warning("killed %d leftover suite processes", len(killed))
            if self.suite_error:
                log.info("suite log tail:\n%s", tail(self.started.log_path))
        self.children.stop_all()
        if self.args.keep_files:
            log.info("files kept in %s", self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def _phases(self) -> str:
        """Where the suite's time goes: median seconds from the cut to each step (as the API
        showed it), per scenario, and the fence methods recorded."""
        lines = ["where the suite's time goes (median s after the cut, as the API showed it):"]
        for sc in self.args.scenarios if not self.args.skip_suite else []:
            mine = [
                s for s in self.samples if s.measurement == measurement("suite", sc) and "phases" in s.info
            ]
            if not mine:
                continue
            parts = []
            for phase in mine[0].info["phases"]:
                values = [s.info["phases"][phase] for s in mine if s.info["phases"].get(phase) is not None]
                parts.append(f"{phase} {percentile(values, 50):.3f}" if values else f"{phase} -")
            writable = [s.seconds for s in mine if s.seconds is not None]
            if writable:
                parts.append(f"new master writable {percentile(writable, 50):.3f}")
            fences: dict[str, int] = {}
            for s in mine:
                for line in s.info.get("recorded", []):
                    if "| fence " in line and " fence " in line.split(":")[0]:
                        method = line.split("| fence ")[1].split()[0]
                        fences[method] = fences.get(method, 0) + 1
            lines.append(f"  suite-{sc}: " + ", ".join(parts))
            lines.append(f"    fence methods: {fences}")
        return "\n".join(lines)

    def settings(self) -> dict[str, Any]:
        a = self.args
        doc = {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(a).items()
            if k not in ("json", "verbose")
        }
        doc["suite_env"] = {
            "STATEFUL_CLUSTER_AGENT_PING_TIMEOUT": str(a.agent_ping_timeout),
            "STATEFUL_CLUSTER_MAX_AGENT_PING_TIMEOUTS": str(a.max_agent_ping_timeouts),
            **lifecycle_env(),
        }
        doc["cpus"] = os.cpu_count()
        doc["loadavg_at_end"] = os.getloadavg()
        return doc

    def _report(self) -> int:
        a = self.args
        names = self.order()
        cut_rows = [partition_report.summarize(n, self.samples) for n in names if "cut ->" in n]
        other = [summarize(n, self.samples) for n in names if "cut ->" not in n]
        if self.interrupted:
            code = 130
        elif self.suite_error:
            code = 2
        elif any(not s.ok for s in self.samples):
            code = 1
        else:
            code = 0
        doc = {
            "runs": a.runs,
            "interrupted": self.interrupted,
            "suite_error": self.suite_error,
            "exit_code": code,
            "summaries": [s.to_json() for s in cut_rows] + [s.to_json() for s in other],
            "samples": [s.to_json() for s in self.samples],
            "settings": self.settings(),
        }
        if a.out:
            a.out.write_text(json.dumps(doc, indent=2))
        if a.json:
            print(json.dumps(doc, indent=2))
        else:
            print(partition_report.table(cut_rows))
            print()
            for s in other:
                med = "-" if s.median is None else f"{s.median:.3f}"
                mx = "-" if s.max is None else f"{s.max:.3f}"
                print(f"{s.measurement}: median {med} s, max {mx} s, {s.successes}/{s.runs}")
            print(self._phases())
            env = doc["settings"]["suite_env"]
            print("\nsuite settings: " + ", ".join(f"{k}={v}" for k, v in env.items()))
            print(
                f"machine: {os.cpu_count()} cpus, load average at the end "
                + " ".join(f"{x:.1f}" for x in os.getloadavg())
            )
            if self.suite_error:
                print(f"\nSUITE NOT MEASURED: {self.suite_error}")
        return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(Bench(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
