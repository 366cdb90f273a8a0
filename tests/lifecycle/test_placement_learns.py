"""End to end (real local cluster, real redis-server, real state service): placement learns from a
failed launch. A member whose port is taken on its agent (a listener on the agent's address and
that port) is launched again on another port or agent, with the failure kept on the member; an
instance FAILED because every launch failed leaves FAILED by itself once the cause is gone.

The cluster here gives each agent a small port range (so the ports a member can get are known and
can all be taken); the listeners are bound to the agents' own addresses (127.R.R.x)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.cli import render
from mesos_stateful.testing.cluster import RunningCluster, start_local_cluster
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite, is_running

from .e2e_helpers import kill9, missing_keys, password, redis_pids, write_acknowledged

pytestmark = pytest.mark.slow

AGENTS = 2
PORTS_PER_AGENT = 3
PORT = "redis"


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    """The suite's cluster with 2 agents of 3 ports each (overrides the conftest fixture)."""
    running = start_local_cluster(tmp_path / "cluster", agents=AGENTS, agent_ports_count=PORTS_PER_AGENT)
    try:
        yield running
    finally:
        running.stop()
    left = running.leftovers()
    assert not left, f"processes left behind by executor sessions: {left}"


def agent_ports(suite: Suite) -> dict[str, list[int]]:
    """Agent address -> the ports it offers (its whole range)."""
    s = suite.cluster.cluster.settings
    result: dict[str, list[int]] = {}
    for agent in suite.cluster.agents:
        begin = s.agent_ports_begin + agent.index * s.agent_ports_step
        result[agent.ip] = list(range(begin, begin + s.agent_ports_count))
    return result


@contextlib.contextmanager
def listeners(addresses: list[tuple[str, int]]) -> Iterator[list[socket.socket]]:
    """A TCP listener on each (address, port), as another program holding the port would be."""
    held: list[socket.socket] = []
    try:
        for address in addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind(address)
            sock.listen(1)
        yield held
    finally:
        for sock in held:
            sock.close()


@contextlib.asynccontextmanager
async def listener_once_free(address: tuple[str, int], timeout: float = 5.0) -> AsyncIterator[socket.socket]:
    """A listener on ``address`` as soon as it can be bound (its owner was just killed)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past its connections' TIME_WAIT
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.bind(address)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.002)
        sock.listen(1)
        yield sock
    finally:
        sock.close()


def failures(instance: T.Instance) -> list[T.LaunchFailure]:
    return [f for m in instance.members for f in m.launch_failures]


async def test_a_taken_port_is_avoided_and_the_member_runs_elsewhere(suite: Suite) -> None:
    ranges = agent_ports(suite)
    taken = {(ip, ports[0]) for ip, ports in ranges.items()}  # the first port of every agent
    with listeners(sorted(taken)):
        started = time.monotonic()
        await suite.create("cache", 1)
        instance = await suite.wait_running("cache", 1, timeout=90)
        took = time.monotonic() - started
        [member] = instance.members
        where = (member.host, member.ports[PORT])
        assert where not in taken, f"running on a taken port {where}"
        failed = failures(instance)
        assert failed, "the member ran at once: no port was taken where it went"
        for f in failed:
            assert f.cause == T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE, f
            assert (f.host, f.ports[PORT]) in taken, f
            assert "Address already in use" in f.message, f
        # Learnt: never the same port on the same agent twice (today: 6 launches, same agent and port).
        tried = [(f.agent_id, f.ports[PORT]) for f in failed]
        assert len(tried) == len(set(tried)) <= len(taken), tried
        assert len(failed) <= len(taken)
        tasks = await suite.tasks("cache")
        assert len(tasks) == len(failed) + 1
        # What `statefulctl get` shows.
        got = (await suite.get("cache")).instance
        lines = render.launch_failure_lines(got)
        assert f"{member.id} PORT_IN_USE on {failed[-1].host}:{failed[-1].ports[PORT]} (redis)" in lines
        print(f"RUNNING on {where} after {len(failed)} failed launches, {took:.1f}s")


@contextlib.asynccontextmanager
async def every_launch_failing(suite: Suite) -> AsyncIterator[None]:
    """Inside: every port of every agent is taken, so every launch fails; the lifecycle (restarted
    for it) gives a member 2 attempts and retries a failed launch 4 s later by itself."""
    assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
    suite.lifecycle.overrides.update({"max_launch_attempts": 2, "launch_failure_retry_seconds": 4.0})
    await suite.lifecycle.restart()
    every_port = sorted((ip, port) for ip, ports in agent_ports(suite).items() for port in ports)
    with listeners(every_port):
        yield


async def test_failed_by_launch_failures_recovers_by_itself_once_the_ports_are_free(suite: Suite) -> None:
    async with every_launch_failing(suite):
        await suite.create("cache", 1)
        instance = await suite.wait_instance(
            "cache", lambda i: i.phase == T.INSTANCE_PHASE_FAILED, 90, "FAILED after every launch failed"
        )
        failed = failures(instance)
        assert failed and all(f.cause == T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE for f in failed), failed
        assert "tried again by itself" in instance.last_error, instance.last_error
        freed = time.monotonic()
    # The ports are free now: no person acts, the instance gets out of FAILED by itself.
    instance = await suite.wait_running("cache", 1, timeout=60)
    took = time.monotonic() - freed
    [member] = instance.members
    assert member.launch_failures, "the reason must stay on the member"
    assert member.launch_failures[-1].cause == T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE
    tasks = await suite.tasks("cache")
    assert tasks[member.task_id].state == T.TASK_STATE_RUNNING
    print(f"recovered {took:.1f}s after the ports were freed ({len(member.launch_failures)} failures kept)")


async def test_a_member_with_data_restarts_on_its_volume_on_another_port(suite: Suite) -> None:
    """Data-safety rule 4: a member whose volume holds data never leaves its agent because a port
    was taken there; it restarts in place, on another port of that agent."""
    await suite.create("cache", 1)
    instance = await suite.wait_running("cache", 1)
    [before] = instance.members
    secret = await password(suite, "cache")
    written = await write_acknowledged(before, secret, 200, replicas=0)
    address = (before.host, before.ports[PORT])
    pids = redis_pids(suite, [before])
    assert len(pids) == 1
    kill9(pids)
    async with listener_once_free(address):  # another program takes its port meanwhile

        def back(i: T.Instance) -> bool:
            return is_running(i, 1) and i.members[0].incarnation > before.incarnation

        after = await suite.wait_instance("cache", back, 120, "the member running again")
        [member] = after.members
        failed = [(f.cause, f.host, f.ports[PORT]) for f in member.launch_failures]
        assert (T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE, *address) in failed, (
            f"the relaunch did not meet the taken port (it won the race?): {failed}"
        )
        assert member.volume.persistence_id == before.volume.persistence_id
        assert member.volume.agent_id == before.volume.agent_id and member.host == before.host
        assert member.ports[PORT] != address[1]
        assert await missing_keys(member, secret, written) == [], "data lost on the restart"
