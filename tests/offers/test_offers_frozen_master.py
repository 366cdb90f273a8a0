"""A frozen Mesos master (``kill -STOP`` of the local cluster process) must not stop the offers
leader's event loop (issue 10 follow-up).

pymesos' ``_send`` holds the driver's lock for its whole HTTP request, and its ``connected``
property takes the same lock: a KILL to a frozen master used to block the loop (a GetCluster or
any check of ``driver.subscribed``) until the master came back, so the leader stopped renewing its
lease and a standby took over while the old leader still believed it led. Here, with the master
frozen and a Kill in flight, the leader's gRPC health and GetCluster answer within 1 s for 12 s,
and it keeps its lease (same holder, same term, renewed).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from offers_helpers import RUNNING, in_state, wait_task, web_spec

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as api_grpc
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.server import is_serving
from mesos_stateful.testing.offers import Replicas, offers_processes
from mesos_stateful.testing.ports import free_port
from mesos_stateful.testing.state import StateService

pytestmark = pytest.mark.slow

FROZEN_SECONDS = 12.0
ANSWER_BOUND_SECONDS = 1.0


class FreezableCluster:
    """The local cluster (master and agents) as a process of its own, in its own session, on a
    free port and agent addresses of its own: a test can SIGSTOP / SIGCONT it."""

    def __init__(self, folder: Path, agents: int = 2) -> None:
        self.folder = folder
        self.port = free_port()
        self.agents = agents
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "mesos_stateful.localcluster", "serve", "--listen", self.address]
        argv += ["--work-dir", str(self.folder / "cluster"), "--agents", str(self.agents)]
        argv += ["--allocation-interval", "0.2", "--executor-shutdown-grace", "2", "--kill-grace", "2"]
        argv += ["--agent-ip-base", f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.2"]
        argv += ["--agent-ports-begin", str(random.randrange(10000, 29001, 1000))]
        env = dict(os.environ, STATEFUL_CLUSTER_AGENT_PORT="0")
        with open(self.folder / "cluster.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FreezableCluster]:
    process = FreezableCluster(tmp_path / "cluster")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest_asyncio.fixture
async def replicas(
    state_service: StateService, cluster: FreezableCluster, state_client: StateClient, tmp_path: Path
) -> AsyncIterator[Replicas]:
    group = offers_processes(state_service.endpoint, cluster.address, tmp_path / "offers")
    try:
        first = group.processes[0]
        first.start()
        await first.wait_serving()
        await group.wait_leader(state_client)
        await group.start()
        yield group
    finally:
        await group.stop()


async def cluster_of(endpoint: str, timeout: float) -> api.GetClusterResponse:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        response: api.GetClusterResponse = await api_grpc.OfferServiceStub(channel).GetCluster(
            api.GetClusterRequest(), timeout=timeout
        )
        return response


async def test_leader_loop_answers_and_keeps_its_lease_while_the_master_is_frozen(
    cluster: FreezableCluster, replicas: Replicas, state_client: StateClient
) -> None:
    leader, _ = await replicas.wait_leader(state_client)
    deadline = time.monotonic() + 60
    while not (await cluster_of(leader.endpoint, 2.0)).subscribed:
        assert time.monotonic() < deadline, leader.log_text()[-3000:]
        await asyncio.sleep(0.1)
    spec = web_spec("frozen", 0)
    async with grpc.aio.insecure_channel(leader.endpoint) as channel:
        stub = api_grpc.OfferServiceStub(channel)
        await stub.Launch(api.LaunchRequest(launch=spec), timeout=10)
        await wait_task(state_client, spec.task_id, in_state(RUNNING))
        before = await replicas.lease(state_client)
        assert before is not None and before.address == leader.endpoint

        cluster.signal(signal.SIGSTOP)
        try:
            # A call to the frozen master in flight on the leader's worker thread (it holds
            # pymesos' lock until it times out).
            kill = asyncio.ensure_future(stub.Kill(api.KillRequest(task_id=spec.task_id), timeout=30))
            await asyncio.sleep(0.3)
            slow: list[str] = []
            start = time.monotonic()
            while time.monotonic() - start < FROZEN_SECONDS:
                t0 = time.monotonic()
                serving = await is_serving(leader.endpoint, timeout=ANSWER_BOUND_SECONDS)
                try:
                    await cluster_of(leader.endpoint, ANSWER_BOUND_SECONDS)
                    answered = True
                except grpc.aio.AioRpcError:
                    answered = False
                if not (serving and answered):
                    slow.append(
                        f"at +{t0 - start:.1f}s: health {'ok' if serving else 'no answer'}, "
                        f"GetCluster {'ok' if answered else 'no answer'}"
                    )
                await asyncio.sleep(0.2)
            after = await replicas.lease(state_client)
        finally:
            cluster.signal(signal.SIGCONT)
        assert not slow, (
            f"the leader's loop did not answer within {ANSWER_BOUND_SECONDS}s: {slow}\n"
            + (leader.log_text()[-4000:])
        )
        assert "the event loop was blocked" not in leader.log_text(), leader.log_text()[-4000:]
        assert after is not None
        assert (after.address, after.term) == (before.address, before.term), (
            f"the leader lost its lease while the master was frozen: {before} -> {after}\n"
            + "\n".join(f"--- {p.name}\n{p.log_text()[-3000:]}" for p in replicas.processes)
        )
        assert after.renewed_at.ToDatetime() > before.renewed_at.ToDatetime()
        # Once the master is back the kill goes through (sent again by the caller if it timed out).
        try:
            await kill
        except grpc.aio.AioRpcError:
            await stub.Kill(api.KillRequest(task_id=spec.task_id), timeout=30)
        await wait_task(state_client, spec.task_id, lambda t: t.state != RUNNING, timeout=60)
