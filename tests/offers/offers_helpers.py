"""Helpers of the offers tests: launch specs of real processes, polling the state service."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.grpc_errors import field_violations as field_violations  # re-exported for tests
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.offers import OffersService
from mesos_stateful.testing.poll import eventually

RUNNING = types_pb2.TASK_STATE_RUNNING


def web_spec(
    instance: str,
    ordinal: int,
    incarnation: int = 1,
    cpus: float = 0.25,
    mem_mb: int = 64,
    max_per_agent: int = 0,
    **attributes: str,
) -> types_pb2.LaunchSpec:
    """A member running ``python -m http.server`` on ${HOST}:${PORT_WEB}, ready when it accepts."""
    member = f"{instance}-{ordinal}"
    return types_pb2.LaunchSpec(
        instance=instance,
        member_id=member,
        task_id=f"{member}.{incarnation}",
        workload="test",
        role=types_pb2.ROLE_PEER,
        resources=types_pb2.Resources(cpus=cpus, mem_mb=mem_mb),
        port_names=["web"],
        argv=[sys.executable, "-m", "http.server", "${PORT_WEB}", "--bind", "${HOST}"],
        readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="web"), interval_ms=100),
        kill_grace_seconds=2,
        placement=types_pb2.Placement(max_members_per_agent=max_per_agent, required_attributes=attributes),
    )


async def launch(offers: OffersService, spec: types_pb2.LaunchSpec) -> types_pb2.Task:
    assert offers.stub is not None
    response = await offers.stub.Launch(api.LaunchRequest(launch=spec))
    return response.task


async def wait_task(
    state: StateClient,
    task_id: str,
    condition: Callable[[types_pb2.Task], bool],
    timeout: float = 60.0,
) -> types_pb2.Task:
    """The task record once ``condition`` holds (polling the state service)."""
    deadline = time.monotonic() + timeout
    last: types_pb2.Task | None = None
    while True:
        record = await state.find(spb.KIND_TASK, task_id)
        if record is not None:
            last = record.task
            if condition(last):
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id}: condition not met in {timeout}s; last record: {last}")
        await asyncio.sleep(0.1)


def in_state(*states: int) -> Callable[[types_pb2.Task], bool]:
    return lambda task: task.state in states


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


async def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    await eventually(condition, what, timeout)


def executor_sessions(cluster: RunningCluster) -> dict[str, tuple[int, int]]:
    """Executor id (= task id) -> (session id, executor pid) of every live executor."""

    async def collect() -> dict[str, tuple[int, int]]:
        return {
            ex.executor_id: (ex.sid, ex.proc.pid)
            for agent in cluster.agents
            for ex in agent.executors.values()
            if ex.sid is not None and ex.proc is not None and ex.state != "TERMINATED"
        }

    return cluster.run(collect())


def member_pids(cluster: RunningCluster, task_id: str) -> set[int]:
    """Pids of the member processes of a task (its executor's session, minus the executor)."""
    sid, executor_pid = executor_sessions(cluster)[task_id]
    return set(session_members(sid)) - {executor_pid}


def framework_state(cluster: RunningCluster, framework_id: str) -> dict[str, Any]:
    return next(f for f in cluster.state()["frameworks"] if f["id"] == framework_id)
