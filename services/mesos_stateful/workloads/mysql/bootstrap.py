"""A member's entry point: ``python -m mesos_stateful.workloads.mysql.bootstrap <sandbox>``.

1. On the member's first start, initialise its datadir ``<sandbox>/<volume>/datadir`` with
   ``mariadb-install-db`` (into ``datadir.init`` next to it, renamed when complete, so a crash
   half-way just starts over). A datadir that exists is never initialised again: the member was
   restarted in place on its persistent volume and keeps its data, binary and relay logs and
   replication state. One that exists without the ``mysql`` schema is refused (exit), not wiped.
2. Write ``init.sql`` (0600), run by the server at start-up with binary logging off: create or
   update the operator, admin and replication accounts with the instance's passwords, remove the
   password-less root accounts the installer made; on a replica with a master (new, or restarted
   on its volume), also point it at that master (GTID, ``slave_pos``: where it stopped) and start
   replicating. A replica without a master (a cold start) starts read-only and replicates from
   nobody (``skip_slave_start``) until StartSlave.
3. On a replica, record the master's GTID position now (``catchup.gtid``): the replica is ready
   once it has applied it.
4. Exec ``mariadbd --defaults-file=<sandbox>/my.cnf`` (the member's process is the server itself).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from mesos_stateful import sdk
from mesos_stateful.workloads.mysql import sql
from mesos_stateful.workloads.mysql.member_file import CATCHUP_FILE, DEFAULTS_FILE, MemberFile

log = logging.getLogger("mysql-bootstrap")

INIT_FILE = "init.sql"


def _account(user: str, password: str, grant: str, option: str = "") -> str:
    who = f"{sql.quote(user)}@'%'"
    return (
        f"CREATE USER IF NOT EXISTS {who} IDENTIFIED BY {sql.quote(password)};\n"
        f"ALTER USER {who} IDENTIFIED BY {sql.quote(password)};\n"
        f"GRANT {grant} ON *.* TO {who}{option};\n"
    )


def init_sql(spec: MemberFile, hostname: str) -> str:
    """The statements the server runs at start-up. Idempotent; accounts are not binlogged, since
    every member creates its own (a replica's own transactions would clash with the master's)."""
    text = "SET sql_log_bin = 0;\n"
    # The suite's account: administration only, its privileges reset at every start (a grant
    # someone added is undone). It alone holds READ_ONLY ADMIN, and it cannot change data, so
    # read_only stops every client write (the fence, see sql.OPERATOR_PRIVILEGES).
    operator = f"{sql.quote(spec.operator_user)}@'%'"
    text += _account(spec.operator_user, spec.admin_password, "USAGE")
    text += f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {operator};\n"
    text += f"GRANT {', '.join(sql.OPERATOR_PRIVILEGES)} ON *.* TO {operator};\n"
    text += f"GRANT {sql.OPERATOR_SCHEMA_GRANT} TO {operator};\n"
    # People's accounts (admin, and root on the local socket): every privilege but READ_ONLY
    # ADMIN, so a write to a read-only server (a replica, a fenced master) fails instead of
    # forking its history; they cannot grant it either (they do not hold it).
    text += _account(spec.admin_user, spec.admin_password, "ALL PRIVILEGES", " WITH GRANT OPTION")
    text += f"REVOKE READ_ONLY ADMIN ON *.* FROM {sql.quote(spec.admin_user)}@'%';\n"
    text += _account(spec.replication_user, spec.replication_password, "REPLICATION SLAVE")
    root = "'root'@'localhost'"
    text += (
        f"DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1', 'root'@{sql.quote(hostname)}, "
        f"''@'localhost', ''@{sql.quote(hostname)};\n"
        f"CREATE USER IF NOT EXISTS {root} IDENTIFIED BY {sql.quote(spec.admin_password)};\n"
        f"ALTER USER {root} IDENTIFIED BY {sql.quote(spec.admin_password)};\n"
        f"GRANT ALL PRIVILEGES ON *.* TO {root} WITH GRANT OPTION;\n"
        f"REVOKE READ_ONLY ADMIN ON *.* FROM {root};\n"
        "SET sql_log_bin = 1;\n"
    )
    # New or restarted on its volume, a replica with a master is pointed at it (where it stopped:
    # slave_pos); one without a master stays read-only and replicates from nobody.
    if spec.replica and spec.master_host:
        text += sql.change_master_sql(
            spec.master_host, spec.master_port, spec.replication_user, spec.replication_password
        )
    return text


def _user_args() -> list[str]:
    # mariadbd refuses to run as root unless told to; as anyone else it runs as itself.
    return ["--user=root"] if os.geteuid() == 0 else []


def initialise(sandbox: Path, spec: MemberFile) -> bool:
    """Create the datadir in the member's volume if it does not exist; True if it was created now.
    An existing datadir is never touched (SystemExit if it lacks the ``mysql`` schema)."""
    data = spec.datadir(sandbox)
    if data.exists():
        if not (data / "mysql").is_dir():
            raise SystemExit(f"{data} exists but has no mysql schema; refusing to initialise over it")
        log.info("datadir %s exists: restarting on it", data)
        return False
    # The volume itself (a directory when no volume is mounted, e.g. in tests).
    data.parent.mkdir(parents=True, exist_ok=True)
    partial = data.with_name(data.name + ".init")
    shutil.rmtree(partial, ignore_errors=True)
    # The bootstrap server's temporary tables in the sandbox, as the member's own tmpdir (config.py),
    # not in /tmp, which every MariaDB on the machine shares.
    tmp = sandbox / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    argv = [
        spec.install_db,
        "--no-defaults",
        f"--datadir={partial}",
        f"--tmpdir={tmp}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
        *_user_args(),
    ]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=sandbox, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{spec.install_db} failed with exit code {done.returncode}")
    partial.rename(data)
    log.info("initialised %s in %.1fs", data, time.monotonic() - started)
    return True


def record_catchup(sandbox: Path, spec: MemberFile) -> None:
    """Write the master's GTID position to catchup.gtid; remove the file if the master cannot be
    reached (then readiness only asks for running replication threads)."""
    path = sandbox / CATCHUP_FILE
    master = sql.Server(
        spec.master_host,
        spec.master_port,
        spec.operator_user,
        spec.admin_password,
        spec.connect_timeout_seconds,
    )
    deadline = time.monotonic() + spec.catchup_probe_seconds
    while True:
        try:
            position = sql.binlog_pos(master)
            path.write_text(position + "\n")
            log.info("master %s is at %s; ready once applied", master, position or "-")
            return
        except sdk.StatefulError as error:
            if time.monotonic() >= deadline:
                log.warning("cannot read the master's position (%s); readiness will not wait for it", error)
                path.unlink(missing_ok=True)
                return
            time.sleep(0.5)


def prepare(sandbox: Path) -> list[str]:
    """Everything before the exec; returns the server's argv."""
    spec = MemberFile.read(sandbox)
    for name in ("tmp", "files"):
        (sandbox / name).mkdir(exist_ok=True)
    initialise(sandbox, spec)
    init = sandbox / INIT_FILE
    init.touch(mode=0o600)
    init.chmod(0o600)
    init.write_text(init_sql(spec, socket.gethostname()))
    if spec.replica and spec.master_host:
        record_catchup(sandbox, spec)
    else:
        (sandbox / CATCHUP_FILE).unlink(missing_ok=True)
    return [spec.mariadbd, f"--defaults-file={sandbox / DEFAULTS_FILE}", f"--init-file={init}", *_user_args()]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s mysql-bootstrap: %(message)s", stream=sys.stderr
    )
    sandbox = Path(args[0] if args else os.environ["MESOS_SANDBOX"]).resolve()
    server_argv = prepare(sandbox)
    sys.stderr.flush()
    os.execv(server_argv[0], server_argv)


if __name__ == "__main__":
    main()
