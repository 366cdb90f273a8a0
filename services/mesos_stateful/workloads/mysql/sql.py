"""The SQL the workload runs on its members (PyMySQL, blocking: call from a thread).

Every function is idempotent: lifecycle retries callbacks, so "make this the master" on a master
and "follow X" on a replica already following X change nothing. Connection problems become
``errors.Unavailable`` (retried); SQL errors become ``errors.FailedPrecondition``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# PyMySQL ships no type information (no types-PyMySQL in the dev dependencies).
import pymysql
import pymysql.cursors

from mesos_stateful import sdk
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
                connect_timeout=self.timeout,
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


def _domain_error(server: Server, error: pymysql.err.MySQLError) -> sdk.StatefulError:
    code = error.args[0] if error.args and isinstance(error.args[0], int) else 0
    text = f"mysql {server}: {error}"
    if isinstance(error, pymysql.err.InterfaceError) or code in _UNREACHABLE or code == 0:
        return sdk.Unavailable(text)
    return sdk.FailedPrecondition(text)


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
    server_id: int = 0
    # rpl_semi_sync_master_enabled, and how many semi-sync replicas are attached now
    # (Rpl_semi_sync_master_clients).
    semi_sync_master: bool = False
    semi_sync_clients: int = 0

    @property
    def is_master(self) -> bool:
        return self.replica is None and not self.read_only

    @property
    def applied_set(self) -> gtid.GtidSet:
        """Every transaction the member has applied (its binary log history, with
        log_slave_updates every applied transaction is in it), as a GTID set."""
        return gtid.GtidSet([self.binlog_state, self.binlog_pos, self.current_pos, self.slave_pos])

    @property
    def gtid_set(self) -> gtid.GtidSet:
        """Every transaction the member holds: applied, or received in its relay log (the IO
        thread's ``Gtid_IO_Pos``); what it has once promoted (StartMaster applies the relay log)."""
        io_pos = str(self.replica.get("Gtid_IO_Pos") or "") if self.replica else ""
        return self.applied_set.union(gtid.GtidSet([io_pos]))

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
            "semi_sync_master": "ON" if self.semi_sync_master else "OFF",
        }
        if self.semi_sync_master:
            out["semi_sync_clients"] = str(self.semi_sync_clients)
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
        "@@global.gtid_current_pos AS c, @@global.gtid_binlog_state AS bs, @@global.server_id AS sid, "
        "@@global.rpl_semi_sync_master_enabled AS ssm, (SELECT VARIABLE_VALUE FROM "
        "information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS') AS ssc"
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
        server_id=int(row.get("sid") or 0),
        semi_sync_master=bool(row.get("ssm")),
        semi_sync_clients=int(row.get("ssc") or 0),
    )


def ping(server: Server) -> None:
    with server.connect() as cursor:
        cursor.execute("SELECT 1")


def state(server: Server) -> State:
    with server.connect() as cursor:
        return _state(cursor)


class _ProbeConnection:
    """One kept connection to a member for its frequent health checks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Any = None


_probes: dict[tuple[str, int, str, str, float], _ProbeConnection] = {}
_probes_lock = threading.Lock()


def probe_state(server: Server) -> State:
    """``state(server)`` over a connection kept between calls: the master's failure probe runs
    several times a second, and a fresh connection's handshake (with password hashing) is what
    made probes of a healthy MariaDB miss their deadline on a loaded machine. A kept connection
    that fails is dropped and the read is tried once on a fresh one, so a restarted member is
    read at once and a dead one still fails fast. A check that finds the kept connection busy (a
    previous probe still blocked on a frozen server) uses a fresh connection of its own."""
    key = (server.host, server.port, server.user, server.password, server.timeout)
    with _probes_lock:
        probe = _probes.setdefault(key, _ProbeConnection())
    if not probe.lock.acquire(blocking=False):
        return state(server)
    try:
        for attempt in (1, 2):
            fresh = probe.conn is None
            try:
                if fresh:
                    probe.conn = pymysql.connect(
                        host=server.host,
                        port=server.port,
                        user=server.user,
                        password=server.password,
                        connect_timeout=server.timeout,
                        read_timeout=server.timeout,
                        write_timeout=server.timeout,
                        autocommit=True,
                        cursorclass=pymysql.cursors.DictCursor,
                    )
                with probe.conn.cursor() as cursor:
                    return _state(cursor)
            except pymysql.err.MySQLError as error:
                with contextlib.suppress(Exception):
                    if probe.conn is not None:
                        probe.conn.close()
                probe.conn = None
                if fresh or attempt == 2:
                    raise _domain_error(server, error) from None
        raise AssertionError("unreachable")
    finally:
        probe.lock.release()


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


def promote(server: Server, apply_timeout: float, semi_sync: bool) -> State:
    """Make the member a writable master, after it has applied every transaction it received.
    ``semi_sync``: the instance has replicas, so commits wait for one of them (see
    :func:`set_semi_sync_master`); set before read_only is turned off, so no write is ever
    acknowledged by this master without a replica holding it."""
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
                    raise sdk.Unavailable(
                        f"mysql {server}: relay log not applied within {apply_timeout:.0f}s (up to {io_pos})"
                    )
            cursor.execute("STOP SLAVE")
            cursor.execute("RESET SLAVE ALL")
        _semi_sync_master(cursor, semi_sync)
        cursor.execute("SET GLOBAL read_only = OFF")
        after = _state(cursor)
    log.info("mysql %s is master at %s", server, after.binlog_pos or "-")
    return after


def follow(
    server: Server, master_host: str, master_port: int, user: str, password: str, lock_wait: float = 1.0
) -> State:
    """Make the member a read-only replica of ``master_host:master_port`` (GTID, slave_pos).

    A member that is (or was) a master is demoted first (:func:`demote`: read-only, its client
    sessions killed, which also ends sessions waiting for a semi-sync acknowledgement), and only
    then is its semi-sync master side turned off: turning it off first would let those waiting
    commits return OK without any replica holding them. The master side must be off on a
    replica: with it on, the replica's own SQL thread waits for an acknowledgement from
    replicas it does not have (measured: "Waiting for semi-sync ACK from slave")."""
    with server.connect(read_timeout=lock_wait + server.timeout) as cursor:
        current = _state(cursor)
        if not current.read_only or current.semi_sync_master:
            _demote(cursor, lock_wait, lock_wait * 5, server)
        _semi_sync_master(cursor, False)
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


# --- semi-synchronous replication ----------------------------------------------------------------

# rpl_semi_sync_master_timeout (ms) at its maximum (2^64 - 1 ms, over 500 million years): the
# master never falls back to asynchronous replication while semi-sync is on, so a commit is
# never acknowledged to its client unless a replica has written it to its relay log (MariaDB
# docs, "Semisynchronous Replication": on timeout the master "switches to asynchronous
# replication"; that must never happen).
SEMI_SYNC_TIMEOUT_MS = 18446744073709551615


def _semi_sync_master(cursor: pymysql.cursors.DictCursor, on: bool) -> None:
    if on:
        # Wait point AFTER_SYNC: the transaction is in the binary log (and synced) and waits for
        # the acknowledgement *before* the storage engine commit, so no other client can read
        # it before a replica holds it ("lossless" semi-sync). wait_no_slave: wait even when no
        # semi-sync replica is attached (else a master that lost its replicas commits alone).
        cursor.execute(
            "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC, "
            "GLOBAL rpl_semi_sync_master_wait_no_slave = ON, "
            f"GLOBAL rpl_semi_sync_master_timeout = {SEMI_SYNC_TIMEOUT_MS}, "
            "GLOBAL rpl_semi_sync_master_enabled = ON"
        )
    else:
        cursor.execute("SET GLOBAL rpl_semi_sync_master_enabled = OFF")


def set_semi_sync_master(server: Server, on: bool) -> State:
    """Turn the master side of semi-sync replication on (the instance has a replica) or off (it
    has none left). Idempotent."""
    with server.connect() as cursor:
        _semi_sync_master(cursor, on)
        after = _state(cursor)
    log.info("mysql %s: semi-sync master %s", server, "on" if on else "off")
    return after


# --- fencing -------------------------------------------------------------------------------------

# Server threads that are not client sessions: never killed by a fence. "Binlog Dump" threads
# serve the replicas (detached by the failover anyway; killing them would only cut a replica off
# what it has not received yet).
_SERVER_COMMANDS = ("Binlog Dump", "Daemon", "Slave_IO", "Slave_SQL", "Slave_worker")
_SERVER_USERS = ("system user", "event_scheduler", "")
_LOCK_WAIT_TIMEOUT = 1205


def _kill_clients(cursor: pymysql.cursors.DictCursor) -> list[int]:
    cursor.execute(
        "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
        f"AND COMMAND NOT IN ({', '.join(['%s'] * len(_SERVER_COMMANDS))}) "
        f"AND USER NOT IN ({', '.join(['%s'] * len(_SERVER_USERS))})",
        (*_SERVER_COMMANDS, *_SERVER_USERS),
    )
    killed = []
    for row in cursor.fetchall():
        try:
            cursor.execute(f"KILL CONNECTION {int(row['id'])}")
            killed.append(int(row["id"]))
        except pymysql.err.OperationalError as error:
            if error.args[0] != 1094:  # ER_NO_SUCH_THREAD: it ended meanwhile
                raise
    return killed


def _demote(
    cursor: pymysql.cursors.DictCursor, lock_wait: float, deadline: float, who: object = ""
) -> list[int]:
    """read_only ON, then every client session killed; returns the killed session ids.

    ``SET GLOBAL read_only = ON`` takes the global read lock and waits for commits in progress
    (MariaDB docs, read_only); a commit waiting for a semi-sync acknowledgement that will never
    come would make it wait forever (measured). So it is tried with ``lock_wait_timeout`` =
    ``lock_wait`` seconds; when that expires the client sessions are killed (ending their waits:
    their transactions were never acknowledged, the clients get no OK) and it is tried again,
    until ``deadline`` seconds (then Unavailable). Killed clients reconnect, to the new master."""
    cursor.execute("SET SESSION lock_wait_timeout = %s", (max(1, round(lock_wait)),))
    end = time.monotonic() + deadline
    killed: list[int] = []
    while True:
        try:
            cursor.execute("SET GLOBAL read_only = ON")
            break
        except pymysql.err.OperationalError as error:
            if error.args[0] != _LOCK_WAIT_TIMEOUT:
                raise
            if time.monotonic() > end:
                raise sdk.Unavailable(f"mysql {who}: read_only not set within {deadline:.0f}s") from None
            killed += _kill_clients(cursor)
    killed += _kill_clients(cursor)
    return killed


def demote(server: Server, lock_wait: float, deadline: float) -> tuple[State, list[int], list[str]]:
    """Stop a reachable master taking writes now (Fence): read-only, client sessions killed.
    Returns its state, the killed session ids, and the accounts that could still write (see
    :func:`write_bypass`); the caller decides what to do if that is not empty."""
    with server.connect(read_timeout=lock_wait + server.timeout) as cursor:
        killed = _demote(cursor, lock_wait, deadline, server)
        bypass = _write_bypass(cursor)
        after = _state(cursor)
    log.info("mysql %s demoted: read-only, %d session(s) killed", server, len(killed))
    return after, killed, bypass


def shutdown(server: Server) -> None:
    """SHUTDOWN the server (the fence of last resort). The connection drops: that is success."""
    try:
        with server.connect() as cursor:
            cursor.execute("SHUTDOWN")
    except sdk.Unavailable:
        pass


# The operator account's privileges: administration only. It holds READ_ONLY ADMIN (since
# MariaDB 10.11 the only privilege that may write to a read_only server, and the one needed to
# change read_only; SUPER no longer includes it, MariaDB docs "GRANT", "read_only"), so it must
# hold no privilege that changes data: with these, read_only stops every client write.
OPERATOR_PRIVILEGES = (
    "READ_ONLY ADMIN",
    "CONNECTION ADMIN",
    "PROCESS",
    "SHUTDOWN",
    "RELOAD",
    "REPLICATION SLAVE ADMIN",
    "REPLICATION MASTER ADMIN",
    "BINLOG MONITOR",
    "SLAVE MONITOR",
)
# What it reads besides: the privilege tables (to prove the fence, see write_bypass).
OPERATOR_SCHEMA_GRANT = "SELECT ON mysql.*"
# Privileges that change nothing (USAGE) or only the server's administration.
_HARMLESS = {*OPERATOR_PRIVILEGES, "USAGE", "SELECT", "SHOW DATABASES", "SHOW VIEW", "REPLICATION SLAVE"}


def _write_bypass(cursor: pymysql.cursors.DictCursor) -> list[str]:
    """The accounts (or roles) that hold READ_ONLY ADMIN together with a privilege that can change
    data, globally or on some schema or table; or that have roles granted (a role's privileges
    are theirs after SET ROLE). Empty: read_only stops every client write."""
    cursor.execute(
        "SELECT GRANTEE AS g FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE = 'READ_ONLY ADMIN'"
    )
    holders = sorted({str(r["g"]) for r in cursor.fetchall()})
    bad = []
    for grantee in holders:
        privileges: set[str] = set()
        for table in ("USER_PRIVILEGES", "SCHEMA_PRIVILEGES", "TABLE_PRIVILEGES", "COLUMN_PRIVILEGES"):
            cursor.execute(
                f"SELECT PRIVILEGE_TYPE AS p FROM information_schema.{table} WHERE GRANTEE = %s", (grantee,)
            )
            privileges |= {str(r["p"]) for r in cursor.fetchall()}
        user, _, host = grantee.partition("@")
        cursor.execute(
            "SELECT COUNT(*) AS n FROM mysql.roles_mapping WHERE User = %s AND Host = %s",
            (user.strip("'"), host.strip("'")),
        )
        roles = int((cursor.fetchone() or {}).get("n") or 0)
        writes = sorted(privileges - _HARMLESS)
        if writes or roles:
            bad.append(f"{grantee} ({', '.join(writes) or 'roles'})")
    return bad


# STOP SLAVE IO_THREAD while the master is frozen takes about 2 s (measured, MariaDB 10.11: the
# IO thread is in a read from the master's socket); allow it this long once connected.
DETACH_SECONDS = 10.0


def detach(server: Server) -> State:
    """Stop the replica receiving from its master (``STOP SLAVE IO_THREAD``; it returns once the
    IO thread has ended): it sends that master no more semi-sync acknowledgements. What it
    received stays (relay log, Gtid_IO_Pos); the SQL thread keeps applying it. Idempotent."""
    with server.connect() as cursor:
        before = _state(cursor)
        if before.replica is not None and before.replica.get("Slave_IO_Running") != "No":
            # Connected and answering within server.timeout: the stop itself may take longer.
            # PyMySQL has no public per-statement timeout; it reads _read_timeout per read.
            cursor.connection._read_timeout = max(server.timeout, DETACH_SECONDS)
            cursor.execute("STOP SLAVE IO_THREAD")
        after = _state(cursor)
    log.info("mysql %s detached from its master", server)
    return after
