"""Matching queued launches to offers: pure logic, no I/O.

Several launches may be packed into one offer: each takes its cpus, mem, disk and ports out of
what is left of it. Ports come from the offer's ranges (lowest free first, all distinct).
Placement: at most ``max_per_agent`` tasks of one instance per agent, counting tasks already
running or launched there, and every required attribute must match exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Mesos scalars are fixed-point with three decimals; compare with some slack.
_EPSILON = 1e-6


@dataclass(frozen=True)
class Need:
    """What one queued launch needs."""

    task_id: str
    instance: str
    cpus: float
    mem: float
    disk: float = 0.0
    port_names: tuple[str, ...] = ()
    max_per_agent: int = 1
    required_attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Offer:
    """One offer, reduced to what matching looks at. Mutated while launches are packed into it."""

    offer_id: str
    agent_id: str
    hostname: str
    cpus: float = 0.0
    mem: float = 0.0
    disk: float = 0.0
    ports: list[tuple[int, int]] = field(default_factory=list)
    attributes: Mapping[str, str] = field(default_factory=dict)

    def port_count(self) -> int:
        return sum(end - begin + 1 for begin, end in self.ports)

    def take_ports(self, count: int) -> list[int]:
        """The ``count`` lowest free ports, removed from the ranges."""
        taken: list[int] = []
        ranges = sorted(self.ports)
        while len(taken) < count and ranges:
            begin, end = ranges[0]
            taken.append(begin)
            if begin == end:
                ranges.pop(0)
            else:
                ranges[0] = (begin + 1, end)
        self.ports = ranges
        return taken


@dataclass(frozen=True)
class AgentCapacity:
    """What an agent can hold at most, as far as known (for "can never fit")."""

    agent_id: str
    hostname: str
    cpus: float
    mem: float
    disk: float
    port_count: int
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Assignment:
    """A launch placed on an offer, with the ports it was given (name -> port)."""

    task_id: str
    offer_id: str
    agent_id: str
    hostname: str
    ports: Mapping[str, int]


@dataclass
class MatchResult:
    # offer id -> the launches packed into it, in queue order
    assignments: dict[str, list[Assignment]] = field(default_factory=dict)
    # task id -> why it was not placed
    pending: dict[str, str] = field(default_factory=dict)

    def placed(self) -> list[Assignment]:
        return [a for batch in self.assignments.values() for a in batch]


def _fmt(value: float) -> str:
    return f"{value:.1f}" if value == int(value) else f"{value:g}"


def attributes_match(required: Mapping[str, str], attributes: Mapping[str, str]) -> bool:
    return all(attributes.get(name) == value for name, value in required.items())


def _misfit(need: Need, offer: Offer, running: Mapping[tuple[str, str], int]) -> str | None:
    """Why ``need`` does not fit what is left of ``offer`` (None: it fits). The text is phrased
    for the summary over all offers."""
    if not attributes_match(need.required_attributes, offer.attributes):
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(need.required_attributes.items()))
        return f"no agent offering resources has attributes {wanted}"
    limit = max(need.max_per_agent, 1)
    if running.get((offer.agent_id, need.instance), 0) >= limit:
        return f"agents with free resources already run {limit} task(s) of {need.instance}"
    if offer.cpus + _EPSILON < need.cpus:
        return f"no agent has {_fmt(need.cpus)} cpus free"
    if offer.mem + _EPSILON < need.mem:
        return f"no agent has {_fmt(need.mem)} MiB mem free"
    if offer.disk + _EPSILON < need.disk:
        return f"no agent has {_fmt(need.disk)} MiB disk free"
    if offer.port_count() < len(need.port_names):
        return f"no agent has {len(need.port_names)} free ports"
    return None


def _take(need: Need, offer: Offer) -> dict[str, int]:
    offer.cpus = round(offer.cpus - need.cpus, 6)
    offer.mem = round(offer.mem - need.mem, 6)
    offer.disk = round(offer.disk - need.disk, 6)
    return dict(zip(need.port_names, offer.take_ports(len(need.port_names)), strict=True))


def match(
    offers: Sequence[Offer],
    needs: Iterable[Need],
    running: Mapping[tuple[str, str], int] | None = None,
) -> MatchResult:
    """Place ``needs`` (in queue order) on ``offers``. ``running`` counts tasks per (agent id,
    instance) already running or launched. ``offers`` are consumed (their resources reduced).

    Among the offers a launch fits, it goes to the agent with the fewest tasks of its instance,
    then the most cpus left: members of an instance spread out and load evens out.
    """
    counts: dict[tuple[str, str], int] = dict(running or {})
    result = MatchResult()
    for need in needs:
        fitting: list[Offer] = []
        reasons: list[str] = []
        for offer in offers:
            why = _misfit(need, offer, counts)
            if why is None:
                fitting.append(offer)
            elif why not in reasons:
                reasons.append(why)
        if not fitting:
            result.pending[need.task_id] = (
                ("waiting: " + "; ".join(reasons)) if reasons else "waiting for offers"
            )
            continue
        best = min(fitting, key=lambda o: (counts.get((o.agent_id, need.instance), 0), -o.cpus, -o.mem))
        ports = _take(need, best)
        key = (best.agent_id, need.instance)
        counts[key] = counts.get(key, 0) + 1
        result.assignments.setdefault(best.offer_id, []).append(
            Assignment(need.task_id, best.offer_id, best.agent_id, best.hostname, ports)
        )
    return result


def never_fits(need: Need, agents: Iterable[AgentCapacity]) -> str | None:
    """Why no known agent could ever run ``need``, even empty; None when some agent could, or
    when no agent is known yet (nothing is proven then)."""
    known = list(agents)
    if not known:
        return None
    candidates = [a for a in known if attributes_match(need.required_attributes, a.attributes)]
    if not candidates:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(need.required_attributes.items()))
        return f"no agent has attributes {wanted}"
    for agent in candidates:
        if (
            agent.cpus + _EPSILON >= need.cpus
            and agent.mem + _EPSILON >= need.mem
            and agent.disk + _EPSILON >= need.disk
            and agent.port_count >= len(need.port_names)
        ):
            return None
    checks: list[tuple[str, float, float, str]] = [
        ("cpus", need.cpus, max(a.cpus for a in candidates), ""),
        ("mem", need.mem, max(a.mem for a in candidates), " MiB"),
        ("disk", need.disk, max(a.disk for a in candidates), " MiB"),
        ("ports", float(len(need.port_names)), float(max(a.port_count for a in candidates)), ""),
    ]
    for name, wanted_amount, largest, unit in checks:
        if wanted_amount > largest + _EPSILON:
            return (
                f"no agent has {_fmt(wanted_amount)}{unit} {name} in total "
                f"(the largest known has {_fmt(largest)}{unit})"
            )
    return "no single agent has all of the resources asked for"
