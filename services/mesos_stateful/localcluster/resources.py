"""Mesos resources as JSON <-> a value type with exact arithmetic (scalars are fixed point with three
decimals, as Mesos' ``Value::Scalar``).

A resource is identified by its :class:`Key`: name, the stack of reservations (post reservation
refinement: ``Resource.reservations``, the last one is the one in effect) and, for a persistent
volume, its ``disk`` info (persistence id + principal, volume container path + mode). Scalars and
ranges of the same key add up; a persistent volume is not splittable (subtracting or containing one
needs the whole volume). JSON comes in either format (``reservations``, or the old ``role`` +
``reservation``) and goes out in the format the framework asked for (``refinement``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

Json = dict[str, Any]
EPS = 1e-9


class ResourceError(ValueError):
    pass


def _scalar(value: float) -> float:
    return round(value, 3)


@dataclass(frozen=True)
class Reservation:
    role: str
    type: str = "DYNAMIC"
    principal: str | None = None
    labels: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def from_json(cls, item: Any, kind: str | None = None, role: str | None = None) -> Reservation:
        if not isinstance(item, dict):
            raise ResourceError(f"invalid reservation {item!r}")
        labels = []
        for label in (item.get("labels") or {}).get("labels", []) or []:
            if not isinstance(label, dict) or "key" not in label:
                raise ResourceError(f"invalid label {label!r}")
            value = label.get("value")
            labels.append((str(label["key"]), None if value is None else str(value)))
        principal = item.get("principal")
        return cls(
            role=str(role if role is not None else item.get("role", "")),
            type=str(kind if kind is not None else item.get("type", "")),
            principal=None if principal is None else str(principal),
            labels=tuple(labels),
        )

    def to_json(self, refinement: bool = True) -> Json:
        out: Json = {"type": self.type, "role": self.role} if refinement else {}
        if self.principal is not None:
            out["principal"] = self.principal
        if self.labels:
            out["labels"] = {
                "labels": [{"key": k} if v is None else {"key": k, "value": v} for k, v in self.labels]
            }
        return out

    def __str__(self) -> str:
        parts = [self.type, self.role] + ([self.principal] if self.principal is not None else [])
        if self.labels:
            parts.append("{" + ", ".join(k if v is None else f"{k}: {v}" for k, v in self.labels) + "}")
        return "(" + ",".join(parts) + ")"


@dataclass(frozen=True)
class Disk:
    """``Resource.DiskInfo`` of a persistent volume (disk sources are not modelled)."""

    persistence_id: str
    principal: str | None = None
    container_path: str = ""
    mode: str = "RW"

    def to_json(self) -> Json:
        persistence: Json = {"id": self.persistence_id}
        if self.principal is not None:
            persistence["principal"] = self.principal
        return {
            "persistence": persistence,
            "volume": {"mode": self.mode, "container_path": self.container_path},
        }


@dataclass(frozen=True)
class Key:
    name: str
    reservations: tuple[Reservation, ...] = ()
    disk: Disk | None = None

    @property
    def reserved(self) -> bool:
        return bool(self.reservations)

    @property
    def role(self) -> str:
        """The role of the reservation in effect (``*`` when unreserved)."""
        return self.reservations[-1].role if self.reservations else "*"

    @property
    def dynamic(self) -> bool:
        return bool(self.reservations) and self.reservations[-1].type == "DYNAMIC"

    def pop(self) -> Key:
        return replace(self, reservations=self.reservations[:-1])

    def stripped(self) -> Key:
        return replace(self, disk=None)

    def __str__(self) -> str:
        out = self.name
        if self.reservations:
            out += "(reservations: [" + ",".join(str(r) for r in self.reservations) + "])"
        if self.disk is not None:
            out += f"[{self.disk.persistence_id}:{self.disk.container_path}]"
        return out


def is_subrole(role: str, ancestor: str) -> bool:
    return role.startswith(ancestor + "/")


@dataclass
class Resources:
    scalars: dict[Key, float] = field(default_factory=dict)
    ranges: dict[Key, frozenset[int]] = field(default_factory=dict)

    # --- JSON ------------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, items: list[Json] | None) -> Resources:
        """Parse and validate (as ``Resources::validate`` + the master's DiskInfo checks).
        ``allocation_info`` is not part of the value (see :func:`allocation_roles`)."""
        res = cls()
        if items is not None and not isinstance(items, list):
            raise ResourceError("resources must be a list")
        for item in items or []:
            key, value = parse_resource(item)
            if isinstance(value, frozenset):
                res.ranges[key] = res.ranges.get(key, frozenset()) | value
            elif key.disk is not None and key in res.scalars:
                raise ResourceError(f"Persistence ID '{key.disk.persistence_id}' is not unique")
            else:
                res.scalars[key] = _scalar(res.scalars.get(key, 0.0) + value)
        return res

    def items(self) -> Iterator[tuple[Key, float | frozenset[int]]]:
        for key, value in sorted(self.scalars.items(), key=lambda kv: _order(kv[0])):
            if value > EPS:
                yield key, value
        for key, values in sorted(self.ranges.items(), key=lambda kv: _order(kv[0])):
            if values:
                yield key, values

    def to_json(self, role: str | None = None, refinement: bool = False) -> list[Json]:
        """Resource JSON; ``role``: add ``allocation_info``; ``refinement``: the post reservation
        refinement format (``reservations``, no ``role``) instead of ``role`` (+ ``reservation``)."""
        out: list[Json] = []
        for key, value in self.items():
            item: Json = {"name": key.name}
            if isinstance(value, frozenset):
                item["type"] = "RANGES"
                item["ranges"] = {"range": [{"begin": b, "end": e} for b, e in _intervals(value)]}
            else:
                item["type"] = "SCALAR"
                item["scalar"] = {"value": value}
            if refinement:
                if key.reservations:
                    item["reservations"] = [r.to_json() for r in key.reservations]
            else:
                item["role"] = key.role
                if key.dynamic:
                    item["reservation"] = key.reservations[-1].to_json(refinement=False)
            if key.disk is not None:
                item["disk"] = key.disk.to_json()
            if role is not None:
                item["allocation_info"] = {"role": role}
            out.append(item)
        return out

    def to_state(self) -> Json:
        """The flat shape of /master/state (``{"cpus": 4, "ports": "[31000-31999]"}``): amounts by
        name, whatever their reservation."""
        scalars: dict[str, float] = {}
        ranges: dict[str, frozenset[int]] = {}
        for key, value in self.items():
            if isinstance(value, frozenset):
                ranges[key.name] = ranges.get(key.name, frozenset()) | value
            else:
                scalars[key.name] = _scalar(scalars.get(key.name, 0.0) + value)
        out: Json = dict(scalars)
        for name, values in ranges.items():
            out[name] = "[" + ", ".join(f"{b}-{e}" for b, e in _intervals(values)) + "]"
        return out

    # --- arithmetic ------------------------------------------------------------------------------

    def __add__(self, other: Resources) -> Resources:
        scalars = dict(self.scalars)
        for k, v in other.scalars.items():
            scalars[k] = _scalar(scalars.get(k, 0.0) + v)
        ranges = dict(self.ranges)
        for k, r in other.ranges.items():
            ranges[k] = ranges.get(k, frozenset()) | r
        return Resources(scalars, ranges)

    def __sub__(self, other: Resources) -> Resources:
        scalars = dict(self.scalars)
        for k, v in other.scalars.items():
            have = scalars.get(k, 0.0)
            if k.disk is not None:
                # A persistent volume is subtracted whole or not at all.
                if abs(have - v) <= EPS:
                    scalars.pop(k, None)
                continue
            scalars[k] = max(0.0, _scalar(have - v))
        ranges = dict(self.ranges)
        for k, r in other.ranges.items():
            ranges[k] = ranges.get(k, frozenset()) - r
        return Resources(scalars, ranges)

    def contains(self, other: Resources) -> bool:
        for k, v in other.scalars.items():
            if v <= EPS:
                continue
            have = self.scalars.get(k, 0.0)
            if k.disk is not None and abs(have - v) > EPS:
                return False
            if v > have + EPS:
                return False
        return all(r <= self.ranges.get(k, frozenset()) for k, r in other.ranges.items())

    def split(self) -> Iterator[Resources]:
        """One Resources per key."""
        for key, value in self.items():
            if isinstance(value, frozenset):
                yield Resources(ranges={key: value})
            else:
                yield Resources(scalars={key: value})

    def contains_any(self, other: Resources) -> bool:
        return any(self.contains(one) for one in other.split())

    def empty(self) -> bool:
        return next(self.items(), None) is None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resources):
            return NotImplemented
        return list(self.items()) == list(other.items())

    # --- filters and conversions -----------------------------------------------------------------

    def filter(self, pred: Any) -> Resources:
        return Resources(
            {k: v for k, v in self.scalars.items() if pred(k)},
            {k: v for k, v in self.ranges.items() if pred(k)},
        )

    def _map(self, fn: Any) -> Resources:
        out = Resources()
        for key, value in self.items():
            new = fn(key)
            if isinstance(value, frozenset):
                out.ranges[new] = out.ranges.get(new, frozenset()) | value
            else:
                out.scalars[new] = _scalar(out.scalars.get(new, 0.0) + value)
        return out

    def unreserved(self) -> Resources:
        return self.filter(lambda k: not k.reserved)

    def reserved(self) -> Resources:
        return self.filter(lambda k: k.reserved)

    def by_role(self) -> dict[str, Resources]:
        """Reserved resources by the role of their reservation in effect."""
        out: dict[str, Resources] = {}
        for key, _value in self.items():
            out.setdefault(key.role, Resources())
        for role in out:
            out[role] = self.filter(lambda k, r=role: k.reserved and k.role == r)
        return out

    def allocatable_to(self, role: str) -> Resources:
        """What a framework of ``role`` may be offered: unreserved resources and those reserved to
        the role or one of its ancestors (``Resources::isAllocatableTo``)."""
        return self.filter(lambda k: not k.reserved or k.role == role or is_subrole(role, k.role))

    def volumes(self) -> Resources:
        return self.filter(lambda k: k.disk is not None)

    def pop_reservation(self) -> Resources:
        return self._map(Key.pop)

    def strip_volumes(self) -> Resources:
        return self._map(Key.stripped)

    def to_unreserved(self) -> Resources:
        return self._map(lambda k: Key(k.name))

    def __str__(self) -> str:
        parts = []
        for key, value in self.items():
            if isinstance(value, frozenset):
                parts.append(f"{key}:[" + ", ".join(f"{b}-{e}" for b, e in _intervals(value)) + "]")
            else:
                parts.append(f"{key}:{value:g}")
        return "; ".join(parts) or "{}"


def parse_resource(item: Any) -> tuple[Key, float | frozenset[int]]:
    """One Resource JSON object -> (key, amount), validated as the Mesos master does."""
    if not isinstance(item, dict) or not item.get("name"):
        raise ResourceError(
            f"Empty resource name in {item!r}" if isinstance(item, dict) else f"invalid resource {item!r}"
        )
    name = str(item["name"])
    kind = item.get("type", "SCALAR")
    if item.get("shared") is not None:
        raise ResourceError(f"shared resources are not supported by the local cluster ({name})")
    if item.get("provider_id") is not None:
        raise ResourceError(f"resource providers are not supported by the local cluster ({name})")
    if item.get("revocable") is not None:
        raise ResourceError(f"revocable resources are not supported by the local cluster ({name})")
    value: float | frozenset[int]
    if kind == "SCALAR":
        if "scalar" not in item or "ranges" in item or "set" in item:
            raise ResourceError("Invalid scalar resource")
        try:
            value = _scalar(float((item.get("scalar") or {}).get("value", 0.0)))
        except (TypeError, ValueError):
            raise ResourceError(f"Invalid scalar resource {name}") from None
        if value < 0:
            raise ResourceError("Invalid scalar resource: value <= 0")
    elif kind == "RANGES":
        if "ranges" not in item or "scalar" in item or "set" in item:
            raise ResourceError("Invalid ranges resource")
        ports: set[int] = set()
        for r in (item.get("ranges") or {}).get("range", []) or []:
            try:
                begin, end = int(r["begin"]), int(r["end"])
            except (KeyError, TypeError, ValueError):
                raise ResourceError(f"Invalid ranges resource {name}") from None
            if end < begin:
                raise ResourceError("Invalid ranges resource: begin > end")
            span = set(range(begin, end + 1))
            if span & ports:
                raise ResourceError("Invalid ranges resource: overlapping ranges")
            ports |= span
        value = frozenset(ports)
    else:
        raise ResourceError(f"Unsupported resource type {kind} of {name}")
    key = Key(name, _reservations(item), _disk(item, name))
    if key.disk is not None and not key.reserved:
        raise ResourceError(
            "Invalid DiskInfo: Persistent volumes cannot be created from unreserved resources"
        )
    return key, value


def _reservations(item: Json) -> tuple[Reservation, ...]:
    raw = item.get("reservations")
    if raw:
        if not isinstance(raw, list):
            raise ResourceError("'reservations' must be a list")
        if item.get("role") is not None or item.get("reservation") is not None:
            raise ResourceError(
                "'Resource.role' and 'Resource.reservation' must not be set with 'reservations'"
            )
        out: list[Reservation] = []
        for r in raw:
            reservation = Reservation.from_json(r)
            if not reservation.type:
                raise ResourceError("Invalid reservation: 'Resource.ReservationInfo.type' field must be set.")
            if reservation.type not in ("STATIC", "DYNAMIC"):
                raise ResourceError(f"Invalid reservation type {reservation.type}")
            if not reservation.role:
                raise ResourceError("Invalid reservation: 'Resource.ReservationInfo.role' field must be set.")
            if reservation.role == "*":
                raise ResourceError('Invalid reservation: role "*" cannot be reserved')
            if out and not (reservation.role == out[-1].role or is_subrole(reservation.role, out[-1].role)):
                raise ResourceError(
                    f"Invalid reservation: role '{reservation.role}' is not the same as or a child of "
                    f"'{out[-1].role}'"
                )
            out.append(reservation)
        return tuple(out)
    role = str(item.get("role") or "*")
    old = item.get("reservation")
    if old is not None:
        if not isinstance(old, dict):
            raise ResourceError("invalid 'reservation'")
        if old.get("type") is not None:
            raise ResourceError(
                "'Resource.ReservationInfo.type' must not be set for the 'Resource.reservation' field"
            )
        if old.get("role") is not None:
            raise ResourceError(
                "'Resource.ReservationInfo.role' must not be set for the 'Resource.reservation' field"
            )
        if role == "*":
            raise ResourceError('Invalid reservation: role "*" cannot be dynamically reserved')
        return (Reservation.from_json(old, kind="DYNAMIC", role=role),)
    if role != "*":
        return (Reservation(role=role, type="STATIC"),)
    return ()


def _disk(item: Json, name: str) -> Disk | None:
    disk = item.get("disk")
    if disk is None:
        return None
    if not isinstance(disk, dict):
        raise ResourceError("invalid 'disk'")
    if name != "disk":
        raise ResourceError(f"DiskInfo should not be set for {name} resource")
    if disk.get("source") is not None:
        raise ResourceError("disk sources (PATH, MOUNT) are not supported by the local cluster")
    persistence, volume = disk.get("persistence"), disk.get("volume")
    if persistence is None:
        if volume is not None:
            raise ResourceError("Invalid DiskInfo: Non-persistent volume not supported")
        raise ResourceError("Invalid DiskInfo: DiskInfo is set but empty")
    if not isinstance(persistence, dict) or not persistence.get("id"):
        raise ResourceError(
            "Invalid DiskInfo: Invalid persistence ID for persistent volume: ID must not be empty"
        )
    pid = str(persistence["id"])
    if pid in (".", "..") or any(c in pid for c in "/\\ \t\n") or not pid.isprintable():
        raise ResourceError(
            "Invalid DiskInfo: Invalid persistence ID for persistent volume: "
            f"'{pid}' contains invalid characters"
        )
    if not isinstance(volume, dict):
        raise ResourceError("Invalid DiskInfo: Expecting 'volume' to be set for persistent volume")
    if volume.get("host_path") is not None:
        raise ResourceError("Invalid DiskInfo: Expecting 'host_path' to be unset for persistent volume")
    principal = persistence.get("principal")
    return Disk(
        persistence_id=pid,
        principal=None if principal is None else str(principal),
        container_path=str(volume.get("container_path", "")),
        mode=str(volume.get("mode", "RW")),
    )


def allocation_roles(items: list[Json] | None) -> set[str]:
    """The ``allocation_info.role`` values present in resource JSON."""
    out = set()
    for item in items or []:
        if isinstance(item, dict) and isinstance(item.get("allocation_info"), dict):
            role = item["allocation_info"].get("role")
            if role is not None:
                out.add(str(role))
    return out


def _order(key: Key) -> tuple[str, int, str]:
    return (key.name, len(key.reservations), str(key))


def _intervals(values: frozenset[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out
