"""One measured value of one run, and the summary statistics over runs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Sample:
    """One run of one measurement: ok with ``seconds``, or failed with ``detail`` saying why."""

    measurement: str
    run: int
    ok: bool
    seconds: float | None = None
    detail: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Summary:
    measurement: str
    runs: int
    successes: int
    median: float | None
    p95: float | None
    min: float | None
    max: float | None
    failures: list[str]

    @property
    def success_rate(self) -> float:
        return self.successes / self.runs if self.runs else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["success_rate"] = self.success_rate
        return data


def summarize(measurement: str, samples: list[Sample]) -> Summary:
    """Statistics over the successful runs; failures listed as "run N: why"."""
    mine = [s for s in samples if s.measurement == measurement]
    values = [s.seconds for s in mine if s.ok and s.seconds is not None]
    failures = [f"run {s.run}: {s.detail}" for s in mine if not s.ok]
    if not values:
        return Summary(measurement, len(mine), 0, None, None, None, None, failures)
    return Summary(
        measurement,
        len(mine),
        len(values),
        percentile(values, 50),
        percentile(values, 95),
        min(values),
        max(values),
        failures,
    )
