"""Redis failover with members as Docker containers, against the same with members as processes;
and the time of ``make images`` (nothing changed) and of the suite in Compose (up --wait, down -v).

    .venv/bin/python bench/docker_failover.py --runs 3              # table + JSON on stdout
    .venv/bin/python bench/docker_failover.py --runs 3 --skip-compose

It starts its own suite (isolated as ``redis_failover.py --start-suite``: free ports, agents on
their own 127.0.N.x addresses, a temp data dir, the redis workload). Per run and per runtime
(docker, then process), a fresh 3-member Redis instance (``InstanceSpec.runtime``); a write load on
its master (``SET`` + ``WAIT 1`` on one connection every 10 ms); then the master's member is
killed: ``docker kill`` (SIGKILL through the engine) of the container labelled with the master's
task id, or SIGKILL of the ``redis-server`` that listens on the master's address. Measured: kill ->
the first ``SET`` accepted by another member reporting ``role:master``; kill -> the instance
RUNNING 3/3 with the killed member relaunched (for docker: a running container labelled with its
new task id); acknowledged writes missing on the new master (must be 0). Then the instance is
deleted (its containers must go). See bench/README.md.

Exit code: 0 every measurement of every run succeeded; 1 some failed (the table says why);
2 setup failed (no engine, no images, the suite did not start); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import grpc
from docker.errors import DockerException
from failover_bench.cut import measure_cut
from failover_bench.procs import Children, listener_pids, run_main
from failover_bench.redisio import Address, fmt
from failover_bench.results import percentile
from failover_bench.suite import Api, InstanceTracker, Snapshot, address_of, all_running, describe
from failover_bench.suite_process import StartedSuite, start_suite, stop_suite, tail

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common.images import ALL_IMAGES, LABEL_INSTANCE, LABEL_TASK, TAG
from mesos_stateful.testing.docker import free_subnet

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
RUNTIMES = {"docker": types_pb2.RUNTIME_DOCKER, "process": types_pb2.RUNTIME_PROCESS}

# Row keys, in table order (value: how the row is printed).
ROWS: dict[str, str] = {
    "docker.create": "docker: create -> RUNNING 3/3",
    "docker.failover": "docker: kill -> new master writable",
    "docker.recovered": "docker: kill -> RUNNING 3/3 again",
    "docker.lost": "docker: acked writes lost (count)",
    "process.create": "process: create -> RUNNING 3/3",
    "process.failover": "process: kill -> new master writable",
    "process.recovered": "process: kill -> RUNNING 3/3 again",
    "process.lost": "process: acked writes lost (count)",
    "make_images": "make images (nothing changed)",
    "compose_up": "compose up -d --wait",
    "compose_down": "compose down -v",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs of every measurement (default 3)")
    p.add_argument("--suite-start-timeout", type=float, default=180.0)
    p.add_argument("--create-timeout", type=float, default=180.0, help="seconds for 3/3 RUNNING")
    p.add_argument("--failover-deadline", type=float, default=60.0, help="seconds for a new master")
    p.add_argument("--recovery-timeout", type=float, default=120.0, help="seconds for 3/3 RUNNING again")
    p.add_argument("--delete-timeout", type=float, default=120.0)
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of write load before the kill")
    p.add_argument("--poll-interval", type=float, default=0.01, help="seconds between writes / probes")
    p.add_argument("--compose-timeout", type=float, default=420.0, help="seconds for up --wait / down -v")
    p.add_argument("--skip-failover", action="store_true", help="only make images and Compose")
    p.add_argument("--skip-compose", action="store_true", help="no make images / Compose timing")
    p.add_argument("--out", type=Path, help="also write the JSON document to this file")
    p.add_argument("--keep-files", action="store_true", help="keep the suite's data dir and log")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _until(
    future: asyncio.Future[tuple[float, Snapshot]], deadline: float
) -> tuple[float, Snapshot] | None:
    try:
        return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        return None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children = Children()
        self.runs: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.setup_error: str | None = None
        self.interrupted = False
        self.tag = secrets.token_hex(3)
        self.root = Path(tempfile.mkdtemp(prefix="bench-docker-failover-")).resolve()
        self.suite: StartedSuite | None = None
        self.client: docker.DockerClient | None = None
        self.instances: list[str] = []
        self.projects: list[tuple[str, dict[str, str]]] = []

    # ---- the run -------------------------------------------------------------------------

    async def run(self) -> int:
        try:
            await self._measure()
        except asyncio.CancelledError:
            self.interrupted = True
            log.warning("interrupted: cleaning up, reporting what was measured")
        finally:
            await asyncio.to_thread(self._cleanup)
        return self._report()

    async def _measure(self) -> None:
        a = self.args
        try:
            self.client = docker.from_env(timeout=60)
            self.client.ping()
        except DockerException as error:
            self.setup_error = (
                f"the Docker engine does not answer ({error}); start it with `make docker-engine`"
            )
            return
        missing = [i for i in ALL_IMAGES if not self.client.images.list(name=i)]
        if missing:
            log.info("images missing (%s): `make images` first (not timed)", ", ".join(missing))
        # Bring the images up to date (a code change since the last build costs ~10 s): not timed.
        code, seconds, output = await self._make_images()
        if code != 0:
            self.setup_error = f"`make images` failed ({code}):\n{output[-3000:]}"
            return
        log.info("make images (warm-up): %.2fs", seconds)
        for run in range(1, a.runs + 1):
            self.runs.append({"run": run})
        if not a.skip_failover:
            try:
                self.suite = await start_suite(self.children, self.root / "suite", a.suite_start_timeout)
            except RuntimeError as error:
                self.setup_error = f"the suite did not start: {error}"
                return
            api = Api(self.suite.endpoint, None, 10.0)
            try:
                for record in self.runs:
                    for runtime in RUNTIMES:
                        record[runtime] = await self._failover(api, record["run"], runtime)
                        log.info("run %d %s: %s", record["run"], runtime, _short(record[runtime]))
            finally:
                await api.close()
            await asyncio.to_thread(self._stop_suite)
        if not a.skip_compose:
            for record in self.runs:
                code, seconds, output = await self._make_images()
                record["make_images"] = {
                    "ok": code == 0,
                    "seconds": round(seconds, 3),
                    # build_images.sh says so when nothing changed (else someone changed the code)
                    "up_to_date": "images up to date" in output,
                }
                if code != 0:
                    record["make_images"]["error"] = output[-2000:]
                record["compose"] = await asyncio.to_thread(self._compose_once, record["run"])
                log.info(
                    "run %d: make images %.2fs; compose %s",
                    record["run"],
                    seconds,
                    _short(record["compose"]),
                )

    async def _make_images(self) -> tuple[int, float, str]:
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "make",
            "images",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, time.monotonic() - t0, out.decode(errors="replace")

    # ---- one failover ---------------------------------------------------------------------

    async def _failover(self, api: Api, run: int, runtime: str) -> dict[str, Any]:
        a = self.args
        name = f"dbench-{self.tag}-{run}-{runtime}"
        self.instances.append(name)
        result: dict[str, Any] = {"instance": name, "ok": False}
        tracker = InstanceTracker(api, name)
        addresses: set[Address] = set()

        def remember(s: Snapshot) -> None:
            for m in s.members if s is not None else []:
                address = address_of(m)
                if address is not None:
                    addresses.add(address)

        tracker.on_snapshot(remember)
        tracker.start()
        try:
            running = tracker.waiter(all_running(3))
            t0 = time.monotonic()
            spec = types_pb2.InstanceSpec(name=name, workload="redis", replicas=3, runtime=RUNTIMES[runtime])
            await api.create(spec)
            done = await _until(running, t0 + a.create_timeout)
            if done is None:
                result["error"] = f"not 3/3 RUNNING after {a.create_timeout:.0f}s: {describe(tracker.last)}"
                return result
            result["create_s"] = round(done[0] - t0, 3)
            await self._kill_and_measure(api, tracker, addresses, runtime, result)
            return result
        except (grpc.aio.AioRpcError, DockerException, OSError) as error:
            result["error"] = f"{type(error).__name__}: {error!s:.500}"
            return result
        finally:
            try:
                result["delete"] = await self._delete(api, tracker, name, runtime)
            finally:
                await tracker.stop()

    async def _kill_and_measure(
        self,
        api: Api,
        tracker: InstanceTracker,
        addresses: set[Address],
        runtime: str,
        result: dict[str, Any],
    ) -> None:
        a = self.args
        reply = await api.get(tracker.name, include_secrets=True)
        assert reply is not None
        password = reply.secrets.get("password")
        masters = [m for m in reply.instance.members if m.role == types_pb2.ROLE_MASTER]
        if len(masters) != 1 or address_of(masters[0]) is None:
            result["error"] = f"expected one master: {describe(reply.instance)}"
            return
        master = masters[0]
        old = address_of(master)
        assert old is not None
        kill: Callable[[], Any]
        if runtime == "docker":
            assert self.client is not None
            found = self.client.containers.list(filters={"label": f"{LABEL_TASK}={master.task_id}"})
            if len(found) != 1:
                result["error"] = f"{len(found)} running containers labelled {LABEL_TASK}={master.task_id}"
                return
            container = found[0]
            result["killed"] = f"{master.id} {fmt(old)} container {container.name}"

            def kill() -> None:
                container.kill()  # `docker kill`: SIGKILL through the engine

        else:
            pids = listener_pids(*old)
            if not pids:
                result["error"] = f"no redis-server process listens on {fmt(old)}"
                return
            result["killed"] = f"{master.id} {fmt(old)} pid {pids[0]}"

            def kill() -> None:
                os.kill(pids[0], signal.SIGKILL)

        def recovered(s: Snapshot) -> bool:
            return (
                s is not None
                and s.phase == types_pb2.INSTANCE_PHASE_RUNNING
                and all_running(3)(s)
                and any(m.id == master.id and m.task_id != master.task_id for m in s.members)
                and any(m.role == types_pb2.ROLE_MASTER and m.id != master.id for m in s.members)
            )

        back = tracker.waiter(recovered)
        cut_at: list[float] = []

        def timed_kill() -> None:
            cut_at.append(time.monotonic())
            kill()

        cut = await measure_cut(
            old_master=old,
            candidates=lambda: sorted(addresses - {old}),
            password=password,
            prefix=f"bench:{tracker.name}",
            cut=timed_kill,
            after_new_master=None,
            warmup=a.warmup,
            window=0.0,
            deadline=a.failover_deadline,
            poll_interval=a.poll_interval,
        )
        t_kill = cut_at[0]
        result["failover_s"] = round(cut.seconds, 3) if cut.seconds is not None else None
        result["new_master"] = fmt(cut.new_master) if cut.new_master else None
        result["acked_writes"] = cut.acked_total
        result["acked_before_kill"] = cut.acked_before_cut
        result["lost_acked_writes"] = len(cut.lost)
        result["lost_sample"] = cut.lost[:5]
        if cut.seconds is None:
            result["error"] = (
                f"no new master accepted a write within {a.failover_deadline:.0f}s: " + describe(tracker.last)
            )
            return
        done = await _until(back, t_kill + a.recovery_timeout)
        if done is None:
            result["error"] = (
                f"not RUNNING 3/3 again within {a.recovery_timeout:.0f}s: {describe(tracker.last)}"
            )
            return
        result["recovered_s"] = round(done[0] - t_kill, 3)
        snapshot = done[1]
        assert snapshot is not None
        [member] = [m for m in snapshot.members if m.id == master.id]
        result["replacement_task"] = member.task_id
        if runtime == "docker":
            assert self.client is not None
            again = self.client.containers.list(filters={"label": f"{LABEL_TASK}={member.task_id}"})
            result["replacement_container"] = again[0].name if again else None
            if not again:
                result["error"] = f"no running container labelled {LABEL_TASK}={member.task_id}"
                return
        if cut.lost:
            result["error"] = f"{len(cut.lost)} of {cut.acked_total} acknowledged writes lost"
            return
        result["ok"] = True

    async def _delete(self, api: Api, tracker: InstanceTracker, name: str, runtime: str) -> dict[str, Any]:
        gone = tracker.waiter(lambda s: s is None)
        t0 = time.monotonic()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await api.delete(name)
        done = await _until(gone, t0 + self.args.delete_timeout)
        out: dict[str, Any] = {"seconds": round(done[0] - t0, 3) if done else None}
        if runtime == "docker" and self.client is not None:
            deadline = time.monotonic() + 30
            left: list[Any] = []
            while True:
                left = self.client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={name}"})
                if not left or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            out["containers_left"] = [c.name for c in left]
        return out

    # ---- Compose ----------------------------------------------------------------------------

    def _compose_once(self, run: int) -> dict[str, Any]:
        assert self.client is not None
        name = f"msbench{self.tag}{run}"
        env = {
            **os.environ,
            "STATEFUL_GATEWAY_PORT": str(free_port()),
            "STATEFUL_SUBNET": free_subnet(self.client),
            "STATEFUL_TAG": TAG,
        }
        self.projects.append((name, env))
        out: dict[str, Any] = {"project": name, "ok": False}
        t0 = time.monotonic()
        up = self._compose(name, env, "up", "-d", "--wait")
        out["up_s"] = round(time.monotonic() - t0, 3)
        if up.returncode != 0:
            out["error"] = f"up: {up.returncode}: {(up.stdout + up.stderr)[-2000:]}"
        t0 = time.monotonic()
        down = self._compose(name, env, "down", "-v", "--timeout", "10")
        out["down_s"] = round(time.monotonic() - t0, 3)
        if down.returncode != 0:
            out.setdefault("error", f"down: {down.returncode}: {(down.stdout + down.stderr)[-2000:]}")
        else:
            self.projects.remove((name, env))
        out["ok"] = "error" not in out
        return out

    def _compose(self, name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", name, *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=self.args.compose_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            return subprocess.CompletedProcess(error.cmd, 124, "", f"timed out after {error.timeout}s")

    # ---- cleanup and report -----------------------------------------------------------------

    def _stop_suite(self) -> None:
        if self.suite is not None:
            killed = stop_suite(self.children, self.suite, grace=60.0)
            if killed:
                log.warning("killed %d leftover suite processes: %s", len(killed), killed)
            if any(not r.get(rt, {}).get("ok", True) for r in self.runs for rt in RUNTIMES):
                log.info("suite log tail:\n%s", tail(self.suite.log_path))
            self.suite = None

    def _cleanup(self) -> None:
        self._stop_suite()
        self.children.stop_all()
        if self.client is not None:
            for name in self.instances:  # containers of our instances the suite left behind
                for c in self.client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={name}"}):
                    log.warning("removing leftover container %s", c.name)
                    with contextlib.suppress(DockerException):
                        c.remove(force=True)
            self.client.close()
        for name, env in list(self.projects):
            log.warning("compose project %s still there: down -v", name)
            self._compose(name, env, "down", "-v", "--timeout", "10")
        if self.args.keep_files:
            log.info("files kept in %s", self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def _values(self) -> dict[str, list[float | None]]:
        values: dict[str, list[float | None]] = {k: [] for k in ROWS}
        for r in self.runs:
            for rt in RUNTIMES:
                if rt in r:
                    values[f"{rt}.create"].append(r[rt].get("create_s"))
                    values[f"{rt}.failover"].append(r[rt].get("failover_s"))
                    values[f"{rt}.recovered"].append(r[rt].get("recovered_s"))
                    values[f"{rt}.lost"].append(r[rt].get("lost_acked_writes"))
            if "make_images" in r:
                values["make_images"].append(r["make_images"]["seconds"] if r["make_images"]["ok"] else None)
            if "compose" in r:
                values["compose_up"].append(r["compose"].get("up_s") if r["compose"]["ok"] else None)
                values["compose_down"].append(r["compose"].get("down_s") if r["compose"]["ok"] else None)
        return values

    def _table(self) -> str:
        n = len(self.runs)
        head = f"{'measurement (seconds)':40}" + "".join(f"{'run ' + str(i + 1):>9}" for i in range(n))
        head += f"{'median':>9}{'max':>9}"
        lines = [head, "-" * len(head)]
        for key, values in self._values().items():
            if not values:
                continue
            count = key.endswith(".lost")
            cells = "".join(
                f"{'FAIL':>9}" if v is None else (f"{int(v):>9d}" if count else f"{v:>9.2f}") for v in values
            )
            good = [float(v) for v in values if v is not None]
            if good:
                med, top = percentile(good, 50), max(good)
                stats = f"{med:>9.0f}{top:>9.0f}" if count else f"{med:>9.2f}{top:>9.2f}"
            else:
                stats = f"{'-':>9}{'-':>9}"
            lines.append(f"{ROWS[key]:40}{cells}{stats}")
        acked = {rt: sum(r.get(rt, {}).get("acked_writes") or 0 for r in self.runs) for rt in RUNTIMES}
        lines.append(f"acknowledged writes checked: docker {acked['docker']}, process {acked['process']}")
        for r in self.runs:
            for part in (*RUNTIMES, "compose", "make_images"):
                if isinstance(r.get(part), dict) and r[part].get("error"):
                    lines.append(f"run {r['run']} {part}: FAILED: {r[part]['error']}")
                left = r.get(part, {}).get("delete", {}).get("containers_left") if part in RUNTIMES else None
                if left:
                    lines.append(f"run {r['run']} {part}: containers left after delete: {left}")
        return "\n".join(lines)

    def _failed(self) -> bool:
        for r in self.runs:
            for part in (*RUNTIMES, "compose", "make_images"):
                if part in r and not r[part].get("ok"):
                    return True
            if any(r.get(rt, {}).get("delete", {}).get("containers_left") for rt in RUNTIMES):
                return True
        return False

    def _report(self) -> int:
        if self.interrupted:
            code = 130
        elif self.setup_error:
            code = 2
        else:
            code = 1 if self._failed() else 0
        doc = {
            "runs": self.runs,
            "setup_error": self.setup_error,
            "interrupted": self.interrupted,
            "exit_code": code,
            "load_average_at_end": os.getloadavg(),
            "settings": {k: str(v) for k, v in vars(self.args).items()},
        }
        print(self._table())
        if self.setup_error:
            print(f"\nNOT MEASURED: {self.setup_error}")
        text = json.dumps(doc, indent=2)
        print(text)
        if self.args.out is not None:
            self.args.out.write_text(text + "\n")
        return code


def _short(result: dict[str, Any]) -> str:
    keys = ("create_s", "failover_s", "recovered_s", "lost_acked_writes", "up_s", "down_s", "error")
    return ", ".join(f"{k}={result[k]}" for k in keys if k in result)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(Bench(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
