"""The SQL the workload runs on its members (PyMySQL, blocking: call from a thread).

Every function is idempotent: lifecycle retries callbacks, so "make this the master" on a master
and "follow X" on a replica already following X change nothing. Connection problems become
``errors.Unavailable`` (retried); SQL errors become ``errors.FailedPrecondition``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# PyMySQL ships no type information (no types-PyMySQL in the dev dependencies).
import pymysql
import pymysql.cursors

from mesos_stateful.common import errors
from mesos_stateful.workloads.mysql import gtid

log = logging.getLogger(__name__)

# Client errors meaning "cannot reach or lost the server" (CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR,
# CR_SERVER_GONE_ERROR, CR_SERVER_LOST, ...); the server's own errors (e.g. 1045 access denied) are
# permanent.
_UNREACHABLE = range(2000, 2100)

Row = dict[str, Any]
# Slave_IO_Running values of a replica that is, or keeps trying to be, connected to its master.
_IO_UP = ("Yes", "Connecting", "Preparing")


@dataclass(frozen=True)
class Server:
    """How to reach one member as the admin user."""

    host: str
    port: int
    user: str
    password: str
    timeout: float = 3.0

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @contextlib.contextmanager
    def connect(self, read_timeout: float | None = None) -> Iterator[pymysql.cursors.DictCursor]:
        """A cursor on an autocommit connection; errors mapped to domain errors."""
        try:
            conn = pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                connect_timeout=max(1, round(self.timeout)),
                read_timeout=read_timeout or self.timeout,
                write_timeout=self.timeout,
                autocommit=True,
                cursorclass=pymysql.cursors.DictCursor,
            )
        except pymysql.err.MySQLError as error:
            raise _domain_error(self, error) from None
        try:
            with conn.cursor() as cursor:
                yield cursor
        except pymysql.err.MySQLError as error:
            raise _domain_error(self, error) from None
        finally:
            with contextlib.suppress(Exception):
                conn.close()


def _domain_error(server: Server, error: pymysql.err.MySQLError) -> errors.StatefulError:
    code = error.args[0] if error.args and isinstance(error.args[0], int) else 0
    text = f"mysql {server}: {error}"
    if isinstance(error, pymysql.err.InterfaceError) or code in _UNREACHABLE or code == 0:
        return errors.Unavailable(text)
    return errors.FailedPrecondition(text)


@dataclass(frozen=True)
class State:
    """A member's replication state."""

    read_only: bool
    binlog_pos: str
    slave_pos: str
    # None: no replication configured (a master, or a promoted replica).
    replica: Row | None
    current_pos: str = ""
    binlog_state: str = ""

    @property
    def is_master(self) -> bool:
        return self.replica is None and not self.read_only

    @property
    def received(self) -> gtid.Position:
        """Every transaction the member has, applied or waiting in its relay log."""
        io_pos = gtid.parse(self.replica.get("Gtid_IO_Pos", "")) if self.replica else {}
        return gtid.merge(gtid.parse(self.binlog_pos), gtid.parse(self.slave_pos), io_pos)

    @property
    def gtid_set(self) -> gtid.GtidSet:
        """Every transaction the member holds (applied, or received in its relay log), as a set."""
        io_pos = str(self.replica.get("Gtid_IO_Pos") or "") if self.replica else ""
        return gtid.GtidSet([self.current_pos, self.binlog_pos, self.slave_pos, io_pos], self.binlog_state)

    @property
    def applied(self) -> gtid.Position:
        return gtid.merge(gtid.parse(self.binlog_pos), gtid.parse(self.slave_pos))

    def status(self) -> dict[str, str]:
        """For Member.workload_status."""
        out = {
            "read_only": "ON" if self.read_only else "OFF",
            "gtid_binlog_pos": self.binlog_pos,
            "gtid_slave_pos": self.slave_pos,
            "gtid_current_pos": self.current_pos,
        }
        if self.replica is not None:
            r = self.replica
            out.update(
                master=f"{r.get('Master_Host', '')}:{r.get('Master_Port', '')}",
                io_running=str(r.get("Slave_IO_Running", "")),
                sql_running=str(r.get("Slave_SQL_Running", "")),
                seconds_behind_master=str(r.get("Seconds_Behind_Master")),
                gtid_io_pos=str(r.get("Gtid_IO_Pos", "")),
            )
            if r.get("Last_Error") or r.get("Last_IO_Error"):
                out["last_error"] = str(r.get("Last_Error") or r.get("Last_IO_Error"))
        return out


def _state(cursor: pymysql.cursors.DictCursor) -> State:
    cursor.execute(
        "SELECT @@global.read_only AS ro, @@global.gtid_binlog_pos AS b, @@global.gtid_slave_pos AS s, "
        "@@global.gtid_current_pos AS c, @@global.gtid_binlog_state AS bs"
    )
    row = cursor.fetchone() or {}
    cursor.execute("SHOW SLAVE STATUS")
    replica = cursor.fetchone()
    return State(
        read_only=bool(row.get("ro")),
        binlog_pos=row.get("b") or "",
        slave_pos=row.get("s") or "",
        replica=replica or None,
        current_pos=row.get("c") or "",
        binlog_state=row.get("bs") or "",
    )


def ping(server: Server) -> None:
    with server.connect() as cursor:
        cursor.execute("SELECT 1")


def state(server: Server) -> State:
    with server.connect() as cursor:
        return _state(cursor)


def binlog_pos(server: Server) -> str:
    with server.connect() as cursor:
        cursor.execute("SELECT @@global.gtid_binlog_pos AS b")
        row = cursor.fetchone() or {}
        return str(row.get("b") or "")


def standby_ready(server: Server) -> tuple[bool, str]:
    """Whether a replica that follows nobody yet (no master in the instance) is up and read-only."""
    current = state(server)
    if not current.read_only:
        return False, "read_only is OFF on a replica"
    return True, f"read-only, waiting for a master (at {current.current_pos or '-'})"


def replica_ready(server: Server, target: gtid.Position) -> tuple[bool, str]:
    """Whether a replica runs both replication threads and has applied ``target``."""
    current = state(server)
    r = current.replica
    if r is None:
        return False, "no replication configured"
    if r.get("Slave_IO_Running") != "Yes" or r.get("Slave_SQL_Running") != "Yes":
        detail = r.get("Last_IO_Error") or r.get("Last_SQL_Error") or ""
        return False, (
            f"replication threads io={r.get('Slave_IO_Running')} sql={r.get('Slave_SQL_Running')} {detail}"
        ).strip()
    if not gtid.reached(current.applied, target):
        return False, f"applied {current.slave_pos or '-'}, must reach {target}"
    return True, "caught up"


def promote(server: Server, apply_timeout: float) -> State:
    """Make the member a writable master, after it has applied every transaction it received."""
    with server.connect(read_timeout=apply_timeout + server.timeout) as cursor:
        before = _state(cursor)
        if before.replica is not None:
            # Stop receiving, then let the SQL thread apply what is already in the relay log, so
            # nothing the old master sent us is lost.
            cursor.execute("STOP SLAVE IO_THREAD")
            cursor.execute("SHOW SLAVE STATUS")
            row = cursor.fetchone() or {}
            io_pos = str(row.get("Gtid_IO_Pos") or "")
            if io_pos:
                if row.get("Slave_SQL_Running") != "Yes":
                    cursor.execute("START SLAVE SQL_THREAD")
                cursor.execute("SELECT MASTER_GTID_WAIT(%s, %s) AS w", (io_pos, apply_timeout))
                waited = (cursor.fetchone() or {}).get("w")
                if waited != 0:
                    raise errors.Unavailable(
                        f"mysql {server}: relay log not applied within {apply_timeout:.0f}s (up to {io_pos})"
                    )
            cursor.execute("STOP SLAVE")
            cursor.execute("RESET SLAVE ALL")
        cursor.execute("SET GLOBAL read_only = OFF")
        after = _state(cursor)
    log.info("mysql %s is master at %s", server, after.binlog_pos or "-")
    return after


def follow(server: Server, master_host: str, master_port: int, user: str, password: str) -> State:
    """Make the member a read-only replica of ``master_host:master_port`` (GTID, slave_pos)."""
    with server.connect() as cursor:
        # Read-only first: a demoted master must stop taking writes before anything else.
        cursor.execute("SET GLOBAL read_only = ON")
        current = _state(cursor)
        r = current.replica
        already = (
            r is not None
            and r.get("Master_Host") == master_host
            and int(r.get("Master_Port") or 0) == master_port
            and r.get("Using_Gtid") == "Slave_Pos"
            and r.get("Master_User") == user
        )
        running = (
            r is not None and r.get("Slave_SQL_Running") == "Yes" and r.get("Slave_IO_Running") in _IO_UP
        )
        if already and running:
            return current
        if r is not None:
            cursor.execute("STOP SLAVE")
        # Resume from the member's own last transaction: a demoted master (or a member that was
        # promoted once) has binlogged transactions its gtid_slave_pos does not show.
        cursor.execute(RESUME_FROM_BINLOG)
        if not already:
            cursor.execute(
                "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s, "
                "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                (master_host, master_port, user, password),
            )
        cursor.execute("START SLAVE")
        after = _state(cursor)
    log.info("mysql %s follows %s:%d", server, master_host, master_port)
    return after


_ESCAPES = {"\0": "\\0", "\n": "\\n", "\r": "\\r", "\\": "\\\\", "'": "\\'", '"': '\\"', "\x1a": "\\Z"}


def quote(value: str) -> str:
    """A SQL string literal (the server's default sql_mode: backslash escapes on)."""
    return "'" + "".join(_ESCAPES.get(c, c) for c in value) + "'"


# With log_slave_updates every transaction a member holds, replicated or its own, is in its binary
# log, so gtid_binlog_pos is where it must resume replicating from (gtid_slave_pos misses what it
# wrote as a master; its server id also changes per launch, so gtid_current_pos would too). If its
# history has diverged from the new master's, the master refuses that position (strict mode) and
# replication stops with the error, instead of silently skipping or re-applying transactions.
RESUME_FROM_BINLOG = "SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos"


def change_master_sql(master_host: str, master_port: int, user: str, password: str) -> str:
    """The same re-pointing as :func:`follow`, as SQL text for a replica's init file."""
    return (
        f"{RESUME_FROM_BINLOG};\n"
        f"CHANGE MASTER TO MASTER_HOST={quote(master_host)}, MASTER_PORT={int(master_port)}, "
        f"MASTER_USER={quote(user)}, MASTER_PASSWORD={quote(password)}, "
        "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;\n"
        "START SLAVE;\n"
    )
