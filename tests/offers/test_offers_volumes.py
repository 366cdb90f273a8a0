"""Reservations and persistent volumes against the real local cluster (pymesos code path):
a first launch reserves and creates the volume, a relaunch lands on it with the same ports and
the data, a restart of the offers service releases nothing wanted, and deleting the member record
destroys the volume and unreserves its resources."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from offers_helpers import RUNNING, in_state, launch, wait_task, wait_until, web_spec

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.cluster import RunningCluster
from mesos_stateful.testing.offers import OffersService

pytestmark = pytest.mark.slow

KILLED = types_pb2.TASK_STATE_KILLED
ROLE = "stateful"

# Appends "run N" to data/runs (N = the runs already there + 1), then serves HTTP on PORT_WEB.
SCRIPT = """
import os, sys
path = os.path.join(os.environ["MESOS_SANDBOX"], "data", "runs")
runs = open(path).read().splitlines() if os.path.exists(path) else []
with open(path, "a") as f:
    f.write(f"run {len(runs) + 1}\\n")
argv = ["-m", "http.server", os.environ["PORT_WEB"], "--bind", os.environ["HOST"]]
os.execv(sys.executable, [sys.executable, *argv])
"""


def volume(persistence_id: str, agent_id: str = "", host: str = "") -> types_pb2.Volume:
    return types_pb2.Volume(
        persistence_id=persistence_id, container_path="data", size_mb=64, agent_id=agent_id, host=host
    )


def volume_spec(member: str, incarnation: int, vol: types_pb2.Volume) -> types_pb2.LaunchSpec:
    instance, ordinal = member.rsplit("-", 1)
    spec = web_spec(instance, int(ordinal), incarnation)
    del spec.argv[:]
    spec.argv.extend([sys.executable, "-c", SCRIPT])
    spec.volume.CopyFrom(vol)
    return spec


async def put_member(state: StateClient, member: str, vol: types_pb2.Volume) -> None:
    instance = member.rsplit("-", 1)[0]
    record = await state.find(spb.KIND_MEMBER, f"{instance}/{member}")
    await state.put(
        types_pb2.Member(id=member, instance=instance, volume=vol),
        expected_revision=record.mod_revision if record is not None else 0,
    )


def labels(resource: dict[str, Any]) -> dict[str, str]:
    reservation = (resource.get("reservations") or [{}])[-1]
    return {entry["key"]: entry["value"] for entry in reservation.get("labels", {}).get("labels", [])}


def reserved_for(cluster: RunningCluster, agent_id: str, member: str) -> list[dict[str, Any]]:
    """The master's view of what is reserved on the agent for the member (``/master/state``)."""
    agent = next(a for a in cluster.state()["slaves"] if a["id"] == agent_id)
    return [r for r in agent["reserved_resources_full"].get(ROLE, []) if labels(r).get("member_id") == member]


def volume_dir(cluster: RunningCluster, agent_id: str, persistence_id: str) -> Path:
    agent = next(a for a in cluster.agents if a.id == agent_id)
    return Path(agent.work_dir) / "volumes" / "roles" / ROLE / persistence_id


def reservations_of(cluster: api.GetClusterResponse, agent_id: str) -> dict[str, api.Reservation]:
    agent = next((a for a in cluster.agents if a.agent_id == agent_id), None)
    return {r.member_id: r for r in agent.reservations} if agent is not None else {}


def suppressed(cluster: RunningCluster, framework_id: str) -> Callable[[], bool]:
    """Offers suppressed, and none outstanding."""

    def check() -> bool:
        async def read() -> bool:
            master = cluster.cluster.master
            outstanding = any(o.framework_id == framework_id for o in master.offers.values())
            return bool(master.frameworks[framework_id].suppressed) and not outstanding

        return cluster.run(read())

    return check


async def test_volume_first_launch_relaunch_in_place_restart_and_release(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    framework_id = (await offers_service.wait_subscribed()).framework_id
    await put_member(state_client, "vol-0", volume("vol-0.v1"))

    # First launch: RESERVE + CREATE + LAUNCH on some agent.
    await launch(offers_service, volume_spec("vol-0", 1, volume("vol-0.v1")))
    first = await wait_task(state_client, "vol-0.1", in_state(RUNNING))
    agent_id, port = first.agent_id, first.ports["web"]
    reserved = reserved_for(local_cluster, agent_id, "vol-0")
    assert {r["name"] for r in reserved} == {"cpus", "mem", "ports", "disk"}
    assert all(
        labels(r) == {"instance": "vol", "member_id": "vol-0", "persistence_id": "vol-0.v1"} for r in reserved
    )
    [disk] = [r for r in reserved if r["name"] == "disk"]
    assert disk["disk"]["persistence"]["id"] == "vol-0.v1"
    ports = next(r for r in reserved if r["name"] == "ports")["ranges"]["range"]
    assert ports == [{"begin": port, "end": port}]
    runs = volume_dir(local_cluster, agent_id, "vol-0.v1") / "runs"
    await wait_until(runs.exists, what="the first task wrote into its volume")
    assert runs.read_text() == "run 1\n"
    cluster = await offers_service.wait_cluster(lambda c: "vol-0" in reservations_of(c, agent_id))
    known = reservations_of(cluster, agent_id)["vol-0"]
    assert (known.instance, known.persistence_id, list(known.ports), known.orphaned) == (
        "vol",
        "vol-0.v1",
        [port],
        False,
    )
    assert known.resources.disk_mb == 64

    # Lifecycle records the volume's agent on the member once the task started; the task ends.
    await put_member(state_client, "vol-0", volume("vol-0.v1", agent_id, first.host))
    assert offers_service.stub is not None
    await offers_service.stub.Kill(api.KillRequest(task_id="vol-0.1"))
    await wait_task(state_client, "vol-0.1", in_state(KILLED))

    # A restart of the offers service releases nothing wanted: the idle reservation is offered
    # (and learnt again) but kept. (Restarted once idle: the local cluster does not yet rescind
    # the offers of a framework that re-subscribes before its old stream is noticed closed.)
    await wait_until(suppressed(local_cluster, framework_id), what="offers suppressed while idle")
    await offers_service.restart()
    await offers_service.wait_subscribed()
    cluster = await offers_service.wait_cluster(lambda c: "vol-0" in reservations_of(c, agent_id))
    assert not reservations_of(cluster, agent_id)["vol-0"].orphaned
    assert reserved_for(local_cluster, agent_id, "vol-0") and runs.exists()

    # Relaunch in place: same agent, same port, the first task's data is there.
    await launch(offers_service, volume_spec("vol-0", 2, volume("vol-0.v1", agent_id, first.host)))
    second = await wait_task(state_client, "vol-0.2", in_state(RUNNING))
    assert (second.agent_id, second.ports["web"]) == (agent_id, port)
    await wait_until(
        lambda: runs.read_text() == "run 1\nrun 2\n", what="the second task saw the first's data"
    )

    # A member record without that volume while the task runs: nothing is released under it.
    await offers_service.stub.Kill(api.KillRequest(task_id="vol-0.2"))
    await wait_task(state_client, "vol-0.2", in_state(KILLED))

    # Deleting the member record: DESTROY + UNRESERVE when the reservation comes back.
    await state_client.delete(spb.KIND_MEMBER, "vol/vol-0")
    await wait_until(
        lambda: not reserved_for(local_cluster, agent_id, "vol-0"), timeout=30, what="reservation released"
    )
    assert not volume_dir(local_cluster, agent_id, "vol-0.v1").exists()
    await offers_service.wait_cluster(lambda c: "vol-0" not in reservations_of(c, agent_id))
    # Nothing queued and nothing left to release: offers are suppressed again.
    await wait_until(suppressed(local_cluster, framework_id), what="offers suppressed after the release")


async def test_replaced_member_volume_elsewhere_is_released_and_live_ones_are_kept(
    offers_service: OffersService, state_client: StateClient, local_cluster: RunningCluster
) -> None:
    await offers_service.wait_subscribed()
    await put_member(state_client, "rep-0", volume("rep-0.v1"))
    await launch(offers_service, volume_spec("rep-0", 1, volume("rep-0.v1")))
    first = await wait_task(state_client, "rep-0.1", in_state(RUNNING))
    agent_id = first.agent_id

    # The member record forgets the volume while its task still runs: the task protects it.
    await put_member(state_client, "rep-0", volume("rep-0.v2"))
    cluster = await offers_service.wait_cluster(lambda c: len(c.agents) == 3)
    assert reserved_for(local_cluster, agent_id, "rep-0")
    assert not reservations_of(cluster, agent_id)["rep-0"].orphaned

    # Replaced: the new volume (v2) is placed on another agent; v1 is released once its task ended.
    other = next(a.id for a in local_cluster.agents if a.id != agent_id)
    await put_member(state_client, "rep-0", volume("rep-0.v1", other))
    assert offers_service.stub is not None
    await offers_service.stub.Kill(api.KillRequest(task_id="rep-0.1"))
    await wait_task(state_client, "rep-0.1", in_state(KILLED))
    await wait_until(
        lambda: not reserved_for(local_cluster, agent_id, "rep-0"), timeout=30, what="old volume released"
    )
    assert not volume_dir(local_cluster, agent_id, "rep-0.v1").exists()
