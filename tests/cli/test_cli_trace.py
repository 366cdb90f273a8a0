"""``statefulctl trace NAME``, run as a subprocess: span files written in tmp_path in the exporter's
format (mesos_stateful.common.tracing span_dict), both shapes (a plan root span, and older files where
each step run is a trace of its own), errors without a traceback; and one end-to-end run against
the suite started as `make run` starts it."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from suite.suite_helpers import ctl, service_ports, start_suite, stop_suite, suite_env, wait_until

from mesos_stateful.testing.ports import free_ports

STATEFULCTL = [sys.executable, "-m", "mesos_stateful.cli"]
MS = 1_000_000  # nanoseconds
T0 = 1_764_500_000_000 * MS  # an arbitrary epoch time, in nanoseconds

_ids = itertools.count(1)


def span(
    name: str,
    start_ms: float,
    took_ms: float,
    trace_id: str,
    parent: dict[str, Any] | None = None,
    service: str = "lifecycle",
    kind: str = "INTERNAL",
    span_status: str = "UNSET",
    status_message: str = "",
    **attributes: Any,
) -> dict[str, Any]:
    """One span as the JSON-lines exporter writes it (span_dict)."""
    return {
        "service": service,
        "name": name,
        "trace_id": trace_id,
        "span_id": f"{next(_ids):016x}",
        "parent_id": parent["span_id"] if parent else None,
        "kind": kind,
        "start_ns": T0 + int(start_ms * MS),
        "end_ns": T0 + int((start_ms + took_ms) * MS),
        "status": span_status,
        "status_message": status_message,
        "attributes": attributes,
    }


def state_calls(parent: dict[str, Any], start_ms: float, count: int, trace_id: str) -> list[dict[str, Any]]:
    """``count`` state calls of 0.5 ms under ``parent``: the lifecycle's client span and the state
    service's server span under it, as the gRPC instrumentors write them."""
    spans = []
    for index in range(count):
        method = "/stateful.v1.StateService/" + ("Get" if index % 2 else "Put")
        client = span(
            method, start_ms + index, 0.5, trace_id, parent, kind="CLIENT", **{"rpc.system": "grpc"}
        )
        server = span(method, start_ms + index + 0.1, 0.3, trace_id, client, service="state", kind="SERVER")
        spans += [client, server]
    return spans


def failover(instance: str, start_ms: float, trace_id: str, with_root: bool = True) -> list[dict[str, Any]]:
    """A recovery: loss seen at start_ms, the plan made 100 ms later (the root's started_at, as
    lifecycle.spans writes it), first step 120 ms after the loss; 3 steps, 5 + 4 + 3 state calls,
    a callback under the promote step, whose decision has 12 candidates; the root ends (writable)
    at 700 ms, the last step at 890 ms. Without a root (older files) each step is its own trace."""
    spans: list[dict[str, Any]] = []
    root = None
    if with_root:
        root = span(
            "plan recovery",
            start_ms,
            700,  # writable again during the last step
            trace_id,
            instance=instance,
            workload="redis",
            plan="recovery",
            reason=f"master {instance}-0 lost: TASK_FAILED",
            cause="lost",
            detected_at=datetime.fromtimestamp((T0 + start_ms * MS) / 1e9, UTC).isoformat(),
            started_at=datetime.fromtimestamp((T0 + (start_ms + 100) * MS) / 1e9, UTC).isoformat(),
        )
        spans.append(root)
    steps = [("fence", 120, 200, 5), ("promote", 330, 300, 4), ("repoint", 640, 250, 3)]
    for number, (step, at, took, calls) in enumerate(steps):
        trace = trace_id if with_root else f"{trace_id}{number}"
        decided: dict[str, Any] = {}
        if step == "promote":
            decided = {
                "promoted": f"{instance}-1",
                "decision": "the highest replication offset of the replicas that answered",
                "candidates": CANDIDATES(instance),
                "positions": [f"{m}={1_000_000 + i}" for i, m in enumerate(CANDIDATES(instance))],
            }
        run = span(
            f"step {step}",
            start_ms + at,
            took,
            trace,
            root,
            instance=instance,
            plan="recovery",
            step=step,
            member=f"{instance}-1",
            status="COMPLETE",
            attempts=1,
            **decided,
        )
        spans.append(run)
        spans += state_calls(run, start_ms + at + 1, calls, trace)
        if step == "promote":
            callback = span(
                "callback StartMaster",
                start_ms + at + 50,
                180,
                trace,
                run,
                callback="StartMaster",
                member=f"{instance}-1",
                attempt=1,
                outcome="OK",
            )
            rpc = span(
                "/stateful.v1.WorkloadService/StartMaster",
                start_ms + at + 51,
                178,
                trace,
                callback,
                kind="CLIENT",
            )
            spans += [callback, rpc]
    return spans


def CANDIDATES(instance: str) -> list[str]:
    return [f"{instance}-{n}" for n in range(1, 13)]


def write(folder: Path, spans: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    by_service: dict[str, list[str]] = {}
    for item in spans:
        by_service.setdefault(item["service"], []).append(json.dumps(item))
    for service, lines in by_service.items():
        with (folder / f"{service}.jsonl").open("a") as out:
            out.write("\n".join(lines) + "\n")


def run_ctl(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STATEFUL_")}
    # A gateway address nobody listens on unless a test says otherwise.
    base["STATEFUL_ENDPOINT"] = f"127.0.0.1:{free_ports(1)[0]}"
    base.update(env or {})
    done = subprocess.run(
        [*STATEFULCTL, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=base
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


@pytest.fixture
def traces(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "traces"
    write(
        folder,
        failover("cache", 0, "a" * 32)
        + failover("other", 2000, "b" * 32)
        + failover("cache", 10_000, "c" * 32),
    )
    # A gateway call of the same instance that is no plan: never shown.
    gateway = span(
        "/stateful.v1.InstanceService/GetInstance",
        11_000,
        3,
        "d" * 32,
        service="gateway",
        kind="SERVER",
        instance="cache",
    )
    write(folder, [gateway])
    (folder / "lifecycle.jsonl").open("a").write('{"cut short')
    yield folder


def step_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.search(r"\bstep \w", line)]


def test_failover_is_a_compact_timeline(traces: Path) -> None:
    done = run_ctl("trace", "cache", "--dir", str(traces))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines[0]
    assert "plan recovery of cache (redis)" in header
    assert "reason: master cache-0 lost: TASK_FAILED" in header and "cause: lost" in header
    assert "total 890.0 ms" in header and "detected → writable 700.0 ms" in header
    # Only the latest plan: it started 10 s after the first.
    assert "+10" not in done.stdout and done.stdout.count("plan recovery") == 1
    # Detection as the metric defines it (metrics.detection_seconds): first sign -> plan made.
    assert "detection (first sign → plan made)" in lines[2] and "100.0 ms" in lines[2]
    steps = step_lines(done.stdout)
    assert [line.split("step ")[1].split()[0] for line in steps] == ["fence", "promote", "repoint"]
    fence, promote, repoint = steps
    # offset, duration, gap, status; the state calls folded (5 + 4 + 3 calls of 0.5 ms).
    # The fence's gap: from the plan being made (100 ms) to its start (120 ms).
    assert fence.split()[:5] == ["+0.120s", "200.0", "ms", "20.0", "ms"] and "COMPLETE" in fence
    assert "state: 5 calls, 2.5 ms" in fence
    assert promote.split()[:5] == ["+0.330s", "300.0", "ms", "10.0", "ms"]
    assert "state: 4 calls, 2.0 ms" in promote
    assert "state: 3 calls, 1.5 ms" in repoint
    # The decision in full under its step: every candidate and position, wrapped, none cut.
    at = lines.index(promote) + 1
    decision = []
    while "callback" not in lines[at]:
        decision.append(lines[at])
        at += 1
    why = "the highest replication offset of the replicas that answered"
    text = " ".join(line.strip() for line in decision)
    assert text.startswith(f"↳ promote cache-1: {why} ↳ candidates: ")
    candidates = ", ".join(CANDIDATES("cache"))
    assert f"↳ candidates: {candidates}" in text
    positions = ", ".join(f"cache-{n}={1_000_000 + n - 1}" for n in range(1, 13))
    assert f"↳ positions: {positions}" in text.replace("    ", " ")
    assert all(len(line) <= 110 for line in decision) and len(decision) > 3, decision
    assert "…" not in text
    callback = lines[at]
    assert "callback StartMaster member=cache-1 attempt=1" in callback and "OK" in callback
    assert "180.0 ms" in callback
    assert "StateService" not in done.stdout and "WorkloadService" not in done.stdout
    # Compact: header, column titles, detection, 3 steps, the decision, 1 callback.
    assert len(lines) == 7 + len(decision), done.stdout


def test_verbose_shows_the_state_calls(traces: Path) -> None:
    done = run_ctl("trace", "cache", "--dir", str(traces), "--verbose")
    assert done.returncode == 0, done.stderr
    # Every call twice: the lifecycle's client span and the state service's server span under it.
    assert done.stdout.count("StateService/") == 2 * (5 + 4 + 3)
    assert done.stdout.count("[state]") == 5 + 4 + 3
    assert "calls," not in done.stdout


def test_last_two(traces: Path) -> None:
    done = run_ctl("trace", "cache", "--dir", str(traces), "--last", "2")
    assert done.returncode == 0, done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("plan ")]
    assert len(headers) == 2 and all("of cache" in h for h in headers)
    assert len(step_lines(done.stdout)) == 6
    # Oldest first: the first started 10 s before the second.
    started = re.findall(r"started \S+ (\S+) UTC", done.stdout)
    assert started == sorted(started) and len(set(started)) == 2


def test_files_without_a_plan_span(tmp_path: Path) -> None:
    """Older files: each step run is a trace of its own; consecutive runs of a plan are one plan."""
    folder = tmp_path / "traces"
    write(folder, failover("cache", 0, "e" * 31, with_root=False))
    done = run_ctl("trace", "cache", "--dir", str(folder))
    assert done.returncode == 0, done.stderr
    assert "from its first step" in done.stdout and "detection" not in done.stdout
    steps = step_lines(done.stdout)
    assert len(steps) == 3 and steps[0].split()[0] == "+0.000s"
    assert "state: 4 calls, 2.0 ms" in steps[1]


def test_unknown_instance_without_gateway(traces: Path) -> None:
    done = run_ctl("trace", "nosuch", "--dir", str(traces))
    assert done.returncode == 1
    assert done.stdout == ""
    # The folder holds other instances' plans: said so, with what to do.
    assert done.stderr.strip() == (
        f"error: no trace of nosuch in {traces} (from --dir); it holds plans of cache, other; "
        "pass --dir DIR if nosuch's services wrote their spans elsewhere"
    )


def test_empty_folder_is_no_trace_yet(tmp_path: Path) -> None:
    """``no trace yet`` only when the folder exists and holds no plan: it names the folder, where
    the choice came from and what to do."""
    empty = tmp_path / "traces"
    empty.mkdir()
    done = run_ctl("trace", "cache", env={"STATEFUL_TRACES_DIR": str(empty)})
    assert done.returncode == 1 and done.stdout == ""
    message = done.stderr.strip()
    assert message.startswith(f"error: no trace yet: {empty} (from $STATEFUL_TRACES_DIR) holds no plan spans")
    assert f"STATEFUL_TRACES_DIR={empty}" in message and "--dir DIR" in message
    missing = run_ctl("trace", "cache", "--dir", str(tmp_path / "gone"))
    assert missing.returncode == 1 and "no trace yet" not in missing.stderr
    assert f"no traces folder {tmp_path / 'gone'} (from --dir)" in missing.stderr


def test_missing_folder_names_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = run_ctl("trace", "cache", "--dir", "nowhere", cwd=elsewhere)
    assert done.returncode == 1
    assert f"no traces folder {elsewhere / 'nowhere'} (from --dir)" in done.stderr
    done = run_ctl("trace", "cache", cwd=elsewhere, env={"STATEFUL_TRACES_DIR": "rel/traces"})
    assert done.returncode == 1
    assert f"no traces folder {elsewhere / 'rel' / 'traces'} (from $STATEFUL_TRACES_DIR)" in done.stderr
    assert "STATEFUL_TRACES_DIR" in done.stderr and "--dir" in done.stderr


def test_run_from_another_folder(traces: Path, tmp_path: Path) -> None:
    """The variable set to an absolute folder, the command run elsewhere: it reads that folder;
    unset, it reads `make run`'s folder of the data dir, resolved from the suite's setting."""
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    done = run_ctl("trace", "cache", cwd=elsewhere, env={"STATEFUL_TRACES_DIR": str(traces)})
    assert done.returncode == 0, done.stderr
    assert len(step_lines(done.stdout)) == 3
    done = run_ctl("trace", "cache", cwd=elsewhere, env={"STATEFUL_SUITE_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert len(step_lines(done.stdout)) == 3


@pytest.mark.slow
def test_end_to_end_deploy_plan(tmp_path: Path) -> None:
    """The suite as `make run` starts it (tracing on in <data_dir>/traces): a created instance's
    deploy plan reads as its steps."""
    data_dir = tmp_path / "state"
    endpoint, env = suite_env(data_dir)
    (metrics_base,) = service_ports([20])  # /metrics ports of its own, should the suite serve them
    env["STATEFUL_SUITE_METRICS_BASE_PORT"] = str(metrics_base)
    runner = start_suite(env, tmp_path / "suite.log")
    try:

        def redis_registered() -> bool:
            assert runner.poll() is None, (tmp_path / "suite.log").read_text()
            listed = ctl(endpoint, "-o", "json", "workloads")
            return listed.returncode == 0 and "redis" in listed.stdout

        wait_until(redis_registered, 120, "the suite to serve the redis workload")
        created = ctl(endpoint, "create", "redis", "traced", "--wait", "--timeout", "120", timeout=150)
        assert created.returncode == 0, created.stdout + created.stderr

        shown: list[subprocess.CompletedProcess[str]] = []

        def deploy_traced() -> bool:
            # Spans reach the files in batches (every few seconds): poll until the last step is there.
            done = run_ctl(
                "trace",
                "traced",
                cwd=tmp_path,
                env={
                    "STATEFUL_SUITE_DATA_DIR": str(data_dir),
                    "STATEFUL_ENDPOINT": endpoint,
                },
            )
            shown.append(done)
            return (
                done.returncode == 0
                and "plan deploy of traced" in done.stdout
                and "step master-running traced-0" in done.stdout
                # Every line COMPLETE: the runs of a waiting step are one line, with the last status.
                and all("COMPLETE" in line for line in step_lines(done.stdout))
            )

        try:
            wait_until(deploy_traced, 60, "the deploy plan's steps in the traces")
        except AssertionError as error:
            raise AssertionError(f"{error}; last answer:\n{shown[-1].stdout}{shown[-1].stderr}") from None
        timeline = shown[-1].stdout
        assert "state:" in timeline and "calls" in timeline, timeline
        assert "StateService" not in timeline, timeline
        names = [line.split("step ")[1].split("  ")[0] for line in step_lines(timeline)]
        assert len(names) == len(set(n.split(" (")[0] for n in names)), timeline  # no step twice

        # An instance the gateway does not know: said so, exit 1.
        unknown = run_ctl(
            "trace",
            "nosuch",
            env={
                "STATEFUL_TRACES_DIR": str(data_dir / "traces"),
                "STATEFUL_ENDPOINT": endpoint,
            },
        )
        assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no instance nosuch"
        # An instance the gateway knows, in a folder without its traces: not yet traced.
        empty = tmp_path / "empty"
        empty.mkdir()
        untraced = run_ctl("trace", "traced", "--dir", str(empty), env={"STATEFUL_ENDPOINT": endpoint})
        assert untraced.returncode == 1
        assert untraced.stderr.strip().startswith(f"error: no trace yet: {empty} (from --dir)")
    finally:
        stop_suite(runner, 60)


def test_runs_of_a_waiting_step_are_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "traces"
    trace_id = "f" * 32
    root = span(
        "plan deploy",
        0,
        1000,
        trace_id,
        instance="db",
        workload="redis",
        plan="deploy",
        reason="create 1 members",
    )
    runs = [
        span(
            "step await-running db-0",
            at,
            1,
            trace_id,
            root,
            instance="db",
            plan="deploy",
            status=status,
            attempts=1,
            message=message,
        )
        for at, status, message in [
            (10, "STARTING", "waiting: STAGING"),
            (300, "STARTING", "waiting: STARTING"),
            (900, "COMPLETE", "task db-0.1 RUNNING"),
        ]
    ]
    master = span(
        "step master-running db-0",
        950,
        40,
        trace_id,
        root,
        instance="db",
        plan="deploy",
        status="COMPLETE",
        attempts=1,
    )
    write(folder, [root, *runs, master])
    done = run_ctl("trace", "db", "--dir", str(folder))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "start (plan made → first step)" in lines[2] and "10.0 ms" in lines[2]
    waiting, running = step_lines(done.stdout)
    assert "step await-running db-0 (3 runs)  task db-0.1 RUNNING" in waiting and "COMPLETE" in waiting
    assert waiting.split()[:3] == ["+0.010s", "891.0", "ms"]  # first run's start to last run's end
    assert running.split()[:5] == ["+0.950s", "40.0", "ms", "49.0", "ms"]
    verbose = run_ctl("trace", "db", "--dir", str(folder), "--verbose")
    assert len(step_lines(verbose.stdout)) == 4 and "waiting: STAGING" in verbose.stdout


def test_tracing_show_names_the_absolute_folder_and_unknown_instances(traces: Path, tmp_path: Path) -> None:
    """The raw reader (python -m mesos_stateful.common.tracing show): run elsewhere, it names the
    absolute folder it looked in; an instance with no trace is an error, not empty output."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    show = [sys.executable, "-m", "mesos_stateful.common.tracing", "show"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEFUL_")}
    missing = subprocess.run(
        [*show, "rel"], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60
    )
    assert missing.returncode == 1 and f"no traces folder {elsewhere / 'rel'} " in missing.stderr
    unknown = subprocess.run(
        [*show, str(traces), "--instance", "nosuch"], capture_output=True, text=True, env=env, timeout=60
    )
    assert unknown.returncode == 1 and unknown.stderr.strip() == f"no trace of nosuch in {traces}"
    known = subprocess.run(
        [*show, str(traces), "--instance", "cache"], capture_output=True, text=True, env=env, timeout=60
    )
    assert known.returncode == 0 and "step fence" in known.stdout


def test_plan_still_running(tmp_path: Path) -> None:
    """Steps of a plan whose root span is not written yet (it is written when the plan ends)."""
    folder = tmp_path / "traces"
    spans = failover("cache", 0, "9" * 32)
    write(folder, [s for s in spans if not s["name"].startswith("plan ")])
    done = run_ctl("trace", "cache", "--dir", str(folder))
    assert done.returncode == 0, done.stderr
    assert "plan recovery of cache" in done.stdout and "running (plan span not written yet)" in done.stdout
    assert len(step_lines(done.stdout)) == 3 and "detection" not in done.stdout


def test_a_status_update_joining_the_trace_later_is_not_in_the_total(tmp_path: Path) -> None:
    # The replacement's task carries the plan's trace context: its TASK_FAILED, 13 s after the plan
    # (a later kill), lands in this trace under the step that launched it (new-user finding).
    spans = failover("cache", 0, "e" * 32)
    last_step = next(s for s in spans if s["name"] == "step repoint")
    spans.append(span("status TASK_FAILED", 13_000, 2, "e" * 32, last_step, service="offers"))
    write(tmp_path / "traces", spans)
    done = run_ctl("trace", "cache", "--dir", str(tmp_path / "traces"))
    assert done.returncode == 0, done.stderr
    assert "total 890.0 ms" in done.stdout.splitlines()[0]


def test_a_replaced_recovery_says_so_and_claims_no_writable_time(tmp_path: Path) -> None:
    spans = failover("cache", 0, "f" * 32)
    root = next(s for s in spans if s["name"] == "plan recovery")
    root["attributes"]["outcome"] = "replaced"
    write(tmp_path / "traces", spans)
    done = run_ctl("trace", "cache", "--dir", str(tmp_path / "traces"))
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    assert "outcome: replaced" in header and "writable" not in header
