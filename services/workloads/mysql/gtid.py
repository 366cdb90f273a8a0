"""MariaDB GTID positions: ``"0-1-42,1-7-3"`` (domain-server-sequence, one per domain). Pure.

Within a domain, sequence numbers only grow (``gtid_strict_mode``), so comparing positions means
comparing the sequence per domain; the server id does not matter.
"""

from __future__ import annotations

Position = dict[int, int]


def parse(text: str | None) -> Position:
    """``"0-1-42,1-7-3"`` -> {0: 42, 1: 3}; empty or None -> {}. ValueError if malformed."""
    position: Position = {}
    for part in (text or "").replace("\n", "").split(","):
        part = part.strip()
        if not part:
            continue
        fields = part.split("-")
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise ValueError(f"not a GTID: {part!r}")
        domain, _server, seq = (int(f) for f in fields)
        position[domain] = max(seq, position.get(domain, 0))
    return position


def reached(position: Position, target: Position) -> bool:
    """Whether ``position`` includes every transaction of ``target``."""
    return all(position.get(domain, 0) >= seq for domain, seq in target.items())


def merge(*positions: Position) -> Position:
    """The most advanced sequence per domain over all positions."""
    merged: Position = {}
    for position in positions:
        for domain, seq in position.items():
            merged[domain] = max(seq, merged.get(domain, 0))
    return merged


def total(position: Position) -> int:
    """A single number to rank positions of replicas of one master (more = more advanced)."""
    return sum(position.values())


def format_position(position: Position) -> str:
    """{0: 42} -> "0:42" (domain:sequence; for messages)."""
    return ",".join(f"{domain}:{seq}" for domain, seq in sorted(position.items()))


# --- GTID sets: what a member holds, for choosing among MasterLost candidates --------------------

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


class GtidSet:
    """The transactions a member holds, as far as MariaDB says: per domain the last GTID (from
    ``gtid_current_pos`` / ``gtid_binlog_pos`` / ``gtid_slave_pos`` / the IO thread's position),
    and per (domain, server id) the last sequence seen (``gtid_binlog_state``: every server that
    wrote into the member's history). With ``gtid_strict_mode`` a history is one sequence per
    domain, so a member holds transaction ``d-s-n`` when its last GTID in ``d`` is that one, or
    is later and its history has ``s``'s transactions up to at least ``n``."""

    def __init__(self, positions: list[str], binlog_state: str = "") -> None:
        self.last: dict[int, tuple[int, int]] = {}  # domain -> (seq, server)
        self.seen: dict[tuple[int, int], int] = {}  # (domain, server) -> seq
        for domain, server, seq in parse_gtids(binlog_state) + [g for p in positions for g in parse_gtids(p)]:
            if seq > self.last.get(domain, (-1, 0))[0]:
                self.last[domain] = (seq, server)
            self.seen[(domain, server)] = max(seq, self.seen.get((domain, server), 0))

    def holds(self, domain: int, server: int, seq: int) -> bool:
        last_seq, last_server = self.last.get(domain, (0, 0))
        if last_seq < seq:
            return False
        if last_seq == seq:
            return last_server == server
        return self.seen.get((domain, server), -1) >= seq

    def contains(self, other: GtidSet) -> bool:
        """Whether every transaction ``other`` holds is held here (a superset, not a larger number:
        two members that each have transactions the other lacks have diverged)."""
        return all(self.holds(d, server, seq) for d, (seq, server) in other.last.items())

    def __str__(self) -> str:
        return ",".join(f"{d}-{server}-{seq}" for d, (seq, server) in sorted(self.last.items())) or "empty"
