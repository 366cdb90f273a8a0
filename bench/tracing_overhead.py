"""What tracing costs: Redis failover time and gateway throughput with tracing off and on, one run.

    .venv/bin/python bench/tracing_overhead.py                          # 5 rounds, 10 s of load each
    .venv/bin/python bench/tracing_overhead.py --runs 2 --seconds 3     # a quick check
    .venv/bin/python bench/tracing_overhead.py --configs off,otlp --out results.json

Three isolated suites run side by side (``--start-suite`` of redis_failover.py: free ports, own
agent addresses, temp data dirs, only the redis workload, metrics endpoints off), one per
configuration, every service of a suite started with the same environment except:

- ``off``: ``STATEFUL_TRACES_DIR`` empty and no ``OTEL_EXPORTER_OTLP_*`` variable: tracing off;
- ``jsonl``: ``STATEFUL_TRACES_DIR`` = the suite's ``<data_dir>/traces`` (``make run``'s default);
- ``otlp``: ``OTEL_EXPORTER_OTLP_ENDPOINT`` = an OTLP/gRPC receiver this bench runs as its own
  process (opentelemetry-proto's ``TraceService``; it only counts the spans), files off.

Each round visits every configuration, the order rotated from round to round (off, jsonl, otlp;
jsonl, otlp, off; ...) so that a drift in the machine's load hits all alike. Per configuration and
round, on a fresh 3-member Redis instance (created and deleted through the public API):

- throughput: ``--clients`` coroutines (one gRPC channel each) call ``GetInstance`` through the
  gateway back to back for ``--seconds`` (after a 1 s warm-up not counted): calls per second;
- failover: SIGKILL of the master's ``redis-server`` -> the first ``SET`` accepted by another
  member reporting ``role:master`` (failover_bench/suite.py, the same as redis_failover.py,
  acknowledged keys checked).

The table gives, per configuration, failover median / p90 (s) and throughput median (calls/s),
and the overhead of each "on" configuration against ``off``: failover medians
(on / off - 1) and throughput medians (1 - on / off), each marked under 5 % or not (issue 13's
acceptance). A measurement script: exit code 0 every run succeeded, 1 some failed (listed),
2 a suite did not start, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from failover_bench.procs import Children, run_main
from failover_bench.results import Sample, percentile
from failover_bench.suite import FAILOVER, Api, SuiteOptions, SuiteRun
from failover_bench.suite_process import StartedSuite, stop_suite, suite_env, tail, wait_serving

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.testing.ports import free_port

log = logging.getLogger("bench")

CONFIGS = ("off", "jsonl", "otlp")
# Opt-in (--configs), to see where the cost is: OTLP with API request roots sampled at 10 %, at
# 0 % (only plans traced: trace context still propagated), and at 100 % (every GetInstance traced:
# what the cost of a span per hop is). Plans and failovers are traced whole in all of them
# (mesos_stateful.common.trace_context); the default (jsonl, otlp) samples 1 % of request roots.
EXTRA_CONFIGS = ("otlp-ratio10", "otlp-unsampled", "otlp-always")
THROUGHPUT = "throughput"
# CPU time (user + system) the suite's whole process tree spent per GetInstance in the throughput
# window beyond its idle rate, in microseconds: less moved by other load on a shared machine than
# calls/s (which also counts the time waiting for a core).
CPU_PER_CALL = "cpu per call"
IDLE_SECONDS = 2.0
LIMIT_PERCENT = 5.0
WARMUP_SECONDS = 1.0


# --- the OTLP receiver (its own process, so that it does not share the load generator's CPU) ----


def serve_receiver(port_file: Path, count_file: Path) -> None:
    """An OTLP/gRPC trace receiver on a free 127.0.0.1 port (written to ``port_file``) that counts
    the spans it receives, writing the count to ``count_file`` every 0.5 s and on SIGTERM."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    counted = [0, 0]  # spans, export requests

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(
            self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
        ) -> trace_service_pb2.ExportTraceServiceResponse:
            counted[0] += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            counted[1] += 1
            return trace_service_pb2.ExportTraceServiceResponse()

    def write() -> None:
        tmp = count_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"spans": counted[0], "requests": counted[1]}))
        tmp.replace(count_file)

    async def main() -> None:
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await asyncio.to_thread(port_file.write_text, str(port))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        while not stop.is_set():
            write()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        write()
        await server.stop(grace=1.0)

    asyncio.run(main())


def read_count(count_file: Path) -> dict[str, int]:
    try:
        data: dict[str, int] = json.loads(count_file.read_text())
        return data
    except (OSError, ValueError):
        return {"spans": 0, "requests": 0}


# --- one configuration ---------------------------------------------------------------------------


@dataclass
class Config:
    name: str
    suite: StartedSuite
    samples: list[Sample] = field(default_factory=list)


def tracing_env(config: str, data_dir: Path, otlp_endpoint: str) -> dict[str, str]:
    """The tracing variables of a configuration (applied over the caller's environment, whose own
    ``OTEL_*`` / ``STATEFUL_TRACES_DIR`` are dropped first)."""
    if config == "off":
        return {"STATEFUL_TRACES_DIR": ""}  # the runner's setdefault keeps it empty: off
    if config == "jsonl":
        return {"STATEFUL_TRACES_DIR": str(data_dir / "traces")}
    if config == "otlp":
        return {"STATEFUL_TRACES_DIR": "", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint}
    if config == "otlp-ratio10":
        return {
            "STATEFUL_TRACES_DIR": "",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        }
    if config == "otlp-always":
        return {
            "STATEFUL_TRACES_DIR": "",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        }
    if config == "otlp-unsampled":
        return {
            "STATEFUL_TRACES_DIR": "",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
            "OTEL_TRACES_SAMPLER": "always_off",
        }
    raise ValueError(f"unknown configuration {config!r}")


def launch(children: Children, data_dir: Path, config: str, otlp_endpoint: str) -> StartedSuite:
    """Start an isolated suite (as failover_bench.suite_process.launch_suite) with the tracing
    environment of ``config``; metrics endpoints off and the console on a free port in every
    configuration."""
    marker = secrets.token_hex(16)
    endpoint, env = suite_env(data_dir, marker)
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_") and k != "STATEFUL_TRACES_DIR"}
    env.update(tracing_env(config, data_dir, otlp_endpoint))
    env["STATEFUL_SUITE_METRICS_BASE_PORT"] = "0"
    env["STATEFUL_SUITE_CONSOLE"] = f"127.0.0.1:{free_port()}"  # suite_env leaves it at 8080
    os.makedirs(data_dir, exist_ok=True)
    log_path = data_dir / "suite.log"
    started_at = time.monotonic()
    process = children.start([sys.executable, "-m", "mesos_stateful.suite"], log_path=log_path, env=env)
    log.info("starting the %s suite (gateway %s, log %s)", config, endpoint, log_path)
    return StartedSuite(endpoint, process, data_dir, log_path, marker, env, ("redis",), started_at)


def tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU seconds of ``root_pid`` and its live descendants (``/proc/<pid>/stat``
    fields 14 and 15, in clock ticks; proc(5)); 0.0 for a process gone."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = raw[raw.rindex(")") + 2 :].split()
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


async def throughput(
    endpoint: str, name: str, clients: int, seconds: float, suite_pid: int = 0
) -> tuple[float, int, int, float | None]:
    """``clients`` loops of GetInstance(name) through the gateway, one channel each, for
    ``seconds`` after a warm-up: (calls per second, calls OK, calls failed) in the window, and
    with ``suite_pid`` the CPU microseconds its process tree spent per OK call in the window beyond
    its idle rate (measured for ``IDLE_SECONDS`` before the calls start)."""
    apis = [Api(endpoint, None, 5.0) for _ in range(clients)]
    idle_rate = 0.0  # the suite's own CPU seconds per second with no calls (probes, polls, redis)
    if suite_pid:
        before = await asyncio.to_thread(tree_cpu_seconds, suite_pid)
        await asyncio.sleep(IDLE_SECONDS)
        idle_rate = (await asyncio.to_thread(tree_cpu_seconds, suite_pid) - before) / IDLE_SECONDS
    ok = [0] * clients
    failed = [0] * clients
    start = time.monotonic() + WARMUP_SECONDS
    end = start + seconds

    async def loop(i: int) -> None:
        request = api.GetInstanceRequest(name=name)
        while True:
            now = time.monotonic()
            if now >= end:
                return
            try:
                await apis[i].stub.GetInstance(request, timeout=5.0)
                good = True
            except grpc.aio.AioRpcError:
                good = False
            if start <= time.monotonic() <= end:
                if good:
                    ok[i] += 1
                else:
                    failed[i] += 1

    async def cpu_in_window() -> float | None:
        if not suite_pid:
            return None
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        before = await asyncio.to_thread(tree_cpu_seconds, suite_pid)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        spent = await asyncio.to_thread(tree_cpu_seconds, suite_pid) - before
        return max(0.0, spent - idle_rate * seconds)  # what the calls cost

    try:
        spent, *_ = await asyncio.gather(cpu_in_window(), *(loop(i) for i in range(clients)))
    finally:
        for a in apis:
            await a.close()
    per_call = spent / sum(ok) * 1e6 if spent is not None and sum(ok) else None
    return sum(ok) / seconds, sum(ok), sum(failed), per_call


class OverheadRun(SuiteRun):
    """One round of one configuration: create, throughput, failover, delete."""

    def __init__(self, config: Config, run: int, opts: SuiteOptions, clients: int, seconds: float) -> None:
        super().__init__(
            Api(config.suite.endpoint, None, opts.call_timeout), f"trace-{run}", run, opts, config.samples
        )
        self.config, self.clients, self.seconds = config, clients, seconds

    async def _failover(self) -> None:
        suite = self.config.suite
        rps, ok, failed, cpu_us = await throughput(
            suite.endpoint, self.name, self.clients, self.seconds, suite.process.pid
        )
        info = {"calls_ok": ok, "calls_failed": failed, "clients": self.clients, "seconds": self.seconds}
        self._sample(
            THROUGHPUT, ok > 0 and failed == 0, rps, "" if failed == 0 else f"{failed} calls failed", info
        )
        if cpu_us is not None:
            self._sample(CPU_PER_CALL, ok > 0 and failed == 0, cpu_us, "", info)
        await super()._failover()

    async def close(self) -> None:
        await self.api.close()


# --- the bench -----------------------------------------------------------------------------------


def values(samples: list[Sample], measurement: str) -> list[float]:
    return [s.seconds for s in samples if s.measurement == measurement and s.ok and s.seconds is not None]


def summary(config: Config) -> dict[str, Any]:
    fo, tp = values(config.samples, FAILOVER), values(config.samples, THROUGHPUT)
    cpu = values(config.samples, CPU_PER_CALL)
    failures = [
        f"{s.measurement} run {s.run}: {s.detail}"
        for s in config.samples
        if not s.ok and s.measurement in (FAILOVER, THROUGHPUT)
    ]
    return {
        "config": config.name,
        "failover_runs": len(fo),
        "failover_median_s": percentile(fo, 50) if fo else None,
        "failover_p90_s": percentile(fo, 90) if fo else None,
        "throughput_runs": len(tp),
        "throughput_median_per_s": percentile(tp, 50) if tp else None,
        "throughput_min_per_s": min(tp) if tp else None,
        "throughput_max_per_s": max(tp) if tp else None,
        "cpu_us_per_call_median": percentile(cpu, 50) if cpu else None,
        "failures": failures,
    }


def paired(configs: dict[str, Config], name: str, measurement: str, lower_is_better: bool) -> float | None:
    """The median over rounds of one round's overhead against ``off`` in the same round (%):
    on/off - 1 for times, 1 - on/off for rates. Rounds are interleaved, so pairs share the load."""

    def by_run(config: Config) -> dict[int, float]:
        return {
            s.run: s.seconds
            for s in config.samples
            if s.measurement == measurement and s.ok and s.seconds is not None
        }

    on, off = by_run(configs[name]), by_run(configs["off"])
    ratios = [on[r] / off[r] for r in sorted(on.keys() & off.keys()) if off[r] > 0]
    if not ratios:
        return None
    ratio = percentile(ratios, 50)
    return (ratio - 1) * 100 if lower_is_better else (1 - ratio) * 100


def overheads(summaries: dict[str, dict[str, Any]], configs: dict[str, Config]) -> list[dict[str, Any]]:
    """Each "on" configuration against ``off``: failover medians on/off - 1, throughput 1 - on/off (%),
    and the same per round (``paired``, the median of the rounds' own ratios)."""
    base = summaries.get("off")
    rows: list[dict[str, Any]] = []
    if base is None:
        return rows
    for name, s in summaries.items():
        if name == "off":
            continue
        fo = tp = None
        if s["failover_median_s"] and base["failover_median_s"]:
            fo = (s["failover_median_s"] / base["failover_median_s"] - 1) * 100
        if s["throughput_median_per_s"] and base["throughput_median_per_s"]:
            tp = (1 - s["throughput_median_per_s"] / base["throughput_median_per_s"]) * 100
        rows.append(
            {
                "config": name,
                "failover_overhead_pct": fo,
                "failover_under_5pct": fo is not None and fo < LIMIT_PERCENT,
                "throughput_overhead_pct": tp,
                "throughput_under_5pct": tp is not None and tp < LIMIT_PERCENT,
                "failover_paired_pct": paired(configs, name, FAILOVER, lower_is_better=True),
                "throughput_paired_pct": paired(configs, name, THROUGHPUT, lower_is_better=False),
                "cpu_per_call_paired_pct": paired(configs, name, CPU_PER_CALL, lower_is_better=True),
            }
        )
    return rows


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(summaries: dict[str, dict[str, Any]], rows: list[dict[str, Any]], spans: dict[str, str]) -> str:
    lines = [
        f"{'config':<15} {'failover median s':>18} {'p90 s':>8} {'ok':>5} "
        f"{'GetInstance/s median':>21} {'min':>8} {'max':>8} {'ok':>5} {'CPU us/call':>12}  spans exported",
        "-" * 128,
    ]
    for name, s in summaries.items():
        lines.append(
            f"{name:<15} {_f(s['failover_median_s'], '.3f'):>18} {_f(s['failover_p90_s'], '.3f'):>8} "
            f"{s['failover_runs']:>5} {_f(s['throughput_median_per_s'], '.1f'):>21} "
            f"{_f(s['throughput_min_per_s'], '.1f'):>8} {_f(s['throughput_max_per_s'], '.1f'):>8} "
            f"{s['throughput_runs']:>5} {_f(s.get('cpu_us_per_call_median'), '.0f'):>12}  "
            f"{spans.get(name, '')}"
        )
    lines.append("")
    for r in rows:
        fo, tp = r["failover_overhead_pct"], r["throughput_overhead_pct"]
        lines.append(
            f"{r['config']} vs off: failover {_f(fo, '+.1f')} % "
            f"({'under' if r['failover_under_5pct'] else 'NOT under'} 5 %), "
            f"throughput {_f(tp, '.1f')} % fewer calls/s "
            f"({'under' if r['throughput_under_5pct'] else 'NOT under'} 5 %); "
            f"paired per round: failover {_f(r['failover_paired_pct'], '+.1f')} %, "
            f"throughput {_f(r['throughput_paired_pct'], '.1f')} % fewer, "
            f"suite CPU per call {_f(r.get('cpu_per_call_paired_pct'), '+.1f')} %"
        )
    for name, s in summaries.items():
        for failure in s["failures"]:
            lines.append(f"FAILED {name}: {failure}")
    return "\n".join(lines)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children = Children()
        self.root = Path(tempfile.mkdtemp(prefix="tracing-overhead-"))
        self.configs: list[Config] = []
        self.receiver: Any = None

    def jsonl_spans(self, config: Config) -> str:
        folder = config.suite.data_dir / "traces"
        count = 0
        for path in folder.glob("*.jsonl") if folder.is_dir() else []:
            with contextlib.suppress(OSError), open(path, "rb") as f:
                count += sum(1 for _ in f)
        return f"{count} in {folder}"

    async def start_receiver(self) -> str:
        port_file, count_file = self.root / "otlp.port", self.root / "otlp.count"
        self.count_file = count_file
        argv = [sys.executable, __file__, "--otlp-receiver", str(port_file), str(count_file)]
        self.receiver = self.children.start(argv, log_path=self.root / "otlp-receiver.log")
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if self.receiver.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the OTLP receiver did not start: {tail(self.root / 'otlp-receiver.log')}"
                )
            await asyncio.sleep(0.05)
        return f"http://127.0.0.1:{port_file.read_text().strip()}"

    async def run(self) -> int:
        a = self.args
        names = [c.strip() for c in a.configs.split(",") if c.strip()]
        opts = SuiteOptions(failover_deadline=a.failover_deadline, poll_interval=a.poll_interval)
        code = 0
        t0 = time.monotonic()
        try:
            otlp = await self.start_receiver() if any(n.startswith("otlp") for n in names) else ""
            for name in names:  # one after the other: each takes its free ports while the others hold theirs
                suite = launch(self.children, self.root / name, name, otlp)
                self.configs.append(Config(name, suite))
                await wait_serving(suite, a.suite_start_timeout)
            for run in range(1, a.runs + 1):
                shift = (run - 1) % len(self.configs)
                for config in self.configs[shift:] + self.configs[:shift]:
                    log.info("round %d/%d: %s", run, a.runs, config.name)
                    one = OverheadRun(config, run, opts, a.clients, a.seconds)
                    try:
                        await one.execute()
                    finally:
                        await one.close()
                    last = [s for s in config.samples if s.run == run]
                    log.info(
                        "round %d %s: %s",
                        run,
                        config.name,
                        ", ".join(
                            f"{s.measurement}={_f(s.seconds, '.3f')}{'' if s.ok else ' FAILED'}" for s in last
                        ),
                    )
        except RuntimeError as error:
            log.error("%s", error)
            code = 2
        except asyncio.CancelledError:
            log.warning("interrupted; reporting what was measured")
            code = 130
        finally:
            self.report(time.monotonic() - t0)
            for config in self.configs:
                stop_suite(self.children, config.suite, grace=60.0)
            self.children.stop_all(grace=5.0)
        if code == 0 and any(not s.ok for c in self.configs for s in c.samples):
            code = 1
        return code

    def report(self, elapsed: float) -> None:
        summaries = {c.name: summary(c) for c in self.configs}
        rows = overheads(summaries, {c.name: c for c in self.configs})
        spans = {c.name: "none (off)" for c in self.configs if c.name == "off"}
        spans.update({c.name: self.jsonl_spans(c) for c in self.configs if c.name == "jsonl"})
        otlp_configs = [c.name for c in self.configs if c.name.startswith("otlp")]
        if otlp_configs:  # one receiver for all of them
            spans[otlp_configs[0]] = f"{read_count(self.count_file)['spans']} to the receiver"
            if len(otlp_configs) > 1:
                spans[otlp_configs[0]] += f" (from {', '.join(otlp_configs)} together)"
        a = self.args
        print(
            f"tracing overhead: {a.runs} rounds, {a.clients} clients x {a.seconds:g} s per throughput run, "
            f"{elapsed:.0f} s, load average {os.getloadavg()[0]:.2f} at the end"
        )
        print(table(summaries, rows, spans))
        if a.out:
            document = {
                "settings": vars(a),
                "summaries": summaries,
                "overheads": rows,
                "spans": spans,
                "samples": {c.name: [s.to_json() for s in c.samples] for c in self.configs},
            }
            Path(a.out).write_text(json.dumps(document, indent=2, default=str))
            print(f"JSON: {a.out}")
        if a.keep_files:
            print(f"files kept in {self.root}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--runs", type=int, default=5, help="rounds; each measures every configuration once (default 5)"
    )
    p.add_argument(
        "--seconds", type=float, default=10.0, help="throughput window per run, seconds (default 10)"
    )
    p.add_argument("--clients", type=int, default=8, help="concurrent GetInstance loops (default 8)")
    p.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated, of {','.join(CONFIGS + EXTRA_CONFIGS)} (default {','.join(CONFIGS)})",
    )
    p.add_argument(
        "--failover-deadline", type=float, default=60.0, help="seconds for a new master (default 60)"
    )
    p.add_argument(
        "--poll-interval", type=float, default=0.01, help="new-master SET probe interval, s (default 0.01)"
    )
    p.add_argument("--suite-start-timeout", type=float, default=180.0, help="seconds for each suite to be up")
    p.add_argument("--out", help="also write a JSON document (settings, summaries, every sample) here")
    p.add_argument("--keep-files", action="store_true", help="keep the suites' data dirs (logs, traces)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    unknown = {c.strip() for c in args.configs.split(",") if c.strip()} - set(CONFIGS + EXTRA_CONFIGS)
    if unknown:
        p.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    return args


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--otlp-receiver":
        serve_receiver(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    args = parse_args()
    bench = Bench(args)
    try:
        return run_main(bench, args.verbose)
    finally:
        if not args.keep_files:
            import shutil

            shutil.rmtree(bench.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
