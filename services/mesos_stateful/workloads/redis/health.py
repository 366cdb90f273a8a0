"""CheckMember answers for Redis, from ``INFO replication`` (pure: infos in, MemberHealth out).

Redis docs, replication: a replica reports ``master_host``/``master_port`` (whom it follows),
``master_link_status`` (``up`` once synced and streaming), ``master_sync_in_progress`` (a full
sync is running: its data is partial), ``master_last_io_seconds_ago`` and its copy of the
stream's ``master_repl_offset``; a master reports ``master_replid`` and ``master_repl_offset``.
Offsets count bytes of the replication stream, so the lag of a replica in bytes is the master's
offset minus the replica's on the same history (read the replica first, then the master: the
master's offset only grows, so the difference is never negative for a replica that follows it).

Conditions (``types.proto`` ConditionType); reasons are CamelCase:

- REACHABLE: always ok in an answer (an unreachable server is UNAVAILABLE, not an answer).
- REPLICATING, master: ok iff the server is a master; else ``NotMaster``.
- REPLICATING, replica: ok iff it follows the instance's MASTER member with the link up and no
  sync running. ``Chained`` (follows another member), ``WrongMaster`` (follows an address that is
  no member, or nobody while the instance has a master), ``NotReplica`` (a master: turned master
  by hand) ask for REPAIR_REPOINT; ``LinkDown`` / ``SyncInProgress`` (it is connecting) and
  ``NoMaster`` (the instance has no master yet: a cold start) ask for nothing, except a link
  down for longer than ``link_down_repair_seconds`` (REPAIR_REPOINT: credentials set again).
- CAUGHT_UP, replica: lag (bytes) <= ``max_lag_bytes``, else ``Lagging``; ``SyncInProgress``,
  ``LinkDown`` or ``Diverged`` when the lag cannot be measured. Only with the master's answer.
- CONSISTENT, replica: its position is contained in the master's (``Position.contains``: the same
  history, or the one the master continued after a promotion); else ``Diverged`` with
  REPAIR_REPOINT (re-pointed, Redis cannot continue a diverged history by PSYNC and does a full
  resync from the master, which replaces the replica's data). Not judged while a sync runs or
  while the link to the master is being established (the sync itself decides).

A type that could not be judged (master unreachable, sync running) is left out of the answer.
"""

from __future__ import annotations

from typing import Any

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.workloads.redis.config import NOWHERE
from mesos_stateful.workloads.redis.replication import Position, address, following, position_of

T = types_pb2
ROLES = {"master": T.ROLE_MASTER, "slave": T.ROLE_SLAVE}


def observed_role(info: dict[str, Any]) -> int:
    return ROLES.get(str(info.get("role", "")), T.ROLE_UNSPECIFIED)


def master_health(info: dict[str, Any]) -> types_pb2.MemberHealth:
    """The member the instance calls MASTER, from its own ``INFO replication`` (one round-trip:
    this is the failure probe)."""
    reachable = sdk.condition(T.CONDITION_TYPE_REACHABLE, True, "Answered", "answered INFO")
    now = following(info)
    if now is not None:
        replicating = sdk.condition(
            T.CONDITION_TYPE_REPLICATING,
            False,
            "NotMaster",
            f"is a read-only replica of {address(*now)}, not a master: it refuses writes",
        )
    else:
        good = info.get("min_slaves_good_slaves")
        detail = f"master with {info.get('connected_slaves', 0)} connected replica(s)"
        if good is not None:
            detail += f", {good} acknowledging within min-replicas-max-lag"
            if int(good) < 1:
                detail += " (refusing writes: NOREPLICAS until a replica acknowledges)"
        replicating = sdk.condition(T.CONDITION_TYPE_REPLICATING, True, "Master", detail)
    return sdk.health(
        reachable,
        replicating,
        observed_role=observed_role(info),
        following=address(*now) if now is not None else "",
        position=position_of(info),
    )


def replica_health(
    info: dict[str, Any],
    master_info: dict[str, Any] | None,
    *,
    master: tuple[str, str] | None,
    members: dict[str, str],
    max_lag_bytes: int,
    link_down_repair_seconds: float = 10.0,
) -> types_pb2.MemberHealth:
    """A member the instance calls SLAVE.

    ``info``: its ``INFO replication``; ``master_info``: the instance master's, read after it
    (None: not known — no master, or unreachable); ``master``: (member id, host:port) of the
    instance's MASTER member, None when it has none; ``members``: host:port -> member id of every
    other member; ``max_lag_bytes``: the CAUGHT_UP limit (bytes of replication stream);
    ``link_down_repair_seconds``: a link to the right master down longer than this
    (``master_link_down_since_seconds``: not a reconnect in progress, e.g. a wrong ``masterauth``)
    asks for REPAIR_REPOINT, which sets the credentials again.
    """
    conditions = [sdk.condition(T.CONDITION_TYPE_REACHABLE, True, "Answered", "answered INFO")]
    repair = T.REPAIR_UNSPECIFIED
    now = following(info)
    syncing = bool(int(info.get("master_sync_in_progress", 0) or 0))
    link_up = info.get("master_link_status") == "up"
    follows_master = False

    if now is None:
        conditions.append(
            sdk.condition(
                T.CONDITION_TYPE_REPLICATING,
                False,
                "NotReplica",
                "is a master (turned master outside the suite?): it takes writes of its own; "
                "re-pointing it at the master resyncs it",
            )
        )
        repair = T.REPAIR_REPOINT
    else:
        where = address(*now)
        if master is None:
            reason, ok, message = "NoMaster", False, f"follows {where}; the instance has no master yet"
        elif where == master[1]:
            follows_master = True
            if syncing:
                reason, ok, message = "SyncInProgress", False, f"full sync from {master[0]} ({where}) running"
            elif not link_up:
                down = int(info.get("master_link_down_since_seconds", -1) or -1)
                reason, ok, message = "LinkDown", False, f"link to {master[0]} ({where}) is down; connecting"
                if down > link_down_repair_seconds:
                    message = f"link to {master[0]} ({where}) down for {down}s; re-pointing it"
                    repair = T.REPAIR_REPOINT
            else:
                reason, ok, message = "Following", True, f"streaming from {master[0]} ({where})"
        elif where in members:
            reason, ok, message = (
                "Chained",
                False,
                f"follows {members[where]} ({where}), not the master {master[0]}",
            )
            repair = T.REPAIR_REPOINT
        else:
            nobody = " (nobody)" if now == NOWHERE else ""
            reason, ok, message = "WrongMaster", False, f"follows {where}{nobody}, not the master {master[0]}"
            repair = T.REPAIR_REPOINT
        conditions.append(sdk.condition(T.CONDITION_TYPE_REPLICATING, ok, reason, message))

    lag = -1
    lag_seconds = -1.0
    if (
        now is not None
        and master is not None
        and master_info is not None
        and master_info.get("role") == "master"
    ):
        mine = Position.from_info("", 0, info)
        theirs = Position.from_info(master[0], 0, master_info)
        if syncing:
            conditions.append(
                sdk.condition(T.CONDITION_TYPE_CAUGHT_UP, False, "SyncInProgress", "a full sync is running")
            )
        elif theirs.contains(mine):
            lag = max(0, theirs.offset - mine.offset)
            conditions.append(
                sdk.condition(
                    T.CONDITION_TYPE_CONSISTENT, True, "Prefix", f"its history is a prefix of {master[0]}'s"
                )
            )
            caught_up = lag <= max_lag_bytes
            conditions.append(
                sdk.condition(
                    T.CONDITION_TYPE_CAUGHT_UP,
                    caught_up,
                    "CaughtUp" if caught_up else "Lagging",
                    f"{lag} bytes behind {master[0]} (limit {max_lag_bytes})",
                )
            )
            lag_seconds = _lag_seconds(info, lag, link_up)
        elif follows_master and not link_up:
            conditions.append(
                sdk.condition(
                    T.CONDITION_TYPE_CAUGHT_UP,
                    False,
                    "LinkDown",
                    f"position {mine.notation} not on {master[0]}'s history yet; the sync decides",
                )
            )
        else:
            message = f"position {mine.notation} is not contained in {master[0]}'s {theirs.notation}"
            conditions.append(sdk.condition(T.CONDITION_TYPE_CONSISTENT, False, "Diverged", message))
            conditions.append(sdk.condition(T.CONDITION_TYPE_CAUGHT_UP, False, "Diverged", message))
            repair = T.REPAIR_REPOINT

    return sdk.health(
        *conditions,
        observed_role=observed_role(info),
        following=address(*now) if now is not None else "",
        lag_seconds=lag_seconds,
        lag=lag,
        position=position_of(info),
        repair=repair,
    )


def _lag_seconds(info: dict[str, Any], lag: int, link_up: bool) -> float:
    """0 when caught up; else seconds since the replica last heard from its master
    (``master_last_io_seconds_ago``; ``master_link_down_since_seconds`` while the link is down):
    an estimate, Redis does not time-stamp the stream. -1: unknown."""
    if lag == 0:
        return 0.0
    key = "master_last_io_seconds_ago" if link_up else "master_link_down_since_seconds"
    value = int(info.get(key, -1))
    return float(value) if value >= 0 else -1.0
