"""Leader election (services/mesos_stateful/clients/leadership.py) with a real etcd and real state services.

Every test records the leading intervals of all its electors (from lead() being called to its
task having finished) and checks that they never overlap and that terms strictly increase.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.leadership import LeaderElector, Leadership, LeadershipSettings, find_leader
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.state import StateService, etcd, state_service  # noqa: F401

ROLE = "lifecycle"
SETTINGS = LeadershipSettings()  # the defaults the services use: 1.5 / 1.0 / 0.2 s
MARGIN = 0.5  # scheduling slack on a loaded 2-core machine, seconds


@dataclass
class Interval:
    name: str
    term: int
    start: float
    end: float | None = None


@dataclass
class Candidate:
    name: str
    client: StateClient
    elector: LeaderElector
    task: asyncio.Task[None]
    writes: asyncio.Queue[tuple[str, asyncio.Future[None]]] = field(default_factory=asyncio.Queue)


class Election:
    """Electors for ROLE, each with its own StateClient, and the record of who led when."""

    def __init__(self) -> None:
        self.intervals: list[Interval] = []
        self.candidates: dict[str, Candidate] = {}

    def lead_for(
        self, name: str, queue: asyncio.Queue[tuple[str, asyncio.Future[None]]]
    ) -> Callable[[Leadership], Awaitable[None]]:
        async def lead(leadership: Leadership) -> None:
            interval = Interval(name, leadership.term, time.monotonic())
            self.intervals.append(interval)
            candidate = self.candidates[name]
            try:
                while True:  # act as the leader: make the fenced writes the test asks for
                    workload, done = await queue.get()
                    try:
                        await candidate.client.put(types_pb2.Workload(name=workload, endpoint="x:1"))
                    except BaseException as error:
                        done.set_exception(error)
                        raise
                    done.set_result(None)
            finally:
                interval.end = time.monotonic()

        return lead

    def start(self, name: str, endpoint: str) -> Candidate:
        client = StateClient(endpoint)
        elector = LeaderElector(client, ROLE, f"{name}.test:1", SETTINGS, identity=name)
        queue: asyncio.Queue[tuple[str, asyncio.Future[None]]] = asyncio.Queue()
        task = asyncio.create_task(elector.run(self.lead_for(name, queue)))
        candidate = Candidate(name, client, elector, task, queue)
        self.candidates[name] = candidate
        return candidate

    async def stop(self, name: str) -> None:
        candidate = self.candidates[name]
        candidate.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await candidate.task

    async def close(self) -> None:
        for candidate in self.candidates.values():
            candidate.task.cancel()
            with contextlib.suppress(BaseException):  # already stopped, crashed or failed
                await candidate.task
            await candidate.client.close()

    def leaders(self) -> list[str]:
        return [n for n, c in self.candidates.items() if c.elector.leadership is not None]

    async def wait_leader(self, timeout: float, among: tuple[str, ...] | None = None) -> tuple[str, float]:
        """The one leader (and when it was seen leading), polled every 10 ms."""
        deadline = time.monotonic() + timeout
        while True:
            leaders = [n for n in self.leaders() if among is None or n in among]
            if leaders:
                assert len(leaders) == 1, leaders
                return leaders[0], time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"no leader among {among or list(self.candidates)} within {timeout} s")
            await asyncio.sleep(0.01)

    async def write(self, name: str, workload: str) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.candidates[name].writes.put((workload, done))
        await asyncio.wait_for(done, 10)

    def check(self) -> None:
        """Never two leaders at once; terms strictly increase."""
        ordered = sorted(self.intervals, key=lambda i: i.start)
        for earlier, later in itertools.pairwise(ordered):
            assert earlier.end is not None and earlier.end <= later.start, (earlier, later)
            assert earlier.term < later.term, (earlier, later)


@pytest.fixture
async def election() -> AsyncIterator[Election]:
    running = Election()
    try:
        yield running
    finally:
        await running.close()
    running.check()


def test_settings_invariants() -> None:
    assert SETTINGS.takeover_bound_seconds == pytest.approx(1.7)
    for bad in (
        {"retry_period_seconds": 1.0},
        {"renew_deadline_seconds": 1.5},
        {"renew_deadline_seconds": 2.0},
        {"retry_period_seconds": 0.0},
    ):
        with pytest.raises(ValueError, match=r"retry_period_seconds|greater than 0"):
            LeadershipSettings(**bad)


async def test_one_leads_and_a_release_hands_over_at_once(
    election: Election,
    state_service: StateService,  # noqa: F811
) -> None:
    election.start("a", state_service.endpoint)
    first, _ = await election.wait_leader(10)
    election.start("b", state_service.endpoint)
    # The other stays a standby while the leader renews (well past a lease duration).
    until = time.monotonic() + 2 * SETTINGS.lease_duration_seconds
    while time.monotonic() < until:
        assert election.leaders() == [first]
        await asyncio.sleep(0.05)
    await election.write(first, "by-first")
    async with StateClient(state_service.endpoint) as observer:
        lease = await find_leader(observer, ROLE)
        assert lease is not None and lease.holder == first and lease.address == f"{first}.test:1"
        term = lease.term

        stopped = time.monotonic()
        await election.stop(first)  # graceful: the lease is released
        second, seen = await election.wait_leader(SETTINGS.retry_period_seconds + MARGIN)
        assert second != first and seen - stopped < SETTINGS.retry_period_seconds + MARGIN
        lease = await find_leader(observer, ROLE)
        assert lease is not None and (lease.holder, lease.term) == (second, term + 1)
    await election.write(second, "by-second")
    election.check()


async def test_a_crashed_leader_is_replaced_within_the_bound(
    election: Election,
    state_service: StateService,  # noqa: F811
) -> None:
    for name in ("a", "b"):
        election.start(name, state_service.endpoint)
    names = ["a", "b", "c", "d"]
    for round_ in range(2):
        leader, _ = await election.wait_leader(10)
        await asyncio.sleep(0.5)  # a few renewals
        crashed = time.monotonic()
        election.candidates[leader].elector.crash()  # no release, as kill -9
        with pytest.raises(asyncio.CancelledError):
            await election.candidates[leader].task
        others = tuple(
            n for n in election.candidates if n != leader and not election.candidates[n].task.done()
        )
        successor, seen = await election.wait_leader(SETTINGS.takeover_bound_seconds + MARGIN, among=others)
        took = seen - crashed
        # Never before the lease could have expired (the last renewal was at most a retry period
        # and one call before the crash), and within lease_duration + retry_period + margin.
        assert SETTINGS.lease_duration_seconds - SETTINGS.retry_period_seconds - 0.1 < took, took
        assert took < SETTINGS.takeover_bound_seconds + MARGIN, took
        await election.write(successor, f"round-{round_}")
        election.start(names[2 + round_], state_service.endpoint)  # a fresh standby
    election.check()
    terms = [i.term for i in sorted(election.intervals, key=lambda i: i.start)]
    assert len(terms) == 3 and terms == sorted(set(terms))


class PausableProxy:
    """A TCP proxy in front of a state service; ``pause()`` holds every byte (calls hang, as with a
    frozen or cut-off state service), ``resume()`` lets them through."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def close(self) -> None:
        self.resume()
        if self.server is not None:
            self.server.close()


async def test_a_leader_that_cannot_renew_stops_before_the_takeover(
    election: Election,
    etcd: EtcdProcess,  # noqa: F811
) -> None:
    """The leader's state calls hang (a proxy holds them) or fail (its state service stopped):
    it cancels its lead before the standby takes over, and its late writes are refused."""
    own = StateService(etcd.endpoint)
    shared = StateService(etcd.endpoint)
    await own.start()
    await shared.start()
    proxy = PausableProxy(own.port)
    await proxy.start()
    try:
        election.start("a", f"127.0.0.1:{proxy.port}")
        assert (await election.wait_leader(10))[0] == "a"
        election.start("b", shared.endpoint)
        await asyncio.sleep(2 * SETTINGS.lease_duration_seconds)
        assert election.leaders() == ["a"]
        a_term = election.candidates["a"].elector.leadership.term  # type: ignore[union-attr]

        frozen = time.monotonic()
        proxy.pause()
        _, seen = await election.wait_leader(SETTINGS.takeover_bound_seconds + 2 * MARGIN, among=("b",))
        a_interval = next(i for i in election.intervals if i.name == "a")
        b_interval = next(i for i in election.intervals if i.name == "b")
        assert a_interval.end is not None and a_interval.end < b_interval.start
        # a stopped within its renew deadline (from the start of its last renewal, at most a retry
        # period before the freeze) plus scheduling slack.
        assert a_interval.end - frozen < SETTINGS.renew_deadline_seconds + MARGIN
        assert seen - frozen < SETTINGS.takeover_bound_seconds + 2 * MARGIN

        # a's late writes in its old term are refused, through any state service.
        async with StateClient(shared.endpoint) as late:
            late.fence = pb.LeaderFence(role=ROLE, term=a_term)
            with pytest.raises(errors.NotLeader, match=f"term {a_term} of lifecycle is over"):
                await late.put(types_pb2.Workload(name="late", endpoint="x:1"))
        await election.write("b", "by-b")

        # a comes back as a standby (b keeps leading); then b's state service is stopped: b's
        # renewals fail fast, b stops, a takes over in a new term.
        proxy.resume()
        await asyncio.sleep(SETTINGS.lease_duration_seconds)
        assert election.leaders() == ["b"]
        stopped = time.monotonic()
        await shared.stop()
        again, seen = await election.wait_leader(SETTINGS.takeover_bound_seconds + 2 * MARGIN, among=("a",))
        assert again == "a"
        b_interval = next(i for i in election.intervals if i.name == "b")
        assert (
            b_interval.end is not None and b_interval.end - stopped < SETTINGS.renew_deadline_seconds + MARGIN
        )
        await election.write("a", "by-a-again")
        election.check()
        assert [i.name for i in sorted(election.intervals, key=lambda i: i.start)] == ["a", "b", "a"]
    finally:
        await election.close()
        await proxy.close()
        await shared.stop()
        await own.stop()


async def test_a_refused_write_ends_the_term(election: Election, state_service: StateService) -> None:  # noqa: F811
    """Another term began behind the leader's back (a record written directly): its next fenced
    write raises NotLeader, its lead is cancelled and it becomes a standby of the new holder."""
    candidate = election.start("a", state_service.endpoint)
    await election.wait_leader(10)
    leadership = candidate.elector.leadership
    assert leadership is not None
    async with StateClient(state_service.endpoint) as other:
        record = await other.get(pb.KIND_LEADER, ROLE)
        usurper = types_pb2.LeaderLease(
            holder="z", address="z:1", term=leadership.term + 1, lease_duration_seconds=60.0
        )
        await other.put(usurper, record.mod_revision, name=ROLE, fenced=False)
        with pytest.raises(errors.NotLeader):
            await election.write("a", "after-usurped")
        await asyncio.wait_for(leadership.lost.wait(), 1)
        assert candidate.client.fence is None
        # a stays a standby: z's lease (60 s) is valid by a's clock.
        await asyncio.sleep(1.0)
        assert election.leaders() == []
        lease = await find_leader(other, ROLE)
        assert lease is not None and lease.holder == "z"


async def test_lead_failing_ends_the_term_and_a_new_term_begins(
    state_service: StateService,  # noqa: F811
) -> None:
    """lead() raising ends its term (fence cleared, lease released); the elector campaigns again
    and leads in a higher term."""
    async with StateClient(state_service.endpoint) as client:
        elector = LeaderElector(client, ROLE, "solo.test:1", SETTINGS, identity="solo")
        seen: list[tuple[int, pb.LeaderFence | None]] = []
        second_term = asyncio.Event()

        async def lead(leadership: Leadership) -> None:
            assert elector.leadership is leadership
            seen.append((leadership.term, client.fence))
            if len(seen) == 1:
                raise RuntimeError("lead failed")
            second_term.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(elector.run(lead))
        try:
            await asyncio.wait_for(second_term.wait(), 10)
            assert [term for term, _ in seen] == [seen[0][0], seen[0][0] + 1]
            assert all(fence == pb.LeaderFence(role=ROLE, term=term) for term, fence in seen)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert elector.leadership is None and client.fence is None and client.on_fence_lost is None
        record = await client.get(pb.KIND_LEADER, ROLE)
        assert (record.leader.holder, record.leader.term) == ("", seen[1][0])  # released on shutdown


CHILD = """
import asyncio, json, sys, time
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.leadership import LeaderElector, LeadershipSettings
from mesos_stateful.clients.state import StateClient

async def main(name, endpoint):
    client = StateClient(endpoint)
    elector = LeaderElector(client, "lifecycle", name + ":1", LeadershipSettings(), identity=name)

    async def lead(leadership):
        await client.put(types_pb2.Workload(name="by-" + name, endpoint="x:1"))
        print(json.dumps({"term": leadership.term, "t": time.monotonic()}), flush=True)
        await asyncio.Event().wait()

    await elector.run(lead)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_leader_process_killed_is_replaced_within_the_bound(
    state_service: StateService,  # noqa: F811
) -> None:
    """Two elector processes; SIGKILL of the leader's (no release): the other leads (and its first
    fenced write is applied) within lease_duration + retry_period + margin; the dead term's writes
    are refused."""
    procs = {
        name: await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, name, state_service.endpoint, stdout=asyncio.subprocess.PIPE
        )
        for name in ("p", "q")
    }
    try:
        async with StateClient(state_service.endpoint) as observer:
            deadline = time.monotonic() + 30
            lease = await find_leader(observer, ROLE)
            while lease is None or await observer.find(pb.KIND_WORKLOAD, f"by-{lease.holder}") is None:
                assert time.monotonic() < deadline, "no leader process within 30 s"
                await asyncio.sleep(0.05)
                lease = await find_leader(observer, ROLE)
            leader, standby = lease.holder, "q" if lease.holder == "p" else "p"
            await asyncio.sleep(2 * SETTINGS.lease_duration_seconds)  # the standby watches the renewals
            killed = time.monotonic()
            procs[leader].kill()
            await procs[leader].wait()
            stdout = procs[standby].stdout
            assert stdout is not None
            line = await asyncio.wait_for(stdout.readline(), SETTINGS.takeover_bound_seconds + 5)
            acting = json.loads(line)
            assert acting["term"] == lease.term + 1
            assert acting["t"] - killed < SETTINGS.takeover_bound_seconds + MARGIN, acting["t"] - killed
            assert await observer.find(pb.KIND_WORKLOAD, f"by-{standby}") is not None
            observer.fence = pb.LeaderFence(role=ROLE, term=lease.term)
            with pytest.raises(errors.NotLeader, match=f"the leader is now term {lease.term + 1}"):
                await observer.put(types_pb2.Workload(name="late", endpoint="x:1"))
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
