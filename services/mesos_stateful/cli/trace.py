"""``statefulctl trace NAME``: the latest plan of an instance (a failover, a deploy, a scale...)
as a compact timeline read from the JSON-lines span files (:mod:`mesos_stateful.common.tracing`).

One line per step span (``step <name>``): its offset from the start of the trace, its duration,
the gap before it (idle time since the previous step ended), its status and a short message.
Workload callbacks (``callback X``) are nested under their step. gRPC calls under a step (state
reads and writes, offers calls) are folded into a count and a total time on the step's line
(``state: 14 calls, 9.3 ms``) unless ``--verbose``.

Two shapes of trace are read:

- a plan with a root span named ``plan <name>`` (attributes ``instance``, ``workload``, ``plan``,
  ``reason``; it starts at the first sign of what the plan handles, e.g. a lost master's status
  update, and ends when the plan is done): the timeline starts at the root; the time from the
  root's start (or its ``detected_at`` attribute) to the plan being made (its ``started_at``
  attribute) is shown as ``detection``, the same time to detect as the metric
  ``stateful_failure_detection_seconds`` (:func:`mesos_stateful.common.metrics.detection_seconds`);
  a promotion's decision (promoted member, candidates, positions) is printed in full under its
  step, wrapped;
- spans written before plans had a root: every step run is a trace of its own; consecutive step
  runs of one instance with the same plan name are read as one plan, starting at its first step.

All times are in the span files' nanoseconds since the epoch (OpenTelemetry's clock).
"""

from __future__ import annotations

import os
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mesos_stateful.common.metrics import detection_seconds
from mesos_stateful.common.tracing import ENV_DIR, load_spans

Span = dict[str, Any]

# `make run` (services/mesos_stateful/suite/main.py) sets STATEFUL_TRACES_DIR to <data_dir>/traces, data_dir
# being STATEFUL_SUITE_DATA_DIR or "state" relative to the folder `make run` runs in: the repo.
SUITE_DATA_DIR_ENV = "STATEFUL_SUITE_DATA_DIR"
SUITE_DEFAULT_DATA_DIR = "state"

MESSAGE_WIDTH = 72  # characters of a step's message shown on its line
WRAP_WIDTH = 110  # a promotion decision's lines are wrapped here (never cut)


class TraceFolderMissing(Exception):
    """The traces folder does not exist; the message names it and how to choose another."""


def project_root() -> Path:
    """The checkout the package runs from (where `make run` runs), else the working folder."""
    root = Path(__file__).resolve().parents[3]  # services/mesos_stateful/cli/trace.py
    return root if (root / "Makefile").is_file() else Path.cwd()


def traces_folder(option: str | None) -> tuple[Path, str]:
    """The folder to read (absolute) and where that choice came from: ``--dir``, else
    ``$STATEFUL_TRACES_DIR``, else `make run`'s ``<data_dir>/traces``."""
    if option:
        return Path(option).expanduser().resolve(), "--dir"
    from_env = os.environ.get(ENV_DIR, "").strip()
    if from_env:
        return Path(from_env).expanduser().resolve(), f"${ENV_DIR}"
    data_dir = os.environ.get(SUITE_DATA_DIR_ENV, "").strip() or SUITE_DEFAULT_DATA_DIR
    data = Path(data_dir).expanduser()
    if not data.is_absolute():
        data = project_root() / data
    return (data / "traces").resolve(), "the `make run` default"


def check_folder(folder: Path, source: str) -> None:
    if not folder.is_dir():
        raise TraceFolderMissing(
            f"no traces folder {folder} (from {source}); start the services with {ENV_DIR} set "
            f"(`make run` sets it to <data_dir>/traces) or pass --dir DIR"
        )


# --- spans into plans ----------------------------------------------------------------------------


def _attrs(span: Span) -> dict[str, Any]:
    attributes = span.get("attributes")
    return attributes if isinstance(attributes, dict) else {}


def _end(span: Span) -> int:
    end = span.get("end_ns")
    return int(end) if end else int(span["start_ns"])


def is_step(span: Span) -> bool:
    return str(span.get("name", "")).startswith("step ")


def is_plan_root(span: Span) -> bool:
    return str(span.get("name", "")).startswith("plan ")


def rpc_group(span: Span) -> str | None:
    """``state`` / ``offers`` / ... for a gRPC span (``/stateful.v1.StateService/Get``), else None."""
    name = str(span.get("name", ""))
    if not name.startswith("/") or name.count("/") < 2:
        return None
    service = name.split("/")[1].rsplit(".", 1)[-1]
    return (service.removesuffix("Service") or service).lower()


def _timestamp_ns(value: Any) -> int | None:
    """An attribute holding a time: nanoseconds (int), or an ISO-8601 / RFC 3339 string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = int(value)
        # Seconds or milliseconds since the epoch are scaled to nanoseconds.
        if number < 10**11:
            return number * 10**9
        if number < 10**14:
            return number * 10**6
        return number
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1e9)
    return None


@dataclass
class Plan:
    """One plan's spans: ``root`` (``plan <name>``) when written, and every span of its trace(s)."""

    instance: str
    name: str
    spans: list[Span]
    root: Span | None = None
    trace_ids: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[Span]:
        return sorted((s for s in self.spans if is_step(s)), key=lambda s: int(s["start_ns"]))

    @property
    def detected_ns(self) -> int | None:
        """The first sign of what the plan handles, when the root tells it."""
        if self.root is None:
            return None
        attrs = _attrs(self.root)
        for key in ("detected_at", "detected_at_ns", "stateful.detected_at"):
            moment = _timestamp_ns(attrs.get(key))
            if moment is not None:
                return moment
        return int(self.root["start_ns"])

    @property
    def made_ns(self) -> int | None:
        """When the plan was made (the root's ``started_at``), when the root tells it."""
        if self.root is None:
            return None
        return _timestamp_ns(_attrs(self.root).get("started_at"))

    @property
    def start_ns(self) -> int:
        starts = [int(s["start_ns"]) for s in self.steps] or [int(s["start_ns"]) for s in self.spans]
        detected = self.detected_ns
        return min([*starts, detected]) if detected is not None else min(starts)

    @property
    def end_ns(self) -> int:
        """The end of the plan: of its root or its last step, whichever is later (a recovery's
        root ends when the new master accepts writes, its later steps — the replacement's launch —
        after it). Spans that join the trace after the plan ended (the status updates of a member
        it launched, e.g. a later kill) do not count."""
        ends = [_end(s) for s in self.steps]
        if self.root is not None:
            ends.append(_end(self.root))
        return max(ends) if ends else max(_end(s) for s in self.spans)


def plans_of(spans: list[Span], instance: str) -> list[Plan]:
    """The plans of ``instance`` found in ``spans``, oldest first."""
    traces: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        traces[str(span.get("trace_id", ""))].append(span)
    plans: list[Plan] = []
    legacy: list[tuple[Span, list[Span], str]] = []  # (step, its trace's spans, trace id)
    for trace_id, group in traces.items():
        roots = [s for s in group if is_plan_root(s)]
        if roots:
            root = min(roots, key=lambda s: int(s["start_ns"]))
            attrs = _attrs(root)
            if attrs.get("instance") != instance:
                continue
            name = str(attrs.get("plan") or str(root["name"]).removeprefix("plan ")).strip()
            plans.append(Plan(instance, name, group, root, [trace_id]))
            continue
        steps = [s for s in group if is_step(s) and _attrs(s).get("instance") == instance]
        if not steps:
            continue
        first = min(steps, key=lambda s: int(s["start_ns"]))
        if len(steps) == 1 and not first.get("parent_id"):
            legacy.append((first, group, trace_id))
        else:  # steps of one trace whose root is not written yet (the plan is still running)
            plans.append(Plan(instance, str(_attrs(first).get("plan", "")), group, None, [trace_id]))
    # Step runs that are traces of their own: consecutive runs of the same plan are one plan.
    legacy.sort(key=lambda item: int(item[0]["start_ns"]))
    current: Plan | None = None
    for step, group, trace_id in legacy:
        name = str(_attrs(step).get("plan", ""))
        if current is None or current.name != name:
            current = Plan(instance, name, [], None, [])
            plans.append(current)
        current.spans.extend(group)
        current.trace_ids.append(trace_id)
    plans.sort(key=lambda plan: plan.start_ns)
    return plans


# --- formatting ----------------------------------------------------------------------------------


def duration(ns: int | float) -> str:
    """``9.3 ms`` under a second, ``4.21 s`` above (``ns``: nanoseconds)."""
    ms = ns / 1e6
    if abs(ms) < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def offset(ns: int) -> str:
    return f"+{ns / 1e9:.3f}s"


def _short(text: str, width: int = MESSAGE_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class Fold:
    """gRPC calls folded into a line: count and total nanoseconds per group (``state``...)."""

    calls: dict[str, list[int]] = field(default_factory=dict)

    def add(self, group: str, ns: int) -> None:
        entry = self.calls.setdefault(group, [0, 0])
        entry[0] += 1
        entry[1] += ns

    def text(self) -> str:
        parts = []
        for group, (count, total) in sorted(
            self.calls.items(), key=lambda item: (item[0] != "state", item[0])
        ):
            parts.append(f"{group}: {count} call{'s' if count != 1 else ''}, {duration(total)}")
        return "; ".join(parts)


class Timeline:
    """Renders one :class:`Plan` as lines."""

    def __init__(self, plan: Plan, verbose: bool) -> None:
        self.plan = plan
        self.verbose = verbose
        ids = {str(s.get("span_id")) for s in plan.spans}
        self.children: dict[str, list[Span]] = defaultdict(list)
        self.tops: list[Span] = []
        for span in plan.spans:
            parent = span.get("parent_id")
            if parent and parent in ids:
                self.children[str(parent)].append(span)
            else:
                self.tops.append(span)
        for kids in self.children.values():
            kids.sort(key=lambda s: int(s["start_ns"]))
        self.start = plan.start_ns

    def header(self) -> str:
        plan = self.plan
        attrs = _attrs(plan.root) if plan.root is not None else {}
        if not attrs and plan.steps:
            attrs = _attrs(plan.steps[0])
        workload = attrs.get("workload")
        parts = [f"plan {plan.name or '?'} of {plan.instance}" + (f" ({workload})" if workload else "")]
        reason = attrs.get("reason")
        if reason:
            parts.append(f"reason: {_short(str(reason))}")
        if attrs.get("cause"):
            parts.append(f"cause: {attrs['cause']}")
        total = plan.end_ns - self.start
        parts.append(f"total {duration(total)}")
        outcome = str(attrs.get("outcome", "")) if plan.root is not None else ""
        if outcome and outcome not in ("writable", "complete"):
            parts.append(f"outcome: {outcome}")
        if (
            plan.root is not None
            and plan.name == "recovery"
            and plan.root.get("end_ns")
            and outcome in ("", "writable")
        ):
            parts.append(
                f"detected → writable {duration(_end(plan.root) - (plan.detected_ns or self.start))}"
            )
        elif plan.root is None and plan.steps and not plan.steps[0].get("parent_id"):
            parts.append("from its first step (no plan span)")
        elif plan.root is None:
            parts.append("running (plan span not written yet)")
        started = datetime.fromtimestamp(self.start / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        parts.append(f"started {started} UTC")
        return "  ·  ".join(parts)

    def lines(self) -> list[str]:
        out = [self.header()]
        out.append(f"  {'OFFSET':>9}  {'DURATION':>10}  {'GAP':>10}  {'STATUS':<9} WHAT")
        first_step = self.plan.steps[0] if self.plan.steps else None
        detected = self.plan.detected_ns
        made = self.plan.made_ns
        previous_end: int | None = None
        if self.plan.root is not None and detected is not None and "detected_at" in _attrs(self.plan.root):
            if made is not None:
                # The one definition of time to detect: first sign -> plan made (as the metric).
                took = int(detection_seconds(detected / 1e9, made / 1e9) * 1e9)
                out.append(self._row(detected, took, None, "", "detection (first sign → plan made)"))
                previous_end = detected + took  # the first step's gap: plan made -> first step
            elif first_step is not None and int(first_step["start_ns"]) > detected:
                # Written before roots carried started_at: only the first step's start is known.
                first = int(first_step["start_ns"])
                out.append(self._row(detected, first - detected, None, "", "first sign → first step"))
        elif self.plan.root is not None and detected is not None and first_step is not None:
            first = int(first_step["start_ns"])
            if first > detected:
                recovery = self.plan.name == "recovery"
                label = "first sign → first step" if recovery else "start (plan made → first step)"
                out.append(self._row(detected, first - detected, None, "", label))
        for runs in self._rows():
            span, last = runs[0], runs[-1]
            start = int(span["start_ns"])
            end = max(_end(run) for run in runs)
            gap = None if previous_end is None else start - previous_end
            attrs = _attrs(last)
            status = str(attrs.get("status") or ("ERROR" if last.get("status") == "ERROR" else ""))
            what = str(span.get("name", ""))
            if len(runs) > 1:
                what += f" ({len(runs)} runs)"
            attempts = attrs.get("attempts")
            if isinstance(attempts, int) and attempts > 1:
                what += f" (attempt {attempts})"
            message = str(attrs.get("message") or last.get("status_message") or "")
            fold = Fold()
            nested: list[str] = []
            for run in runs:
                self._walk(run, 1, fold, nested)
            extras = [text for text in (_short(message) if message else "", fold.text()) if text]
            if extras:
                what += "  " + "  ".join(extras)
            out.append(self._row(start, end - start, gap, status, what))
            out.extend(decision_lines(attrs))
            out.extend(nested)
            previous_end = max(previous_end or 0, end)
        return out

    def _rows(self) -> list[list[Span]]:
        """The timeline's spans, one list per line: consecutive runs of one step (a step that
        waits, e.g. for its task to run, is run again until done) make one line unless verbose;
        the line then shows the last run's status and message."""
        rows: list[list[Span]] = []
        for span in self._timeline_spans():
            if rows and not self.verbose and is_step(span) and rows[-1][-1].get("name") == span.get("name"):
                rows[-1].append(span)
            else:
                rows.append([span])
        return rows

    def _timeline_spans(self) -> list[Span]:
        """Step spans, plus any other non-gRPC span directly under the root (e.g. a fencing span)."""
        chosen = [s for s in self.plan.spans if is_step(s)]
        if self.plan.root is not None:
            root_id = str(self.plan.root.get("span_id"))
            chosen += [s for s in self.children.get(root_id, []) if not is_step(s) and rpc_group(s) is None]
        return sorted(chosen, key=lambda s: int(s["start_ns"]))

    def _walk(self, span: Span, depth: int, fold: Fold, lines: list[str]) -> None:
        """Nested lines under ``span``: callbacks and other spans; gRPC calls folded into ``fold``
        (with their own children) unless verbose."""
        for child in self.children.get(str(span.get("span_id")), []):
            if is_step(child):
                continue  # a step is a line of its own
            group = rpc_group(child)
            start = int(child["start_ns"])
            took = _end(child) - start
            if group is not None and not self.verbose:
                fold.add(group, took)
                continue
            attrs = _attrs(child)
            name = str(child.get("name", "")).removeprefix("/stateful.v1.")
            if group is not None:
                name += f"  [{child.get('service', '?')}]"
            details = [
                f"{key}={attrs[key]}" for key in ("member", "attempt") if attrs.get(key) not in (None, "")
            ]
            if details:
                name += " " + " ".join(details)
            status = str(attrs.get("outcome") or ("ERROR" if child.get("status") == "ERROR" else ""))
            inner = Fold()
            below: list[str] = []
            self._walk(child, depth + 1, inner, below)
            if str(child.get("name", "")).startswith("callback "):
                inner.calls.pop("workload", None)  # the callback's own call: its line says it
            if inner.calls:
                name += "  " + inner.text()
            if child.get("status") == "ERROR" and child.get("status_message"):
                name += "  " + _short(str(child["status_message"]))
            lines.append(self._row(start, took, None, status, "  " * depth + name))
            lines.extend(below)

    def _row(self, start: int, took: int, gap: int | None, status: str, what: str) -> str:
        gap_text = "" if gap is None else duration(max(gap, 0))
        when = offset(start - self.start)
        return f"  {when:>9}  {duration(took):>10}  {gap_text:>10}  {status:<9} {what}".rstrip()


def decision_lines(attrs: dict[str, Any], width: int = WRAP_WIDTH) -> list[str]:
    """A promotion's decision in full under its step: the promoted member and why, every
    candidate and every position, wrapped at ``width`` characters (never cut)."""
    promoted = attrs.get("promoted")
    if not promoted:
        return []
    indent = " " * 46 + "  "
    items = [f"promote {promoted}" + (f": {attrs['decision']}" if attrs.get("decision") else "")]
    candidates = attrs.get("candidates")
    if isinstance(candidates, list | tuple) and candidates:
        items.append("candidates: " + ", ".join(str(c) for c in candidates))
    positions = attrs.get("positions")
    if isinstance(positions, list | tuple) and positions:
        items.append("positions: " + ", ".join(str(p) for p in positions))
    lines: list[str] = []
    for item in items:
        lines += textwrap.wrap(
            " ".join(item.split()),
            width=max(width, len(indent) + 20),
            initial_indent=indent + "↳ ",
            subsequent_indent=indent + "    ",
            break_on_hyphens=False,
            break_long_words=False,
        )
    return lines


def render(plans: list[Plan], verbose: bool) -> list[str]:
    lines: list[str] = []
    for index, plan in enumerate(plans):
        if index:
            lines.append("")
        lines.extend(Timeline(plan, verbose).lines())
    return lines


def read_plans(folder: Path, instance: str, last: int) -> list[Plan]:
    """The last ``last`` plans of ``instance`` under ``folder`` (oldest first)."""
    plans = plans_of(load_spans(folder), instance)
    return plans[-last:] if last > 0 else plans


def traced_instances(folder: Path) -> list[str]:
    """The instances with a plan span or a step span in ``folder``'s span files, sorted."""
    names = set()
    for span in load_spans(folder):
        if is_plan_root(span) or is_step(span):
            instance = _attrs(span).get("instance")
            if instance:
                names.add(str(instance))
    return sorted(names)


def no_trace_message(folder: Path, source: str, instance: str) -> str:
    """Why ``folder`` (existing, from ``source``) shows no plan of ``instance``, and what to do:
    ``no trace yet`` when the folder holds no plan spans at all (nothing traced there yet); else
    which instances it does hold."""
    others = traced_instances(folder)
    where = f"{folder} (from {source})"
    if not others:
        return (
            f"no trace yet: {where} holds no plan spans; the services write them there when they run "
            f"with {ENV_DIR}={folder} (`make run` sets it) and a plan of {instance} runs; "
            f"if they write elsewhere, pass --dir DIR"
        )
    shown = ", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
    return (
        f"no trace of {instance} in {where}; it holds plans of {shown}; pass --dir DIR if "
        f"{instance}'s services wrote their spans elsewhere"
    )
