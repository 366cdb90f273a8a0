"""Test support for the lifecycle service, and the whole suite in one process.

    from mesos_stateful.testing.cluster import local_cluster  # noqa: F401
    from mesos_stateful.testing.gateway import gateway  # noqa: F401
    from mesos_stateful.testing.lifecycle import lifecycle_service, suite  # noqa: F401
    from mesos_stateful.testing.offers import offers_service  # noqa: F401
    from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401

- ``lifecycle_service``: an in-process lifecycle (controller + health server) over the
  ``state_service`` and ``offers_service`` fixtures; ``stop()`` / ``start()`` / ``restart()``.
- ``suite``: etcd, state, a local cluster with 3 agents, offers, lifecycle, gateway and the Redis
  workload service (registered under a lease), every one on free ports, with a public API stub
  and helpers to wait for an instance's state.
- ``redis_suite``: the same, once per implementation of the Redis workload (params ``python``:
  the in-process service, workload ``redis``; ``node``: ``services/redis-node`` as a process,
  workload ``redis-node``). ``suite.workload`` names it; ``suite.create`` uses it by default.
- ``standby_suite``: the same, but lifecycle and offers each run as two real processes (a leader
  and a standby, :class:`~mesos_stateful.testing.offers.Replicas`) that a test can SIGKILL or
  SIGSTOP; ``suite.lifecycle`` and ``suite.offers`` are the replica groups.

Lifecycle runs with leader election: ``LifecycleRunner.start()`` waits until it leads (pass
``wait_leading=False`` for a standby).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import pytest_asyncio

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.channels import channel_options
from mesos_stateful.lifecycle.server import LifecycleService
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.testing import reports
from mesos_stateful.testing.node_workload import REDIS_NODE_NAME, NodeWorkload, redis_node
from mesos_stateful.testing.offers import Replicas, ServiceProcess, env_of, offers_processes
from mesos_stateful.testing.ports import free_port
from mesos_stateful.workloads.base import WorkloadBase, start_workload

if TYPE_CHECKING:
    from mesos_stateful.api.stateful.v1.instance_service_pb2_grpc import InstanceServiceAsyncStub

# Fast retries and timeouts for tests (the defaults suit a real cluster).
TEST_SETTINGS: dict[str, Any] = {
    "callback_timeout_seconds": 15.0,
    "offers_timeout_seconds": 5.0,
    "retry_initial_seconds": 0.2,
    "retry_max_seconds": 2.0,
    "resync_interval_seconds": 5.0,
    "launch_timeout_seconds": 60.0,
    "kill_timeout_seconds": 30.0,
}


class LifecycleRunner:
    """An in-process lifecycle service; ``restart()`` keeps its health port."""

    def __init__(
        self, state_endpoint: str, offers_endpoint: str, wait_leading: bool = True, **overrides: Any
    ) -> None:
        self.state_endpoint = state_endpoint
        self.offers_endpoint = offers_endpoint
        self.wait_leading = wait_leading
        self.overrides = overrides
        self.port = 0
        self.service: LifecycleService | None = None
        self.starts = 0

    def settings(self) -> LifecycleSettings:
        values: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "state_endpoint": self.state_endpoint,
            "offers_endpoint": self.offers_endpoint,
            **TEST_SETTINGS,
            **self.overrides,
        }
        return LifecycleSettings.model_validate(values)

    @property
    def running(self) -> bool:
        return self.service is not None

    async def start(self, leading_timeout: float = 30.0) -> None:
        """Start, and (unless built with ``wait_leading=False``) wait until it leads (at once when
        no other replica holds the lease; after the lease expires when its holder died)."""
        if self.service is not None:
            return
        service = LifecycleService(self.settings())
        await service.start()
        self.service = service
        self.port = service.port
        self.starts += 1
        if self.wait_leading:
            await service.wait_leading(leading_timeout)

    async def stop(self, crash: bool = False) -> None:
        """Stop at once, wherever the controller is (as a crash would, minus the process exit).
        The lease is released (a standby leads at its next poll) unless ``crash``: then it is
        left to expire, as after a SIGKILL."""
        if self.service is not None:
            if crash and self.service.elector is not None:
                self.service.elector.crash()
            await self.service.stop(grace_seconds=0.2)
            self.service = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def freeze_after_save(self, when: Callable[[types_pb2.Plan], bool]) -> asyncio.Event:
        """Make the running controller hang right after it persists a plan for which ``when`` is
        true (as if the process froze there); the returned event is set then. ``stop()`` it next:
        that is a crash at exactly that point."""
        assert self.service is not None and self.service.controller is not None
        reconciler = self.service.controller.reconciler
        original = reconciler._save
        frozen = asyncio.Event()

        async def save(ld: Any, plan: types_pb2.Plan) -> None:
            await original(ld, plan)
            if not frozen.is_set() and when(plan):
                frozen.set()
                await asyncio.Event().wait()  # until cancelled by stop()

        reconciler._save = save  # type: ignore[method-assign]
        return frozen

    def pause_after_save(self, when: Callable[[types_pb2.Plan], bool]) -> tuple[asyncio.Event, asyncio.Event]:
        """Make the running controller wait right after it persists a plan for which ``when`` is
        true (once): returns (paused, release). ``paused`` is set when it waits there; it goes on
        once the test sets ``release`` (e.g. after changing the spec at exactly that point)."""
        assert self.service is not None and self.service.controller is not None
        reconciler = self.service.controller.reconciler
        original = reconciler._save
        paused = asyncio.Event()
        release = asyncio.Event()

        async def save(ld: Any, plan: types_pb2.Plan) -> None:
            await original(ld, plan)
            if not paused.is_set() and when(plan):
                paused.set()
                await release.wait()

        reconciler._save = save  # type: ignore[method-assign]
        return paused, release


@pytest_asyncio.fixture
async def lifecycle_service(state_service: Any, offers_service: Any) -> AsyncIterator[LifecycleRunner]:
    runner = LifecycleRunner(state_service.endpoint, offers_service.endpoint)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


# --- the whole suite --------------------------------------------------------------------------------


class RedisService:
    """The Redis workload service in this process, registered in the state service; ``restart()``
    keeps its port (so its registration stays valid)."""

    def __init__(self, state_endpoint: str) -> None:
        self.state_endpoint = state_endpoint
        self.port = 0
        self.running: Any = None
        # More RedisSettings (e.g. redis_server_versions), taken by the next start / restart.
        self.extra: dict[str, Any] = {}

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        from mesos_stateful.workloads.base import start_workload
        from mesos_stateful.workloads.redis.servicer import RedisWorkload
        from mesos_stateful.workloads.redis.settings import RedisSettings

        settings = RedisSettings.model_validate(
            {
                "listen": f"127.0.0.1:{self.port}",
                "state_endpoint": self.state_endpoint,
                "lease_ttl_seconds": 6,
                "callback_timeout_seconds": 12.0,
                "connect_timeout_seconds": 3.0,
                "check_interval_ms": 300,
                **self.extra,
            }
        )
        self.running = await start_workload(RedisWorkload(settings), settings)
        self.port = self.running.port

    async def stop(self, deregister: bool = True) -> None:
        if self.running is None:
            return
        if deregister:
            await self.running.stop(grace_seconds=0.2)
        else:
            # Vanish without revoking the lease, as a crashed process would.
            await self.running.served.set_serving(False)
            if self.running.registration is not None:
                await self.running.registration.stop(revoke=False)
            if self.running.client is not None:
                await self.running.client.close()
            await self.running.served.server.stop(0)
        self.running = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@dataclass
class Suite:
    """Every service of the suite, started in-process on free ports."""

    state: Any  # testing.state.StateService
    cluster: Any  # testing.cluster.RunningCluster
    offers: Any  # testing.offers.OffersService, or Replicas in a standby_suite
    lifecycle: LifecycleRunner | Replicas
    gateway: Any  # testing.gateway.RunningGateway
    redis: RedisService | NodeWorkload
    client: StateClient
    channel: grpc.aio.Channel
    # The Redis workload's registered name: "redis" (Python) or "redis-node" (Node.js).
    workload: str = "redis"

    @property
    def api(self) -> InstanceServiceAsyncStub:
        """A client of the public InstanceService (through the gateway)."""
        return api_grpc.InstanceServiceStub(self.channel)

    async def create(
        self, name: str, replicas: int, workload: str | None = None, **spec: Any
    ) -> types_pb2.Instance:
        """Create through the public API; ``workload`` defaults to the suite's Redis workload."""
        request = ipb.CreateInstanceRequest(
            spec=types_pb2.InstanceSpec(
                name=name, workload=workload or self.workload, replicas=replicas, **spec
            )
        )
        response = await self.api.CreateInstance(request)
        return response.instance

    async def get(self, name: str, secrets: bool = False) -> ipb.GetInstanceResponse:
        response: ipb.GetInstanceResponse = await self.api.GetInstance(
            ipb.GetInstanceRequest(name=name, include_secrets=secrets)
        )
        return response

    async def instance(self, name: str) -> types_pb2.Instance | None:
        """The instance with its members as stored now, straight from the state service."""
        record = await self.client.find(spb.KIND_INSTANCE, name)
        if record is None:
            return None
        instance = types_pb2.Instance()
        instance.CopyFrom(record.instance)
        members, _ = await self.client.list(spb.KIND_MEMBER, f"{name}/")
        instance.members.extend(sorted((r.member for r in members), key=lambda m: m.ordinal))
        return instance

    async def tasks(self, name: str) -> dict[str, types_pb2.Task]:
        records, _ = await self.client.list(spb.KIND_TASK, f"{name}-")
        return {r.task.task_id: r.task for r in records if r.task.instance == name}

    async def wait_instance(
        self,
        name: str,
        condition: Callable[[types_pb2.Instance], bool],
        timeout: float = 90.0,
        what: str = "",
        interval: float = 0.2,
    ) -> types_pb2.Instance:
        """Poll the stored instance until ``condition`` holds; AssertionError with the last state
        (phase, plan, members) after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: types_pb2.Instance | None = None
        while True:
            last = await self.instance(name)
            if last is not None and condition(last):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"instance {name}: {what or 'condition'} not met in {timeout:.0f}s:\n{last}"
                )
            await asyncio.sleep(0.2)

    async def wait_running(self, name: str, members: int, timeout: float = 120.0) -> types_pb2.Instance:
        return await self.wait_instance(
            name, lambda i: is_running(i, members), timeout, f"RUNNING with {members} ready members"
        )

    async def wait_gone(self, name: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while await self.client.find(spb.KIND_INSTANCE, name) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"instance {name} not removed in {timeout:.0f}s: {await self.instance(name)}"
                )
            await asyncio.sleep(0.2)


def is_running(instance: types_pb2.Instance, members: int) -> bool:
    return (
        instance.phase == types_pb2.INSTANCE_PHASE_RUNNING
        and len(instance.members) == members
        and all(m.state == types_pb2.MEMBER_STATE_RUNNING for m in instance.members)
        and sum(m.role == types_pb2.ROLE_MASTER for m in instance.members) == 1
    )


def master_of(instance: types_pb2.Instance) -> types_pb2.Member:
    masters = [m for m in instance.members if m.role == types_pb2.ROLE_MASTER]
    assert len(masters) == 1, f"expected one master, got {[m.id for m in masters]}"
    return masters[0]


@pytest_asyncio.fixture
async def suite(
    state_service: Any, local_cluster: Any, offers_service: Any, gateway: Any
) -> AsyncIterator[Suite]:
    async with _suite(state_service, local_cluster, offers_service, gateway) as running:
        yield running


#: The implementations of the Redis workload the ``redis_suite`` fixture runs a test against.
REDIS_IMPLEMENTATIONS = ["python", "node"]


@pytest_asyncio.fixture(params=REDIS_IMPLEMENTATIONS)
async def redis_suite(
    request: pytest.FixtureRequest,
    state_service: Any,
    local_cluster: Any,
    offers_service: Any,
    gateway: Any,
    tmp_path: Path,
) -> AsyncIterator[Suite]:
    """The suite with one implementation of the Redis workload: ``python`` (in-process, workload
    ``redis``) or ``node`` (``services/redis-node`` as its own process, workload ``redis-node``)."""
    node = request.param == "node"
    async with _suite(
        state_service, local_cluster, offers_service, gateway, node_logs=tmp_path if node else None
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def _suite(
    state_service: Any,
    local_cluster: Any,
    offers_service: Any,
    gateway: Any,
    node_logs: Path | None = None,
) -> AsyncIterator[Suite]:
    """The suite around the Python Redis workload, or the Node.js one (its log in ``node_logs``)."""
    client = StateClient(state_service.endpoint)
    await client.wait_ready()
    redis: RedisService | NodeWorkload
    if node_logs is not None:
        redis = redis_node(state_service.endpoint, node_logs)
        await redis.start()
        await redis.wait_registered(client, REDIS_NODE_NAME)
    else:
        redis = RedisService(state_service.endpoint)
        await redis.start()
        await redis.running.registration.wait_registered()
    lifecycle = LifecycleRunner(state_service.endpoint, offers_service.endpoint)
    await lifecycle.start()
    await offers_service.wait_subscribed()
    channel = grpc.aio.insecure_channel(gateway.endpoint, options=channel_options())
    running = Suite(
        state=state_service,
        cluster=local_cluster,
        offers=offers_service,
        lifecycle=lifecycle,
        gateway=gateway,
        redis=redis,
        client=client,
        channel=channel,
        workload=REDIS_NODE_NAME if node_logs is not None else "redis",
    )
    try:
        yield running
    finally:
        await delete_everything(running)
        await channel.close()
        await lifecycle.stop()
        await redis.stop()
        await client.close()


async def delete_everything(running: Suite, timeout: float = 60.0) -> None:
    """Delete every instance left (through the gateway) so no member outlives the test."""
    if not running.lifecycle.running:
        await running.lifecycle.start()
    records, _ = await running.client.list(spb.KIND_INSTANCE)
    for record in records:
        with contextlib.suppress(grpc.RpcError):
            await running.api.DeleteInstance(ipb.DeleteInstanceRequest(name=record.key.name))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left, _ = await running.client.list(spb.KIND_INSTANCE)
        if not left:
            return
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def workload_in_suite(running: Suite, servicer: WorkloadBase) -> AsyncIterator[Suite]:
    """The suite plus one more workload service (``servicer``, with its settings' state endpoint
    set to the suite's), registered before the body runs; afterwards every instance is deleted
    while the workload service still answers, then the service stops."""
    workload = await start_workload(servicer, servicer.settings)
    assert workload.registration is not None
    await asyncio.wait_for(workload.registration.wait_registered(), 30)
    try:
        yield running
    finally:
        await delete_everything(running)
        await workload.stop(grace_seconds=0.2)


# --- lifecycle and offers with standbys, as processes ------------------------------------------------


def lifecycle_processes(
    state_endpoint: str, offers_endpoint: str, folder: Path, replicas: int = 2, **overrides: Any
) -> Replicas:
    """``replicas`` lifecycle processes (lifecycle-1, lifecycle-2, ...) on free ports, not started.
    ``offers_endpoint`` is only the fallback: each finds the offers leader from its lease."""
    processes = []
    for index in range(1, replicas + 1):
        port = free_port()
        settings = {
            "listen": f"127.0.0.1:{port}",
            "state_endpoint": state_endpoint,
            "offers_endpoint": offers_endpoint,
            **TEST_SETTINGS,
            **overrides,
        }
        env = env_of("STATEFUL_LIFECYCLE_", settings)
        processes.append(ServiceProcess(f"lifecycle-{index}", "mesos_stateful.lifecycle", env, folder, port))
    return Replicas("lifecycle", processes)


@pytest_asyncio.fixture
async def standby_suite(
    state_service: Any, local_cluster: Any, gateway: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Suite]:
    """The suite with two lifecycle and two offers processes (leader + standby each); the first
    of each is started first, so it leads. When the test fails, the end of every process's log is
    printed (shown with the failure)."""
    client = StateClient(state_service.endpoint)
    await client.wait_ready()
    redis = RedisService(state_service.endpoint)
    await redis.start()
    await redis.running.registration.wait_registered()
    folder = tmp_path / "replicas"
    offers = offers_processes(state_service.endpoint, local_cluster.master_address, folder)
    lifecycle = lifecycle_processes(state_service.endpoint, offers.processes[0].endpoint, folder)
    channel = grpc.aio.insecure_channel(gateway.endpoint, options=channel_options())
    running = Suite(
        state=state_service,
        cluster=local_cluster,
        offers=offers,
        lifecycle=lifecycle,
        gateway=gateway,
        redis=redis,
        client=client,
        channel=channel,
    )
    try:
        for group in (offers, lifecycle):
            first = group.processes[0]
            first.start()
            await first.wait_serving()
            await group.wait_leader(client, other_than=None)
            await group.start()
        await wait_offers_subscribed(client, offers)
        yield running
    finally:
        if reports.failed(request):
            for process in [*offers.processes, *lifecycle.processes]:
                print(f"--- log of {process.name} (end)\n{process.log_text()[-8000:]}")
        try:
            await delete_everything(running)
        finally:
            await channel.close()
            await lifecycle.stop()
            await offers.stop()
            await redis.stop()
            await client.close()


async def wait_offers_subscribed(client: StateClient, offers: Replicas, timeout: float = 60.0) -> None:
    """Until the offers leader says it is subscribed to Mesos (as its stored framework)."""
    from mesos_stateful.api.stateful.v1 import offer_service_pb2 as opb
    from mesos_stateful.api.stateful.v1 import offer_service_pb2_grpc as opb_grpc

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        leader = await offers.leader(client)
        if leader is not None and leader.running:
            async with grpc.aio.insecure_channel(leader.endpoint, options=channel_options()) as channel:
                try:
                    last = await opb_grpc.OfferServiceStub(channel).GetCluster(
                        opb.GetClusterRequest(), timeout=2
                    )
                    if last.subscribed:
                        return
                except grpc.aio.AioRpcError as error:
                    last = error
        await asyncio.sleep(0.1)
    raise AssertionError(f"offers leader not subscribed in {timeout}s; last: {last}")


# --- maintenance (Mesos docs/maintenance.md) --------------------------------------------------------


def machine_of(running: Suite, agent_id: str) -> dict[str, str]:
    """The ``mesos.v1.MachineID`` JSON of the local-cluster agent with that id (its hostname and
    ip, as the master matches a schedule's machines to agents)."""
    agent = next((a for a in running.cluster.agents if a.id == agent_id), None)
    if agent is None:
        raise AssertionError(f"no agent {agent_id} in the local cluster")
    return {"hostname": agent.hostname, "ip": agent.ip}


def schedule_maintenance(
    running: Suite, agent_ids: list[str], start: float, duration_seconds: float = 3600.0
) -> dict[str, Any]:
    """``UPDATE_MAINTENANCE_SCHEDULE`` on the local cluster's master: one window taking the
    machines of these agents down at ``start`` (epoch seconds) for ``duration_seconds``; they go
    DRAINING and the frameworks with tasks there get inverse offers. Returns the schedule
    (``mesos.v1.maintenance.Schedule`` JSON)."""
    schedule: dict[str, Any] = {
        "windows": [
            {
                "machine_ids": [machine_of(running, a) for a in agent_ids],
                "unavailability": {
                    "start": {"nanoseconds": int(start * 1e9)},
                    "duration": {"nanoseconds": int(duration_seconds * 1e9)},
                },
            }
        ]
    }

    async def update() -> None:
        running.cluster.cluster.master.update_maintenance_schedule(schedule)

    running.cluster.run(update())
    return schedule


def start_maintenance(running: Suite, agent_ids: list[str]) -> None:
    """``START_MAINTENANCE`` of the machines of these agents: they go DOWN, their agents are
    removed (their tasks TASK_LOST) as Mesos does."""
    machines = [machine_of(running, a) for a in agent_ids]

    async def start() -> None:
        running.cluster.cluster.master.start_maintenance(machines)

    running.cluster.run(start())


def maintenance_status(running: Suite) -> dict[str, Any]:
    """The master's ``mesos.v1.maintenance.ClusterStatus`` JSON (GET_MAINTENANCE_STATUS)."""

    async def get() -> dict[str, Any]:
        status: dict[str, Any] = running.cluster.cluster.master.maintenance_status()
        return status

    result: dict[str, Any] = running.cluster.run(get())
    return result


def inverse_offer_answers(running: Suite, agent_id: str) -> list[dict[str, Any]]:
    """The frameworks' answers (``InverseOfferStatus`` JSON: status ACCEPT / DECLINE / UNKNOWN) to
    the inverse offers of that agent's machine, while it is DRAINING."""
    machine = machine_of(running, agent_id)
    for draining in maintenance_status(running).get("draining_machines", []):
        mid = draining.get("id", {})
        if mid.get("hostname") == machine["hostname"] and mid.get("ip") == machine["ip"]:
            answers: list[dict[str, Any]] = draining.get("statuses", [])
            return answers
    return []
