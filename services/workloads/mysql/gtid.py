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
