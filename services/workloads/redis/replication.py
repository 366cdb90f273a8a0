"""Talking to a member's redis-server (async): replication state, promotion, re-pointing.

Connection failures and timeouts raise ``errors.Unavailable`` (lifecycle retries); a wrong
password raises ``errors.FailedPrecondition``. Every operation is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from mesos_stateful.common import errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Server:
    """Where a member's redis-server is and how to log in."""

    host: str
    port: int
    password: str
    timeout: float

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@asynccontextmanager
async def connect(server: Server) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(
        host=server.host,
        port=server.port,
        password=server.password or None,
        socket_timeout=server.timeout,
        socket_connect_timeout=server.timeout,
        decode_responses=True,
        # One quick retry for a blip; longer outages are lifecycle's to retry (the default
        # retries for seconds, which only delays the UNAVAILABLE answer).
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), 1),
    )
    try:
        yield client
    except redis_errors.AuthenticationError as error:
        raise errors.FailedPrecondition(f"redis at {server} refused the password: {error}") from None
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError) as error:
        raise errors.Unavailable(f"redis at {server} is unreachable: {error}") from None
    except redis_errors.BusyLoadingError as error:
        raise errors.Unavailable(f"redis at {server} is loading its dataset: {error}") from None
    except redis_errors.RedisError as error:
        raise errors.Unavailable(f"redis at {server} failed: {error}") from None
    finally:
        await client.aclose()


async def info_replication(server: Server) -> dict[str, Any]:
    async with connect(server) as client:
        return dict(await client.info("replication"))


def offset(info: dict[str, Any]) -> int:
    """The replication offset the server has processed: a replica's ``slave_repl_offset``, a
    master's ``master_repl_offset``."""
    if info.get("role") == "slave":
        return int(info.get("slave_repl_offset", -1))
    return int(info.get("master_repl_offset", 0))


def status(info: dict[str, Any]) -> dict[str, str]:
    """What to keep on the member: role, offset and, for a replica, its link."""
    keys = ["role", "master_repl_offset", "connected_slaves"]
    if info.get("role") == "slave":
        keys += [
            "master_host",
            "master_port",
            "master_link_status",
            "master_sync_in_progress",
            "slave_repl_offset",
            "master_last_io_seconds_ago",
        ]
    return {k: str(info[k]) for k in keys if k in info}


async def promote(server: Server) -> dict[str, str]:
    """Make the server a master (``REPLICAOF NO ONE``); nothing to do if it is one already."""
    async with connect(server) as client:
        info = dict(await client.info("replication"))
        if info.get("role") != "master":
            log.info("promoting redis at %s (was replica at offset %s)", server, offset(info))
            await client.replicaof("NO", "ONE")
            info = dict(await client.info("replication"))
        return status(info)


async def follow(server: Server, master_host: str, master_port: int) -> dict[str, str]:
    """Make the server a replica of master_host:master_port, unless it already follows it."""
    async with connect(server) as client:
        info = dict(await client.info("replication"))
        following = (
            info.get("role") == "slave"
            and str(info.get("master_host")) == master_host
            and int(info.get("master_port", 0)) == master_port
        )
        if not following:
            log.info("re-pointing redis at %s to master %s:%d", server, master_host, master_port)
            await client.replicaof(master_host, str(master_port))
            info = dict(await client.info("replication"))
        return status(info)


@dataclass(frozen=True)
class Candidate:
    """A replica that could be promoted, as it reported itself."""

    member_id: str
    ordinal: int
    offset: int
    is_master: bool = False


def choose(candidates: Sequence[Candidate]) -> Candidate | None:
    """The replica to promote: one already promoted (an earlier attempt got that far), else the
    highest replication offset, ties to the lowest ordinal."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: (not c.is_master, -c.offset, c.ordinal))
