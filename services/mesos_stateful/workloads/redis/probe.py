"""Readiness / health probe for a Redis member, run by the executor as a command check.

    python -m mesos_stateful.workloads.redis.probe --host H --port P --auth-file F [--replica|--standby]

Exit 0 when the server answers PING with the password from ``F`` (a redis.conf fragment with
``requirepass``) and, with ``--replica``, its link to the master is up and the initial sync is done
(``master_link_status:up`` and ``master_sync_in_progress:0``) and the AOF rewrite that follows a
full sync is done (until then what the replica acknowledges is in a temporary file a restart does
not load); with ``--standby``, it is a
replica (``role:slave``: read-only) but follows nobody yet, so no link is needed (a member
restarted on its volume while the instance has no master). Exit 1 otherwise, with the reason on
stderr. The password is read from the file so it is never on argv. Imports only redis and stdlib.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def read_password(path: Path) -> str:
    """The ``requirepass`` value of a redis.conf fragment ("" if absent)."""
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0].lower() == "requirepass":
            return words[1]
    return ""


def probe(
    host: str, port: int, password: str, replica: bool, timeout: float, standby: bool = False
) -> tuple[bool, str]:
    client = redis.Redis(
        host=host,
        port=port,
        password=password or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),  # the executor repeats the check; fail fast
    )
    try:
        if not client.ping():
            return False, "no PONG"
        if not replica and not standby:
            return True, "PONG"
        info = client.info("replication")
        if info.get("role") != "slave":
            return False, f"role is {info.get('role')}, not slave"
        if standby:
            return True, "read-only replica waiting for a master"
        if info.get("master_link_status") != "up":
            return False, f"master link is {info.get('master_link_status')}"
        if int(info.get("master_sync_in_progress", 1)) != 0:
            return False, "initial sync in progress"
        # After a full sync a replica rewrites its AOF; until that is done, what it acknowledges
        # is only in a temporary file a restart does not load.
        persistence = client.info("persistence")
        if int(persistence.get("aof_rewrite_in_progress", 0)) or int(
            persistence.get("aof_rewrite_scheduled", 0)
        ):
            return False, "AOF rewrite after the sync in progress"
        return True, "replica in sync"
    except redis.RedisError as error:
        return False, f"{type(error).__name__}: {error}"
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redis-probe", description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--auth-file", type=Path, help="redis.conf fragment with requirepass")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--replica", action="store_true", help="also require an up-to-date link")
    mode.add_argument("--standby", action="store_true", help="also require role:slave (no master needed)")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        password = read_password(args.auth_file) if args.auth_file else ""
    except (OSError, ValueError) as error:
        print(f"cannot read auth file: {error}", file=sys.stderr)
        return 1
    ok, why = probe(args.host, args.port, password, args.replica, args.timeout, args.standby)
    if not ok:
        print(why, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
