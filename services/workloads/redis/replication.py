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


# --- choosing among MasterLost candidates --------------------------------------------------------

NO_REPLID = "0" * 40


@dataclass(frozen=True)
class Position:
    """Where a member's data is in a replication history: ``master_replid`` and
    ``master_repl_offset`` (a replica's own copy of its master's offset), plus the history it
    continued from (``master_replid2`` up to ``second_repl_offset``) after a promotion."""

    member_id: str
    ordinal: int
    role: str
    replid: str
    offset: int
    replid2: str = NO_REPLID
    second_offset: int = -1

    @classmethod
    def from_info(cls, member_id: str, ordinal: int, info: dict[str, Any]) -> Position:
        return cls(
            member_id=member_id,
            ordinal=ordinal,
            role=str(info.get("role", "")),
            replid=str(info.get("master_replid", "")),
            offset=int(info.get("master_repl_offset", 0)),
            replid2=str(info.get("master_replid2", NO_REPLID)),
            second_offset=int(info.get("second_repl_offset", -1)),
        )

    def contains(self, other: Position) -> bool:
        """Whether this member holds everything ``other`` holds: the same history at least as
        far, or ``other``'s history up to where this one continued it (as Redis's own PSYNC
        decides). Unrelated histories (e.g. both restarted from their AOF, which does not keep the
        replication id) contain nothing of each other."""
        if self.replid == other.replid:
            return self.offset >= other.offset
        return self.replid2 == other.replid != NO_REPLID and other.offset + 1 <= self.second_offset

    def __str__(self) -> str:
        return f"{self.member_id}={self.role} {self.replid[:8]}:{self.offset}"


def choose_position(positions: Sequence[Position], lost_id: str) -> tuple[Position, str]:
    """The member to promote among every candidate's position (all of them answered).

    1. One already a master (an earlier attempt of this failover promoted it): it again.
    2. One whose data contains every other candidate's: the most advanced (ties: lowest ordinal).
    3. Histories that cannot be ordered (members restarted from their AOF get a new replication
       id and offset 0): the lost master itself, if it is a candidate and no candidate is known to
       be ahead of it. Replicas hold a prefix of what it sent, and its AOF has every write it
       answered once flushed: always after a SIGTERM (Mesos kill) or with ``appendfsync always``;
       after a kill -9 with ``everysec``, all but what Redis had postponed (up to 2 s while a
       background fsync ran), which a replica's AOF may hold instead: then no choice is provable.
    4. Otherwise FailedPrecondition: promoting any of them could lose acknowledged writes; a
       person decides.
    """
    listed = ", ".join(str(p) for p in positions)
    masters = sorted((p for p in positions if p.role == "master"), key=lambda p: p.ordinal)
    if masters:
        return masters[0], f"{masters[0].member_id} was already promoted (positions: {listed})"
    winners = [p for p in positions if all(p.contains(q) for q in positions if q is not p)]
    if winners:
        best = min(winners, key=lambda p: (-p.offset, p.ordinal))
        return best, (
            f"{best.member_id} holds every other candidate's data (offset {best.offset}; positions: {listed})"
        )
    lost = [p for p in positions if p.member_id == lost_id]
    if lost and not any(q.contains(lost[0]) and not lost[0].contains(q) for q in positions):
        return lost[0], (
            f"{lost_id} is the lost master restarted on its volume: it holds every write it "
            "answered that reached its AOF; the others' positions cannot be compared to it "
            f"(restarted from disk; positions: {listed})"
        )
    raise errors.FailedPrecondition(
        "no candidate holds every other candidate's data and the lost master is not among them "
        f"(replication histories unrelated, e.g. restarted from disk): {listed}; a person must decide"
    )
