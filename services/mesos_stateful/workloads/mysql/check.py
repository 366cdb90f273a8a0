"""Readiness and health check of a member: ``python -m mesos_stateful.workloads.mysql.check``.

Exit 0 when the operator account can log in (and, with ``--replica``, both replication threads run
and the replica has applied the master's position recorded at its start; with ``--standby``, a
replica that has no master to follow yet, read_only is ON), 1 otherwise. Reads the
admin password from ``mysql-member.json`` in the sandbox, so no secret is on the check's argv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mesos_stateful import sdk
from mesos_stateful.workloads.mysql import gtid, sql
from mesos_stateful.workloads.mysql.member_file import CATCHUP_FILE, MemberFile


def run(sandbox: Path, host: str, port: int, replica: bool, standby: bool = False) -> tuple[bool, str]:
    spec = MemberFile.read(sandbox)
    server = sql.Server(host, port, spec.operator_user, spec.admin_password, spec.connect_timeout_seconds)
    try:
        if standby:
            return sql.standby_ready(server)
        if not replica:
            sql.ping(server)
            return True, "answers"
        catchup = sandbox / CATCHUP_FILE
        target = gtid.parse(catchup.read_text()) if catchup.exists() else {}
        return sql.replica_ready(server, target)
    except sdk.StatefulError as error:
        return False, error.message


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sandbox", required=True, type=Path)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--replica", action="store_true", help="also require caught-up replication")
    mode.add_argument(
        "--standby", action="store_true", help="a replica with no master yet: also require read_only"
    )
    args = parser.parse_args(argv)
    ok, why = run(args.sandbox, args.host, args.port, args.replica, args.standby)
    print(why, file=sys.stdout if ok else sys.stderr)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
