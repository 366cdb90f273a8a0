"""Matching queued launches to offers: pure logic, no I/O.

Several launches may be packed into one offer: each takes its cpus, mem, disk and ports out of
what is left of it. Ports come from the offer's ranges (lowest free first, all distinct).
Placement: at most ``max_per_agent`` members of one instance per agent, and every required
attribute must match exactly. A member is counted on every agent it is at (its "current agent",
as dcos-commons' placement rules count every task of the service in the state store, running or
not): where its task is live, where its pinned launch waits, and where its persistent volume is,
even while its task is down (LOST, restarting in place there). Without that a member moved
elsewhere could be placed next to a down member's volume, and that member would then restart in
place next to it: two members of one instance on one agent. The launching member itself is not
counted (its own old place does not keep it off), and a pinned launch is not subject to the rule
(its volume is its place).

A launch with a persistent volume (docs/volumes.md) is placed in one of three ways:
- pinned (the volume's agent is known): only on an offer from that agent, only on the resources
  reserved for that member with that persistence id, and only once the volume is offered;
- first launch, when an offer already holds a reservation of the member with that persistence id
  (left by a crash between operations): on it (its volume, or a CREATE on its reserved disk);
- first launch otherwise: unreserved cpus, mem, ports and disk (= the volume's size), to be
  reserved and turned into the volume (RESERVE + CREATE + LAUNCH).
Unreserved resources are never used for a pinned launch (but for ports standing in for reserved
ports avoided after failed launches, ``Assignment.unreserved_ports``), and one member's
reservation is never used for another member.

A launch may carry an avoid list (``Need.avoid``, from ``LaunchSpec.avoid``: lifecycle learnt it
from the member's failed launches): a whole agent is skipped, and avoided ports on an agent are
never taken from its offer. :func:`relax_avoid` drops what would make a launch impossible on
every known agent (an avoid list is a preference learnt from failures, never a reason to wait
forever). A pinned launch (its volume's agent) is never kept off its agent.

Maintenance (Mesos docs/maintenance.md, "Draining mode"): the offers of an agent whose machine is
scheduled for maintenance carry an ``unavailability`` (:attr:`Offer.unavailable_at`). Such an
agent takes no new placement, first launches on a reservation left there included: a stateful
member lives as long as its data, so any announced unavailability falls within its life (Mesos
suggests placing long-running tasks "on machines with no unavailability"). A pinned launch (a
restart in place on its volume) may still use it; lifecycle moves the member off afterwards.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

# Mesos scalars are fixed-point with three decimals; compare with some slack.
_EPSILON = 1e-6

# (agent id, instance) -> the members of the instance at that agent (member ids; task ids for
# launches without a member id), or a plain count of anonymous tasks there.
Occupancy = Mapping[tuple[str, str], Collection[str] | int]


def members_at(occupancy: Occupancy, agent_id: str, need: Need) -> int:
    """How many members of ``need``'s instance, other than ``need``'s own member, are at
    ``agent_id``."""
    there = occupancy.get((agent_id, need.instance))
    if there is None:
        return 0
    if isinstance(there, int):
        return there
    own = need.member_id or need.task_id
    return sum(1 for member in there if member != own)


@dataclass(frozen=True)
class VolumeNeed:
    """The persistent volume a launch runs on; ``agent_id`` set: pinned to that agent."""

    persistence_id: str
    size: float
    container_path: str
    agent_id: str = ""
    host: str = ""


@dataclass(frozen=True)
class Need:
    """What one queued launch needs. With a volume, ``disk`` is the volume's size."""

    task_id: str
    instance: str
    cpus: float
    mem: float
    disk: float = 0.0
    port_names: tuple[str, ...] = ()
    max_per_agent: int = 1
    required_attributes: Mapping[str, str] = field(default_factory=dict)
    member_id: str = ""
    volume: VolumeNeed | None = None
    # agent id -> ports not to take there; an empty set: do not use the agent at all.
    avoid: Mapping[str, frozenset[int]] = field(default_factory=dict)

    def avoids_agent(self, agent_id: str) -> bool:
        ports = self.avoid.get(agent_id)
        return ports is not None and not ports

    def avoided_ports(self, agent_id: str) -> frozenset[int]:
        return self.avoid.get(agent_id) or frozenset()


def avoid_map(entries: Iterable[tuple[str, Iterable[int]]]) -> dict[str, frozenset[int]]:
    """``(agent id, ports)`` pairs (``LaunchSpec.avoid``) as :attr:`Need.avoid`: ports of one
    agent are merged; an entry without ports avoids the whole agent and wins over port entries."""
    result: dict[str, frozenset[int]] = {}
    whole: set[str] = set()
    for agent_id, ports in entries:
        if not agent_id:
            continue
        wanted = frozenset(int(p) for p in ports)
        if not wanted:
            whole.add(agent_id)
        result[agent_id] = result.get(agent_id, frozenset()) | wanted
    for agent_id in whole:
        result[agent_id] = frozenset()
    return result


@dataclass
class OfferedVolume:
    """A persistent volume in an offer."""

    persistence_id: str
    size: float
    container_path: str = ""


@dataclass
class Reservation:
    """Resources of an offer reserved for our role with one member's labels (instance, member id,
    persistence id), with the persistent volumes made on them."""

    instance: str
    member_id: str
    persistence_id: str
    cpus: float = 0.0
    mem: float = 0.0
    disk: float = 0.0  # reserved disk that is not a volume
    ports: list[int] = field(default_factory=list)
    volumes: list[OfferedVolume] = field(default_factory=list)
    used: bool = False  # taken by a launch in this round

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.instance, self.member_id, self.persistence_id)

    def volume(self, persistence_id: str) -> OfferedVolume | None:
        return next((v for v in self.volumes if v.persistence_id == persistence_id), None)

    def volume_size(self) -> float:
        return round(sum(v.size for v in self.volumes), 6)


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
    # Our labelled reservations in the offer (cpus/mem/disk/ports above are the unreserved ones).
    reservations: list[Reservation] = field(default_factory=list)
    # The offer's ``unavailability.start`` (seconds since the epoch): its agent's machine is
    # scheduled for maintenance (DRAINING). None: no maintenance announced.
    unavailable_at: float | None = None
    # The agent's HTTP base URL from the offer's ``url`` ("http://host:port"; "" if absent).
    url: str = ""

    @property
    def draining(self) -> bool:
        return self.unavailable_at is not None

    def reservation(self, member_id: str, persistence_id: str) -> Reservation | None:
        return next(
            (
                r
                for r in self.reservations
                if r.member_id == member_id and r.persistence_id == persistence_id and not r.used
            ),
            None,
        )

    def port_count(self, skip: frozenset[int] = frozenset()) -> int:
        """Ports in the ranges, not counting those in ``skip``."""
        total = sum(end - begin + 1 for begin, end in self.ports)
        return total - sum(1 for p in skip if any(b <= p <= e for b, e in self.ports))

    def take_ports(self, count: int, skip: frozenset[int] = frozenset()) -> list[int]:
        """The ``count`` lowest free ports not in ``skip``, removed from the ranges (skipped ports
        stay in them, for other launches)."""
        taken: list[int] = []
        for begin, end in sorted(self.ports):
            port = begin
            while len(taken) < count and port <= end:
                if port not in skip:
                    taken.append(port)
                port += 1
            if len(taken) >= count:
                break
        self.ports = _without(self.ports, taken)
        return taken


def _without(ranges: Iterable[tuple[int, int]], ports: Iterable[int]) -> list[tuple[int, int]]:
    """``ranges`` (inclusive) with ``ports`` cut out of them, sorted."""
    result = sorted(ranges)
    for port in sorted(set(ports)):
        kept: list[tuple[int, int]] = []
        for begin, end in result:
            if begin <= port <= end:
                if begin < port:
                    kept.append((begin, port - 1))
                if port < end:
                    kept.append((port + 1, end))
            else:
                kept.append((begin, end))
        result = kept
    return result


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


# How a launch uses its offer.
PLAIN = "plain"  # unreserved resources, no volume
RESERVE = "reserve"  # RESERVE unreserved resources + CREATE the volume + LAUNCH
CREATE = "create"  # the member's reservation is there, its volume not: CREATE + LAUNCH
RESERVED = "reserved"  # the member's reservation and volume are there: LAUNCH on them


@dataclass(frozen=True)
class Assignment:
    """A launch placed on an offer, with the ports it was given (name -> port)."""

    task_id: str
    offer_id: str
    agent_id: str
    hostname: str
    ports: Mapping[str, int]
    mode: str = PLAIN
    # Ports of a launch on a reservation taken from the offer's unreserved ranges instead of the
    # reservation's own ports (those are avoided after failed launches): they are not reserved.
    unreserved_ports: tuple[int, ...] = ()


@dataclass
class MatchResult:
    # offer id -> the launches packed into it, in queue order
    assignments: dict[str, list[Assignment]] = field(default_factory=dict)
    # task id -> why it was not placed
    pending: dict[str, str] = field(default_factory=dict)
    # task id -> agent id -> short label of why that agent's offer did not take it (launches
    # placed by the rules, not pinned ones); see summarize()
    misfits: dict[str, dict[str, str]] = field(default_factory=dict)

    def placed(self) -> list[Assignment]:
        return [a for batch in self.assignments.values() for a in batch]


def _fmt(value: float) -> str:
    return f"{value:.1f}" if value == int(value) else f"{value:g}"


def attributes_match(required: Mapping[str, str], attributes: Mapping[str, str]) -> bool:
    return all(attributes.get(name) == value for name, value in required.items())


def draining_reason(offer: Offer) -> str:
    """Why a new placement skips the offer of an agent scheduled for maintenance."""
    assert offer.unavailable_at is not None
    when = datetime.datetime.fromtimestamp(offer.unavailable_at, datetime.UTC)
    return (
        f"agent {offer.hostname or offer.agent_id} is scheduled for maintenance "
        f"(unavailable from {when.isoformat(timespec='seconds')})"
    )


def _misfit(need: Need, offer: Offer, running: Occupancy) -> tuple[str, str] | None:
    """Why ``need`` does not fit what is left of ``offer`` (None: it fits), twice: phrased for the
    list of reasons over all offers (``GetCluster.pending``), and as the short label of this agent
    in the summary of :func:`summarize` ("scheduled for maintenance", "hold another member of
    cache", ...; plural verbs, :func:`summarize` fits them to the count)."""
    where = offer.hostname or offer.agent_id
    if offer.draining:
        return draining_reason(offer), "scheduled for maintenance"
    if not attributes_match(need.required_attributes, offer.attributes):
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(need.required_attributes.items()))
        return f"no agent offering resources has attributes {wanted}", f"lack attributes {wanted}"
    if need.avoids_agent(offer.agent_id):
        who = need.member_id or need.task_id
        return (
            f"agent {where} is avoided after failed launches of {who}",
            f"avoided after failed launches of {who}",
        )
    limit = max(need.max_per_agent, 1)
    if members_at(running, offer.agent_id, need) >= limit:
        held = f"another member of {need.instance}" if limit == 1 else f"{limit} members of {need.instance}"
        return f"agents with free resources already run {limit} task(s) of {need.instance}", f"hold {held}"
    if offer.cpus + _EPSILON < need.cpus:
        return f"no agent has {_fmt(need.cpus)} cpus free", f"lack {_fmt(need.cpus)} free cpus"
    if offer.mem + _EPSILON < need.mem:
        return f"no agent has {_fmt(need.mem)} MiB mem free", f"lack {_fmt(need.mem)} MiB free mem"
    if offer.disk + _EPSILON < need.disk:
        return f"no agent has {_fmt(need.disk)} MiB disk free", f"lack {_fmt(need.disk)} MiB free disk"
    avoided = need.avoided_ports(offer.agent_id)
    wanted_ports = len(need.port_names)
    if offer.port_count(avoided) < wanted_ports:
        if avoided and offer.port_count() >= wanted_ports:
            listed = ", ".join(str(p) for p in sorted(avoided))
            return (
                f"no agent has {wanted_ports} free ports besides those avoided after failed "
                f"launches ({listed} on {where})",
                f"lack {wanted_ports} free ports besides those avoided after failed launches",
            )
        return f"no agent has {wanted_ports} free ports", f"lack {wanted_ports} free ports"
    return None


# Verbs of the labels of _misfit (plural) in the singular.
_SINGULAR = {"hold": "holds", "lack": "lacks"}


def summarize(misfits: Mapping[str, str]) -> str:
    """A short summary of why no agent takes a launch, from the label of each agent (agent id ->
    label of :func:`_misfit`): "no offer fits: 2 agents scheduled for maintenance, 3 hold another
    member of extra". Most frequent reason first (then in order of appearance); each agent is
    counted once. No agent: "waiting for offers"."""
    counts: dict[str, int] = {}
    for label in misfits.values():
        counts[label] = counts.get(label, 0) + 1
    if not counts:
        return "waiting for offers"
    order = {label: i for i, label in enumerate(counts)}
    parts: list[str] = []
    for label, count in sorted(counts.items(), key=lambda kv: (-kv[1], order[kv[0]])):
        if count == 1:
            verb, _, rest = label.partition(" ")
            label = f"{_SINGULAR.get(verb, verb)} {rest}" if rest else _SINGULAR.get(verb, verb)
        noun = ("agent" if count == 1 else "agents") if not parts else ""
        parts.append(" ".join(x for x in (str(count), noun, label) if x))
    return "no offer fits: " + ", ".join(parts)


def _take(need: Need, offer: Offer) -> dict[str, int]:
    offer.cpus = round(offer.cpus - need.cpus, 6)
    offer.mem = round(offer.mem - need.mem, 6)
    offer.disk = round(offer.disk - need.disk, 6)
    ports = offer.take_ports(len(need.port_names), need.avoided_ports(offer.agent_id))
    return dict(zip(need.port_names, ports, strict=True))


def _reserved_ports(need: Need, offer: Offer, reservation: Reservation) -> list[int]:
    """The reservation's ports the launch may take: all of them, lowest first, but those avoided
    on this agent after failed launches."""
    avoided = need.avoided_ports(offer.agent_id)
    return [p for p in sorted(reservation.ports) if p not in avoided]


def _reserved_misfit(need: Need, reservation: Reservation, offer: Offer) -> str | None:
    """Why the member's reservation (with the offer's unreserved ports standing in for reserved
    ones that are avoided) cannot hold ``need`` (None: it can)."""
    assert need.volume is not None
    where = f"the reservation of {need.member_id} ({need.volume.persistence_id})"
    if reservation.cpus + _EPSILON < need.cpus:
        return f"{where} holds {_fmt(reservation.cpus)} cpus, the launch needs {_fmt(need.cpus)}"
    if reservation.mem + _EPSILON < need.mem:
        return f"{where} holds {_fmt(reservation.mem)} MiB mem, the launch needs {_fmt(need.mem)}"
    if len(reservation.ports) < len(need.port_names):
        return f"{where} holds {len(reservation.ports)} ports, the launch needs {len(need.port_names)}"
    missing = len(need.port_names) - len(_reserved_ports(need, offer, reservation))
    if missing > 0 and offer.port_count(need.avoided_ports(offer.agent_id)) < missing:
        return (
            f"{where}: its ports are avoided after failed launches and {offer.hostname or offer.agent_id} "
            f"offers no {missing} other free ports"
        )
    volume = reservation.volume(need.volume.persistence_id)
    if volume is None and reservation.disk + _EPSILON < need.volume.size:
        return f"{where} has neither the volume nor {_fmt(need.volume.size)} MiB disk for it"
    return None


def _take_reserved(need: Need, offer: Offer, reservation: Reservation) -> Assignment:
    reservation.used = True
    assert need.volume is not None
    has_volume = reservation.volume(need.volume.persistence_id) is not None
    # The member keeps its ports: the lowest reserved ports, in port-name order, as at the
    # first launch (which took the lowest free ports in that order and reserved exactly them).
    # A reserved port avoided after a failed launch (another program took it on the agent) is
    # replaced by one of the offer's unreserved ports: the member restarts on its volume, on
    # another port (data-safety rule 4: it never leaves its data for a port).
    own = _reserved_ports(need, offer, reservation)
    extra: list[int] = []
    if len(own) < len(need.port_names):
        extra = offer.take_ports(len(need.port_names) - len(own), need.avoided_ports(offer.agent_id))
    ports = dict(zip(need.port_names, own + extra, strict=False))
    return Assignment(
        need.task_id,
        offer.offer_id,
        offer.agent_id,
        offer.hostname,
        ports,
        RESERVED if has_volume else CREATE,
        tuple(extra),
    )


def _place_pinned(need: Need, offers: Sequence[Offer]) -> Assignment | str:
    """The launch on its volume's agent, or why not yet."""
    assert need.volume is not None
    volume = need.volume
    where = f"agent {volume.host or volume.agent_id}"
    from_agent = [o for o in offers if o.agent_id == volume.agent_id]
    if not from_agent:
        return f"waiting for {where} that holds volume {volume.persistence_id}"
    reasons: list[str] = []
    for offer in from_agent:
        reservation = offer.reservation(need.member_id, volume.persistence_id)
        if reservation is None or reservation.volume(volume.persistence_id) is None:
            continue
        why = _reserved_misfit(need, reservation, offer)
        if why is None:
            return _take_reserved(need, offer, reservation)
        reasons.append(why)
    if reasons:
        return "waiting: " + "; ".join(reasons)
    return (
        f"waiting for volume {volume.persistence_id} to be offered by {where} "
        "(still in use by a task, or gone)"
    )


def match(
    offers: Sequence[Offer],
    needs: Iterable[Need],
    running: Occupancy | None = None,
) -> MatchResult:
    """Place ``needs`` (in queue order) on ``offers``. ``running`` holds the members of each
    instance at each agent (:data:`Occupancy`: live tasks, pinned launches, volumes; or plain
    counts). ``offers`` are consumed (their resources reduced, reservations marked used).

    Among the offers a launch fits, it goes to the agent with the fewest members of its instance,
    then the most cpus left: members of an instance spread out and load evens out.
    """
    counts: dict[tuple[str, str], Collection[str] | int] = dict(running or {})
    result = MatchResult()

    def place(assignment: Assignment, need: Need) -> None:
        key = (assignment.agent_id, need.instance)
        there = counts.get(key, ())
        if isinstance(there, int):
            counts[key] = there + 1
        else:
            counts[key] = {*there, need.member_id or need.task_id}
        result.assignments.setdefault(assignment.offer_id, []).append(assignment)

    for need in needs:
        volume = need.volume
        if volume is not None and volume.agent_id:
            pinned = _place_pinned(need, offers)
            if isinstance(pinned, str):
                result.pending[need.task_id] = pinned
            else:
                place(pinned, need)
            continue
        if volume is not None:
            # A reservation of this member with this persistence id, left by an earlier attempt
            # (not on an agent scheduled for maintenance: a new placement, so the placement
            # rule holds too).
            leftover = [
                (o, r)
                for o in offers
                if not o.draining
                and (r := o.reservation(need.member_id, volume.persistence_id)) is not None
                and _reserved_misfit(need, r, o) is None
                and members_at(counts, o.agent_id, need) < max(need.max_per_agent, 1)
            ]
            if leftover:
                offer, reservation = min(leftover, key=lambda p: p[1].volume(volume.persistence_id) is None)
                place(_take_reserved(need, offer, reservation), need)
                continue
        fitting: list[Offer] = []
        reasons: list[str] = []
        labels: dict[str, str] = {}
        for offer in offers:
            why = _misfit(need, offer, counts)
            if why is None:
                fitting.append(offer)
                continue
            text, label = why
            labels.setdefault(offer.agent_id, label)
            if text not in reasons:
                reasons.append(text)
        if not fitting:
            result.pending[need.task_id] = (
                ("waiting: " + "; ".join(reasons)) if reasons else "waiting for offers"
            )
            result.misfits[need.task_id] = labels
            continue
        best = min(fitting, key=lambda o: (members_at(counts, o.agent_id, need), -o.cpus, -o.mem))
        ports = _take(need, best)
        mode = RESERVE if volume is not None else PLAIN
        place(Assignment(need.task_id, best.offer_id, best.agent_id, best.hostname, ports, mode), need)
    return result


def never_fits(need: Need, agents: Iterable[AgentCapacity]) -> str | None:
    """Why no known agent could ever run ``need``, even empty; None when some agent could, or
    when no agent is known yet (nothing is proven then)."""
    known = list(agents)
    if not known or (need.volume is not None and need.volume.agent_id):
        # Nothing is proven yet; a pinned launch waits for its agent (lifecycle decides when
        # to give up on it and replace the member).
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


def _usable(
    need: Need,
    agent: AgentCapacity,
    avoid: Mapping[str, frozenset[int]],
    running: Occupancy,
) -> bool:
    """Whether ``agent`` could take ``need`` under ``avoid``, as far as its capacity and the tasks
    of the instance already there go."""
    ports = avoid.get(agent.agent_id)
    if ports is not None and not ports:
        return False
    if not attributes_match(need.required_attributes, agent.attributes):
        return False
    if members_at(running, agent.agent_id, need) >= max(need.max_per_agent, 1):
        return False
    return (
        agent.cpus + _EPSILON >= need.cpus
        and agent.mem + _EPSILON >= need.mem
        and agent.disk + _EPSILON >= need.disk
        and agent.port_count - len(ports or ()) >= len(need.port_names)
    )


def relax_avoid(need: Need, agents: Iterable[AgentCapacity], running: Occupancy | None = None) -> Need:
    """``need`` with the part of its avoid list dropped that would keep it off every known agent:
    first the whole-agent entries (the ports avoided there stay), then everything. An avoid list
    is learnt from failed launches; it steers a launch elsewhere while there is an elsewhere, and
    never makes it wait forever (lifecycle retries a failed member later, and the cause may be
    gone by then). A pinned launch keeps its list (it is placed on its volume's agent anyway);
    with no agent known yet nothing is proven and the list is kept."""
    if not need.avoid or (need.volume is not None and need.volume.agent_id):
        return need
    known = list(agents)
    counts = running or {}
    if not known or any(_usable(need, a, need.avoid, counts) for a in known):
        return need
    ports_only = {agent: ports for agent, ports in need.avoid.items() if ports}
    if ports_only and any(_usable(need, a, ports_only, counts) for a in known):
        return replace(need, avoid=ports_only)
    return replace(need, avoid={})


@dataclass(frozen=True)
class WantedVolume:
    """What a member record says about its volume."""

    persistence_id: str
    agent_id: str = ""


def orphaned(
    key: tuple[str, str, str],
    agent_id: str,
    members: Mapping[str, WantedVolume],
    in_use: Iterable[tuple[str, str]] = (),
) -> bool:
    """Whether the reservation of ``key`` (instance, member id, persistence id) on ``agent_id`` is
    no longer wanted: no member record with that id has that volume, or the member's volume is on
    another agent. ``members`` must come from a fresh read of every member record; ``in_use``
    holds (member id, persistence id) of our queued and live tasks, whose reservations are kept."""
    _, member_id, persistence_id = key
    if (member_id, persistence_id) in set(in_use):
        return False
    wanted = members.get(member_id)
    if wanted is None or wanted.persistence_id != persistence_id:
        return True
    return bool(wanted.agent_id) and wanted.agent_id != agent_id
