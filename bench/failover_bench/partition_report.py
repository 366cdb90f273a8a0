"""The table and the JSON summaries of bench/partition_failover.py: per measurement, the time
(median / p90 / max over the successful runs), acknowledged writes lost and the old master's
writes after the new master's first (over every run that found a new master)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from failover_bench.results import Sample, percentile


@dataclass
class CutSummary:
    measurement: str
    runs: int
    successes: int
    median: float | None
    p90: float | None
    max: float | None
    lost_acked_total: int | None  # None: not a cut row
    acked_total: int | None
    window_median: float | None
    window_max: int | None
    failures: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _stats(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    return percentile(values, 50), percentile(values, 90), max(values)


def summarize(measurement: str, samples: list[Sample]) -> CutSummary:
    mine = [s for s in samples if s.measurement == measurement]
    times = [s.seconds for s in mine if s.ok and s.seconds is not None]
    median, p90, top = _stats(times)
    cut = [s for s in mine if "lost_acked_keys" in s.info and s.seconds is not None]
    windows = [int(s.info["old_master_oks_after_new_master"]) for s in cut]
    return CutSummary(
        measurement=measurement,
        runs=len(mine),
        successes=len(times),
        median=median,
        p90=p90,
        max=top,
        lost_acked_total=sum(int(s.info["lost_acked_keys"]) for s in cut) if cut else None,
        acked_total=sum(int(s.info["acked_keys"]) for s in cut) if cut else None,
        window_median=percentile([float(w) for w in windows], 50) if windows else None,
        window_max=max(windows) if windows else None,
        failures=[f"run {s.run}: {s.detail}" for s in mine if not s.ok],
    )


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _n(value: float | int | None) -> str:
    return "-" if value is None else f"{value:g}"


def table(summaries: list[CutSummary]) -> str:
    width = max([len(s.measurement) for s in summaries] + [11])
    head = (
        f"{'measurement':<{width}}  {'median s':>8} {'p90 s':>8} {'max s':>8}  {'ok':>5}"
        f"  {'acked lost':>13}  {'old-master OKs after new (median/max)':>37}"
    )
    lines = [head, "-" * len(head)]
    for s in summaries:
        lost = "-" if s.lost_acked_total is None else f"{s.lost_acked_total}/{s.acked_total}"
        window = "-" if s.window_max is None else f"{_n(s.window_median)}/{s.window_max}"
        lines.append(
            f"{s.measurement:<{width}}  {_s(s.median):>8} {_s(s.p90):>8} {_s(s.max):>8}"
            f"  {f'{s.successes}/{s.runs}':>5}  {lost:>13}  {window:>37}"
        )
    failures = [(s.measurement, f) for s in summaries for f in s.failures]
    if failures:
        lines += ["", "failures:"] + [f"  {m}: {f}" for m, f in failures]
    return "\n".join(lines)
