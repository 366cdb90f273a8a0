"""kill -9 of the embedded etcd of a state service started as ``make run`` starts it: the service
restarts it on the same data and ports, health goes NOT_SERVING and back, and a watch opened
before the kill goes on with every change exactly once (issue 10, item 3)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from state_helpers import eventually, instance, task
from test_watch import Collector, Writer, assert_in_order, current_revision

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import state_service_pb2_grpc as pb_grpc
from mesos_stateful.clients.endpoints import STATE_SERVICE
from mesos_stateful.clients.state import StateClient
from mesos_stateful.state.embedded import RestartPolicy, supervise
from mesos_stateful.state.etcdkv import EtcdKV, put_op
from mesos_stateful.state.settings import StateSettings
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.ports import free_ports

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def etcd_children(pid: int) -> list[int]:
    """Live etcd processes whose parent is ``pid`` (the service's own child, found by its pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and comm == "etcd":
            found.append(int(entry.name))
    return found


@dataclass
class StateProcess:
    """``python -m mesos_stateful.state`` with its own data dir and embedded etcd, as the suite runs it."""

    data_dir: Path
    log: Path
    port: int = 0  # 0: chosen with the embedded etcd's two ports, all distinct, kept across restarts
    extra_args: list[str] = field(default_factory=list)  # e.g. --etcd-endpoints=... (no embedded etcd)
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    process: asyncio.subprocess.Process | None = None
    client_port: int = 0
    peer_port: int = 0

    def __post_init__(self) -> None:
        port, self.client_port, self.peer_port = free_ports(3)
        self.port = self.port or port

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        args = [
            sys.executable, "-m", "mesos_stateful.state",
            f"--listen={self.endpoint}",
            f"--data-dir={self.data_dir}",
            f"--embedded-client-port={self.client_port}",
            f"--embedded-peer-port={self.peer_port}",
            *self.extra_args,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *args, stdout=out, stderr=out, env={**os.environ, **self.env}
            )

    def etcd_pid(self) -> int | None:
        assert self.process is not None
        pids = etcd_children(self.process.pid)
        assert len(pids) <= 1, pids
        return pids[0] if pids else None

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    async def kill(self) -> None:
        """kill -9 (a crash), and wait until it is gone."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.kill()
        await asyncio.wait_for(self.process.wait(), 30)


@pytest_asyncio.fixture
async def state_process(tmp_path: Path) -> AsyncIterator[StateProcess]:
    service = StateProcess(tmp_path / "state", tmp_path / "state.log")
    await service.start()
    try:
        yield service
    finally:
        code = await service.stop()
        assert code == 0, service.log.read_text()


class HealthWatch:
    """Health.Watch of the state service in the background: every status it reports, timed."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        self.call = stub.Watch(health_pb2.HealthCheckRequest(service=STATE_SERVICE))
        self.seen: list[tuple[float, int]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for response in self.call:
            self.seen.append((time.monotonic(), response.status))

    def statuses(self) -> list[int]:
        return [status for _, status in self.seen]

    async def stop(self) -> None:
        self.call.cancel()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
            await self.task


async def test_killed_embedded_etcd_is_restarted_and_watches_go_on(state_process: StateProcess) -> None:
    client = StateClient(state_process.endpoint)
    health: HealthWatch | None = None
    collector: Collector | None = None
    try:
        await client.wait_ready(60)
        kept = await client.put(instance("kept"), expected_revision=0)
        collector = Collector(client.watch([pb.KIND_TASK], start_revision=await current_revision(client) + 1))
        writer = Writer(client)
        await writer.tasks(0, 5)
        await collector.wait_for(5)
        health = HealthWatch(client.channel)

        async def serving() -> bool:
            return bool(health and health.statuses() and health.statuses()[-1] == SERVING)

        await eventually(serving, 10, "Health.Watch to report SERVING")
        old_pid = state_process.etcd_pid()
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        # Writes keep being tried while etcd is down (each applied once: create-only puts).
        writing = asyncio.create_task(writer.tasks(5, 20))

        async def restarted() -> bool:
            pid = state_process.etcd_pid()
            return pid is not None and pid != old_pid

        await eventually(restarted, 30, "the state service to start etcd again")

        async def back() -> bool:
            statuses = health.statuses() if health else []
            return NOT_SERVING in statuses and statuses[-1] == SERVING

        await eventually(back, 30, "health NOT_SERVING, then SERVING again")
        assert health is not None
        down_at = next(t for t, s in health.seen if s == NOT_SERVING)
        up_at = health.seen[-1][0]
        # Noticed within the check interval (0.2 s) plus scheduling; back once etcd answers.
        assert down_at - killed_at < 2.0, down_at - killed_at
        assert up_at - killed_at < 15.0, up_at - killed_at

        await writing
        await writer.put(task("w-20.1"))  # a last marker: a gap or a repeat before it shows
        await collector.wait_for(21)
        assert collector.names() == [f"w-{i}.1" for i in range(21)]
        assert_in_order(collector.events)
        # The data dir was kept: the record written before the kill is there, unchanged.
        assert await client.get(pb.KIND_INSTANCE, "kept") == kept
    finally:
        if collector is not None:
            await collector.stop()
        if health is not None:
            await health.stop()
        await client.close()
    log = state_process.log.read_text()
    assert "was killed by SIGKILL; restarting it" in log, log
    assert "embedded etcd restarted (restart #1" in log, log


async def test_watch_from_before_a_crash_loop_resumes(state_process: StateProcess) -> None:
    """etcd killed twice in a row (the second time right after its restart): the restarts back off
    but happen, and a watch from an old revision (a dedicated etcd watch, not the hub) resumes."""
    client = StateClient(state_process.endpoint)
    collector: Collector | None = None
    try:
        await client.wait_ready(60)
        writer = Writer(client)
        first = await client.put(task("w-0.1"), expected_revision=0)
        await writer.tasks(1, 5)
        collector = Collector(client.watch([pb.KIND_TASK], start_revision=first.mod_revision))
        await collector.wait_for(5)
        for _ in range(2):
            old_pid = state_process.etcd_pid()
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)

            async def restarted(old: int = old_pid) -> bool:
                pid = state_process.etcd_pid()
                return pid is not None and pid != old

            await eventually(restarted, 30, "etcd started again")
        await client.wait_ready(30)
        await writer.tasks(5, 10)
        await collector.wait_for(10)
        assert collector.names() == [f"w-{i}.1" for i in range(10)]
        assert_in_order(collector.events)
    finally:
        if collector is not None:
            await collector.stop()
        await client.close()
    log = state_process.log.read_text()
    assert "restart #2" in log, log


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"etcd_check_interval_seconds": 2.0}, "noticed within 1 s"),
        ({"etcd_restart_backoff_seconds": 20.0}, "etcd_restart_backoff_max_seconds"),
        ({"etcd_restart_reset_seconds": 0}, "etcd_restart_reset_seconds"),
        ({"watch_queue_size": 0}, "watch queue size"),
        ({"watch_retry_seconds": 2.0}, "retry_initial_seconds <= retry_max_seconds"),
    ],
)
def test_supervisor_and_watch_settings_are_checked(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StateSettings(**overrides)


def test_default_settings_give_the_stated_bounds() -> None:
    settings = StateSettings()
    policy = settings.restart_policy()
    assert policy.check_interval_seconds <= 1.0 and policy.backoff_seconds <= policy.backoff_max_seconds
    limits = settings.watch_limits()
    assert limits.queue_size == settings.watch_queue_size and limits.retry_max_seconds <= 1.0


async def test_supervisor_backs_off_while_etcd_cannot_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """etcd killed, and its client port taken before it can come back: the supervisor keeps
    trying with a growing backoff (never more often than the policy says) and brings it back on
    the same data once the port is free."""
    etcd = EtcdProcess(tmp_path / "etcd")
    await etcd.start()
    downs: list[str] = []
    ups: list[int] = []
    # A slow check (1 s) leaves the test time to take the port before the first restart.
    policy = RestartPolicy(
        check_interval_seconds=1.0, backoff_seconds=0.2, backoff_max_seconds=0.8, start_timeout_seconds=10
    )
    supervisor = asyncio.create_task(supervise(etcd.etcd, policy, downs.append, ups.append))
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        kv = EtcdKV([etcd.endpoint], timeout=2.0)
        try:
            await kv.txn([], [put_op(b"/stateful/v1/kept", b"1")], [])
        finally:
            await kv.close()
        pid = etcd.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        async def taken() -> bool:
            try:
                blocker.bind(("127.0.0.1", etcd.etcd.client_port))
            except OSError:
                return False
            blocker.listen()
            return True

        await eventually(taken, 0.8, "the killed etcd's client port to be free to take")
        caplog.set_level(logging.ERROR, logger="mesos_stateful.state.embedded")

        def failed() -> list[float]:
            return [r.created for r in caplog.records if "failed" in r.getMessage()]

        async def three_failures() -> bool:
            return len(failed()) >= 3

        await eventually(three_failures, 60, "three failed restarts")
        assert len(downs) == 1 and "was killed by SIGKILL" in downs[0]
        assert ups == []
        gaps = [b - a for a, b in zip(failed(), failed()[1:], strict=False)]
        assert all(gap >= 0.2 for gap in gaps), gaps  # backed off, not a busy loop
        blocker.close()

        async def back() -> bool:
            return bool(ups)

        await eventually(back, 30, "etcd back once its port is free")
        assert etcd.running
        kv = EtcdKV([etcd.endpoint], timeout=2.0)
        try:
            assert [kv_.value for kv_ in (await kv.range(b"/stateful/v1/kept")).kvs] == [b"1"]
        finally:
            await kv.close()
    finally:
        blocker.close()
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        await etcd.kill()


async def test_lease_calls_answer_unavailable_while_etcd_restarts(tmp_path: Path) -> None:
    """kill -9 of the embedded etcd while keep-alives (and grants, revokes) run: every call answers
    OK, NOT_FOUND or UNAVAILABLE (an etcd outage the caller retries), never UNKNOWN / INTERNAL, and
    the service logs no traceback (a call on an ended etcd stream raises InvalidStateError, not an
    RpcError; it is mapped like watch's). Traced as ``make run`` traces: the tracing client
    interceptor is what makes a failed etcd call end before the first write."""
    state_process = StateProcess(
        tmp_path / "state", tmp_path / "state.log", env={"STATEFUL_TRACES_DIR": str(tmp_path / "traces")}
    )
    await state_process.start()
    channel = grpc.aio.insecure_channel(state_process.endpoint)
    stub: Any = pb_grpc.StateServiceStub(channel)
    client = StateClient(state_process.endpoint)
    codes: dict[str, list[grpc.StatusCode]] = {"keepalive": [], "grant": [], "revoke": []}
    stop = asyncio.Event()

    async def call(kind: str, method: Any, request: Any) -> Any:
        try:
            response = await method(request, timeout=3.0)
        except grpc.aio.AioRpcError as error:
            codes[kind].append(error.code())
            return None
        codes[kind].append(grpc.StatusCode.OK)
        return response

    async def keep_alives(lease_id: int) -> None:
        while not stop.is_set():
            await call("keepalive", stub.KeepAliveLease, pb.KeepAliveLeaseRequest(lease_id=lease_id))
            await asyncio.sleep(0.01)

    async def grants_and_revokes() -> None:
        while not stop.is_set():
            granted = await call("grant", stub.GrantLease, pb.GrantLeaseRequest(ttl_seconds=30))
            if granted is not None:
                await call("revoke", stub.RevokeLease, pb.RevokeLeaseRequest(lease_id=granted.lease_id))
            await asyncio.sleep(0.01)

    try:
        await client.wait_ready(60)
        leases = [await client.grant_lease(60) for _ in range(4)]
        workers = [asyncio.create_task(keep_alives(lease)) for lease in leases]
        workers.append(asyncio.create_task(grants_and_revokes()))

        async def some_ok() -> bool:
            return codes["keepalive"].count(grpc.StatusCode.OK) >= 20

        await eventually(some_ok, 10, "keep-alives answered")
        old_pid = state_process.etcd_pid()
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)

        async def unavailable_then_ok() -> bool:
            seen = codes["keepalive"]
            if grpc.StatusCode.UNAVAILABLE not in seen:
                return False
            after = seen[seen.index(grpc.StatusCode.UNAVAILABLE) :]
            return after.count(grpc.StatusCode.OK) >= 20

        await eventually(unavailable_then_ok, 60, "keep-alives UNAVAILABLE during the outage, then OK")
        stop.set()
        await asyncio.gather(*workers)
    finally:
        stop.set()
        await client.close()
        await channel.close()
        assert await state_process.stop() == 0, state_process.log.read_text()
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND}
    for kind, seen in codes.items():
        assert set(seen) <= allowed, (kind, sorted({c.name for c in seen}))
    log = state_process.log.read_text()
    assert "Traceback" not in log and "InvalidStateError" not in log, log
