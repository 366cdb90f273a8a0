"""The cut scenarios of bench/partition_failover.py, the suite's and Sentinel's.

Suite (through the public API, a 3-member Redis instance per run, created and deleted like
``SuiteRun``):

- ``sigstop``: SIGSTOP of the master's redis-server. Mesos sees nothing (the task stays RUNNING):
  lifecycle's health monitor must declare the master failed (CheckMember misses), fence it and
  promote a replica. SIGCONT once a new master accepts writes.
- ``stop-agent``: the master's agent cut off from the Mesos master (the local cluster's
  ``fault stop-agent``, ``POST /faults/agents/<agent>/stop``); members stay reachable, so only
  Mesos's ping timeouts tell (TASK_UNREACHABLE), and the old master is demoted directly. Healed
  (``start``) after each run.

Sentinel: its own master, 2 replicas and 3 sentinels, SIGSTOP of the master, SIGCONT once a new
master accepts writes.

Besides the ``cut`` counts, a suite run records a timeline of what the API showed after the cut
(first time each plan step status, member state/role and health flag was seen) and the fence and
promotion decision recorded on the plan's steps, to see where the time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from failover_bench import redisio
from failover_bench.cut import CutResult, measure_cut
from failover_bench.procs import Children, listener_pids, pid_alive
from failover_bench.results import Sample
from failover_bench.sentinel import SentinelOptions, start_topology
from failover_bench.suite import (
    CREATE,
    DELETE,
    FAILOVER,
    PASSWORD,
    Api,
    Snapshot,
    SuiteOptions,
    SuiteRun,
    _await_until,
    address_of,
    all_running,
    describe,
)
from mesos_stateful.api.stateful.v1 import types_pb2

log = logging.getLogger("bench.partition")

SIGSTOP = "sigstop"
STOP_AGENT = "stop-agent"
SCENARIOS = (SIGSTOP, STOP_AGENT)


def measurement(side: str, scenario: str) -> str:
    """``suite-sigstop: cut -> new master writable`` etc."""
    return f"{side}-{scenario}: cut -> new master writable"


def sentinel_side(down_after_ms: int) -> str:
    return f"sentinel-{down_after_ms}"


@dataclass
class CutOptions:
    warmup: float = 1.0  # seconds of write load before the cut
    window: float = 3.0  # seconds of writes to the old master after the new one took writes
    deadline: float = 120.0  # seconds after the cut for a new master
    poll_interval: float = 0.01
    recovery_timeout: float = 120.0  # after the window: instance RUNNING 3/3 again (suite)


def _sample(name: str, run: int, result: CutResult, extra: dict[str, Any], strict: bool) -> Sample:
    """ok: a new master took writes and, when ``strict`` (the suite), nothing acknowledged was
    lost and the old master took no write after the new master's first. Sentinel's losses and
    window are reported, not failures."""
    info = {**result.info(), **extra}
    if result.seconds is None:
        return Sample(name, run, False, detail="no new master accepted a write in time", info=info)
    problems = []
    if strict and result.lost:
        problems.append(f"{len(result.lost)} of {result.acked_total} acknowledged keys lost")
    if strict and result.old_oks_after_new:
        problems.append(
            f"the old master accepted {result.old_oks_after_new} writes after the new master's first"
        )
    if result.acked_before_cut == 0:
        problems.append("no write was acknowledged (WAIT 1) before the cut")
    return Sample(name, run, not problems, result.seconds, "; ".join(problems), info)


# --- the suite -------------------------------------------------------------------------------


class Timeline:
    """First monotonic time each observable change was seen in the instance's snapshots."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.wall0: float | None = None
        self.first: dict[str, float] = {}
        self.plans: dict[str, types_pb2.Plan] = {}  # plan name -> its last snapshot

    def start(self) -> None:
        self.t0, self.wall0 = time.monotonic(), time.time()

    def feed(self, snapshot: Snapshot) -> None:
        # A listener that raised would end the tracker's watch and poll: never raise.
        try:
            self._feed(snapshot)
        except Exception as error:  # e.g. an enum value newer than these stubs
            self.first.setdefault(f"timeline error: {error!r:.200}", time.monotonic())

    def _feed(self, snapshot: Snapshot) -> None:
        if self.t0 is None or snapshot is None:
            return
        now = time.monotonic()
        keys = []
        plan = snapshot.plan
        if plan.name:
            self.plans[plan.name] = plan
            keys.append(
                f"plan {plan.name} {types_pb2.StepStatus.Name(plan.status).removeprefix('STEP_STATUS_')}"
            )
            for step in plan.steps:
                status = types_pb2.StepStatus.Name(step.status).removeprefix("STEP_STATUS_")
                keys.append(f"  step {step.name} {step.member_id} {status}")
        for m in snapshot.members:
            state = types_pb2.MemberState.Name(m.state).removeprefix("MEMBER_STATE_")
            role = types_pb2.Role.Name(m.role).removeprefix("ROLE_")
            keys.append(f"member {m.id} {state}/{role} task {m.task_id}")
            if m.health.unresponsive:
                keys.append(f"member {m.id} health unresponsive ({m.health.failed_checks} misses)")
        phase = types_pb2.InstancePhase.Name(snapshot.phase).removeprefix("INSTANCE_PHASE_")
        keys.append(f"phase {phase}")
        for key in keys:
            self.first.setdefault(key, now)

    def phases(self, old: str) -> dict[str, float | None]:
        """Seconds from the cut to the first sight of each step of the failover of ``old``."""
        assert self.t0 is not None

        def first(*patterns: str) -> float | None:
            times = [t for k, t in self.first.items() if any(p in k for p in patterns)]
            return round(min(times) - self.t0, 3) if times else None

        return {
            "declared failed": first(
                f"member {old} health unresponsive", f"member {old} LOST/", f"member {old} UNREACHABLE/"
            ),
            "recovery plan": first("plan recovery "),
            "fence complete": first(f"step fence {old} {old} COMPLETE"),
            "failover complete": first(f"step failover {old} {old} COMPLETE"),
        }

    def events(self) -> list[tuple[float, str]]:
        assert self.t0 is not None
        return sorted((round(t - self.t0, 3), k) for k, t in self.first.items())

    def recorded(self) -> list[str]:
        """The fence and decision recorded on the plans' steps, times relative to the cut (wall)."""
        assert self.wall0 is not None
        out = []
        for plan in self.plans.values():
            start = plan.started_at.ToDatetime().timestamp() if plan.HasField("started_at") else None
            line = f"plan {plan.name} ({plan.reason})"
            if start:
                line += f" started at +{start - self.wall0:.3f}s"
            out.append(line)
            for step in plan.steps:
                status = types_pb2.StepStatus.Name(step.status).removeprefix("STEP_STATUS_")
                text = f"  {step.name} {step.member_id} {status} x{step.attempts}: {step.message}"
                if step.HasField("fence"):
                    f = step.fence
                    method = types_pb2.FenceMethod.Name(f.method).removeprefix("FENCE_METHOD_")
                    text += f" | fence {method}"
                    if f.HasField("fenced_at"):
                        text += f" at +{f.fenced_at.ToDatetime().timestamp() - self.wall0:.3f}s"
                    if f.HasField("safe_after"):
                        text += f", safe after +{f.safe_after.ToDatetime().timestamp() - self.wall0:.3f}s"
                if step.HasField("decision"):
                    d = step.decision
                    text += f" | promote {d.promote_member_id}: {d.reason} positions {dict(d.positions)}"
                out.append(text[:600])
        return out


def fault(master_url: str, agent: str, action: str) -> dict[str, Any]:
    """The local cluster's fault endpoint, as ``python -m mesos_stateful.localcluster fault``
    calls it (``stop``: stop-agent, ``start``: start-agent)."""
    url = f"{master_url.rstrip('/')}/faults/agents/{agent}/{action}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30) as resp:
            reply: dict[str, Any] = json.loads(resp.read())
            return reply
    except urllib.error.HTTPError as error:
        raise OSError(f"fault {action} {agent}: HTTP {error.code}: {error.read().decode()!r}") from None


class PartitionSuiteRun(SuiteRun):
    """One suite run of one scenario: create, cut, measure, (heal), wait RUNNING again, delete."""

    def __init__(
        self,
        api_: Api,
        name: str,
        run: int,
        scenario: str,
        opts: SuiteOptions,
        cut_opts: CutOptions,
        samples: list[Sample],
        master_url: str | None,
    ) -> None:
        self.own: list[Sample] = []
        super().__init__(api_, name, run, opts, self.own)
        self.scenario, self.cut_opts, self.out, self.master_url = scenario, cut_opts, samples, master_url
        self.timeline = Timeline()

    async def execute(self) -> bool:
        self.tracker.on_snapshot(self.timeline.feed)
        try:
            return await super().execute()
        finally:
            # create / delete rows per scenario; the cut row was named already
            for s in self.own:
                if s.measurement in (CREATE, DELETE):
                    s.measurement = s.measurement.replace("suite:", f"suite-{self.scenario}:")
                elif s.measurement == FAILOVER:  # an error SuiteRun.execute caught
                    s.measurement = measurement("suite", self.scenario)
            self.out.extend(self.own)

    async def _failover(self) -> None:  # the cut, in place of the kill
        name = measurement("suite", self.scenario)
        reply = await self.api.get(self.name, include_secrets=True)
        if reply is None:
            self._sample(name, False, detail="instance vanished before the cut")
            return
        password = reply.secrets.get(PASSWORD)
        masters = [m for m in reply.instance.members if m.role == types_pb2.ROLE_MASTER]
        address = address_of(masters[0]) if len(masters) == 1 else None
        if address is None:
            self._sample(name, False, detail=f"expected one master with a port: {describe(reply.instance)}")
            return
        master = masters[0]
        pids = listener_pids(*address)
        if not pids:
            self._sample(name, False, detail=f"no redis-server listens on {redisio.fmt(address)}")
            return
        pid = pids[0]
        cut_agent = False

        def cut() -> None:
            nonlocal cut_agent
            self.timeline.start()
            if self.scenario == SIGSTOP:
                os.kill(pid, signal.SIGSTOP)
            else:
                assert self.master_url is not None
                fault(self.master_url, master.agent_id, "stop")
                cut_agent = True

        def resume() -> None:
            if self.scenario == SIGSTOP:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        o = self.cut_opts
        extra: dict[str, Any] = {
            "cut": f"{master.id} {redisio.fmt(address)} pid {pid} agent {master.agent_id}",
        }
        try:
            result = await measure_cut(
                old_master=address,
                candidates=lambda: sorted(self.addresses),
                password=password,
                prefix=f"bench:cut:{self.scenario}:{self.run}",
                cut=cut,
                after_new_master=resume,
                warmup=o.warmup,
                window=o.window,
                deadline=o.deadline,
                poll_interval=o.poll_interval,
            )
        finally:
            resume()  # never leave a stopped process behind
        extra["old_master_process_alive_after_window"] = pid_alive(pid)
        if cut_agent:
            assert self.master_url is not None
            try:
                extra["heal"] = fault(self.master_url, master.agent_id, "start")
            except OSError as error:
                extra["heal"] = f"failed: {error}"
                log.error("healing agent %s failed: %s", master.agent_id, error)
        # Until RUNNING 3/3 again (the old master relaunched or re-pointed), so that the timeline
        # shows the whole recovery and the delete starts from a settled instance.
        settled = self.tracker.waiter(
            lambda s: (
                s is not None
                and s.phase == types_pb2.INSTANCE_PHASE_RUNNING
                and all_running(self.opts.replicas)(s)
                and any(m.role == types_pb2.ROLE_MASTER and m.id != master.id for m in s.members)
            )
        )
        done = await _await_until(settled, time.monotonic() + o.recovery_timeout)
        assert self.timeline.t0 is not None
        extra["running_again_s"] = round(done[0] - self.timeline.t0, 3) if done else None
        extra["phases"] = self.timeline.phases(master.id)
        extra["timeline"] = [f"+{t:.3f}s {k}" for t, k in self.timeline.events()]
        extra["recorded"] = self.timeline.recorded()
        self.own.append(_sample(name, self.run, result, extra, strict=True))


# --- Sentinel --------------------------------------------------------------------------------


async def sentinel_once(
    run: int, down_after_ms: int, sopts: SentinelOptions, copts: CutOptions, children: Children
) -> Sample:
    """SIGSTOP of Sentinel's master under the same write load; every process is stopped after."""
    name = measurement(sentinel_side(down_after_ms), SIGSTOP)
    root = Path(tempfile.mkdtemp(prefix=f"bench-partition-sentinel-{down_after_ms}-"))
    started: list[subprocess.Popen[bytes]] = []
    password = secrets.token_hex(16)
    stopped: int | None = None
    try:
        topo = await start_topology(root, password, down_after_ms, sopts, children, started)
        pid = topo.procs[topo.master].pid

        def cut() -> None:
            nonlocal stopped
            os.kill(pid, signal.SIGSTOP)
            stopped = pid

        def resume() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

        result = await measure_cut(
            old_master=topo.master,
            candidates=lambda: topo.replicas,
            password=password,
            prefix=f"bench:cut:sentinel:{run}",
            cut=cut,
            after_new_master=resume,
            warmup=copts.warmup,
            window=copts.window,
            deadline=copts.deadline,
            poll_interval=copts.poll_interval,
        )
        extra: dict[str, Any] = {}
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            info = await redisio.replication(topo.master, password)
            extra["old_master_role_after_window"] = info.get("role")
        return _sample(name, run, result, extra, strict=False)
    except (TimeoutError, RedisError, OSError) as error:
        return Sample(name, run, False, detail=f"error: {error!s:.300}")
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        for proc in started:
            children.stop(proc, grace=0)
        await asyncio.sleep(0)
        if sopts.keep_dirs:
            log.info("%s run %d files kept in %s", name, run, root)
        else:
            shutil.rmtree(root, ignore_errors=True)
