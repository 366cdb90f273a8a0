"""The table and the JSON document."""

from __future__ import annotations

from typing import Any

from failover_bench.results import Sample, Summary, summarize
from failover_bench.sentinel import measurement as sentinel_measurement
from failover_bench.suite import CREATE, DELETE, FAILOVER, RECORDED, RECOVERED


def sentinel_name(down_after_ms: int) -> str:
    return f"sentinel-{down_after_ms}"


def measurement_order(down_after: list[int], with_suite: bool) -> list[str]:
    suite = [CREATE, FAILOVER, RECORDED, RECOVERED, DELETE] if with_suite else []
    return suite + [sentinel_measurement(ms) for ms in down_after]


def ratios(summaries: dict[str, Summary], down_after: list[int]) -> list[dict[str, Any]]:
    """Suite failover over each Sentinel failover, by median and by p95."""
    suite = summaries.get(FAILOVER)
    out: list[dict[str, Any]] = []
    for ms in down_after:
        other = summaries.get(sentinel_measurement(ms))
        if suite is None or other is None:
            continue
        out.append(
            {
                "versus": sentinel_name(ms),
                "median_ratio": _ratio(suite.median, other.median),
                "p95_ratio": _ratio(suite.p95, other.p95),
            }
        )
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(summaries: list[Summary], ratio_rows: list[dict[str, Any]]) -> str:
    width = max([len(s.measurement) for s in summaries] + [11])
    head = f"{'measurement':<{width}}  {'median s':>9} {'p95 s':>9} {'min s':>9} {'max s':>9}  success"
    lines = [head, "-" * len(head)]
    for s in summaries:
        lines.append(
            f"{s.measurement:<{width}}  {_s(s.median):>9} {_s(s.p95):>9} {_s(s.min):>9} {_s(s.max):>9}"
            f"  {s.successes}/{s.runs}" + (f" ({100 * s.success_rate:.0f}%)" if s.runs else "")
        )
    if ratio_rows:
        lines.append("")
        for row in ratio_rows:
            med, p95 = row["median_ratio"], row["p95_ratio"]
            line = f"suite vs {row['versus']} (failover, suite / sentinel): median {_x(med)}, p95 {_x(p95)}"
            if med:
                line += f"  ({row['versus']} takes {1 / med:.1f}x the suite's median)"
            lines.append(line)
    failures = [(s.measurement, f) for s in summaries for f in s.failures]
    if failures:
        lines.append("")
        lines.append("failures:")
        lines += [f"  {m}: {f}" for m, f in failures]
    return "\n".join(lines)


def build(
    samples: list[Sample], down_after: list[int], with_suite: bool
) -> tuple[list[Summary], list[dict[str, Any]]]:
    summaries = [summarize(m, samples) for m in measurement_order(down_after, with_suite)]
    by_name = {s.measurement: s for s in summaries}
    return summaries, ratios(by_name, down_after)
