"""Mesos resources (scalars and ranges) as JSON <-> a small value type with exact arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
EPS = 1e-9


class ResourceError(ValueError):
    pass


@dataclass
class Resources:
    scalars: dict[str, float] = field(default_factory=dict)
    ranges: dict[str, frozenset[int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, items: list[Json] | None) -> Resources:
        res = cls()
        for item in items or []:
            if not isinstance(item, dict) or "name" not in item:
                raise ResourceError(f"invalid resource {item!r}")
            name = str(item["name"])
            kind = item.get("type", "SCALAR")
            if kind == "SCALAR":
                value = float((item.get("scalar") or {}).get("value", 0.0))
                if value < 0:
                    raise ResourceError(f"negative scalar resource {name}")
                res.scalars[name] = res.scalars.get(name, 0.0) + value
            elif kind == "RANGES":
                ports: set[int] = set(res.ranges.get(name, frozenset()))
                for r in (item.get("ranges") or {}).get("range", []):
                    begin, end = int(r["begin"]), int(r["end"])
                    if end < begin:
                        raise ResourceError(f"invalid range {begin}-{end} of {name}")
                    ports.update(range(begin, end + 1))
                res.ranges[name] = frozenset(ports)
            else:
                raise ResourceError(f"unsupported resource type {kind} of {name}")
        return res

    def to_json(self, role: str | None = None) -> list[Json]:
        out: list[Json] = []
        for name, value in sorted(self.scalars.items()):
            if value > EPS:
                out.append(
                    {"name": name, "type": "SCALAR", "scalar": {"value": round(value, 6)}, "role": "*"}
                )
        for name, values in sorted(self.ranges.items()):
            if values:
                rng = [{"begin": b, "end": e} for b, e in _intervals(values)]
                out.append({"name": name, "type": "RANGES", "ranges": {"range": rng}, "role": "*"})
        if role is not None:
            for item in out:
                item["allocation_info"] = {"role": role}
        return out

    def to_state(self) -> Json:
        """The flat shape of /master/state (``{"cpus": 4, "ports": "[31000-31999]"}``)."""
        out: Json = {name: round(v, 6) for name, v in self.scalars.items()}
        for name, values in self.ranges.items():
            out[name] = "[" + ", ".join(f"{b}-{e}" for b, e in _intervals(values)) + "]"
        return out

    def __add__(self, other: Resources) -> Resources:
        scalars = dict(self.scalars)
        for k, v in other.scalars.items():
            scalars[k] = scalars.get(k, 0.0) + v
        ranges = dict(self.ranges)
        for k, r in other.ranges.items():
            ranges[k] = ranges.get(k, frozenset()) | r
        return Resources(scalars, ranges)

    def __sub__(self, other: Resources) -> Resources:
        scalars = dict(self.scalars)
        for k, v in other.scalars.items():
            scalars[k] = max(0.0, scalars.get(k, 0.0) - v)
        ranges = dict(self.ranges)
        for k, r in other.ranges.items():
            ranges[k] = ranges.get(k, frozenset()) - r
        return Resources(scalars, ranges)

    def contains(self, other: Resources) -> bool:
        for k, v in other.scalars.items():
            if v > self.scalars.get(k, 0.0) + EPS:
                return False
        return all(r <= self.ranges.get(k, frozenset()) for k, r in other.ranges.items())

    def empty(self) -> bool:
        return all(v <= EPS for v in self.scalars.values()) and not any(self.ranges.values())

    def __str__(self) -> str:
        parts = [f"{k}:{round(v, 6)}" for k, v in sorted(self.scalars.items()) if v > EPS]
        parts += [f"{k}:{self.to_state()[k]}" for k in sorted(self.ranges) if self.ranges[k]]
        return "; ".join(parts) or "{}"


def _intervals(values: frozenset[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out
