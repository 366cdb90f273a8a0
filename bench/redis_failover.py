"""Redis failover benchmark: the suite against Redis Sentinel.

    .venv/bin/python bench/redis_failover.py --runs 10                 # suite at 127.0.0.1:7000 (make run)
    .venv/bin/python bench/redis_failover.py --runs 10 --start-suite   # starts its own suite
    .venv/bin/python bench/redis_failover.py --runs 2 --skip-suite     # Sentinel only

Per run: (1) a 3-member Redis instance created through stateful.v1.InstanceService, timed to every
member RUNNING; (2) its master's redis-server SIGKILLed, timed to the first write accepted by
another member that reports role:master, keys acknowledged with WAIT 1 before the kill checked;
then deleted (timed until gone); (3) the same kill against Redis Sentinel (3 sentinels, quorum 2)
for each --sentinel-down-after. See bench/README.md.

Exit code: 0 every run of every measurement succeeded; 1 some failed (see the table);
2 the suite could not be reached or never got a Redis instance RUNNING; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
import tempfile
from pathlib import Path

import grpc
from failover_bench import report
from failover_bench.procs import Children, run_main
from failover_bench.results import Sample
from failover_bench.sentinel import SentinelOptions, measure_once
from failover_bench.suite import Api, SuiteOptions, SuiteRun
from failover_bench.suite_process import StartedSuite, start_suite, stop_suite, tail

log = logging.getLogger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="runs of every measurement (default 10)")
    p.add_argument(
        "--endpoint",
        default=os.environ.get("STATEFUL_ENDPOINT", "127.0.0.1:7000"),
        help="gateway host:port of a running suite (default $STATEFUL_ENDPOINT or 127.0.0.1:7000)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("STATEFUL_TOKEN"),
        help="bearer token for the gateway (default $STATEFUL_TOKEN)",
    )
    p.add_argument(
        "--start-suite",
        action="store_true",
        help="start `python -m mesos_stateful.suite` on free ports with a temp data dir, stop it at the end",
    )
    p.add_argument(
        "--suite-start-timeout", type=float, default=180.0, help="seconds for --start-suite to be up"
    )
    p.add_argument("--skip-suite", action="store_true", help="measure only Sentinel")
    p.add_argument("--skip-sentinel", action="store_true", help="measure only the suite")
    p.add_argument(
        "--sentinel-down-after",
        type=int,
        nargs="+",
        default=[1000, 5000],
        metavar="MS",
        help="Sentinel down-after-milliseconds values to measure (default 1000 5000)",
    )
    p.add_argument(
        "--sentinel-failover-timeout",
        type=int,
        default=10000,
        metavar="MS",
        help="Sentinel failover-timeout (default 10000)",
    )
    p.add_argument(
        "--failover-deadline",
        type=float,
        default=60.0,
        help="seconds after the kill by which a new master must accept writes (default 60)",
    )
    p.add_argument("--create-timeout", type=float, default=180.0, help="seconds for all members RUNNING")
    p.add_argument(
        "--recovery-timeout",
        type=float,
        default=120.0,
        help="seconds after the kill for the suite to be RUNNING again with a replacement",
    )
    p.add_argument("--delete-timeout", type=float, default=120.0, help="seconds for a deleted instance to go")
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.01,
        help="seconds between write attempts per member after the kill (default 0.01)",
    )
    p.add_argument("--keep-files", action="store_true", help="keep Sentinel and --start-suite dirs and logs")
    p.add_argument(
        "--json", action="store_true", help="print the results as JSON on stdout instead of a table"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.skip_suite and args.skip_sentinel:
        p.error("--skip-suite and --skip-sentinel leave nothing to measure")
    if args.skip_suite and args.start_suite:
        p.error("--start-suite and --skip-suite contradict each other")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children = Children()
        self.samples: list[Sample] = []
        self.suite_error: str | None = None
        self.suite_ever_running = False
        self.started_suite: StartedSuite | None = None
        self.interrupted = False
        self.tag = secrets.token_hex(3)
        self.root = Path(tempfile.mkdtemp(prefix="bench-redis-failover-")).resolve()

    async def run(self) -> int:
        try:
            await self._measure()
        except asyncio.CancelledError:
            self.interrupted = True
            log.warning("interrupted: stopping everything, reporting what was measured")
        finally:
            self._cleanup()
        return self._report()

    async def _measure(self) -> None:
        a = self.args
        api: Api | None = None
        if not a.skip_suite:
            api = await self._connect()
        suite_opts = SuiteOptions(
            create_timeout=a.create_timeout,
            failover_deadline=a.failover_deadline,
            recovery_timeout=a.recovery_timeout,
            delete_timeout=a.delete_timeout,
            poll_interval=a.poll_interval,
        )
        sentinel_opts = SentinelOptions(
            failover_timeout_ms=a.sentinel_failover_timeout,
            failover_deadline=a.failover_deadline,
            poll_interval=a.poll_interval,
            keep_dirs=a.keep_files,
        )
        create_failures = 0
        try:
            for run in range(1, a.runs + 1):
                if api is not None and self.suite_error is None:
                    ok = await SuiteRun(
                        api, f"bench-{self.tag}-{run}", run, suite_opts, self.samples
                    ).execute()
                    self.suite_ever_running |= ok
                    create_failures = 0 if ok else create_failures + 1
                    if create_failures >= 2 and not self.suite_ever_running:
                        self.suite_error = (
                            "the suite did not get a 3-member Redis instance RUNNING in 2 tries; "
                            "skipping the remaining suite runs"
                        )
                        log.error("%s", self.suite_error)
                if not a.skip_sentinel:
                    for ms in a.sentinel_down_after:
                        self.samples.append(await measure_once(run, ms, sentinel_opts, self.children))
                self._progress(run)
        finally:
            if api is not None:
                await api.close()

    async def _connect(self) -> Api | None:
        a = self.args
        endpoint = a.endpoint
        if a.start_suite:
            try:
                self.started_suite = await start_suite(
                    self.children, self.root / "suite", a.suite_start_timeout
                )
            except RuntimeError as error:
                self.suite_error = f"--start-suite: {error}"
                log.error("%s", self.suite_error)
                return None
            endpoint = self.started_suite.endpoint
        api = Api(endpoint, a.token, 10.0)
        try:
            names = await asyncio.wait_for(api.workloads(), 15)
        except grpc.aio.AioRpcError as error:
            self.suite_error = (
                f"cannot use the gateway at {endpoint}: {error.code().name}: {error.details()} "
                "(is `make run` running? or use --start-suite)"
            )
        except TimeoutError:
            self.suite_error = f"the gateway at {endpoint} did not answer ListWorkloads within 15s"
        else:
            if "redis" in names:
                return api
            self.suite_error = f"the gateway at {endpoint} has no redis workload registered (has: {names})"
        log.error("%s", self.suite_error)
        await api.close()
        return None

    def _progress(self, run: int) -> None:
        mine = [s for s in self.samples if s.run == run]
        parts = [
            f"{s.measurement.split(':')[0] + ':' + s.measurement.split('->')[-1]}="
            + (f"{s.seconds:.3f}s" if s.ok and s.seconds is not None else "FAIL")
            for s in mine
        ]
        log.info("run %d/%d: %s", run, self.args.runs, "; ".join(parts))

    def _cleanup(self) -> None:
        if self.started_suite is not None:
            killed = stop_suite(self.children, self.started_suite, grace=60.0)
            if killed:
                log.warning("killed %d leftover suite processes: %s", len(killed), killed)
            if self.suite_error or not self.suite_ever_running:
                log.info("suite log tail:\n%s", tail(self.started_suite.log_path))
        self.children.stop_all()
        if self.args.keep_files:
            log.info("files kept in %s", self.root)
        else:
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)

    def _report(self) -> int:
        a = self.args
        with_suite = not a.skip_suite
        summaries, ratios = report.build(
            self.samples, a.sentinel_down_after if not a.skip_sentinel else [], with_suite
        )
        suite_failed = with_suite and (self.suite_error is not None or not self.suite_ever_running)
        if self.interrupted:
            code = 130
        elif suite_failed:
            code = 2
        elif any(not s.ok for s in self.samples):
            code = 1
        else:
            code = 0
        suite_status = None
        if suite_failed:
            suite_status = self.suite_error or "the suite never got a 3-member Redis instance RUNNING"
        if a.json:
            doc = {
                "runs": a.runs,
                "interrupted": self.interrupted,
                "suite_error": suite_status,
                "exit_code": code,
                "summaries": [s.to_json() for s in summaries],
                "ratios": ratios,
                "samples": [s.to_json() for s in self.samples],
                "settings": {k: v for k, v in vars(a).items() if k not in ("token", "json", "verbose")},
            }
            print(json.dumps(doc, indent=2))
        else:
            print(report.table(summaries, ratios))
            if suite_status:
                print(f"\nSUITE NOT MEASURED: {suite_status}")
        return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(Bench(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
