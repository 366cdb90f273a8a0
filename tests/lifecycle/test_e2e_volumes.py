"""Data on persistent volumes, end to end with real redis-server members on the local cluster:
every member killed at once (or the master first and the replicas a moment later, or the replicas
stopped and then killed by their health checks) → all restart in place on their volumes, the most
advanced leads, nothing acknowledged is lost; a member whose agent is gone for good is replaced and
resyncs, and its orphaned volume is destroyed when the agent comes back; a delete leaves no
reservation and no volume."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.testing.lifecycle import LifecycleRunner, Suite, is_running, master_of
from mesos_stateful.testing.workloads import wait_for

from .e2e_helpers import kill9, missing_keys, password, redis_pids, replication_info, write_acknowledged

pytestmark = pytest.mark.slow


def volumes(instance: T.Instance) -> dict[str, tuple[str, str]]:
    """member id -> (persistence id, agent id) of its volume."""
    return {m.id: (m.volume.persistence_id, m.volume.agent_id) for m in instance.members}


def restarted(instance: T.Instance, before: dict[str, int]) -> bool:
    """RUNNING with every member ready again on a new incarnation."""
    return is_running(instance, len(before)) and all(m.incarnation > before[m.id] for m in instance.members)


def reserved(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every reserved resource on every agent of the local cluster's /master/state."""
    found: list[dict[str, Any]] = []
    for agent in state.get("slaves", []):
        for resources in (agent.get("reserved_resources_full") or {}).values():
            found.extend(resources)
    return found


def persistence_ids(state: dict[str, Any]) -> set[str]:
    return {r["disk"]["persistence"]["id"] for r in reserved(state) if "persistence" in (r.get("disk") or {})}


def volume_dirs(suite: Suite, persistence: str) -> list[Path]:
    root = Path(suite.cluster.cluster.settings.work_dir)
    return [p for p in root.rglob(persistence) if p.is_dir() and not p.is_symlink()]


async def all_keys_everywhere(instance: T.Instance, secret: str, written: dict[str, str]) -> None:
    """Every member (master and replicas, once synced) has every written key."""
    for m in instance.members:

        async def complete(member: T.Member = m) -> bool:
            try:
                return await missing_keys(member, secret, written) == []
            except Exception:
                return False

        await wait_for(complete, 60, what=f"{m.id} to hold every acknowledged key")


async def check_restarted_in_place(
    suite: Suite, name: str, before: T.Instance, secret: str, written: dict[str, str]
) -> T.Instance:
    incarnations = {m.id: m.incarnation for m in before.members}
    after = await suite.wait_instance(
        name, lambda i: restarted(i, incarnations), 180, "every member restarted and ready"
    )
    assert volumes(after) == volumes(before), "a member moved to another volume"
    assert all(m.volume.has_data for m in after.members)
    master = master_of(after)
    assert await missing_keys(master, secret, written) == [], "acknowledged writes lost"
    info = await replication_info(master, secret)
    assert info["role"] == "master"
    await all_keys_everywhere(after, secret, written)
    return after


async def test_every_member_killed_at_once_restarts_in_place_with_its_data(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    uid = plans.instance_uid(instance.created_at)
    assert all(m.volume.persistence_id == f"{m.id}.{uid}.v1" and m.volume.agent_id for m in instance.members)
    written = await write_acknowledged(master_of(instance), secret, 300, replicas=2)

    pids = redis_pids(suite, instance.members)
    assert len(pids) == 3
    # The cold start's plan, as it was last seen (a repair plan may follow it before the members
    # are checked, e.g. a replica re-pointed: the instance's plan is then that one).
    seen: dict[str, T.Plan] = {}

    async def record_plans() -> None:
        while True:
            current = await suite.instance("cache")
            if current is not None and any(s.name == "elect cache-0" for s in current.plan.steps):
                seen["cold start"] = current.plan
            await asyncio.sleep(0.05)

    recorder = asyncio.create_task(record_plans())
    try:
        kill9(pids)
        after = await check_restarted_in_place(suite, "cache", instance, secret, written)
    finally:
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
    cold = seen.get("cold start")
    assert cold is not None and cold.name == plans.RECOVERY, [s.name for s in after.plan.steps]
    elect = next(s for s in cold.steps if s.name == "elect cache-0")
    assert elect.decision.promote_member_id == master_of(after).id
    assert sorted(elect.decision.candidate_ids) == ["cache-0", "cache-1", "cache-2"]


async def test_master_then_replicas_killed_the_most_advanced_leads(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 300, replicas=1)

    kill9(redis_pids(suite, [old]))
    await suite.wait_instance(
        "cache", lambda i: i.plan.name == plans.RECOVERY, 30, "a recovery plan for the lost master"
    )
    replicas = [m for m in instance.members if m.id != old.id]
    kill9(redis_pids(suite, replicas))

    await check_restarted_in_place(suite, "cache", instance, secret, written)


async def test_stopped_replicas_killed_by_health_checks_restart_in_place(suite: Suite) -> None:
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    old = master_of(instance)
    written = await write_acknowledged(old, secret, 300, replicas=2)
    replicas = [m for m in instance.members if m.id != old.id]
    stopped = redis_pids(suite, replicas)
    assert len(stopped) == 2
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        kill9(redis_pids(suite, [old]))
        # The replicas do not answer: the failover waits for them (never skips them) until their
        # health checks kill them; then every member restarts in place.
        await check_restarted_in_place(suite, "cache", instance, secret, written)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.mark.agents(4)
async def test_member_whose_agent_is_gone_for_good_is_replaced_and_its_old_volume_destroyed(
    suite: Suite,
) -> None:
    assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
    suite.lifecycle.overrides["replace_after_seconds"] = 4.0
    await suite.lifecycle.restart()
    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    secret = await password(suite, "cache")
    written = await write_acknowledged(master_of(instance), secret, 200, replicas=2)
    victim = next(m for m in instance.members if m.role == T.ROLE_SLAVE)
    old_volume = victim.volume
    assert old_volume.persistence_id in persistence_ids(suite.cluster.state())

    await asyncio.to_thread(suite.cluster.kill_agent, old_volume.host)

    def replaced(i: T.Instance) -> bool:
        m = next(x for x in i.members if x.id == victim.id)
        return (
            is_running(i, 3)
            and m.volume.persistence_id == old_volume.persistence_id.replace(".v1", ".v2")
            and m.volume.agent_id not in ("", old_volume.agent_id)
        )

    after = await suite.wait_instance("cache", replaced, 120, f"{victim.id} replaced on a fresh volume")
    await all_keys_everywhere(after, secret, written)
    assert {m.id for m in after.members if m.role == T.ROLE_MASTER} == {master_of(instance).id}

    # The agent comes back with the old volume: it is orphaned, so destroyed and unreserved.
    await asyncio.to_thread(suite.cluster.start_agent, old_volume.host)

    async def destroyed() -> bool:
        state = await asyncio.to_thread(suite.cluster.state)
        return old_volume.persistence_id not in persistence_ids(state) and not volume_dirs(
            suite, old_volume.persistence_id
        )

    await wait_for(destroyed, 60, what=f"the orphaned volume {old_volume.persistence_id} to be destroyed")
    state = await asyncio.to_thread(suite.cluster.state)
    assert old_volume.persistence_id.replace(".v1", ".v2") in persistence_ids(state)


async def test_delete_leaves_no_reservation_and_no_volume(suite: Suite) -> None:
    from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb

    await suite.create("cache", 3)
    instance = await suite.wait_running("cache", 3)
    ids = {m.volume.persistence_id for m in instance.members}
    assert ids <= persistence_ids(suite.cluster.state())
    assert all(volume_dirs(suite, p) for p in ids)

    await suite.api.DeleteInstance(ipb.DeleteInstanceRequest(name="cache"))
    await suite.wait_gone("cache", 120)

    state = await asyncio.to_thread(suite.cluster.state)
    assert reserved(state) == [], reserved(state)
    assert not any(volume_dirs(suite, p) for p in ids)


async def test_every_copy_gone_fails_the_instance_instead_of_an_empty_master(suite: Suite) -> None:
    """A single-member instance whose agent is gone for good: its member is replaced on a fresh
    (empty) volume, but never made master of an instance that had data — FAILED, a person decides."""
    assert isinstance(suite.lifecycle, LifecycleRunner)  # the `suite` fixture's in-process lifecycle
    suite.lifecycle.overrides["replace_after_seconds"] = 3.0
    await suite.lifecycle.restart()
    await suite.create("solo", 1)
    instance = await suite.wait_running("solo", 1)
    secret = await password(suite, "solo")
    await write_acknowledged(master_of(instance), secret, 10, replicas=0)
    only = instance.members[0]

    await asyncio.to_thread(suite.cluster.kill_agent, only.volume.host)

    failed = await suite.wait_instance(
        "solo", lambda i: i.phase == T.INSTANCE_PHASE_FAILED, 120, "FAILED: every copy of the data is gone"
    )
    assert "every copy of solo's data is gone" in failed.last_error, failed.last_error
    member = failed.members[0]
    assert member.role != T.ROLE_MASTER and not member.volume.has_data
    assert member.volume.persistence_id != only.volume.persistence_id
