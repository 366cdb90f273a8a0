"""The master's maintenance state: the schedule, each scheduled machine's mode and unavailability,
and the frameworks' answers to inverse offers.

A port of what the real master keeps (``src/master/maintenance.cpp``, the ``machines`` map and
``maintenance.schedules`` of ``src/master/master.cpp``, ``Master::Http::*Maintenance*`` in
``src/master/http.cpp``, and the allocator's ``Slave::Maintenance`` in
``src/master/allocator/mesos/hierarchical.cpp``). Shapes are the JSON of ``mesos.v1.maintenance`` /
``mesos.v1.allocator`` messages. Pure bookkeeping: the master applies the effects (offers, inverse
offers, agent removal).

Machines are matched as Mesos' ``MachineID`` equality does (``include/mesos/type_utils.hpp``):
the hostname case-insensitively, the ip exactly; an agent's machine is its hostname and ip.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
MachineKey = tuple[str, str]  # (hostname lower-cased, ip)

UP = "UP"
DRAINING = "DRAINING"
DOWN = "DOWN"


class MaintenanceError(Exception):
    """A maintenance request Mesos answers with 400 Bad Request (the message is Mesos's)."""


def machine_key(machine: Json) -> MachineKey:
    return (str(machine.get("hostname") or "").lower(), str(machine.get("ip") or ""))


def machine_id(hostname: str, ip: str) -> Json:
    """The ``MachineID`` JSON (fields in proto order; empty ones left out as Mesos renders them)."""
    out: Json = {}
    if hostname:
        out["hostname"] = hostname
    if ip:
        out["ip"] = ip
    return out


def render(machine: Json) -> str:
    """``stringify(JSON::protobuf(id))``: compact JSON, fields in proto order."""
    return json.dumps(
        machine_id(str(machine.get("hostname") or ""), str(machine.get("ip") or "")), separators=(",", ":")
    )


def nanoseconds(time_info: Json | None) -> int:
    """A ``TimeInfo`` / ``DurationInfo``'s ``nanoseconds`` (int64: a JSON number or string)."""
    if not isinstance(time_info, dict):
        return 0
    return int(time_info.get("nanoseconds", 0))


def unavailability_json(unavailability: Json) -> Json:
    """A ``mesos.v1.Unavailability`` normalised to integer nanoseconds (``duration`` only if set)."""
    out: Json = {"start": {"nanoseconds": nanoseconds(unavailability.get("start"))}}
    if isinstance(unavailability.get("duration"), dict):
        out["duration"] = {"nanoseconds": nanoseconds(unavailability["duration"])}
    return out


def validate_machine(machine: Any) -> None:
    """``maintenance::validation::machine``: a hostname or an ip, and the ip is IPv4."""
    if not isinstance(machine, dict):
        raise MaintenanceError("Expecting a MachineID object")
    hostname, ip = str(machine.get("hostname") or ""), str(machine.get("ip") or "")
    if not hostname and not ip:
        raise MaintenanceError("Both 'hostname' and 'ip' for a machine are empty")
    if ip:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise MaintenanceError(f"Failed to parse IPv4: {ip}") from None


def validate_machines(machines: Any) -> list[Json]:
    """``maintenance::validation::machines``: non-empty, each valid, each once."""
    if not isinstance(machines, list) or not machines:
        raise MaintenanceError("List of machines is empty")
    seen: set[MachineKey] = set()
    for machine in machines:
        validate_machine(machine)
        key = machine_key(machine)
        if key in seen:
            raise MaintenanceError(f"Machine '{render(machine)}' appears more than once in the schedule")
        seen.add(key)
    return list(machines)


@dataclass
class InverseOfferStatus:
    """``mesos.v1.allocator.InverseOfferStatus``: a framework's last answer for an agent."""

    status: str  # ACCEPT | DECLINE
    framework_id: str
    timestamp: float  # wall clock, seconds

    def to_json(self) -> Json:
        return {
            "status": self.status,
            "framework_id": {"value": self.framework_id},
            "timestamp": {"nanoseconds": int(self.timestamp * 1e9)},
        }


@dataclass
class Machine:
    """A machine the master tracks (``Machine`` / ``MachineInfo``): DRAINING or DOWN; UP machines are
    not tracked (Mesos drops their ``MachineInfo``)."""

    id: Json
    mode: str
    unavailability: Json | None
    # agent id -> framework id -> its last answer (the allocator's ``Slave::Maintenance::statuses``)
    statuses: dict[str, dict[str, InverseOfferStatus]] = field(default_factory=dict)


class Maintenance:
    """The schedule and the machines in it (one schedule, as Mesos: ``TODO(josephw)``)."""

    def __init__(self) -> None:
        self.windows: list[Json] = []
        self.machines: dict[MachineKey, Machine] = {}

    # --- queries -----------------------------------------------------------------------------------

    def schedule(self) -> Json:
        """``mesos.v1.maintenance.Schedule`` (``Master::Http::_getMaintenanceSchedule``)."""
        return {"windows": [dict(w) for w in self.windows]} if self.windows else {}

    def machine(self, hostname: str, ip: str) -> Machine | None:
        return self.machines.get((hostname.lower(), ip))

    def mode(self, hostname: str, ip: str) -> str:
        m = self.machine(hostname, ip)
        return UP if m is None else m.mode

    def unavailability(self, hostname: str, ip: str) -> Json | None:
        m = self.machine(hostname, ip)
        return None if m is None or m.unavailability is None else dict(m.unavailability)

    # --- changes (each validates first, as ``Master::Http`` does, then applies) --------------------------

    def update_schedule(self, schedule: Any) -> tuple[list[MachineKey], list[MachineKey]]:
        """``validation::schedule`` then ``___updateMaintenanceSchedule``. Returns the machines in the
        new schedule (new ones DRAINING; the others keep their mode and take the new unavailability)
        and the machines taken out of it (back to UP)."""
        if not isinstance(schedule, dict):
            raise MaintenanceError("Expecting a Schedule object")
        windows = schedule.get("windows") or []
        if not isinstance(windows, list):
            raise MaintenanceError("Expecting 'windows' to be a list")
        updated: dict[MachineKey, tuple[Json, Json]] = {}
        normalised: list[Json] = []
        for window in windows:
            if not isinstance(window, dict):
                raise MaintenanceError("Expecting a Window object")
            ids = window.get("machine_ids") or []
            if not isinstance(ids, list) or not ids:
                raise MaintenanceError("List of machines in the maintenance window is empty")
            unavailability = window.get("unavailability")
            if not isinstance(unavailability, dict) or not isinstance(unavailability.get("start"), dict):
                raise MaintenanceError("Expecting 'unavailability.start' to be present")
            if nanoseconds(unavailability.get("duration")) < 0:
                raise MaintenanceError("Unavailability 'duration' is negative")
            unavailability = unavailability_json(unavailability)
            for machine in ids:
                validate_machine(machine)
                key = machine_key(machine)
                if key in updated:
                    raise MaintenanceError(
                        f"Machine '{render(machine)}' appears more than once in the schedule"
                    )
                updated[key] = (machine, unavailability)
            normalised.append(
                {
                    "machine_ids": [
                        machine_id(str(m.get("hostname") or ""), str(m.get("ip") or "")) for m in ids
                    ],
                    "unavailability": unavailability,
                }
            )
        for key, m in self.machines.items():
            if m.mode == DOWN and key not in updated:
                raise MaintenanceError(
                    f"Machine '{render(m.id)}' is deactivated and cannot be removed from the schedule"
                )
        changed: list[MachineKey] = []
        removed: list[MachineKey] = []
        for key in list(self.machines):
            if key in updated:
                continue
            del self.machines[key]
            removed.append(key)
        for key, (machine, unavailability) in updated.items():
            known = self.machines.get(key)
            if known is None:
                self.machines[key] = Machine(
                    id=machine_id(str(machine.get("hostname") or ""), str(machine.get("ip") or "")),
                    mode=DRAINING,
                    unavailability=unavailability,
                )
                changed.append(key)
            else:
                # Mesos updates every machine still scheduled, changed or not (``TODO(jmlvanre): Only
                # update allocator and rescind offers if the unavailability has actually changed``):
                # offers and inverse offers are rescinded, the answers forgotten, new ones sent.
                known.unavailability = unavailability
                known.statuses.clear()
                changed.append(key)
        self.windows = normalised
        return changed, removed

    def start(self, machines: Any) -> list[MachineKey]:
        """``Master::Http::_startMaintenance``: DRAINING machines go DOWN."""
        ids = validate_machines(machines)
        for machine in ids:
            m = self.machines.get(machine_key(machine))
            if m is None:
                raise MaintenanceError(f"Machine '{render(machine)}' is not part of a maintenance schedule")
            if m.mode != DRAINING:
                raise MaintenanceError(
                    f"Machine '{render(machine)}' is not in DRAINING mode and cannot be brought down"
                )
        keys = [machine_key(machine) for machine in ids]
        for key in keys:
            self.machines[key].mode = DOWN
            self.machines[key].statuses.clear()
        return keys

    def stop(self, machines: Any) -> list[MachineKey]:
        """``Master::Http::_stopMaintenance``: DOWN machines go UP and leave the schedule (windows
        left empty are deleted)."""
        ids = validate_machines(machines)
        for machine in ids:
            m = self.machines.get(machine_key(machine))
            if m is None:
                raise MaintenanceError(f"Machine '{render(machine)}' is not part of a maintenance schedule")
            if m.mode != DOWN:
                raise MaintenanceError(
                    f"Machine '{render(machine)}' is not in DOWN mode and cannot be brought up"
                )
        keys = {machine_key(machine) for machine in ids}
        for key in keys:
            del self.machines[key]
        windows = []
        for window in self.windows:
            left = [m for m in window["machine_ids"] if machine_key(m) not in keys]
            if left:
                windows.append({"machine_ids": left, "unavailability": window["unavailability"]})
        self.windows = windows
        return sorted(keys)

    def record(self, hostname: str, ip: str, agent_id: str, framework_id: str, status: str) -> None:
        """A framework answered an inverse offer (``HierarchicalAllocatorProcess::updateInverseOffer``)."""
        m = self.machine(hostname, ip)
        if m is not None:
            m.statuses.setdefault(agent_id, {})[framework_id] = InverseOfferStatus(
                status, framework_id, time.time()
            )

    def forget_agent(self, hostname: str, ip: str, agent_id: str) -> None:
        """The agent left (removed or unreachable): its answers go (the allocator's ``removeSlave``)."""
        m = self.machine(hostname, ip)
        if m is not None:
            m.statuses.pop(agent_id, None)

    def status(self) -> Json:
        """``mesos.v1.maintenance.ClusterStatus`` (``Master::Http::_getMaintenanceStatus``): one
        entry per DRAINING machine with the frameworks' answers for its agents, DOWN machines."""
        draining: list[Json] = []
        down: list[Json] = []
        for m in self.machines.values():
            if m.mode == DRAINING:
                entry: Json = {"id": dict(m.id)}
                statuses = [s.to_json() for per in m.statuses.values() for s in per.values()]
                if statuses:
                    entry["statuses"] = statuses
                draining.append(entry)
            elif m.mode == DOWN:
                down.append(dict(m.id))
        out: Json = {}
        if draining:
            out["draining_machines"] = draining
        if down:
            out["down_machines"] = down
        return out
