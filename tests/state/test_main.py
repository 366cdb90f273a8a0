"""The entry point: embedded etcd started and stopped with the service; reads without the cache."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from state_helpers import eventually, instance

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.ports import free_ports
from mesos_stateful.testing.state import StateService


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its reaper counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _etcd_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and "etcd" in (entry / "comm").read_text():
                found.append(int(entry.name))
    return found


async def test_main_runs_an_embedded_etcd(tmp_path: Path) -> None:
    port, client_port, peer_port = free_ports(3)
    env = {**os.environ, "STATEFUL_STATE_DATA_DIR": str(tmp_path / "state")}
    args = [
        sys.executable, "-m", "mesos_stateful.state",
        f"--listen=127.0.0.1:{port}",
        f"--embedded-client-port={client_port}",
        f"--embedded-peer-port={peer_port}",
    ]  # fmt: skip
    log = tmp_path / "state.log"
    with log.open("wb") as out:
        service = await asyncio.create_subprocess_exec(*args, env=env, stdout=out, stderr=out)
    client = StateClient(f"127.0.0.1:{port}")
    try:
        await client.wait_ready(60)
        etcd_pids = _etcd_children(service.pid)
        assert len(etcd_pids) == 1
        stored = await client.put(instance("cache"), expected_revision=0)
        assert (await client.get(pb.KIND_INSTANCE, "cache")) == stored
        assert (tmp_path / "state" / "etcd" / "member").is_dir()
    finally:
        await client.close()
        service.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(service.wait(), 30)
    assert code == 0, log.read_text()

    async def etcd_gone() -> bool:
        return not any(_alive(p) for p in etcd_pids)

    await eventually(etcd_gone, 30, "the embedded etcd to stop")


async def test_reads_without_the_cache(etcd: EtcdProcess) -> None:
    service = StateService(etcd.endpoint, use_cache=False)
    await service.start()
    client = StateClient(service.endpoint)
    try:
        first = await client.put(instance("a"))
        assert await client.get(pb.KIND_INSTANCE, "a") == first
        records, revision = await client.list(pb.KIND_INSTANCE)
        assert records == [first] and revision >= first.mod_revision
        assert await client.delete(pb.KIND_INSTANCE, "a", expected_revision=first.mod_revision)
        assert await client.find(pb.KIND_INSTANCE, "a") is None
    finally:
        await client.close()
        await service.stop()
