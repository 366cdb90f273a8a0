"""Planned switchover of a 3-member Redis (issue 15, part 2): write unavailability as a writer sees it.

    .venv/bin/python bench/switchover.py --runs 10

A measurement, not a test: it prints numbers; its exit code says whether every switchover kept the
promise (nothing acknowledged lost, never two masters). It reuses ``bench/drain_switchover.py``: the
suite started in this process as the end-to-end tests build it (real etcd, state service, local
cluster, offers, gateway, the Redis workload with real redis-servers, lifecycle; the tests' fast
settings), and its **probe process** (writer ``SET`` + ``WAIT 1 1000`` in a tight loop to whoever
answers ``ROLE`` master; sampler ``ROLE`` of every member address every 20 ms).

One suite, one 3-member Redis instance; after 50 acknowledged writes, ``--runs`` switchovers one
after the other (``SwitchoverInstance`` with ``target_member_id`` the next replica by ordinal, so the
master moves round the members), each waited for (its plan COMPLETE, every member RUNNING) and
followed by 50 more acknowledged writes before the next. Per switchover, from just before the
request (CLOCK_MONOTONIC):

- ``unavailable``: the longest time between two consecutive **acknowledged** writes from the last
  one before the request to the first 50 after the plan was done: the write unavailability;
- ``writable``: request -> the first ``SET`` answered OK by the new master;
- ``done``: request -> the plan COMPLETE with every member RUNNING (includes re-pointing the old
  master and the lifecycle's bookkeeping; writes flow before that).

At the end: acknowledged keys missing or different on the last master (must be 0) and sampler
rounds with two masters (must be 0). Table: every run, then median / p95 / max.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drain_switchover as ds  # the suite and the probe process, reused

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import Suite, is_running, master_of

log = logging.getLogger("bench")
NAME = ds.NAME
PORT = ds.PORT
SETTLE_ACKS = 50  # acknowledged writes after each switchover before the next
GOAL_SECONDS = 0.5


@dataclass
class Switch:
    run: int
    old: str
    new: str = ""
    requested: float = 0.0
    done_at: float | None = None
    unavailable: float | None = None
    writable: float | None = None
    done: float | None = None
    error: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="switchovers to measure (default 10)")
    p.add_argument("--agents", type=int, default=3, help="agents of the local cluster (default 3)")
    p.add_argument("--deadline", type=float, default=60.0, help="seconds a switchover may take (60)")
    p.add_argument("--sample-interval", type=float, default=0.02, help="seconds between ROLE rounds (0.02)")
    p.add_argument("--keep-files", action="store_true", help="keep the temp dir")
    p.add_argument("-v", "--verbose", action="store_true", help="the services' logs (INFO) on stderr")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


async def _acks_after(probe: ds.Probe, since: float, count: int, deadline: float) -> None:
    while sum(1 for t, _, _ in probe.events().acked if t > since) < count:
        if probe.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{count} acknowledged writes not seen in time: {probe.events().errors}")
        await asyncio.sleep(0.05)


async def _one(args: argparse.Namespace, suite: Suite, probe: ds.Probe, number: int) -> Switch:
    instance = await suite.instance(NAME)
    assert instance is not None
    old = master_of(instance)
    replicas = sorted((m for m in instance.members if m.id != old.id), key=lambda m: m.ordinal)
    after_old = [m for m in replicas if m.ordinal > old.ordinal]
    target = (after_old or replicas)[0]
    switch = Switch(number, old.id)
    switch.requested = time.monotonic()
    response = await suite.api.SwitchoverInstance(
        ipb.SwitchoverInstanceRequest(name=NAME, target_member_id=target.id)
    )
    op = next(m.operation.id for m in response.instance.members if m.id == old.id)
    deadline = switch.requested + args.deadline
    while True:
        now = await suite.instance(NAME)
        if now is not None:
            probe.update(now)
            if is_running(now, 3) and now.plan.operation.id == op and now.plan.status == plans.COMPLETE:
                switch.done_at = time.monotonic()
                switch.new = master_of(now).id
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"switchover {number} not done within {args.deadline:.0f} s")
        await asyncio.sleep(0.02)
    await _acks_after(probe, switch.done_at, SETTLE_ACKS, switch.done_at + 30)
    new_address = f"{master_of(now).host}:{master_of(now).ports[PORT]}"
    events = probe.events()
    times = sorted(t for t, _, _ in events.acked)
    before = [t for t in times if t <= switch.requested]
    later = [t for t in times if t > switch.requested]
    after_done = [t for t in later if t > switch.done_at][:SETTLE_ACKS]
    points = before[-1:] + [t for t in later if t <= switch.done_at] + after_done
    switch.unavailable = max((b - a for a, b in itertools.pairwise(points)), default=None)
    first_ok = next((t for t, a in events.oks if t > switch.requested and a == new_address), None)
    switch.writable = None if first_ok is None else first_ok - switch.requested
    switch.done = switch.done_at - switch.requested
    return switch


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def report(
    switches: list[Switch], lost: int, acked: int, two: int, args: argparse.Namespace, load: tuple[float, ...]
) -> str:
    lines = [
        f"planned switchover of a 3-member Redis (bench/switchover.py --runs {args.runs}), "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        f"machine: {platform.node()}, {os.cpu_count()} cpus, load average at start "
        f"{' '.join(f'{x:.2f}' for x in load)}, at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"{args.agents} agents; writer SET + WAIT 1 1000; "
        f"ROLE sampled every {args.sample_interval * 1000:.0f} ms",
        "",
        f"{'run':>4} {'unavailable s':>14} {'writable s':>11} {'done s':>8}  switchover",
    ]
    for s in switches:
        lines.append(
            f"{s.run:>4} {ds._fmt(s.unavailable):>14} {ds._fmt(s.writable):>11} {ds._fmt(s.done):>8}  "
            f"{s.old}->{s.new or '?'}" + (f"  FAILED: {s.error}" if s.error else "")
        )
    lines += ["", f"{'measurement':<32} {'median s':>9} {'p95 s':>8} {'max s':>8} {'runs':>5}"]
    for label, values in (
        ("write unavailability", [s.unavailable for s in switches]),
        ("request -> new master writable", [s.writable for s in switches]),
        ("request -> plan done", [s.done for s in switches]),
    ):
        got = [v for v in values if v is not None]
        if got:
            lines.append(
                f"{label:<32} {statistics.median(got):>9.3f} {_pct(got, 0.95):>8.3f} "
                f"{max(got):>8.3f} {len(got):>5}"
            )
    got = [s.unavailable for s in switches if s.unavailable is not None]
    goal = bool(got) and statistics.median(got) <= GOAL_SECONDS
    lines.append(f"goal: median write unavailability <= {GOAL_SECONDS} s: {'met' if goal else 'NOT met'}")
    lines.append(f"acknowledged writes lost: {lost} of {acked}; sampler rounds with two masters: {two}")
    ok = all(not s.error for s in switches) and lost == 0 and two == 0
    lines.append("verdict: " + ("OK" if ok else "FAILED"))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    load = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="switchover-bench-"))
    switches: list[Switch] = []
    lost = acked = two = 0
    try:
        async with ds.running_suite(folder, args.agents) as suite:
            await suite.create(NAME, 3)
            instance = await suite.wait_running(NAME, 3, timeout=180)
            secret = (await suite.get(NAME, secrets=True)).secrets.get("password", "")
            old = master_of(instance)
            probe = ds.Probe(
                folder / "probe", secret, f"{old.host}:{old.ports[PORT]}", "k", args.sample_interval
            )
            probe.update(instance)
            try:
                await _acks_after(probe, 0.0, ds.WARMUP_ACKS, time.monotonic() + 60)
                for number in range(1, args.runs + 1):
                    try:
                        switch = await _one(args, suite, probe, number)
                    except Exception as error:
                        switch = Switch(number, "?", error=f"{type(error).__name__}: {error}")
                        switches.append(switch)
                        break
                    switches.append(switch)
                    log.warning(
                        "switchover %d %s->%s: unavailable %s s, writable %s s, done %s s",
                        number,
                        switch.old,
                        switch.new,
                        ds._fmt(switch.unavailable),
                        ds._fmt(switch.writable),
                        ds._fmt(switch.done),
                    )
            finally:
                await asyncio.to_thread(probe.stop)
            events = probe.events()
            two = len(events.two_masters)
            keys = [key for _, _, key in events.acked]
            acked = len(keys)
            last = await suite.instance(NAME)
            assert last is not None
            master = master_of(last)
            async with aioredis.Redis(
                host=master.host, port=master.ports[PORT], password=secret or None, decode_responses=True
            ) as client:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    values = await client.mget(chunk)
                    lost += sum(1 for k, v in zip(chunk, values, strict=True) if v != k)
    finally:
        if not args.keep_files:
            shutil.rmtree(folder, ignore_errors=True)
    print(report(switches, lost, acked, two, args, load))
    ok = switches and all(not s.error for s in switches) and lost == 0 and two == 0
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
