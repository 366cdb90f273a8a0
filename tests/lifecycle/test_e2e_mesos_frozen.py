"""A failover while Mesos is frozen (issue 10 follow-up, DESIGN rule 2: a Mesos kill is not a fence).

The local cluster (Mesos master and its agents) runs as a process of its own; ``kill -STOP`` of it
freezes Mesos: its members and executors keep running, but no call to the master is answered and
no status update flows. Then the master's redis-server is killed with -9. Mesos cannot report it,
so only lifecycle's probe finds it; the fence's Mesos kill cannot be answered either. The fence
must go on without it (the kill is best-effort, ``fence_kill_timeout_seconds``): the workload's
Fence self-fences the unreachable old master and a replica holding every acknowledged write is
promoted while the cluster is still stopped. After SIGCONT the instance heals: the old member is
relaunched as a replica of the new master.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import pytest_asyncio
from redis import exceptions as redis_errors

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.channels import channel_options
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.testing.lifecycle import (
    LifecycleRunner,
    RedisService,
    Suite,
    delete_everything,
    master_of,
)
from mesos_stateful.testing.offers import OffersService
from mesos_stateful.testing.ports import free_port
from mesos_stateful.testing.workloads import wait_for
from mesos_stateful.workloads.redis.replication import self_fence_seconds
from mesos_stateful.workloads.redis.settings import RedisSettings

from .e2e_helpers import (
    AcknowledgedWriter,
    RoleWatch,
    missing_keys,
    password,
    redis_pids,
    server_roles,
    write_acknowledged,
)

pytestmark = pytest.mark.slow

# Detection (a few probes) + the fence's bounded Mesos kill + the Redis self-fence bound, with
# generous slack for a loaded machine: without the fix, no promotion came before Mesos resumed.
SELF_FENCE_SECONDS = self_fence_seconds(RedisSettings.model_fields["min_replicas_max_lag"].default)
FENCE_KILL_SECONDS = LifecycleSettings.model_fields["fence_kill_timeout_seconds"].default
PROMOTION_DEADLINE = max(20.0, SELF_FENCE_SECONDS + FENCE_KILL_SECONDS + 10.0)
HEAL_DEADLINE = 120.0


class FrozenCluster:
    """The local cluster as a process of its own (own session, free port, agent addresses and
    work dir of its own) that a test can SIGSTOP / SIGCONT. ``cluster.settings.work_dir`` is
    where the e2e helpers look for its members' sandboxes."""

    def __init__(self, folder: Path, agents: int = 3) -> None:
        self.folder = folder
        self.work_dir = (folder / "cluster").resolve()
        self.port = free_port()
        self.agents = agents
        self.proc: subprocess.Popen[bytes] | None = None
        self.cluster = SimpleNamespace(settings=SimpleNamespace(work_dir=str(self.work_dir)))

    @property
    def master_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "mesos_stateful.localcluster", "serve"]
        argv += ["--listen", self.master_address, "--work-dir", str(self.work_dir)]
        argv += ["--agents", str(self.agents), "--allocation-interval", "0.2"]
        argv += ["--executor-shutdown-grace", "2", "--kill-grace", "2"]
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

    def log_text(self) -> str:
        try:
            return (self.folder / "cluster.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def leftovers(self) -> list[int]:
        """pids of live processes running in (or writing to) this cluster's work dir."""
        root = str(self.work_dir)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            places = []
            for link in ("cwd", "fd/1", "fd/2"):
                with contextlib.suppress(OSError):
                    places.append(os.readlink(entry / link))
            if any(p.startswith(root) for p in places):
                with contextlib.suppress(OSError):
                    if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
                        found.append(int(entry.name))
        return found


@pytest.fixture
def frozen_cluster(tmp_path: Path) -> Iterator[FrozenCluster]:
    cluster = FrozenCluster(tmp_path / "mesos")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        left = cluster.leftovers()
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind in the cluster's work dir: {left}"


@pytest_asyncio.fixture
async def frozen_suite(
    state_service: Any, frozen_cluster: FrozenCluster, gateway: Any
) -> AsyncIterator[Suite]:
    """The suite in this process (offers, lifecycle, gateway, Redis workload) over a cluster
    process."""
    client = StateClient(state_service.endpoint)
    await client.wait_ready()
    redis = RedisService(state_service.endpoint)
    await redis.start()
    await redis.running.registration.wait_registered()
    offers = OffersService(state_service.endpoint, frozen_cluster.master_address)
    await offers.start()
    lifecycle = LifecycleRunner(state_service.endpoint, offers.endpoint)
    await lifecycle.start()
    await offers.wait_subscribed(60)
    channel = grpc.aio.insecure_channel(gateway.endpoint, options=channel_options())
    running = Suite(
        state=state_service,
        cluster=frozen_cluster,
        offers=offers,
        lifecycle=lifecycle,
        gateway=gateway,
        redis=redis,
        client=client,
        channel=channel,
    )
    try:
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            frozen_cluster.signal(signal.SIGCONT)
        try:
            await delete_everything(running, timeout=90)
        finally:
            await channel.close()
            await lifecycle.stop()
            await offers.stop()
            await redis.stop()
            await client.close()


def _member(instance: T.Instance, member_id: str) -> T.Member:
    return next(m for m in instance.members if m.id == member_id)


async def test_master_killed_while_mesos_is_frozen_is_failed_over_before_mesos_resumes(
    frozen_suite: Suite,
) -> None:
    suite = frozen_suite
    cluster: FrozenCluster = suite.cluster
    await suite.create("frozen", 3)
    instance = await suite.wait_running("frozen", 3)
    secret = await password(suite, "frozen")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 200, replicas=1)
    pids = redis_pids(suite, [old])
    assert len(pids) == 1, pids
    roles = RoleWatch(suite.client, "frozen")
    await roles.start()
    writer = AcknowledgedWriter(old, secret, "during")
    writer.start()
    resumed = False
    try:
        await wait_for(lambda: _true(len(writer.acknowledged) >= 20), 30, what="acknowledged writes")
        assert state_of(cluster) == "S" or state_of(cluster) == "R"
        cluster.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)

        promoted = await suite.wait_instance(
            "frozen",
            lambda i: any(m.role == T.ROLE_MASTER and m.id != old.id for m in i.members),
            PROMOTION_DEADLINE,
            "a replica promoted while Mesos is frozen",
        )
        took = time.monotonic() - frozen_at
        # Still frozen: the promotion did not wait for Mesos.
        assert cluster.proc is not None and cluster.proc.poll() is None
        assert state_of(cluster) == "T", f"the cluster process is not stopped ({state_of(cluster)})"
        new = master_of(promoted)
        await writer.stop()
        assert writer.acknowledged, "no write acknowledged before the kill"
        assert await missing_keys(new, secret, written) == []
        assert await missing_keys(new, secret, writer.acknowledged) == []
        # The fence's outcome: not Mesos's word (it said nothing), the workload's.
        fence = next(s for s in promoted.plan.steps if s.name == f"fence {old.id}")
        assert fence.fence.method in (T.FENCE_METHOD_SELF_FENCED, T.FENCE_METHOD_DEMOTED), fence
        # The new master takes acknowledged writes while Mesos is still frozen (once a replica
        # follows it: re-pointing is the workload's, not Mesos's).
        later: dict[str, str] = {}

        async def new_master_acknowledges() -> bool:
            try:
                later.update(await write_acknowledged(new, secret, 50, replicas=1))
            except (AssertionError, OSError, redis_errors.RedisError):
                return False
            return True

        await wait_for(
            new_master_acknowledges, PROMOTION_DEADLINE, 0.2, "writes acknowledged on the new master"
        )
        assert state_of(cluster) == "T", "Mesos resumed before the new master took writes"

        cluster.signal(signal.SIGCONT)
        resumed = True
        healed = await suite.wait_instance(
            "frozen",
            lambda i: (
                i.phase == T.INSTANCE_PHASE_RUNNING
                and len(i.members) == 3
                and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
                and [m.id for m in i.members if m.role == T.ROLE_MASTER] == [new.id]
                and _member(i, old.id).role == T.ROLE_SLAVE
                and _member(i, old.id).incarnation > old.incarnation
            ),
            HEAL_DEADLINE,
            "healed: the old member relaunched as a replica of the new master",
        )
    finally:
        if not resumed:
            with contextlib.suppress(ProcessLookupError):
                cluster.signal(signal.SIGCONT)
        await writer.stop()
        await roles.stop()

    assert roles.max_masters == 1, roles.roles
    assert roles.promotions == [new.id]
    assert master_of(healed).id == new.id

    async def one_master() -> bool:
        answers = await server_roles(suite, "frozen", secret)
        masters = [a for a, info in answers.items() if info.get("role") == "master"]
        return len(answers) == 3 and masters == [f"{new.host}:{new.ports['redis']}"]

    await wait_for(one_master, HEAL_DEADLINE, what="one redis-server master, followed by the two others")
    for keys in (written, writer.acknowledged, later):
        assert await missing_keys(master_of(healed), secret, keys) == []
    print(
        f"\nMesos frozen, master killed: promoted {new.id} after {took:.2f}s "
        f"(deadline {PROMOTION_DEADLINE:.0f}s)"
    )


async def _true(value: bool) -> bool:
    return value


def state_of(cluster: FrozenCluster) -> str:
    """The cluster process's state letter (T: stopped)."""
    assert cluster.proc is not None
    return Path(f"/proc/{cluster.proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
