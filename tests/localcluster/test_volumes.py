"""Dynamic reservations and persistent volumes (RESERVE, CREATE, DESTROY, UNRESERVE) with Mesos's
semantics and JSON, and agent recovery from the work dir. The scheduler is a bare v1 HTTP client:
every event the master sends and every call the test sends is parsed strictly against mesos.v1."""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.harness import EXECUTOR
from localcluster.mesos_json import RawScheduler, parse_resource
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.cluster import RunningCluster, start_local_cluster
from mesos_stateful.testing.poll import eventually_sync

Json = dict[str, Any]
ROLE = "stateful"
PRINCIPAL = "mesos-stateful"


@pytest.fixture
def sched(local_cluster: RunningCluster) -> Iterator[RawScheduler]:
    s = RawScheduler(local_cluster.master_address)
    s.start()
    try:
        yield s
    finally:
        s.check()
        s.stop()


# --- resource JSON (post reservation refinement) -------------------------------------------------


def reservation(role: str = ROLE, principal: str | None = PRINCIPAL, member: str = "m-0") -> Json:
    out: Json = {
        "type": "DYNAMIC",
        "role": role,
        "labels": {"labels": [{"key": "member_id", "value": member}]},
    }
    if principal is not None:
        out["principal"] = principal
    return out


def scalar(name: str, value: float, **res: Any) -> Json:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, "reservations": [reservation(**res)]}


def port_range(port: int, **res: Any) -> Json:
    return {
        "name": "ports",
        "type": "RANGES",
        "ranges": {"range": [{"begin": port, "end": port}]},
        "reservations": [reservation(**res)],
    }


def volume(pid: str, size: float = 100, **res: Any) -> Json:
    out = scalar("disk", size, **res)
    out["disk"] = {
        "persistence": {"id": pid, "principal": PRINCIPAL},
        "volume": {"mode": "RW", "container_path": "data"},
    }
    return out


def first_port(offer: Json) -> int:
    ranges = next(r for r in offer["resources"] if r["name"] == "ports" and "reservations" not in r)
    return int(ranges["ranges"]["range"][0]["begin"])


def member_resources(offer: Json, disk: float = 100) -> list[Json]:
    return [scalar("cpus", 0.5), scalar("mem", 64), port_range(first_port(offer)), scalar("disk", disk)]


def task(offer: Json, tid: str, resources: list[Json], spec: Json) -> Json:
    return {
        "name": tid,
        "task_id": {"value": tid},
        "agent_id": offer["agent_id"],
        "resources": resources,
        "executor": {
            "executor_id": {"value": f"exec-{tid}"},
            "command": {"value": f"{sys.executable} {EXECUTOR}", "shell": True},
        },
        "data": base64.b64encode(json.dumps(spec).encode()).decode(),
    }


def reserve(resources: list[Json]) -> Json:
    return {"type": "RESERVE", "reserve": {"resources": resources}}


def unreserve(resources: list[Json]) -> Json:
    return {"type": "UNRESERVE", "unreserve": {"resources": resources}}


def create(volumes: list[Json]) -> Json:
    return {"type": "CREATE", "create": {"volumes": volumes}}


def destroy(volumes: list[Json]) -> Json:
    return {"type": "DESTROY", "destroy": {"volumes": volumes}}


def launch(tasks: list[Json]) -> Json:
    return {"type": "LAUNCH", "launch": {"task_infos": tasks}}


def volumes_of(offer: Json) -> list[Json]:
    return [r for r in offer["resources"] if "persistence" in r.get("disk", {})]


def on(agent_id: str, pred: Callable[[Json], bool] = lambda _o: True) -> Callable[[Json], bool]:
    return lambda o: o["agent_id"]["value"] == agent_id and pred(o)


def with_volume(pid: str) -> Callable[[Json], bool]:
    return lambda o: any(v["disk"]["persistence"]["id"] == pid for v in volumes_of(o))


def agent_state(cluster: RunningCluster, agent_id: str) -> Json:
    return next(a for a in cluster.state()["slaves"] if a["id"] == agent_id)


def wait_until(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    return eventually_sync(cond, what, timeout, interval=0.05)


def volume_dir(cluster: RunningCluster, agent_id: str, pid: str) -> Path:
    agent = next(a for a in cluster.agents if a.id == agent_id)
    return agent.work_dir / "volumes" / "roles" / ROLE / pid


def create_member(sched: RawScheduler, pid: str, spec: Json | None = None) -> tuple[Json, str]:
    """RESERVE + CREATE (+ LAUNCH of a task on the volume when ``spec``) in one ACCEPT."""
    offer = sched.offer()
    resources = member_resources(offer)
    ops = [reserve(resources), create([volume(pid)])]
    tid = f"t-{uuid.uuid4().hex[:6]}"
    if spec is not None:
        ops.append(launch([task(offer, tid, [*resources[:3], volume(pid)], spec)]))
    sched.accept(offer, ops)
    return offer, tid


# --- tests ----------------------------------------------------------------------------------------


def test_reserve_create_launch_and_the_volume_outlives_the_task(
    local_cluster: RunningCluster, sched: RawScheduler
) -> None:
    offer, tid = create_member(sched, "m-0.v1", {"write": {"data/hello": "kept"}})
    aid = offer["agent_id"]["value"]
    sched.update(tid, "TASK_RUNNING")
    agent = next(a for a in local_cluster.agents if a.id == aid)
    sandbox = agent.executors[(sched.framework_id, f"exec-{tid}")].sandbox
    target = volume_dir(local_cluster, aid, "m-0.v1")
    assert (sandbox / "data").is_symlink() and (sandbox / "data").resolve() == target.resolve()
    assert (target / "hello").read_text() == "kept"

    # In use by a live task: the volume is not offered (the rest of the agent is).
    busy = sched.offer(on(aid))
    assert not volumes_of(busy)
    sched.decline(busy)
    assert sched.call("KILL", {"task_id": {"value": tid}, "agent_id": {"value": aid}}) == 202
    sched.update(tid, "TASK_KILLED")

    # Back in an offer, in the post-refinement format, offered to the framework's role.
    again = sched.offer(on(aid, with_volume("m-0.v1")))
    (vol,) = volumes_of(again)
    parse_resource(vol)
    assert "role" not in vol and vol["allocation_info"] == {"role": ROLE}
    assert vol["reservations"] == [reservation()]
    assert vol["disk"] == {
        "persistence": {"id": "m-0.v1", "principal": PRINCIPAL},
        "volume": {"mode": "RW", "container_path": "data"},
    }
    reserved_cpus = [r for r in again["resources"] if r["name"] == "cpus" and r.get("reservations")]
    assert reserved_cpus and reserved_cpus[0]["scalar"]["value"] == 0.5

    # A relaunch on the volume sees the data.
    held = [r for r in again["resources"] if r.get("reservations") and "disk" not in r]
    assert sorted(r["name"] for r in held) == ["cpus", "mem", "ports"]
    relaunch = task(again, "t-read", [*held, vol], {"read": "data/hello", "finish": True})
    sched.accept(again, [launch([relaunch])])
    assert sched.update("t-read", "TASK_FINISHED")["message"] == "kept"

    full = agent_state(local_cluster, aid)["reserved_resources_full"]
    assert set(full) == {ROLE}
    assert [r["disk"]["persistence"]["id"] for r in full[ROLE] if "disk" in r] == ["m-0.v1"]
    for resource in full[ROLE]:
        parse_resource(resource)
    sched.check()
    kinds = {e.type for e in sched.parsed}
    assert {1, 2, 4} <= kinds  # SUBSCRIBED, OFFERS, UPDATE, each parsed strictly
    assert any(
        r.reservations and r.disk.HasField("persistence")
        for e in sched.parsed
        for o in e.offers.offers
        for r in o.resources
    )


def test_reserved_resources_are_offered_only_to_their_role(
    local_cluster: RunningCluster, sched: RawScheduler
) -> None:
    offer = sched.offer()
    aid = offer["agent_id"]["value"]
    sched.accept(offer, [reserve([scalar("cpus", 1.0)])], refuse=0)
    mine = sched.offer(on(aid, lambda o: any(r.get("reservations") for r in o["resources"])))
    sched.decline(mine, refuse=3600)  # the reservation stays unallocated: nobody else may take it
    other = RawScheduler(local_cluster.master_address, role="other", principal=None, name="other")
    other.start()
    try:
        seen = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline or not seen:
            theirs = other.offer(on(aid))
            assert not any(r.get("reservations") for r in theirs["resources"])
            assert sum(r["scalar"]["value"] for r in theirs["resources"] if r["name"] == "cpus") <= 3.0
            assert all(r["allocation_info"] == {"role": "other"} for r in theirs["resources"])
            other.decline(theirs)
            seen += 1
        other.check()
    finally:
        other.stop()
    # Mesos' json(Resources) always writes cpus, gpus, mem and disk (src/common/http.cpp).
    zero = {"cpus": 0.0, "gpus": 0.0, "mem": 0.0, "disk": 0.0}
    assert agent_state(local_cluster, aid)["reserved_resources"] == {ROLE: {**zero, "cpus": 1.0}}


def dropped(cluster: RunningCluster, count: int) -> Json:
    ops = wait_until(
        lambda: (d := cluster.state()["dropped_operations"]) and len(d) >= count and d,
        f"{count} dropped operations",
    )
    last: Json = ops[-1]
    return last


def test_invalid_operations_are_dropped_with_mesos_reasons(
    local_cluster: RunningCluster, sched: RawScheduler
) -> None:
    offer, tid = create_member(sched, "v1", {"child": True})
    aid = offer["agent_id"]["value"]
    sched.update(tid, "TASK_RUNNING")
    used_volume = volume("v1")
    n = 0

    def attempt(ops: list[Json], reason: str) -> Json:
        nonlocal n
        n += 1
        sched.accept(sched.offer(on(aid)), ops)
        op = dropped(local_cluster, n)
        assert reason in op["reason"], op
        assert op["agent_id"] == aid and op["framework_id"] == sched.framework_id
        return op

    # CREATE on unreserved disk; the LAUNCH that needed the volume fails with TASK_ERROR.
    o = sched.offer(on(aid))
    bad = task(o, "t-bad", [scalar("cpus", 0.1, member="x"), volume("v2", member="x")], {})
    bad["resources"][0] = {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}
    sched.accept(o, [create([volume("v2", member="x")]), launch([bad])])
    n += 1
    assert "does not contain" in dropped(local_cluster, n)["reason"]
    error = sched.update("t-bad", "TASK_ERROR")
    assert error["reason"] == "REASON_TASK_INVALID" and error["source"] == "SOURCE_MASTER"
    unreserved_volume = volume("v3")
    del unreserved_volume["reservations"]
    attempt([create([unreserved_volume])], "Persistent volumes cannot be created from unreserved resources")
    # RESERVE of resources not in the offer, with another principal, for another role.
    attempt([reserve([scalar("cpus", 100)])], "does not contain")
    attempt(
        [reserve([scalar("cpus", 0.1, principal="intruder")])],
        "A reserve operation was attempted by authenticated principal 'mesos-stateful', which does not match",
    )
    attempt(
        [reserve([scalar("cpus", 0.1, role="other")])],
        "A reserve operation was attempted for a resource with role 'other', but the resource was allocated "
        "to role 'stateful'",
    )
    # DESTROY of a volume in use / of no volume; UNRESERVE of a volume; a persistence id twice.
    attempt([destroy([used_volume])], "Persistent volumes in use")
    attempt([destroy([volume("nope")])], "Persistent volumes not found")
    attempt(
        [unreserve([used_volume])],
        "cannot be unreserved directly. Please destroy the persistent volume first",
    )
    attempt([reserve([scalar("disk", 50)]), create([volume("v1", 50)])], "Persistence ID 'v1' is not unique")
    # None of it changed the agent: one volume, the reservations of the member (+ the 50 disk).
    full = agent_state(local_cluster, aid)["reserved_resources_full"][ROLE]
    assert [r["disk"]["persistence"]["id"] for r in full if "disk" in r] == ["v1"]
    assert sched.call("KILL", {"task_id": {"value": tid}}) == 202
    sched.update(tid, "TASK_KILLED")


def test_destroy_then_unreserve_removes_the_volume(
    local_cluster: RunningCluster, sched: RawScheduler
) -> None:
    offer, _ = create_member(sched, "gone.v1")
    aid = offer["agent_id"]["value"]
    path = volume_dir(local_cluster, aid, "gone.v1")
    assert path.is_dir()
    held = sched.offer(on(aid, with_volume("gone.v1")))
    reserved = [r for r in held["resources"] if r.get("reservations") and "disk" not in r]
    (vol,) = volumes_of(held)
    plain_disk = {k: v for k, v in vol.items() if k != "disk"}
    sched.accept(held, [destroy([vol]), unreserve([*reserved, plain_disk])])
    wait_until(lambda: not path.exists(), "the volume directory removed")
    state = agent_state(local_cluster, aid)
    assert state["reserved_resources_full"] == {} and state["reserved_resources"] == {}
    assert local_cluster.state()["dropped_operations"] == []
    free = sched.offer(
        on(aid, lambda o: any(r["name"] == "cpus" and r["scalar"]["value"] == 4.0 for r in o["resources"]))
    )
    assert not any(r.get("reservations") for r in free["resources"])


def test_killed_agent_restarts_with_its_id_and_volumes(
    local_cluster: RunningCluster, sched: RawScheduler
) -> None:
    offer, _ = create_member(sched, "k.v1")
    aid = offer["agent_id"]["value"]
    sched.offer(on(aid, with_volume("k.v1")))
    local_cluster.kill_agent(aid)
    sched.wait("FAILURE", lambda e: e["failure"]["agent_id"]["value"] == aid)
    fresh = local_cluster.start_agent(aid)
    assert fresh.id == aid
    back = sched.offer(on(aid, with_volume("k.v1")))
    assert volumes_of(back)[0]["reservations"] == [reservation()]
    assert volume_dir(local_cluster, aid, "k.v1").is_dir()


def test_cluster_restart_recovers_agents_reservations_and_volumes(tmp_path: Path) -> None:
    first = start_local_cluster(tmp_path / "cluster")
    settings = first.cluster.settings
    sessions: set[int] = set()
    try:
        s = RawScheduler(first.master_address)
        s.start()
        offer, tid = create_member(s, "r.v1", {"write": {"data/f": "before restart"}, "finish": True})
        aid = offer["agent_id"]["value"]
        s.update(tid, "TASK_FINISHED")
        ids = sorted(a["id"] for a in first.state()["slaves"])
        s.check()
        s.stop()
        sessions.update(first.sessions())
    finally:
        first.stop()
    second = start_local_cluster(
        tmp_path / "cluster",
        agent_ip_base=settings.agent_ip_base,
        agent_ports_begin=settings.agent_ports_begin,
    )
    try:
        assert sorted(a["id"] for a in second.state()["slaves"]) == ids
        assert [
            r["disk"]["persistence"]["id"]
            for r in agent_state(second, aid)["reserved_resources_full"][ROLE]
            if "disk" in r
        ] == ["r.v1"]
        s = RawScheduler(second.master_address)
        s.start()
        back = s.offer(on(aid, with_volume("r.v1")))
        (vol,) = volumes_of(back)
        reserved = [r for r in back["resources"] if r.get("reservations") and "disk" not in r]
        assert sorted(r["name"] for r in reserved) == ["cpus", "mem", "ports"]
        read = task(back, "t-after", [*reserved, vol], {"read": "data/f", "finish": True})
        s.accept(back, [launch([read])])
        assert s.update("t-after", "TASK_FINISHED")["message"] == "before restart"
        s.check()
        s.stop()
        sessions.update(second.sessions())
    finally:
        second.stop()
    assert not [sid for sid in sessions if session_members(sid)]
