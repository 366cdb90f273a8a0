"""Acceptance of ``deploy/compose.yaml`` on the real Docker engine (issue 12): the suite comes up
healthy with ``up -d --wait``; from the host, ``statefulctl create redis cache --replicas 3
--wait`` against the published gateway gives three member containers; keys written with ``WAIT
1``; ``docker kill`` of the master's container → a replica is promoted, a replacement starts,
every acknowledged key is there; ``docker restart`` of an agent container → its member comes back
on the same agent and volume with its data; a restart of the local cluster master's container
relaunches nothing (its registry is on a volume, the agents re-register); ``down`` then ``up``
brings every member back in place with its data; ``down -v`` leaves no container, network or
volume of the project. The project has a name, a gateway port and a subnet of its own (tests on one engine
do not collide); the times of ``up --wait`` and of the whole test are printed."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import pytest
import redis

from deploy.compose_helpers import INSTANCE, UP_TIMEOUT, Project, wait_until
from mesos_stateful.common.images import LABEL_AGENT, LABEL_INSTANCE, LABEL_TASK, TAG
from mesos_stateful.testing.docker import free_subnet
from mesos_stateful.testing.ports import free_port


@pytest.fixture
def project(docker_images: None, docker_client: docker.DockerClient) -> Iterator[Project]:
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    assert shutil.which("docker") and compose.returncode == 0, (
        f"Compose v2 is not installed (make docker-engine): {compose.stderr}"
    )
    name = f"msci{secrets.token_hex(4)}"
    port = free_port()
    subnet = free_subnet(docker_client)
    env = {
        **os.environ,
        "STATEFUL_GATEWAY_PORT": str(port),
        "STATEFUL_SUBNET": subnet,
        "STATEFUL_TAG": TAG,
    }
    proj = Project(name, env, f"127.0.0.1:{port}", subnet, docker_client)
    try:
        yield proj
    finally:
        agents = set(proj.agent_ids)
        with contextlib.suppress(ValueError):
            agents |= {c.id for c in proj.agent_containers().values()}
        proj.compose("down", "-v", "--timeout", "10", timeout=300)
        # Members joined the agents' namespaces: none may outlive them.
        for member in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_INSTANCE}={INSTANCE}"}
        ):
            if member.attrs["HostConfig"]["NetworkMode"].removeprefix("container:") in agents:
                member.remove(force=True)
        print(f"compose timings: {proj.timings}")


class Writer:
    """Writes keys to the master with ``WAIT 1`` (acknowledged: a replica has it) until stopped;
    on an error it re-finds the master from the gateway."""

    def __init__(self, proj: Project, password: str) -> None:
        self.proj = proj
        self.password = password
        self.acked: list[str] = []
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def master(self) -> redis.Redis | None:
        try:
            members = self.proj.instance()["instance"]["members"]
        except (AssertionError, ValueError, subprocess.TimeoutExpired):
            return None
        masters = [
            m for m in members if m.get("role") == "ROLE_MASTER" and m.get("state") == "MEMBER_STATE_RUNNING"
        ]
        if len(masters) != 1:
            return None
        m = masters[0]
        return redis.Redis(
            host=m["host"],
            port=m["ports"]["redis"],
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def run(self) -> None:
        client: redis.Redis | None = None
        n = 0
        while not self.stop.is_set():
            if client is None:
                client = self.master()
                if client is None:
                    time.sleep(0.3)
                    continue
            key = f"k{n}"
            try:
                client.set(key, key)
                if int(client.execute_command("WAIT", 1, 1000)) >= 1:
                    self.acked.append(key)
                n += 1
            except redis.RedisError:
                self.errors += 1
                client = None
                n += 1
            time.sleep(0.02)


def member_client(member: dict[str, Any], password: str) -> redis.Redis:
    return redis.Redis(
        host=member["host"],
        port=member["ports"]["redis"],
        password=password,
        socket_timeout=5,
        socket_connect_timeout=2,
        decode_responses=True,
    )


def missing_keys(client: redis.Redis, keys: list[str]) -> list[str]:
    values = client.mget(keys) if keys else []
    return [k for k, v in zip(keys, values, strict=True) if v != k]


def running(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in data["instance"]["members"] if m.get("state") == "MEMBER_STATE_RUNNING"]


# The session's image build (docker_images) may fall to this test: on a fresh machine it takes minutes.
@pytest.mark.slow
@pytest.mark.timeout(1200)
def leading_name(project: Project, role: str, other_than: str = "") -> str | None:
    """The container of ``role`` (``offers`` / ``lifecycle`` or its ``-standby``) that leads now,
    from its own log: its last "leads (term N)" after its last "term N over; standby"."""
    for service in (role, f"{role}-standby"):
        container = project.container(service)
        container.reload()
        if container.name == other_than or container.status != "running":
            continue
        text = container.logs().decode(errors="replace")
        if text.rfind(" leads (term ") > text.rfind("over; standby"):
            return str(container.name)
    return None


def leading_container(project: Project, role: str) -> Any:
    name = wait_until(lambda: leading_name(project, role), 60, f"the {role} leader")
    return project.client.containers.get(name)


def test_compose_suite(project: Project) -> None:
    started = time.monotonic()
    up = project.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT), timeout=UP_TIMEOUT + 60)
    project.timings["up --wait"] = round(time.monotonic() - started, 1)
    assert up.returncode == 0, f"up --wait failed: {up.stderr[-4000:]}\n{project.diagnostics()}"
    for service in (
        "etcd",
        "state",
        "gateway",
        "offers",
        "lifecycle",
        "offers-standby",
        "lifecycle-standby",
        "redis",
        "mysql",
        "etcd-workload",
        "master",
    ):
        state = project.container(service).attrs["State"]
        assert state["Health"]["Status"] == "healthy", (service, state)

    # Create from the host, against the published gateway.
    t0 = time.monotonic()
    created = project.ctl(
        "create", "redis", INSTANCE, "--replicas", "3", "--wait", "--timeout", "240", timeout=300
    )
    project.timings["create --wait"] = round(time.monotonic() - t0, 1)
    assert created.returncode == 0, f"{created.stdout}{created.stderr}\n{project.diagnostics()}"
    data = project.instance()
    assert data["instance"]["spec"].get("runtime") == "RUNTIME_DOCKER", data["instance"]["spec"]
    members = running(data)
    assert sorted(m["role"] for m in members) == ["ROLE_MASTER", "ROLE_SLAVE", "ROLE_SLAVE"]
    agent_ips = {f"{project.subnet}.{20 + i}" for i in range(3)}
    assert {m["host"] for m in members} == agent_ips, "one member per agent, on the agents' addresses"
    containers = wait_until(
        lambda: len(project.members()) == 3 and project.members(), 30, "three member containers"
    )
    assert {c.labels[LABEL_INSTANCE] for c in containers} == {INSTANCE}
    password = data["secrets"]["password"]

    # Acknowledged writes (WAIT 1) before and during the master's failure.
    writer = Writer(project, password)
    writer.thread.start()
    wait_until(lambda: len(writer.acked) >= 50, 60, "50 acknowledged writes")
    [old_master] = [m for m in members if m["role"] == "ROLE_MASTER"]
    [master_container] = [c for c in containers if c.labels.get(LABEL_TASK) == old_master["taskId"]]
    # The leading controllers killed first (`docker kill`: Docker never restarts it): the
    # standbys take over, and the failover below is theirs.
    for role in ("offers", "lifecycle"):
        leader = leading_container(project, role)
        leader.kill()
        gone = leader.name
        wait_until(functools.partial(leading_name, project, role, gone), 60, f"a new {role} leader")
    t0 = time.monotonic()
    master_container.kill()

    def failed_over() -> dict[str, Any] | None:
        now = project.instance()
        masters = [m for m in running(now) if m["role"] == "ROLE_MASTER"]
        if len(running(now)) == 3 and len(masters) == 1 and masters[0]["id"] != old_master["id"]:
            return now
        return None

    after = wait_until(failed_over, 180, "a replica promoted and the killed member replaced")
    project.timings["failover + replacement"] = round(time.monotonic() - t0, 1)
    wait_until(lambda: len(writer.acked) >= 100, 60, "writes acknowledged by the new master")
    writer.stop.set()
    writer.thread.join(10)
    [new_master] = [m for m in running(after) if m["role"] == "ROLE_MASTER"]
    assert missing_keys(member_client(new_master, password), writer.acked) == [], "acknowledged keys lost"
    replaced = next(m for m in running(after) if m["id"] == old_master["id"])
    assert replaced["taskId"] != old_master["taskId"] and replaced["agentId"] == old_master["agentId"]
    wait_until(lambda: len(project.members()) == 3, 60, "three member containers again")

    # Restart one agent container (a replica's): its member comes back on the same agent and
    # volume with its data.
    replica = next(m for m in running(after) if m["role"] == "ROLE_SLAVE")
    agent_name = {f"{project.subnet}.{20 + i}": f"agent-{i}" for i in range(3)}[replica["host"]]
    t0 = time.monotonic()
    project.container(agent_name).restart(timeout=10)

    def back_in_place() -> dict[str, Any] | None:
        now = project.instance()
        member: dict[str, Any] = next(m for m in now["instance"]["members"] if m["id"] == replica["id"])
        if member.get("state") == "MEMBER_STATE_RUNNING" and member["taskId"] != replica["taskId"]:
            return member
        return None

    member = wait_until(back_in_place, 240, f"{replica['id']} running again after {agent_name} restarted")
    project.timings["agent restart → member back"] = round(time.monotonic() - t0, 1)
    assert member["agentId"] == replica["agentId"], "the member moved to another agent"
    assert member["volume"]["persistenceId"] == replica["volume"]["persistenceId"], "a fresh volume"
    assert member["host"] == replica["host"]
    client = member_client(member, password)
    wait_until(lambda: missing_keys(client, writer.acked) == [], 60, "the restarted member to hold every key")
    wait_until(lambda: len(project.members()) == 3, 60, "three member containers after the agent restart")
    [restarted] = [c for c in project.members() if c.labels.get(LABEL_TASK) == member["taskId"]]
    assert restarted.labels[LABEL_AGENT] == replica["agentId"]

    # The master's container restarted: members keep running (same tasks), the agents re-register.
    tasks = {m["id"]: m["taskId"] for m in running(project.instance())}
    t0 = time.monotonic()
    project.container("master").restart(timeout=10)
    wait_until(
        lambda: project.container("master").attrs["State"].get("Health", {}).get("Status") == "healthy",
        120,
        "the master healthy again",
    )

    def agents_registered() -> bool:
        url = f"http://{project.subnet}.10:5050/master/state"
        with urllib.request.urlopen(url, timeout=5) as answer:
            state: dict[str, Any] = json.load(answer)
        return sum(1 for a in state.get("slaves", []) if a.get("active")) == 3

    wait_until(agents_registered, 120, "the three agents re-registered with the restarted master")
    project.timings["master restart → agents back"] = round(time.monotonic() - t0, 1)
    wait_until(lambda: len(project.members()) == 3, 30, "three member containers after the master restart")
    now = project.instance()
    assert {m["id"]: m["taskId"] for m in running(now)} == tasks, "members relaunched by a master restart"

    # down keeps the named volumes: the next up recovers the agents (same ids) and every member
    # restarts in place on its data.
    before = {m["id"]: m for m in running(project.instance())}
    t0 = time.monotonic()
    down = project.compose("down", "--timeout", "10")
    assert down.returncode == 0, down.stderr
    label: dict[str, str | list[str] | bool] = {"label": f"com.docker.compose.project={project.name}"}
    assert not project.client.containers.list(all=True, filters=label)
    wait_until(lambda: not project.members(all_states=True), 30, "the members to end with their agents")
    volumes = project.client.volumes.list(filters=label)
    assert len(volumes) == 5, [v.name for v in volumes]
    up = project.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT), timeout=UP_TIMEOUT + 60)
    assert up.returncode == 0, f"up --wait failed: {up.stderr[-4000:]}\n{project.diagnostics()}"
    project.agent_ids = set()  # new agent containers

    def all_back() -> dict[str, Any] | None:
        now = project.instance()
        members = running(now)
        tasks = {m["id"]: m["taskId"] for m in members}
        if len(members) == 3 and all(tasks.get(i) not in (None, m["taskId"]) for i, m in before.items()):
            return now
        return None

    again = wait_until(all_back, 240, "every member running again after down and up")
    project.timings["down + up → members back"] = round(time.monotonic() - t0, 1)
    for m in running(again):
        assert m["agentId"] == before[m["id"]]["agentId"], f"{m['id']} moved to another agent"
        assert m["volume"]["persistenceId"] == before[m["id"]]["volume"]["persistenceId"]
        client = member_client(m, password)

        def holds_every_key(c: redis.Redis = client) -> bool:
            return missing_keys(c, writer.acked) == []

        wait_until(holds_every_key, 60, f"{m['id']} to hold every key")
    wait_until(lambda: len(project.members()) == 3, 60, "three member containers after down and up")

    # down -v: nothing of the project is left, members included.
    t0 = time.monotonic()
    down = project.compose("down", "-v", "--timeout", "10")
    project.timings["down -v"] = round(time.monotonic() - t0, 1)
    assert down.returncode == 0, down.stderr
    assert project.leftovers() == []
    wait_until(lambda: not project.members(all_states=True), 30, "no member container left")
    project.timings["whole test"] = round(time.monotonic() - started, 1)
