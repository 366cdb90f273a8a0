"""Talking to a member's redis-server (async): replication state, promotion, re-pointing,
self-fencing (``min-replicas-to-write``) and fencing (demote, detach).

Connection failures and timeouts raise ``errors.Unavailable`` (lifecycle retries); a wrong
password raises ``errors.FailedPrecondition``. Every operation is idempotent.

Self-fencing (Redis docs, replication, "Allow writes only with N attached replicas", and
redis.conf ``min-replicas-to-write`` / ``min-replicas-max-lag``): a master with
``min-replicas-to-write 1`` refuses every write command (``-NOREPLICAS``) while fewer than one
replica is *good*. Redis's rule (``refreshGoodSlavesCount`` in replication.c): a replica is good
while it is online and ``server.unixtime - repl_ack_time <= min-replicas-max-lag``, both in whole
seconds (``repl_ack_time`` is the cached clock when the master processed the replica's last
``REPLCONF ACK``); replicas send that ACK once per second; the good count is recomputed by
``replicationCron`` once per second (and when a replica connects or disconnects). Hence
:func:`self_fence_seconds`.
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

from mesos_stateful import sdk
from mesos_stateful.workloads.redis.config import NOWHERE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Server:
    """Where a member's redis-server is and how to log in."""

    host: str
    port: int
    password: str
    timeout: float
    # Retries of a command after a connection error (1: one quick retry for a blip; 0 for a
    # probe that must answer within ``timeout``).
    retries: int = 1

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
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), server.retries),
    )
    try:
        yield client
    except redis_errors.AuthenticationError as error:
        raise sdk.FailedPrecondition(f"redis at {server} refused the password: {error}") from None
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError) as error:
        raise sdk.Unavailable(f"redis at {server} is unreachable: {error}") from None
    except redis_errors.BusyLoadingError as error:
        raise sdk.Unavailable(f"redis at {server} is loading its dataset: {error}") from None
    except redis_errors.RedisError as error:
        raise sdk.Unavailable(f"redis at {server} failed: {error}") from None
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
    """Make the server a replica of master_host:master_port, unless it already follows it. The
    credentials for the master (``masterauth``, the instance's password) are set again first: a
    replica whose link stays down because they were changed reconnects with them."""
    async with connect(server) as client:
        if server.password:
            await client.config_set("masterauth", server.password)
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


def following(info: dict[str, Any]) -> tuple[str, int] | None:
    """(host, port) a replica follows (as given to REPLICAOF); None for a master."""
    if info.get("role") != "slave":
        return None
    return str(info.get("master_host", "")), int(info.get("master_port", 0))


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def set_min_replicas(server: Server, to_write: int, max_lag: int) -> None:
    """``CONFIG SET min-replicas-to-write <to_write> min-replicas-max-lag <max_lag>`` (seconds):
    the self-fence of a master (inert on a replica, so it is set before a promotion). Idempotent."""
    async with connect(server) as client:
        current = await client.config_get("min-replicas-*")
        wanted = {"min-replicas-to-write": str(to_write), "min-replicas-max-lag": str(max_lag)}
        if any(current.get(k) != v for k, v in wanted.items()):
            log.info(
                "redis at %s: min-replicas-to-write %d, min-replicas-max-lag %ds", server, to_write, max_lag
            )
            await client.config_set("min-replicas-to-write", to_write, "min-replicas-max-lag", max_lag)


def self_fence_seconds(min_replicas_max_lag: int) -> float:
    """Seconds after which a master with ``min-replicas-to-write 1`` that gets no more ACKs
    (every replica detached) refuses every write: ``min_replicas_max_lag + 2``.

    Let ``t`` be the real time the master processed the last ACK (no later than the moment the
    last replica was detached: a detached replica sends none). Redis stores ``floor(t)``
    (``server.unixtime``, whole seconds) and counts the replica good while ``floor(now) -
    floor(t) <= max_lag``: it is bad from ``floor(t) + max_lag + 1 <= t + max_lag + 1`` at the
    latest. ``replicationCron`` recomputes the count within 1 s after that (it runs once per
    second): so from ``t + max_lag + 2`` on, every write gets ``NOREPLICAS``. Measured from the
    Fence answer, which comes after the detach, the bound only gets safer.

    Redis docs: replication ("Allow writes only with N attached replicas": "If there are at least
    N replicas, with a lag less than M seconds, then the write will be accepted"; the lag "is
    computed from the last ping received from the replica, which is usually sent every second").
    It bounds a master that keeps running while cut off. A master whose process was frozen
    (SIGSTOP, a paused VM) still holds its last count when it resumes, until its next
    ``replicationCron`` (at most 1 s): what it accepts then is never acknowledged by ``WAIT 1``
    (no replica follows it any more), and a detached replica's closed connection drops the count
    to 0 as soon as the master reads it.
    """
    return float(min_replicas_max_lag + 2)


async def demote(server: Server) -> str:
    """Make an old master refuse writes from now on (Fence, reachable): a read-only replica of
    nobody (``REPLICAOF 127.0.0.1 0``, the convention of config.NOWHERE: it never connects, so it
    keeps its data and position) with ``replica-read-only yes``, and its normal clients
    disconnected (``CLIENT KILL TYPE normal``: a client in MULTI cannot EXEC later; blocked
    clients are unblocked by Redis when it turns replica). Idempotent: a member already a replica
    of nobody only has its clients disconnected again; one that follows a real master (re-pointed
    by lifecycle since) is left following it. Returns what was done."""
    async with connect(server) as client:
        info = dict(await client.info("replication"))
        done: list[str] = []
        ro = await client.config_get("replica-read-only")
        if ro.get("replica-read-only") != "yes":
            await client.config_set("replica-read-only", "yes")
            done.append("replica-read-only yes")
        if info.get("role") == "master":
            log.warning(
                "fencing redis at %s: demoting the old master to a read-only replica of nobody", server
            )
            await client.replicaof(NOWHERE[0], str(NOWHERE[1]))
            done.append(f"demoted from master (at {position_of(info)}) to a read-only replica of nobody")
        elif following(info) != NOWHERE:
            host, port = following(info) or ("", 0)
            return f"already a read-only replica of {address(host, port)}; left as it is"
        else:
            done.append("already a read-only replica of nobody")
        killed = await client.client_kill_filter(_type="normal", skipme=True)
        done.append(f"{killed} client connection(s) closed")
        return "; ".join(done)


async def detach(server: Server, old_host: str, old_port: int) -> str:
    """Stop a replica replicating from the old master ``old_host:old_port`` (Fence, old master
    unreachable): it becomes a read-only replica of nobody (config.NOWHERE), keeping its data and
    position, and sends the old master no more ACKs, so the old master's ``min-replicas-to-write``
    fences it (:func:`self_fence_seconds`). A member following anything else (nobody already, or
    another member) or a master is left alone. Idempotent. Returns what was done."""
    async with connect(server) as client:
        info = dict(await client.info("replication"))
        now = following(info)
        if now == (old_host, old_port):
            log.warning(
                "fencing: detaching redis at %s from unreachable master %s",
                server,
                address(old_host, old_port),
            )
            await client.replicaof(NOWHERE[0], str(NOWHERE[1]))
            return f"detached from {address(old_host, old_port)} at {position_of(info)}"
        if now == NOWHERE:
            return "already detached (a read-only replica of nobody)"
        if now is None:
            return "a master, not following the old master"
        return f"follows {address(*now)}, not the old master"


def position_of(info: dict[str, Any]) -> str:
    """A member's position in Redis notation: ``<master_replid>:<master_repl_offset>``."""
    return f"{info.get('master_replid', '')}:{int(info.get('master_repl_offset', 0))}"


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

    @property
    def notation(self) -> str:
        """``<replid>:<offset>``, as MemberHealth.position and MasterLostResponse.positions."""
        return f"{self.replid}:{self.offset}"

    def behind(self, replid: str, offset: int) -> int | None:
        """Bytes of the replication stream this member lacks to reach ``replid:offset`` (negative:
        ahead); None when not on that history (nothing comparable)."""
        if self.replid == replid:
            return offset - self.offset
        return None

    def __str__(self) -> str:
        return f"{self.member_id}={self.role} {self.replid[:8]}:{self.offset}"


def parse_position(text: str) -> tuple[str, int]:
    """``<replid>:<offset>`` -> (replid, offset); ValueError if malformed."""
    replid, sep, offset = text.rpartition(":")
    if not sep or not replid or not offset.isdigit():
        raise ValueError(f"expected <replid>:<offset>, got {text!r}")
    return replid, int(offset)


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
    raise sdk.FailedPrecondition(
        "no candidate holds every other candidate's data and the lost master is not among them "
        f"(replication histories unrelated, e.g. restarted from disk): {listed}; a person must decide"
    )
