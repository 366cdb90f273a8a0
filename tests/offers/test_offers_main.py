"""``python -m mesos_stateful.offers`` as its own process: settings from the environment,
graceful SIGTERM that leaves the members running (failover), and a restart that adopts them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from offers_helpers import (
    RUNNING,
    framework_state,
    in_state,
    member_pids,
    port_open,
    wait_task,
    wait_until,
    web_spec,
)

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as api_grpc
from mesos_stateful.clients.state import StateClient
from mesos_stateful.offers.settings import OffersSettings
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.ports import free_port
from mesos_stateful.testing.state import StateService

pytestmark = pytest.mark.slow


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mesos_stateful.offers"], env=env, stdout=out, stderr=out
        )


async def cluster_view(
    endpoint: str, subscribed: bool = True, timeout: float = 60.0
) -> api.GetClusterResponse:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = api_grpc.OfferServiceStub(channel)
        while True:
            try:
                view = await stub.GetCluster(api.GetClusterRequest(), timeout=2)
                if view.subscribed == subscribed:
                    return view
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("offers service not subscribed")
            await asyncio.sleep(0.1)


async def test_sigterm_leaves_members_running_and_a_new_process_adopts_them(
    state_service: StateService, state_client: StateClient, local_cluster: RunningCluster, tmp_path: Path
) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env.pop("STATEFUL_OFFERS_MASTER", None)
    env.update(
        {
            "STATEFUL_OFFERS_LISTEN": endpoint,
            "STATEFUL_OFFERS_STATE_ENDPOINT": state_service.endpoint,
            "MESOS_MASTER": local_cluster.master_address,  # honoured like pymesos' tools do
        }
    )
    log = tmp_path / "offers.log"
    process = start(env, log)
    try:
        first = await cluster_view(endpoint)
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = api_grpc.OfferServiceStub(channel)
            await stub.Launch(api.LaunchRequest(launch=web_spec("proc", 0)))
        task = await wait_task(state_client, "proc-0.1", in_state(RUNNING))
        pids = member_pids(local_cluster, task.task_id)

        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
        # Disconnected with failover, not torn down: the framework stays, its member runs on.
        await wait_until(lambda: not framework_state(local_cluster, first.framework_id)["connected"])
        assert port_open(task.host, task.ports["web"])

        process = start(env, log)
        second = await cluster_view(endpoint)
        assert second.framework_id == first.framework_id
        assert framework_state(local_cluster, first.framework_id)["connected"]
        assert member_pids(local_cluster, task.task_id) == pids
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)
    text = log.read_text()
    assert "Traceback" not in text, text


def test_settings_invariants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESOS_MASTER", "zk://10.0.0.1:2181/mesos")
    assert OffersSettings.load([]).master == "zk://10.0.0.1:2181/mesos"
    monkeypatch.setenv("STATEFUL_OFFERS_MASTER", "http://10.0.0.2:5050")
    settings = OffersSettings.load([])
    assert settings.master == "http://10.0.0.2:5050" and settings.failover_timeout_seconds == 604800
    for bad in (["--failover-timeout-seconds", "0"], ["--refuse-seconds-idle", "-1"]):
        with pytest.raises(SystemExit):
            OffersSettings.load(bad)
