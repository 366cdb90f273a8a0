"""The suite side: a 3-member Redis instance through the public API (stateful.v1.InstanceService),
its create time, the master kill, and its delete.

An ``InstanceTracker`` feeds every snapshot of the instance (from WatchInstances and, as a
backstop, GetInstance every 100 ms) to waiters; a waiter completes at the first snapshot that
satisfies its predicate, so times are when the client could first see the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from redis.exceptions import RedisError

from failover_bench import redisio
from failover_bench.procs import listener_pids, pid_alive
from failover_bench.redisio import Address
from failover_bench.results import Sample
from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import types_pb2

log = logging.getLogger("bench.suite")

PORT_NAME = "redis"
PASSWORD = "password"
Snapshot = types_pb2.Instance | None  # None: the instance does not exist
Predicate = Callable[[Snapshot], bool]

CREATE = "suite: create -> all members RUNNING"
FAILOVER = "suite: kill -> new master writable"
RECORDED = "suite: kill -> new master in API"
RECOVERED = "suite: kill -> instance RUNNING again"
DELETE = "suite: delete -> gone"


@dataclass
class SuiteOptions:
    replicas: int = 3
    create_timeout: float = 180.0
    failover_deadline: float = 60.0
    recovery_timeout: float = 120.0
    delete_timeout: float = 120.0
    poll_interval: float = 0.01
    call_timeout: float = 10.0


class Api:
    """The public API with an optional bearer token."""

    def __init__(self, endpoint: str, token: str | None, call_timeout: float) -> None:
        self.endpoint = endpoint
        self.channel = grpc.aio.insecure_channel(endpoint)
        self.stub = api_grpc.InstanceServiceStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = call_timeout

    async def close(self) -> None:
        await self.channel.close()

    async def get(self, name: str, include_secrets: bool = False) -> api.GetInstanceResponse | None:
        try:
            reply: api.GetInstanceResponse = await self.stub.GetInstance(
                api.GetInstanceRequest(name=name, include_secrets=include_secrets),
                timeout=self.timeout,
                metadata=self.metadata,
            )
            return reply
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def workloads(self) -> list[str]:
        reply = await self.stub.ListWorkloads(
            api.ListWorkloadsRequest(), timeout=self.timeout, metadata=self.metadata
        )
        return [w.name for w in reply.workloads]

    async def create(self, spec: types_pb2.InstanceSpec) -> None:
        await self.stub.CreateInstance(
            api.CreateInstanceRequest(spec=spec), timeout=self.timeout, metadata=self.metadata
        )

    async def delete(self, name: str) -> None:
        await self.stub.DeleteInstance(
            api.DeleteInstanceRequest(name=name), timeout=self.timeout, metadata=self.metadata
        )


@dataclass
class _Waiter:
    predicate: Predicate
    future: asyncio.Future[tuple[float, Snapshot]]


@dataclass
class InstanceTracker:
    api: Api
    name: str
    poll_every: float = 0.1
    last: Snapshot = None
    seen: bool = False
    _waiters: list[_Waiter] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _listeners: list[Callable[[Snapshot], None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._poll())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for waiter in self._waiters:
            waiter.future.cancel()

    def on_snapshot(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    def waiter(self, predicate: Predicate) -> asyncio.Future[tuple[float, Snapshot]]:
        """A future set to (monotonic time, snapshot) at the first snapshot matching predicate,
        checked against the last one seen too."""
        future: asyncio.Future[tuple[float, Snapshot]] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(predicate, future)
        if self.seen and predicate(self.last):
            future.set_result((time.monotonic(), self.last))
        else:
            self._waiters.append(waiter)
        return future

    def _feed(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        self.last, self.seen = snapshot, True
        for listener in self._listeners:
            listener(snapshot)
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
            elif waiter.predicate(snapshot):
                waiter.future.set_result((now, snapshot))
                self._waiters.remove(waiter)

    async def _watch(self) -> None:
        warned = False
        while True:
            try:
                call = self.api.stub.WatchInstances(
                    api.WatchInstancesRequest(name=self.name), metadata=self.api.metadata
                )
                async for event in call:
                    if event.instance.spec.name != self.name:
                        continue
                    if event.type == api.INSTANCE_EVENT_TYPE_DELETED:
                        self._feed(None)
                    else:
                        self._feed(event.instance)
            except grpc.aio.AioRpcError as error:
                if not warned:
                    log.warning(
                        "WatchInstances: %s %s; relying on polling", error.code().name, error.details()
                    )
                    warned = True
            await asyncio.sleep(0.5)

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await self.api.get(self.name)
                self._feed(reply.instance if reply is not None else None)
            await asyncio.sleep(self.poll_every)


def address_of(member: types_pb2.Member) -> Address | None:
    port = member.ports.get(PORT_NAME)
    return (member.host, int(port)) if member.host and port else None


def all_running(replicas: int) -> Predicate:
    def check(snapshot: Snapshot) -> bool:
        return (
            snapshot is not None
            and len(snapshot.members) == replicas
            and all(m.state == types_pb2.MEMBER_STATE_RUNNING for m in snapshot.members)
        )

    return check


def describe(snapshot: Snapshot) -> str:
    """Phase, error and member states, for failure messages."""
    if snapshot is None:
        return "instance not found"
    members = ", ".join(
        f"{m.id} {types_pb2.Role.Name(m.role).removeprefix('ROLE_')} "
        f"{types_pb2.MemberState.Name(m.state).removeprefix('MEMBER_STATE_')}"
        + (f" ({m.message})" if m.message else "")
        for m in snapshot.members
    )
    text = f"phase {types_pb2.InstancePhase.Name(snapshot.phase).removeprefix('INSTANCE_PHASE_')}"
    if snapshot.last_error:
        text += f", last error: {snapshot.last_error}"
    if snapshot.plan.name:
        text += f", plan {snapshot.plan.name} {types_pb2.StepStatus.Name(snapshot.plan.status)}"
    return text + f"; members: [{members}]"


async def _await_until(
    future: asyncio.Future[tuple[float, Snapshot]], deadline: float
) -> tuple[float, Snapshot] | None:
    try:
        return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        return None


class SuiteRun:
    """One run: create, measure the kill, delete. Appends its samples to ``samples``."""

    def __init__(self, api_: Api, name: str, run: int, opts: SuiteOptions, samples: list[Sample]) -> None:
        self.api, self.name, self.run, self.opts, self.samples = api_, name, run, opts, samples
        self.tracker = InstanceTracker(api_, name)
        self.addresses: set[Address] = set()
        self.created = False

    def _sample(
        self,
        measurement: str,
        ok: bool,
        seconds: float | None = None,
        detail: str = "",
        info: dict[str, Any] | None = None,
    ) -> None:
        self.samples.append(Sample(measurement, self.run, ok, seconds, detail, info or {}))

    def _remember(self, snapshot: Snapshot) -> None:
        for member in snapshot.members if snapshot is not None else []:
            address = address_of(member)
            if address is not None:
                self.addresses.add(address)

    async def execute(self) -> bool:
        """True when the instance reached all members RUNNING."""
        self.tracker.on_snapshot(self._remember)
        self.tracker.start()
        try:
            if not await self._create():
                return False
            try:
                await self._failover()
            except (RedisError, OSError, grpc.aio.AioRpcError) as error:
                if not any(x.run == self.run and x.measurement == FAILOVER for x in self.samples):
                    self._sample(FAILOVER, False, detail=f"error: {error!s:.300}")
            return True
        finally:
            try:
                await self._delete()
            finally:
                await self.tracker.stop()

    async def _create(self) -> bool:
        spec = types_pb2.InstanceSpec(name=self.name, workload="redis", replicas=self.opts.replicas)
        running = self.tracker.waiter(all_running(self.opts.replicas))
        t0 = time.monotonic()
        try:
            await self.api.create(spec)
        except grpc.aio.AioRpcError as error:
            self._sample(CREATE, False, detail=f"CreateInstance: {error.code().name}: {error.details()}")
            return False
        self.created = True
        done = await _await_until(running, t0 + self.opts.create_timeout)
        if done is None:
            self._sample(
                CREATE,
                False,
                detail=f"not all RUNNING after {self.opts.create_timeout:.0f}s: "
                f"{describe(self.tracker.last)}",
            )
            return False
        seconds = done[0] - t0
        phase = self.tracker.waiter(lambda s: s is not None and s.phase == types_pb2.INSTANCE_PHASE_RUNNING)
        phased = await _await_until(phase, time.monotonic() + 10)
        info = {"phase_running_s": round(phased[0] - t0, 4)} if phased else {"phase_running_s": None}
        self._sample(CREATE, True, seconds, info=info)
        return True

    async def _failover(self) -> None:
        reply = await self.api.get(self.name, include_secrets=True)
        if reply is None:
            self._sample(FAILOVER, False, detail="instance vanished before the kill")
            return
        password = reply.secrets.get(PASSWORD)
        masters = [m for m in reply.instance.members if m.role == types_pb2.ROLE_MASTER]
        if len(masters) != 1 or address_of(masters[0]) is None:
            self._sample(
                FAILOVER, False, detail=f"expected one master with a port: {describe(reply.instance)}"
            )
            return
        master = masters[0]
        master_address = address_of(master)
        assert master_address is not None
        pids = listener_pids(*master_address)
        if not pids:
            self._sample(
                FAILOVER, False, detail=f"no redis-server process listens on {redisio.fmt(master_address)}"
            )
            return
        try:
            acked = await redisio.write_acked_keys(master_address, password, f"bench:suite:{self.run}")
        except (RedisError, OSError) as error:
            self._sample(FAILOVER, False, detail=f"writing keys on the master failed: {error}")
            return
        if not acked.keys:
            self._sample(FAILOVER, False, detail="no write was acknowledged by a replica (WAIT 1)")
            return

        def new_master_recorded(s: Snapshot) -> bool:
            return s is not None and any(
                m.id != master.id
                and m.role == types_pb2.ROLE_MASTER
                and m.state == types_pb2.MEMBER_STATE_RUNNING
                for m in s.members
            )

        def recovered(s: Snapshot) -> bool:
            if s is None or not new_master_recorded(s) or s.phase != types_pb2.INSTANCE_PHASE_RUNNING:
                return False
            relaunched = any(m.id == master.id and m.task_id != master.task_id for m in s.members)
            return relaunched and all_running(self.opts.replicas)(s)

        recorded = self.tracker.waiter(new_master_recorded)
        recovered_at = self.tracker.waiter(recovered)
        self.addresses.discard(master_address)

        t_kill = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        found = await redisio.wait_new_master(
            lambda: sorted(self.addresses),
            master_address,
            password,
            t_kill + self.opts.failover_deadline,
            self.opts.poll_interval,
        )
        if found is None:
            self._sample(
                FAILOVER,
                False,
                detail=f"no new master accepted a write within {self.opts.failover_deadline:.0f}s: "
                f"{describe(self.tracker.last)}",
            )
        else:
            missing = await redisio.missing_keys(found.address, password, acked.keys)
            info = {
                "killed": f"{master.id} {redisio.fmt(master_address)} pid {pids[0]}",
                "new_master": redisio.fmt(found.address),
                "acked_keys": len(acked.keys),
                "missing_keys": len(missing),
                "unacked_batches": acked.batches_unacked,
                "killed_process_gone": not pid_alive(pids[0]),
            }
            if missing:
                self._sample(
                    FAILOVER,
                    False,
                    found.at - t_kill,
                    f"{len(missing)} of {len(acked.keys)} acknowledged keys missing on the new master",
                    info,
                )
            else:
                self._sample(FAILOVER, True, found.at - t_kill, info=info)

        deadline = t_kill + self.opts.recovery_timeout
        for measurement, future in ((RECORDED, recorded), (RECOVERED, recovered_at)):
            done = await _await_until(future, deadline)
            if done is None:
                self._sample(
                    measurement,
                    False,
                    detail=f"not within {self.opts.recovery_timeout:.0f}s: {describe(self.tracker.last)}",
                )
            else:
                self._sample(measurement, True, done[0] - t_kill)

    async def _delete(self) -> None:
        if not self.created:
            return
        gone = self.tracker.waiter(lambda s: s is None)
        t0 = time.monotonic()
        try:
            await self.api.delete(self.name)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                self._sample(DELETE, False, detail=f"DeleteInstance: {error.code().name}: {error.details()}")
                return
        done = await _await_until(gone, t0 + self.opts.delete_timeout)
        if done is None:
            self._sample(
                DELETE,
                False,
                detail=f"still there after {self.opts.delete_timeout:.0f}s: {describe(self.tracker.last)}",
            )
            return
        # The record is gone; its redis-server processes should be too.
        leftovers: list[str] = []
        stop_at = time.monotonic() + 30
        while True:
            leftovers = [redisio.fmt(a) for a in sorted(self.addresses) if listener_pids(*a)]
            if not leftovers or time.monotonic() > stop_at:
                break
            await asyncio.sleep(0.1)
        info = {"leftover_redis": leftovers} if leftovers else {}
        if leftovers:
            self._sample(
                DELETE,
                False,
                done[0] - t0,
                f"record gone but redis-server still listening on {', '.join(leftovers)}",
                info,
            )
        else:
            self._sample(DELETE, True, done[0] - t0)
