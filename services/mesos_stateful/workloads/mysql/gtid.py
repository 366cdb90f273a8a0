"""MariaDB GTID positions and GTID sets. Pure.

A GTID is ``domain-server_id-sequence`` ("0-100001-42"). MariaDB keeps, per server
(MariaDB docs, "Global Transaction ID"):

- ``gtid_binlog_state``: for every (domain, server id) that ever wrote into the server's binary log
  history, the last sequence number of that server id. It survives binlog rotation and purging
  (each new binlog file starts with it);
- ``gtid_binlog_pos`` / ``gtid_current_pos`` / ``gtid_slave_pos``: one GTID per domain, the last
  one binlogged / applied (current = the newest of binlog and slave per domain) / applied by the
  replication SQL thread.

With ``gtid_strict_mode`` a history is, per domain, one strictly increasing sequence; two servers
that each wrote sequence ``n`` in the same domain have *different* histories even though the
numbers compare equal. So positions are **sets**, never numbers:

- :class:`GtidSet` models a member's history as MariaDB does: per (domain, server id) the last
  sequence held (the union of ``gtid_binlog_state`` and the per-domain positions);
- a member's history is **contained** in a master's when every (domain, server id, sequence) the
  member holds is held by the master. That is the test MariaDB's master runs when a replica
  connects with a GTID position (sql_repl.cc ``check_slave_start_position``): the requested GTID
  must be found in the master's binlog state for that server id at a sequence at least as high;
  otherwise the connection fails with error 1236 ("connecting slave requested to start from GTID
  X, which is not in the master's binlog", or "... it probably means that the slave has diverged").
  We test every server id of the member's history, not only its last GTID per domain, so an
  errant transaction that a later replicated one hides is found too. (MariaDB then scans the
  binlog for the exact event; a "hole" — the master having server s at n+1 but not at n — cannot
  arise under strict mode with GTID replication, so the state test is exact here.)
- a member not contained in the current master's history is DIVERGED: it must be rebuilt, never
  promoted.

The older per-domain :data:`Position` (domain -> sequence) is kept for the readiness check
(``reached``), where the master's own position is the target and servers cannot differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Position = dict[int, int]
Gtid = tuple[int, int, int]  # (domain, server id, sequence)


def parse_gtids(text: str | None) -> list[Gtid]:
    """``"0-1-42,0-2-43"`` -> [(0, 1, 42), (0, 2, 43)]; ValueError if malformed."""
    gtids: list[Gtid] = []
    for part in (text or "").replace("\n", "").split(","):
        part = part.strip()
        if not part:
            continue
        fields = part.split("-")
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise ValueError(f"not a GTID: {part!r}")
        domain, server, seq = (int(f) for f in fields)
        gtids.append((domain, server, seq))
    return gtids


def parse(text: str | None) -> Position:
    """``"0-1-42,1-7-3"`` -> {0: 42, 1: 3} (the highest sequence per domain); ValueError if
    malformed. Only for comparing positions of one history (the readiness target)."""
    position: Position = {}
    for domain, _server, seq in parse_gtids(text):
        position[domain] = max(seq, position.get(domain, 0))
    return position


def reached(position: Position, target: Position) -> bool:
    """Whether ``position`` is at or past ``target`` in every domain (same history assumed)."""
    return all(position.get(domain, 0) >= seq for domain, seq in target.items())


def merge(*positions: Position) -> Position:
    """The most advanced sequence per domain over all positions."""
    merged: Position = {}
    for position in positions:
        for domain, seq in position.items():
            merged[domain] = max(seq, merged.get(domain, 0))
    return merged


def total(position: Position) -> int:
    """Sum of the sequences (a tie-breaker between members known to share one history)."""
    return sum(position.values())


class GtidSet:
    """A member's GTID history: per (domain, server id) the last sequence it holds.

    Built from any of MariaDB's notations at once (``gtid_binlog_state``, ``gtid_binlog_pos``,
    ``gtid_current_pos``, ``gtid_slave_pos``, a replica's ``Gtid_IO_Pos``); ``str()`` gives it back
    in ``gtid_binlog_state`` notation, sorted by domain and sequence, so the highest GTID of each
    domain in it is the member's ``gtid_current_pos`` for that domain.
    """

    def __init__(
        self, texts: Iterable[str] = (), servers: Mapping[tuple[int, int], int] | None = None
    ) -> None:
        self.servers: dict[tuple[int, int], int] = dict(servers or {})
        for text in texts:
            for domain, server, seq in parse_gtids(text):
                key = (domain, server)
                self.servers[key] = max(seq, self.servers.get(key, 0))

    @classmethod
    def parse(cls, text: str | None) -> GtidSet:
        """The set from one string (e.g. a MemberHealth.position); ValueError if malformed."""
        return cls([text or ""])

    def __bool__(self) -> bool:
        return bool(self.servers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GtidSet) and self.servers == other.servers

    def __hash__(self) -> int:
        return hash(frozenset(self.servers.items()))

    def __str__(self) -> str:
        gtids = sorted((d, seq, s) for (d, s), seq in self.servers.items())
        return ",".join(f"{d}-{s}-{seq}" for d, seq, s in gtids)

    def __repr__(self) -> str:
        return f"GtidSet({str(self)!r})"

    def union(self, *others: GtidSet) -> GtidSet:
        merged = GtidSet(servers=self.servers)
        for other in others:
            for key, seq in other.servers.items():
                merged.servers[key] = max(seq, merged.servers.get(key, 0))
        return merged

    @property
    def domains(self) -> set[int]:
        return {d for d, _ in self.servers}

    def last(self, domain: int) -> tuple[int, int]:
        """(sequence, server id) of the newest GTID in ``domain``; (0, 0) if none."""
        best = (0, 0)
        for (d, server), seq in self.servers.items():
            if d == domain and seq > best[0]:
                best = (seq, server)
        return best

    def current_pos(self) -> str:
        """The newest GTID per domain, as ``gtid_current_pos`` shows it."""
        parts = []
        for d in sorted(self.domains):
            seq, server = self.last(d)
            parts.append(f"{d}-{server}-{seq}")
        return ",".join(parts)

    def holds(self, domain: int, server: int, seq: int) -> bool:
        """Whether transaction ``domain-server-seq`` is in this history: server ``server`` is in
        it at ``seq`` or later (MariaDB's binlog-state test, see the module docstring)."""
        return self.servers.get((domain, server), -1) >= seq

    def missing_from(self, history: GtidSet, writer: int | None = None) -> list[Gtid]:
        """This set's (domain, server, last seq) entries that ``history`` does not hold, i.e. the
        reasons MariaDB would refuse this member as a replica of ``history`` (error 1236).
        ``writer``: a server id whose transactions beyond ``history`` are expected (the master
        ``history`` was observed from kept writing after the observation)."""
        return sorted(
            (d, s, seq)
            for (d, s), seq in self.servers.items()
            if not history.holds(d, s, seq) and s != writer
        )

    def contained_in(self, history: GtidSet) -> bool:
        """Whether every transaction held here is held by ``history`` (a subset; two sets that
        each hold something the other lacks have diverged, whatever their numbers)."""
        return not self.missing_from(history)

    def contains(self, other: GtidSet) -> bool:
        return other.contained_in(self)

    def behind(self, ahead: GtidSet) -> int:
        """How many transactions ``ahead`` has that this set has not yet, counted per domain as
        the difference of the newest sequence numbers (sequences grow by one per transaction in
        a domain); 0 when not behind. Meaningful between members of one history."""
        lag = 0
        for d in ahead.domains:
            lag += max(0, ahead.last(d)[0] - self.last(d)[0])
        return lag


def describe(gtids: Iterable[Gtid]) -> str:
    """For messages: "0-2-15, 1-3-4"."""
    return ", ".join(f"{d}-{s}-{n}" for d, s, n in gtids)
