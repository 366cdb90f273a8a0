"""The baseline: the same master kill handled by Redis Sentinel.

Per run: a master and 2 replicas (real redis-server processes on free loopback ports, own tmp
dirs, ``repl-diskless-sync-delay 0``, the suite's persistence defaults), 3 sentinels with quorum
2; wait (polling) until every sentinel knows both replicas (link ok) and the 2 other sentinels;
write acknowledged keys; SIGKILL the master; time until a replica accepts a write as master;
check the keys; stop everything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from failover_bench import redisio
from failover_bench.procs import Children
from failover_bench.redisio import Address
from failover_bench.results import Sample
from mesos_stateful.testing.ports import free_ports

log = logging.getLogger("bench.sentinel")

HOST = "127.0.0.1"
MASTER_NAME = "bench"
REPLICAS = 2
SENTINELS = 3
QUORUM = 2


def measurement(down_after_ms: int) -> str:
    return f"sentinel-{down_after_ms}: kill -> new master writable"


@dataclass
class SentinelOptions:
    redis_server: str = "redis-server"
    redis_sentinel: str = "redis-sentinel"
    failover_timeout_ms: int = 10000
    setup_timeout: float = 60.0
    failover_deadline: float = 60.0
    poll_interval: float = 0.01
    keep_dirs: bool = False


def _redis_argv(opts: SentinelOptions, port: int, workdir: Path, password: str) -> list[str]:
    # The suite's member defaults (appendonly yes / always), so both sides do the same work.
    return [
        opts.redis_server,
        "--port", str(port),
        "--bind", HOST,
        "--dir", str(workdir),
        "--daemonize", "no",
        "--logfile", str(workdir / "redis.log"),
        "--requirepass", password,
        "--masterauth", password,
        "--repl-diskless-sync-delay", "0",
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--save", "",
    ]  # fmt: skip


def _sentinel_conf(
    port: int, workdir: Path, master_port: int, password: str, down_after_ms: int, failover_timeout_ms: int
) -> str:
    return "\n".join(
        [
            f"port {port}",
            f"bind {HOST}",
            "daemonize no",
            f"dir {workdir}",
            f"logfile {workdir / 'sentinel.log'}",
            f"sentinel monitor {MASTER_NAME} {HOST} {master_port} {QUORUM}",
            f"sentinel auth-pass {MASTER_NAME} {password}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
            "",
        ]
    )


def _as_dicts(reply: Any) -> list[dict[str, str]]:
    """SENTINEL replicas/sentinels reply (flat key/value lists, or already dicts) as dicts."""
    out: list[dict[str, str]] = []
    for item in reply or []:
        if isinstance(item, dict):
            out.append({str(k): str(v) for k, v in item.items()})
        else:
            pairs = list(item)
            out.append({str(pairs[i]): str(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)})
    return out


async def _replication_ready(master: Address, replicas: list[Address], password: str) -> bool:
    info = await redisio.replication(master, password)
    online = [
        k
        for k, v in info.items()
        if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
    ]
    if len(online) < len(replicas):
        return False
    for replica in replicas:
        rinfo = await redisio.replication(replica, password)
        if rinfo.get("master_link_status") != "up" or int(str(rinfo.get("master_sync_in_progress", 1))) != 0:
            return False
    return True


async def _command(conn: aredis.Redis, *args: str) -> Any:
    return await conn.execute_command(*args)  # type: ignore[no-untyped-call]


async def _sentinel_knows_all(sentinel: Address) -> bool:
    conn = redisio.client(sentinel, None, timeout=1.0)
    try:
        replicas = _as_dicts(await _command(conn, "SENTINEL", "REPLICAS", MASTER_NAME))
        peers = _as_dicts(await _command(conn, "SENTINEL", "SENTINELS", MASTER_NAME))
    finally:
        await conn.aclose()
    good_replicas = [r for r in replicas if r.get("flags") == "slave" and r.get("master-link-status") == "ok"]
    good_peers = [p for p in peers if p.get("flags") == "sentinel"]
    return len(good_replicas) == REPLICAS and len(good_peers) == SENTINELS - 1


@dataclass
class Topology:
    """A running master, its replicas and the sentinels watching them (all in ``started``)."""

    master: Address
    replicas: list[Address]
    sentinels: list[Address]
    procs: dict[Address, subprocess.Popen[bytes]]
    started: list[subprocess.Popen[bytes]]


async def start_topology(
    root: Path,
    password: str,
    down_after_ms: int,
    opts: SentinelOptions,
    children: Children,
    started: list[subprocess.Popen[bytes]],
) -> Topology:
    """Start a master, its replicas and the sentinels under ``root`` and wait (polling) until the
    replicas are in sync and every sentinel knows both replicas and the other sentinels. Every
    process is appended to ``started`` as it starts (the caller stops them, errors included)."""
    ports = free_ports(1 + REPLICAS + SENTINELS)
    master: Address = (HOST, ports[0])
    replicas: list[Address] = [(HOST, p) for p in ports[1 : 1 + REPLICAS]]
    sentinels: list[Address] = [(HOST, p) for p in ports[1 + REPLICAS :]]
    topo = Topology(master, replicas, sentinels, {}, started)
    deadline = time.monotonic() + opts.setup_timeout
    procs = topo.procs
    for index, address in enumerate([master, *replicas]):
        workdir = root / f"redis-{index}"
        workdir.mkdir()
        argv = _redis_argv(opts, address[1], workdir, password)
        if index > 0:
            argv += ["--replicaof", HOST, str(master[1])]
        procs[address] = children.start(argv, log_path=workdir / "stdout.log")
        started.append(procs[address])
    for address in [master, *replicas]:
        await redisio.wait_ping(address, password, deadline)
    await redisio.wait_until(
        "replicas in sync", lambda: _replication_ready(master, replicas, password), deadline
    )
    for index, address in enumerate(sentinels):
        workdir = root / f"sentinel-{index}"
        workdir.mkdir()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            _sentinel_conf(address[1], workdir, master[1], password, down_after_ms, opts.failover_timeout_ms)
        )
        started.append(children.start([opts.redis_sentinel, str(conf)], log_path=workdir / "stdout.log"))
    for address in sentinels:
        await redisio.wait_until(
            f"sentinel {redisio.fmt(address)} knows the topology",
            lambda a=address: _sentinel_knows_all(a),  # type: ignore[misc]
            deadline,
        )
    return topo


async def measure_once(run: int, down_after_ms: int, opts: SentinelOptions, children: Children) -> Sample:
    """One Sentinel failover measurement; every process it starts is stopped before it returns."""
    name = measurement(down_after_ms)
    root = Path(tempfile.mkdtemp(prefix=f"bench-sentinel-{down_after_ms}-"))
    started: list[subprocess.Popen[bytes]] = []
    password = secrets.token_hex(16)
    try:
        topo = await start_topology(root, password, down_after_ms, opts, children, started)
        master, replicas, procs = topo.master, topo.replicas, topo.procs

        acked = await redisio.write_acked_keys(master, password, f"bench:sentinel:{run}")
        if not acked.keys:
            return Sample(name, run, False, detail="no write was acknowledged by a replica (WAIT 1)")

        killed = procs[master]
        t_kill = time.monotonic()
        os.kill(killed.pid, signal.SIGKILL)
        found = await redisio.wait_new_master(
            lambda: replicas, master, password, t_kill + opts.failover_deadline, opts.poll_interval
        )
        if found is None:
            return Sample(
                name,
                run,
                False,
                detail=f"no new master accepted a write within {opts.failover_deadline:.0f}s",
            )
        seconds = found.at - t_kill
        missing = await redisio.missing_keys(found.address, password, acked.keys)
        info = {
            "new_master": redisio.fmt(found.address),
            "acked_keys": len(acked.keys),
            "missing_keys": len(missing),
            "unacked_batches": acked.batches_unacked,
        }
        if missing:
            return Sample(
                name,
                run,
                False,
                seconds,
                f"{len(missing)} of {len(acked.keys)} acknowledged keys missing on the new master",
                info,
            )
        return Sample(name, run, True, seconds, info=info)
    except (TimeoutError, RedisError, OSError) as error:
        return Sample(name, run, False, detail=f"error: {error!s:.300}")
    finally:
        for proc in started:
            children.stop(proc, grace=0)
        await asyncio.sleep(0)
        if opts.keep_dirs:
            log.info("%s run %d files kept in %s", name, run, root)
        else:
            shutil.rmtree(root, ignore_errors=True)
