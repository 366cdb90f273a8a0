"""A real etcd for tests: free loopback ports, its own data dir, stop / kill -9 / restart; and a
cluster of several such members (:class:`EtcdCluster`)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

from mesos_stateful.state.embedded import EmbeddedEtcd
from mesos_stateful.state.etcdkv import EtcdKV
from mesos_stateful.testing.ports import free_ports


class EtcdProcess:
    """One etcd member on 127.0.0.1; ``restart()`` keeps its data (and its ports)."""

    def __init__(self, data_dir: str | Path, name: str = "test") -> None:
        client_port, peer_port = free_ports(2)
        self.etcd = EmbeddedEtcd(data_dir, client_port=client_port, peer_port=peer_port, name=name)
        self.started_once = False

    @property
    def endpoint(self) -> str:
        return self.etcd.endpoint

    @property
    def running(self) -> bool:
        return self.etcd.running

    @property
    def pid(self) -> int | None:
        return self.etcd.process.pid if self.etcd.process is not None else None

    async def start(self, timeout: float = 30.0) -> None:
        """Start etcd; on its first start, a port another process took between ``free_port()``
        and etcd's bind (the ports come from the ephemeral range) is replaced and tried again."""
        for attempt in range(5):
            try:
                await self.etcd.start(timeout)
                return
            except RuntimeError:
                if self.started_once or attempt == 4 or not self._lost_a_port():
                    raise
                # Nothing was stored yet: start over with new ports and an empty data dir.
                shutil.rmtree(self.etcd.data_dir, ignore_errors=True)
                self.etcd.client_port, self.etcd.peer_port = free_ports(2)
            finally:
                if self.etcd.running:
                    self.started_once = True

    def _lost_a_port(self) -> bool:
        log = self.etcd.data_dir.parent / f"{self.etcd.data_dir.name}.log"
        return log.exists() and "address already in use" in log.read_text(errors="replace")

    async def stop(self) -> None:
        await asyncio.to_thread(self.etcd.stop)

    async def kill(self) -> None:
        await asyncio.to_thread(self.etcd.kill)

    async def restart(self, timeout: float = 30.0) -> None:
        """Start it again with the same data dir and ports (after stop/kill; stops it first if running)."""
        if self.running:
            await self.stop()
        await self.start(timeout)


class EtcdCluster:
    """``size`` etcd members on 127.0.0.1 forming one cluster (each an :class:`EtcdProcess` with
    ``--initial-cluster`` naming all of them), data in ``base_dir/<name>``. Members can be killed
    and restarted one by one (they rejoin with their data); :meth:`leader` asks Status."""

    def __init__(self, base_dir: str | Path, size: int = 3) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self.base_dir = Path(base_dir)
        self.members = [EtcdProcess(self.base_dir / f"m{i}", name=f"m{i}") for i in range(size)]
        self._link()

    def _link(self) -> None:
        initial = ",".join(f"{m.etcd.name}=http://{m.etcd.host}:{m.etcd.peer_port}" for m in self.members)
        for member in self.members:
            member.etcd.initial_cluster = initial

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    async def start(self, timeout: float = 60.0) -> None:
        """Start every member (they wait for each other to form the cluster); on the first start,
        a port taken by another process meanwhile gives every member new ports, and it is tried
        again (nothing is stored yet)."""
        for attempt in range(5):
            for member in self.members:
                member.etcd.start_process()
            try:
                await asyncio.gather(*(m.etcd.wait_healthy(timeout) for m in self.members))
            except RuntimeError:
                if attempt == 4 or not any(m._lost_a_port() for m in self.members):
                    raise
                await self.kill()
                for member in self.members:
                    shutil.rmtree(member.etcd.data_dir, ignore_errors=True)
                    log = member.etcd.data_dir.parent / f"{member.etcd.data_dir.name}.log"
                    log.unlink(missing_ok=True)
                    member.etcd.client_port, member.etcd.peer_port = free_ports(2)
                self._link()
                continue
            for member in self.members:
                member.started_once = True
            return

    async def leader(self, timeout: float = 30.0) -> EtcdProcess:
        """The member that is leader now (Status: ``leader == header.member_id``), waiting up to
        ``timeout`` seconds for one (e.g. during an election)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for member in self.members:
                if not member.running:
                    continue
                async with grpc.aio.insecure_channel(member.endpoint) as channel:
                    try:
                        status = await rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=1.0)
                    except grpc.RpcError:
                        continue
                if status.leader and status.leader == status.header.member_id:
                    return member
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no etcd leader among {self.endpoints} after {timeout}s")
            await asyncio.sleep(0.1)

    async def member_id(self, member: EtcdProcess) -> int:
        """The etcd member id of ``member`` (it must be running)."""
        async with grpc.aio.insecure_channel(member.endpoint) as channel:
            status = await rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=5.0)
        return int(status.header.member_id)

    async def move_leader(self, to: EtcdProcess, timeout: float = 30.0) -> None:
        """Make ``to`` the leader (etcd MoveLeader, sent to the current leader)."""
        target = await self.member_id(to)
        leader = await self.leader(timeout)
        if leader is not to:
            async with grpc.aio.insecure_channel(leader.endpoint) as channel:
                await rpc.MaintenanceStub(channel).MoveLeader(
                    rpc.MoveLeaderRequest(targetID=target), timeout=timeout
                )
        if await self.leader(timeout) is not to:
            raise AssertionError(f"{to.endpoint} did not become the etcd leader")

    async def kill(self) -> None:
        await asyncio.gather(*(m.kill() for m in self.members))


class PassThrough(grpc.aio.StreamStreamClientInterceptor):
    """A client interceptor that changes nothing. The services run with one (OpenTelemetry's), and
    with one, a watch call to an etcd that is down is over before its first write (the
    ``InvalidStateError`` of issue 10); tests without tracing need it to see that path."""

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(client_call_details, request_iterator)


def intercept_watches(kv: EtcdKV, endpoint: str) -> grpc.aio.Channel:
    """Route ``kv``'s watches to ``endpoint`` through an intercepted channel (as in a service with
    tracing); close the returned channel after ``kv``."""
    channel = grpc.aio.insecure_channel(
        endpoint, options=[("grpc.max_reconnect_backoff_ms", 1000)], interceptors=[PassThrough()]
    )
    kv.watch_stub = rpc.WatchStub(channel)
    return channel
