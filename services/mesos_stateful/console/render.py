"""Server-side HTML of the console (no browser needed to test it): every value from the API is
escaped (``html.escape``); times are shown in UTC. Pure functions of the API's messages."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from google.protobuf import timestamp_pb2

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.common.metrics import detection_seconds


@dataclass(frozen=True)
class Event:
    """One change the console saw on its WatchInstances stream: ``at`` in Unix seconds (when the
    console received it), ``text`` for people."""

    at: float
    text: str


def e(value: object) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value), quote=True)


def _enum(kind: Any, value: int, prefix: str) -> str:
    try:
        name: str = kind.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def phase(value: int) -> str:
    return _enum(T.InstancePhase, value, "INSTANCE_PHASE_")


def role(value: int) -> str:
    return _enum(T.Role, value, "ROLE_")


def member_state(value: int) -> str:
    return _enum(T.MemberState, value, "MEMBER_STATE_")


def step_status(value: int) -> str:
    return _enum(T.StepStatus, value, "STEP_STATUS_")


def seconds(stamp: timestamp_pb2.Timestamp) -> float | None:
    """A Timestamp in Unix seconds, None when unset."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.seconds + stamp.nanos / 1e9


def clock(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}"


def ready_count(instance: T.Instance) -> tuple[int, int]:
    """(members RUNNING, members wanted): wanted is the spec's replicas (or the members there are)."""
    ready = sum(m.state == T.MEMBER_STATE_RUNNING for m in instance.members)
    return ready, instance.spec.replicas or len(instance.members)


def plan_summary(plan: T.Plan) -> str:
    return f"{plan.name} {step_status(plan.status)}" if plan.name else "-"


CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa;font-size:14px}
header{background:#234;color:#fff;padding:8px 16px}header a{color:#fff;text-decoration:none}
main{padding:12px 16px;max-width:1400px}
table{border-collapse:collapse;margin:6px 0 16px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef}#plan td:first-child{white-space:nowrap}
.RUNNING,.COMPLETE,.MASTER{color:#075}.DEGRADED,.RECOVERING,.STARTING,.DELAYED{color:#a60}
.FAILED,.ERROR,.LOST{color:#b00}
.banner{background:#fee;border:1px solid #b00;padding:6px 10px;margin:6px 0}
.tl{position:relative;background:#fff;border:1px solid #ddd;margin:4px 0 16px}
.tlrow{display:flex;align-items:center;border-bottom:1px solid #eee;height:22px}
.tlname{width:300px;flex:none;padding:0 6px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.tltrack{position:relative;flex:1;height:16px;background:#f4f4f4}
.bar{position:absolute;top:2px;height:12px;min-width:2px;background:#48c}
.bar.ERROR{background:#c44}.bar.open{background:#ca4}
.tldur,.tlwhen,.tlgap{flex:none;padding:0 6px;font-variant-numeric:tabular-nums;color:#555}
.tlwhen{width:170px}.tldur{width:80px;text-align:right}.tlgap{width:110px}
.tlhead{font-weight:bold;background:#eef}.tldetect .bar{background:#999}
#timeline-total span{margin-right:14px}
small{color:#666}
"""


def page(title: str, body: str, script: str = "") -> str:
    """A whole HTML page (inline CSS and script only: nothing from the internet)."""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{e(title)}</title>"
        f"<style>{CSS}</style></head><body>"
        "<header><a href='/'><b>stateful console</b></a> <small style='color:#ccd'>read-only</small></header>"
        f"<main>{body}</main>{script}</body></html>"
    )


def error_page(title: str, message: str) -> str:
    return page(
        title, f"<h2>{e(title)}</h2><p class=banner id=error>{e(message)}</p><p><a href='/'>instances</a></p>"
    )


def instances_page(instances: Sequence[T.Instance], watch_note: str = "") -> str:
    rows = []
    for i in instances:
        ready, total = ready_count(i)
        name = i.spec.name
        rows.append(
            f"<tr data-name='{e(name)}'><td><a href='/instances/{e(quote(name, safe=''))}'>{e(name)}</a></td>"
            f"<td>{e(i.spec.workload)}</td><td class='phase {e(phase(i.phase))}'>{e(phase(i.phase))}</td>"
            f"<td class=ready>{ready}/{total}</td><td class=plan>{e(plan_summary(i.plan))}</td></tr>"
        )
    table = (
        "<table id=instances><tr><th>name</th><th>workload</th><th>phase</th><th>ready</th>"
        "<th>current plan</th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p id=instances>No instances. Create one with <code>statefulctl create</code>.</p>"
    )
    note = f"<p class=banner>{e(watch_note)}</p>" if watch_note else ""
    return page(
        "instances",
        f"<h2>Instances</h2>{note}{table}",
        "<script>setTimeout(()=>location.reload(),2000)</script>",
    )


def _endpoints(member: T.Member) -> str:
    if not member.host:
        return "-"
    return ", ".join(
        f"{e(name)} {e(member.host)}:{port}" for name, port in sorted(member.ports.items())
    ) or e(member.host)


def _failing(member: T.Member) -> str:
    failing = [c for c in member.health.conditions if not c.ok]
    if not failing:
        return "-"
    return "<br>".join(
        f"{e(_enum(T.ConditionType, c.type, 'CONDITION_TYPE_'))}: {e(c.reason)} {e(c.message)}"
        for c in failing
    )


def _lag(member: T.Member) -> str:
    h = member.health
    if member.role == T.ROLE_MASTER or not h.HasField("checked_at"):
        return "-"
    # -1: the workload could not tell (types.proto MemberHealth): say so rather than print -1.
    seconds = "?" if h.lag_seconds < 0 else f"{h.lag_seconds:.1f}s"
    amount = "?" if h.lag < 0 else str(h.lag)
    return f"{seconds} ({amount})"


def members_table(instance: T.Instance) -> str:
    rows = "".join(
        f"<tr data-member='{e(m.id)}'><td>{e(m.id)}</td>"
        f"<td class='role {e(role(m.role))}'>{e(role(m.role))}</td>"
        f"<td class='state {e(member_state(m.state))}'>{e(member_state(m.state))}</td><td>{_failing(m)}</td>"
        f"<td>{_endpoints(m)}</td><td>{_lag(m)}</td><td>{e(m.message)}</td></tr>"
        for m in instance.members
    )
    return (
        "<table id=members><tr><th>member</th><th>role</th><th>state</th><th>failing conditions</th>"
        f"<th>endpoints</th><th>lag</th><th>message</th></tr>{rows}</table>"
    )


def _step_details(step: T.Step) -> str:
    parts = []
    if step.fence.method:
        method = _enum(T.FenceMethod, step.fence.method, "FENCE_METHOD_")
        parts.append(f"fence: {e(method)} {e(step.fence.detail)}")
    d = step.decision
    if d.promote_member_id:
        positions = ", ".join(f"{e(k)}={e(v)}" for k, v in sorted(d.positions.items()))
        parts.append(
            f"promote {e(d.promote_member_id)} ({e(d.reason)}); candidates {e(', '.join(d.candidate_ids))}"
            + (f"; positions {positions}" if positions else "")
        )
    return "<br>".join(parts) or "-"


def plan_section(plan: T.Plan) -> str:
    if not plan.name:
        return "<h3>Plan</h3><p id=plan>No plan yet.</p>"
    rows = "".join(
        f"<tr data-step='{e(s.name)}'><td>{e(s.name)}</td><td>{e(s.member_id)}</td>"
        f"<td class='status {e(step_status(s.status))}'>{e(step_status(s.status))}</td><td>{s.attempts}</td>"
        f"<td>{e(s.message)}</td><td>{_step_details(s)}</td></tr>"
        for s in plan.steps
    )
    return (
        f"<h3>Plan <span id=plan-name>{e(plan.name)}</span> "
        f"<span class='{e(step_status(plan.status))}'>{e(step_status(plan.status))}</span></h3>"
        f"<p><small>reason: {e(plan.reason)}; started {e(clock(seconds(plan.started_at)))} UTC</small></p>"
        "<table id=plan><tr><th>step</th><th>member</th><th>status</th><th>attempts</th><th>message</th>"
        f"<th>fence / promotion</th></tr>{rows}</table>"
    )


def _duration(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def writable_at(plan: T.Plan) -> float | None:
    """When a failover's (or election's) new master became writable: the ``finished_at`` of the
    promoted member's ``master-running`` step (the first word of a step's name is its action),
    COMPLETE after the step that decided the promotion; None before, or for a plan promoting no one."""
    chosen = ""
    for step in plan.steps:
        if step.decision.promote_member_id:
            chosen = step.decision.promote_member_id
        elif (
            chosen
            and step.name.split(" ", 1)[0] == "master-running"
            and step.member_id == chosen
            and step.status == T.STEP_STATUS_COMPLETE
        ):
            return seconds(step.finished_at)
    return None


def _offset(at: float, base: float) -> str:
    return f"+{at - base:.3f}s"


def _tlrow(css: str, attrs: str, name: str, bar: str, when: str, took: str, gap: str) -> str:
    """One waterfall row; ``attrs``: extra HTML attributes, already escaped."""
    return (
        f"<div class='tlrow {css}'{attrs}><div class=tlname title='{e(name)}'>{e(name)}</div>"
        f"<div class=tltrack>{bar}</div><div class=tlwhen>{when}</div><div class=tldur>{took}</div>"
        f"<div class=tlgap>{gap}</div></div>"
    )


def timeline(plan: T.Plan, now: float) -> str:
    """A waterfall of the plan (the public API's view of its trace): one row per step, its bar
    from Step.started_at to Step.finished_at (or now while it runs), with its start and end as
    offsets, its duration and the gap before it (idle time since the previous step ended, or since
    the plan was made for the first); on a scale from Plan.detected_at (the first sign of a
    failure; Plan.started_at otherwise) to the last step's end. A failover first shows a
    ``detection`` row (first sign -> plan made: ``metrics.detection_seconds``, the metric's time to
    detect), and above the rows when its new master became writable (:func:`writable_at`). A step
    never started has no bar."""
    if not plan.name:
        return ""
    detected, made = seconds(plan.detected_at), seconds(plan.started_at)
    base = detected or made
    if base is None:
        return ""
    spans: list[tuple[T.Step, float | None, float | None]] = []
    end = max(base, made or base)
    for s in plan.steps:
        start, finish = seconds(s.started_at), seconds(s.finished_at)
        if start is not None and s.status not in ENDED:
            # Still running, or retried after an ERROR: up to now.
            finish_shown: float | None = now
        else:
            finish_shown = finish
        spans.append((s, start, finish_shown))
        end = max([end, *(x for x in (start, finish_shown) if x is not None)])
    total = max(end - base, 1e-3)

    def bar(start: float, stop: float, css: str) -> str:
        left, width = (start - base) / total * 100, max(stop - start, 0.0) / total * 100
        return f"<div class='bar {css}' style='left:{left:.3f}%;width:{width:.3f}%'></div>"

    rows = [_tlrow("tlhead", "", "step", "", "start &rarr; end", "took", "gap before")]
    previous_end = base
    if detected is not None and made is not None:
        took = detection_seconds(detected, made)
        rows.append(
            _tlrow(
                "tldetect",
                " id=detection-row",
                "detection (first sign → plan made)",
                bar(detected, detected + took, ""),
                f"{_offset(detected, base)} &rarr; {_offset(detected + took, base)}",
                _duration(took),
                "",
            )
        )
    if made is not None:
        previous_end = made
    for s, start, finish in spans:
        status = step_status(s.status)
        if start is None:
            rows.append(_tlrow("", f" data-step='{e(s.name)}'", s.name, "", "not run", "", ""))
            continue
        stop = finish if finish is not None else start
        still = " open" if finish == now and s.status != T.STEP_STATUS_COMPLETE else ""
        gap = max(start - previous_end, 0.0)
        previous_end = max(previous_end, stop)
        rows.append(
            _tlrow(
                "",
                f" data-step='{e(s.name)}'",
                s.name,
                bar(start, stop, f"{e(status)}{still}"),
                f"{_offset(start, base)} &rarr; {_offset(stop, base)}",
                _duration(stop - start),
                f"{_duration(gap)} gap",
            )
        )
    start_label = "detected" if detected is not None else "started"
    done = "done" if plan.status == T.STEP_STATUS_COMPLETE else "now"
    facts = [f"<span>{start_label} {e(clock(base))} UTC</span>"]
    if detected is not None and made is not None:
        facts.append(
            f"<span id=detection>detection {_duration(detection_seconds(detected, made))} "
            f"(plan made {e(clock(made))})</span>"
        )
    writable = writable_at(plan)
    if writable is not None:
        facts.append(
            f"<span id=writable>new master writable {e(clock(writable))} UTC: "
            f"<b>{_duration(max(writable - base, 0.0))}</b> after {start_label}</span>"
        )
    facts.append(f"<span>&rarr; {done}: <b>{_duration(total)}</b></span>")
    return (
        f"<h3>Timeline of {e(plan.name)}</h3><p id=timeline-total>{''.join(facts)}</p>"
        f"<div class=tl id=timeline>{''.join(rows)}</div>"
    )


def events_list(events: Iterable[Event]) -> str:
    items = "".join(f"<li><code>{e(clock(ev.at))}</code> {e(ev.text)}</li>" for ev in reversed(list(events)))
    return f"<h3>Recent events</h3><ul id=events>{items or '<li>none seen yet</li>'}</ul>"


def instance_body(instance: T.Instance, events: Iterable[Event], now: float) -> str:
    """The live part of an instance's page (re-rendered by the JSON endpoint)."""
    ready, total = ready_count(instance)
    error = f"<p class=banner>last error: {e(instance.last_error)}</p>" if instance.last_error else ""
    return (
        f"<h2>{e(instance.spec.name)} <small>{e(instance.spec.workload)}</small> "
        f"<span id=phase class='{e(phase(instance.phase))}'>{e(phase(instance.phase))}</span> "
        f"<span id=ready>{ready}/{total}</span></h2>{error}"
        f"<h3>Members</h3>{members_table(instance)}{timeline(instance.plan, now)}"
        f"{plan_section(instance.plan)}{events_list(events)}"
        f"<p><small>updated {e(clock(now))} UTC</small></p>"
    )


def instance_page(instance: T.Instance, events: Iterable[Event], now: float) -> str:
    # Quoted for a URL, so no "<" or quote can leave the script's string.
    api = json.dumps(f"/api/instances/{quote(instance.spec.name, safe='')}")
    # Live updates: the JSON endpoint every second, its "html" replacing the live part.
    script = (
        "<script>(function(){const live=document.getElementById('live'),note=document.getElementById('note');"
        f"async function tick(){{try{{const r=await fetch({api},{{cache:'no-store'}});const d=await r.json();"
        "if(r.ok){live.innerHTML=d.html;note.hidden=true;}else{note.textContent=d.error;note.hidden=false;}}"
        "catch(x){note.textContent='the console does not answer';note.hidden=false;}setTimeout(tick,1000);}"
        "setTimeout(tick,1000);})();</script>"
    )
    body = f"<p class=banner id=note hidden></p><div id=live>{instance_body(instance, events, now)}</div>"
    return page(instance.spec.name, body, script)


ENDED = (T.STEP_STATUS_COMPLETE, T.STEP_STATUS_ERROR)


def changes(old: T.Instance | None, new: T.Instance) -> list[str]:
    """What changed from ``old`` to ``new``, for people: phase, plan (a new plan, its status),
    steps finishing, members added / removed and their role / state."""
    if old is None:
        return [f"seen: {phase(new.phase)}, {len(new.members)} members"]
    out: list[str] = []
    if old.phase != new.phase:
        out.append(f"phase {phase(old.phase)} -> {phase(new.phase)}")
    if new.plan.name and (old.plan.name != new.plan.name or old.plan.started_at != new.plan.started_at):
        out.append(f"new plan {new.plan.name} ({new.plan.reason})")
    elif old.plan.status != new.plan.status and new.plan.status in ENDED:
        # Only its end: between steps a plan goes PENDING <-> STARTING many times.
        out.append(f"plan {new.plan.name} {step_status(old.plan.status)} -> {step_status(new.plan.status)}")
    if old.plan.name == new.plan.name and old.plan.started_at == new.plan.started_at:
        before = {s.name: s.status for s in old.plan.steps}
        for s in new.plan.steps:
            if before.get(s.name) != s.status and s.status in (T.STEP_STATUS_COMPLETE, T.STEP_STATUS_ERROR):
                out.append(f"step {s.name} {step_status(s.status)}")
    old_members = {m.id: m for m in old.members}
    new_members = {m.id: m for m in new.members}
    for mid, m in new_members.items():
        was = old_members.get(mid)
        if was is None:
            out.append(f"member {mid} added ({role(m.role)}, {member_state(m.state)})")
            continue
        if was.role != m.role:
            out.append(f"member {mid} role {role(was.role)} -> {role(m.role)}")
        if was.state != m.state:
            out.append(f"member {mid} {member_state(was.state)} -> {member_state(m.state)}")
    out.extend(f"member {mid} removed" for mid in old_members if mid not in new_members)
    return out
