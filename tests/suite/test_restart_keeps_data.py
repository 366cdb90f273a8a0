"""Data outlives a restart of the whole suite: with Redis, MySQL (MariaDB) and etcd instances
holding data, stop `make run` as Ctrl-C does and start it again on the same data dir → the same
members on the same agents and volumes, every key / row present, every instance RUNNING, and no
member relaunched on an empty volume; etcd keeps its member ids."""

from __future__ import annotations

import base64
import functools
import json
import urllib.request
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis

from .suite_helpers import ctl, processes_under, start_suite, stop_suite, suite_env, wait_until

pytestmark = pytest.mark.slow

INSTANCES = (("redis", "cache"), ("mysql", "shop"), ("etcd", "config"))


def get(endpoint: str, name: str) -> dict[str, Any]:
    shown = ctl(endpoint, "get", name, "-o", "json", "--show-secrets")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


def running(endpoint: str, name: str, before: dict[str, Any]) -> bool:
    """RUNNING with 3 ready members, each on a task newer than in ``before``."""
    shown = ctl(endpoint, "get", name, "-o", "json")
    if shown.returncode != 0:
        return False
    instance = json.loads(shown.stdout)["instance"]
    members = instance.get("members", [])
    old = {m["id"]: int(m["incarnation"]) for m in before["members"]}
    return (
        instance.get("phase") == "INSTANCE_PHASE_RUNNING"
        and len(members) == 3
        and all(m.get("state") == "MEMBER_STATE_RUNNING" for m in members)
        and all(int(m["incarnation"]) > old.get(m["id"], 0) for m in members)
    )


def master(instance: dict[str, Any]) -> dict[str, Any]:
    masters: list[dict[str, Any]] = [m for m in instance["members"] if m.get("role") == "ROLE_MASTER"]
    assert len(masters) == 1, instance["members"]
    return masters[0]


def placement(instance: dict[str, Any]) -> dict[str, tuple[str, str, str, str]]:
    """member id -> (persistence id, volume agent, host, ports) — what must not change."""
    return {
        m["id"]: (
            m["volume"]["persistenceId"],
            m["volume"]["agentId"],
            m["host"],
            json.dumps(m["ports"], sort_keys=True),
        )
        for m in instance["members"]
    }


def redis_client(member: dict[str, Any], password: str) -> redis.Redis:
    return redis.Redis(
        host=member["host"],
        port=member["ports"]["redis"],
        password=password,
        socket_timeout=10,
        decode_responses=True,
    )


def mysql_connect(member: dict[str, Any], password: str) -> pymysql.Connection:
    return pymysql.connect(
        host=member["host"],
        port=member["ports"]["mysql"],
        user="admin",
        password=password,
        connect_timeout=10,
        autocommit=True,
    )


def etcd_call(member: dict[str, Any], path: str, body: dict[str, Any]) -> dict[str, Any]:
    url = f"http://{member['host']}:{member['ports']['client']}{path}"
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def etcd_member_ids(member: dict[str, Any]) -> set[str]:
    return {m["ID"] for m in etcd_call(member, "/v3/cluster/member/list", {})["members"]}


def write_data(endpoint: str) -> dict[str, Any]:
    cache = get(endpoint, "cache")
    r = redis_client(master(cache["instance"]), cache["secrets"]["password"])
    for i in range(200):
        r.set(f"key-{i}", f"value-{i}")
    assert r.wait(2, 10000) == 2, "both replicas acknowledge"

    shop = get(endpoint, "shop")
    admin = shop["secrets"]["admin_password"]
    with mysql_connect(master(shop["instance"]), admin) as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE shop")
        cur.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40))")
        cur.executemany("INSERT INTO shop.orders VALUES (%s, %s)", [(i, f"item-{i}") for i in range(100)])

    config = get(endpoint, "config")
    first = config["instance"]["members"][0]
    for i in range(50):
        etcd_call(first, "/v3/kv/put", {"key": b64(f"/k/{i}"), "value": b64(f"v{i}")})
    return {"etcd_ids": etcd_member_ids(first)}


def check_data(endpoint: str, written: dict[str, Any]) -> None:
    cache = get(endpoint, "cache")
    for m in cache["instance"]["members"]:
        r = redis_client(m, cache["secrets"]["password"])

        def complete(client: redis.Redis = r) -> bool:
            return client.dbsize() == 200

        wait_until(complete, 60, f"{m['id']} to hold the 200 keys")
        assert r.get("key-199") == "value-199"

    shop = get(endpoint, "shop")
    for m in shop["instance"]["members"]:

        def rows(member: dict[str, Any] = m) -> bool:
            with mysql_connect(member, shop["secrets"]["admin_password"]) as conn, conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM shop.orders")
                row = cur.fetchone()
                return row is not None and row[0] == 100

        wait_until(rows, 60, f"{m['id']} to hold the 100 rows")

    config = get(endpoint, "config")
    for m in config["instance"]["members"]:
        got = etcd_call(m, "/v3/kv/range", {"key": b64("/k/"), "range_end": b64("/k0"), "count_only": True})
        assert int(got.get("count", 0)) == 50, got
        assert etcd_member_ids(m) == written["etcd_ids"], "an etcd peer was removed and re-added"


# Three instances created, written, the whole suite restarted: its own deadlines (create 240 s
# each, 300 s per instance after the restart) catch hangs; the global 300 s would cut a slow but
# healthy run on a loaded 2-core machine.
@pytest.mark.timeout(1200)
def test_restart_of_the_whole_suite_keeps_every_instances_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    endpoint, env = suite_env(data_dir, tuple(w for w, _ in INSTANCES))
    log = tmp_path / "suite.log"
    runner = start_suite(env, log)
    try:

        def registered() -> bool:
            assert runner.poll() is None, log.read_text()
            listed = ctl(endpoint, "-o", "json", "workloads")
            return listed.returncode == 0 and all(w in listed.stdout for w, _ in INSTANCES)

        wait_until(registered, 180, "every workload registered")
        for workload, name in INSTANCES:
            created = ctl(
                endpoint,
                "create",
                workload,
                name,
                "--replicas",
                "3",
                "--wait",
                "--timeout",
                "240",
                timeout=300,
            )
            assert created.returncode == 0, created.stdout + created.stderr
        written = write_data(endpoint)
        before = {name: get(endpoint, name)["instance"] for _, name in INSTANCES}

        assert stop_suite(runner) == 0, log.read_text()[-5000:]
        wait_until(lambda: not processes_under(data_dir), 60, "every process of the suite to end")

        runner = start_suite(env, log)
        restarted = runner

        def back(name: str) -> bool:
            # A suite that stopped (e.g. a service could not bind its port) fails at once, with why.
            assert restarted.poll() is None, log.read_text()[-5000:]
            return running(endpoint, name, before[name])

        for _, name in INSTANCES:
            # Right after a restart the stored state still shows the old tasks RUNNING: wait for
            # every member on a new task.
            wait_until(functools.partial(back, name), 300, f"{name} RUNNING 3/3 after the restart")
        after = {name: get(endpoint, name)["instance"] for _, name in INSTANCES}
        for _, name in INSTANCES:
            assert placement(after[name]) == placement(before[name]), name
            for m in after[name]["members"]:
                assert m["volume"].get("hasData"), m
        check_data(endpoint, written)
    finally:
        stop_suite(runner)
