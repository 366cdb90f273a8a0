"""Human tables (rich) and protobuf JSON for the CLI's output."""

from __future__ import annotations

import json
import time

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2

_PHASE_STYLE = {
    "RUNNING": "green",
    "FAILED": "red",
    "DEGRADED": "yellow",
    "RECOVERING": "yellow",
    "DRAINING": "yellow",
    "DELETING": "magenta",
    "DELETED": "magenta",
}


def to_json(message: Message, compact: bool = False) -> str:
    data = MessageToDict(message)
    return json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2)


def phase(instance: types_pb2.Instance) -> str:
    return types_pb2.InstancePhase.Name(instance.phase).removeprefix("INSTANCE_PHASE_")


def role(member: types_pb2.Member) -> str:
    return types_pb2.Role.Name(member.role).removeprefix("ROLE_")


def member_state(member: types_pb2.Member) -> str:
    return types_pb2.MemberState.Name(member.state).removeprefix("MEMBER_STATE_")


def step_status(status: int) -> str:
    return types_pb2.StepStatus.Name(status).removeprefix("STEP_STATUS_")


def event_type(kind: int) -> str:
    return api.InstanceEventType.Name(kind).removeprefix("INSTANCE_EVENT_TYPE_")


def ready_count(instance: types_pb2.Instance) -> int:
    return sum(1 for m in instance.members if m.state == types_pb2.MEMBER_STATE_RUNNING)


def ready(instance: types_pb2.Instance) -> str:
    return f"{ready_count(instance)}/{instance.spec.replicas}"


def plan_status(instance: types_pb2.Instance) -> str:
    if not instance.HasField("plan") or not instance.plan.name:
        return "-"
    return f"{instance.plan.name}: {step_status(instance.plan.status)}"


def addresses(member: types_pb2.Member) -> str:
    if not member.host:
        return "-"
    if not member.ports:
        return member.host
    return ", ".join(f"{member.host}:{port} ({name})" for name, port in sorted(member.ports.items()))


def volume(member: types_pb2.Member) -> str:
    """``<persistence id> <size> MiB`` with ``(no data yet)`` for a volume that holds none."""
    v = member.volume
    if not v.persistence_id:
        return "-"
    text = f"{v.persistence_id} {v.size_mb} MiB"
    return text if v.has_data else text + " (no data yet)"


def agent(member: types_pb2.Member) -> str:
    """The agent holding the member's volume (where it restarts), else its task's agent."""
    return member.volume.host or member.host or member.volume.agent_id or member.agent_id or "-"


def condition_name(kind: int) -> str:
    return types_pb2.ConditionType.Name(kind).removeprefix("CONDITION_TYPE_").lower().replace("_", "-")


def health(member: types_pb2.Member) -> Text:
    """The member's replication health in a few words: ``-`` (not checked), ``ok``, ``lag N``,
    or the failing conditions' reasons (red), with the repair asked for."""
    h = member.health
    if not h.HasField("checked_at") and not h.conditions:
        return Text("-")
    bad = [c for c in h.conditions if not c.ok]
    if h.unresponsive:
        return Text("unresponsive", style="red")
    if not bad:
        return Text(f"ok, lag {h.lag}" if h.lag > 0 else "ok", style="green")
    text = ", ".join(c.reason or condition_name(c.type) for c in bad)
    if h.repair:
        text += " (" + types_pb2.Repair.Name(h.repair).removeprefix("REPAIR_").lower() + ")"
    lagging_only = all(c.type == types_pb2.CONDITION_TYPE_CAUGHT_UP for c in bad)
    return Text(text, style="yellow" if lagging_only else "red")


def health_details(instance: types_pb2.Instance) -> str:
    """One line per failing condition: ``<member> <condition>: <reason>: <message>``."""
    lines = []
    for m in instance.members:
        for c in m.health.conditions:
            if not c.ok:
                detail = f": {c.message}" if c.message else ""
                lines.append(f"  {m.id} {condition_name(c.type)}: {c.reason}{detail}")
    return "\n".join(lines)


def fence_line(step: types_pb2.Step) -> str:
    """A fence step's typed outcome in words ("" if none)."""
    f = step.fence
    if not f.method:
        return ""
    how = types_pb2.FenceMethod.Name(f.method).removeprefix("FENCE_METHOD_").lower().replace("_", " ")
    text = f"fence of {step.member_id}: {how}" + (f" ({f.detail})" if f.detail else "")
    if f.HasField("safe_after"):
        text += f"; promotion waited until {f.safe_after.ToDatetime():%H:%M:%S.%f}"[:-3]
    return text


def decision_line(step: types_pb2.Step) -> str:
    """A failover's or election's typed decision in words ("" if none)."""
    d = step.decision
    if not d.promote_member_id:
        return ""
    text = f"decision: promote {d.promote_member_id} of {', '.join(d.candidate_ids) or '-'}"
    if d.positions:
        text += "; positions: " + ", ".join(f"{k}={v}" for k, v in sorted(d.positions.items()))
    return text


# A launch failure this recent is shown for a member that is ready again (one not ready shows its
# last failure whatever its age), in seconds.
RECENT_LAUNCH_FAILURE_SECONDS = 3600.0


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def launch_failure_lines(instance: types_pb2.Instance, now: float | None = None) -> str:
    """One line per member with a recent launch failure (``Member.launch_failures``, newest last):
    ``<member> <CAUSE> on <host>:<port> (<name>) <age>, <n> failed launches: <message>``. A member
    not ready shows its last failure whatever its age; a ready one only a recent one."""
    now = time.time() if now is None else now
    lines = []
    for m in instance.members:
        if not m.launch_failures:
            continue
        last = m.launch_failures[-1]
        at = last.at.ToNanoseconds() / 1e9
        ready = m.state == types_pb2.MEMBER_STATE_RUNNING
        if ready and now - at > RECENT_LAUNCH_FAILURE_SECONDS:
            continue
        cause = types_pb2.LaunchFailureCause.Name(last.cause).removeprefix("LAUNCH_FAILURE_CAUSE_")
        where = last.host or last.agent_id or "no agent"
        if last.ports:
            where = ", ".join(f"{where}:{port} ({name})" for name, port in sorted(last.ports.items()))
        count = len(m.launch_failures)
        text = f"  {m.id} {cause} on {where} {_age(now - at)}"
        text += f", {count} failed launches" if count > 1 else ""
        lines.append(text + (f": {last.message}" if last.message else ""))
    return "\n".join(lines)


def _in(seconds: float) -> str:
    """A time to come in a few characters: ``in 45s``, ``in 12m``, ``in 3h``; ``now`` when past."""
    if seconds <= 0:
        return "now"
    if seconds < 120:
        return f"in {seconds:.0f}s"
    if seconds < 7200:
        return f"in {seconds / 60:.0f}m"
    return f"in {seconds / 3600:.0f}h"


def maintenance_lines(instance: types_pb2.Instance, now: float | None = None) -> str:
    """One line per member whose agent is scheduled for Mesos maintenance (``Member.maintenance``,
    from an inverse offer; Mesos docs/maintenance.md): ``<member> on <host>: agent down <in 5m |
    now> for <duration | until further notice>; draining``. Empty when no agent is."""
    now = time.time() if now is None else now
    lines = []
    for m in instance.members:
        if not m.HasField("maintenance"):
            continue
        window = m.maintenance
        start = window.start.ToNanoseconds() / 1e9
        if window.HasField("duration"):
            length = window.duration.ToNanoseconds() / 1e9
            span = f"for {_in(length).removeprefix('in ')}"
        else:
            span = "until further notice"
        where = window.hostname or m.host or m.agent_id or "its agent"
        lines.append(f"  {m.id} on {where}: agent down {_in(start - now)} {span}; draining")
    return "\n".join(lines)


def runtime(spec: types_pb2.InstanceSpec) -> str:
    """``process``, or ``docker (image X)`` / ``docker (the workload's image)``; a record stored
    before runtimes existed (UNSPECIFIED) runs processes."""
    if spec.runtime in (types_pb2.RUNTIME_UNSPECIFIED, types_pb2.RUNTIME_PROCESS):
        return "process"
    if spec.runtime == types_pb2.RUNTIME_DOCKER:
        return f"docker (image {spec.image})" if spec.image else "docker (the workload's image)"
    return f"unknown ({spec.runtime})"


def _styled_phase(instance: types_pb2.Instance) -> Text:
    name = phase(instance)
    return Text(name, style=_PHASE_STYLE.get(name, ""))


def instances_table(instances: list[types_pb2.Instance]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "WORKLOAD", "PHASE", "READY", "PLAN"):
        table.add_column(column, no_wrap=column != "PLAN")
    for instance in instances:
        table.add_row(
            instance.spec.name,
            instance.spec.workload,
            _styled_phase(instance),
            ready(instance),
            plan_status(instance),
        )
    return table


def members_table(instance: types_pb2.Instance) -> Table:
    table = Table(title="members", title_justify="left", box=None, pad_edge=False)
    for column in ("ID", "ROLE", "STATE", "HEALTH", "ADDRESS", "AGENT", "VOLUME", "TASK", "MESSAGE"):
        table.add_column(column, no_wrap=column in ("ID", "ROLE", "STATE"))
    for member in instance.members:
        table.add_row(
            member.id,
            role(member),
            member_state(member),
            health(member),
            addresses(member),
            agent(member),
            volume(member),
            member.task_id or "-",
            member.message,
        )
    return table


def plan_table(plan: types_pb2.Plan) -> Table:
    title = f"plan {plan.name}: {step_status(plan.status)}" + (f" ({plan.reason})" if plan.reason else "")
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in ("STEP", "MEMBER", "STATUS", "ATTEMPTS", "MESSAGE"):
        table.add_column(column)
    for step in plan.steps:
        table.add_row(
            step.name, step.member_id or "-", step_status(step.status), str(step.attempts), step.message
        )
    return table


def _applied(instance: types_pb2.Instance) -> str:
    """" (applied: N, rolling out)" while a generation is not rolled out yet; "" otherwise."""
    observed = instance.observed_generation
    if 0 < observed < instance.generation:
        return f" (applied: {observed}, rolling out)"
    return ""


def instance_details(instance: types_pb2.Instance, secrets: dict[str, str] | None = None) -> RenderableType:
    """The instance line, its spec, plan steps and members (what ``get`` shows)."""
    spec = instance.spec
    resources = spec.resources
    parts: list[RenderableType] = [instances_table([instance])]
    facts = [
        f"resources: {resources.cpus:g} cpus, {resources.mem_mb} MiB mem, {resources.disk_mb} MiB disk",
        f"runtime: {runtime(spec)}",
        f"generation: {instance.generation}{_applied(instance)}  revision: {instance.revision}",
    ]
    if instance.endpoints.uri:
        facts.append(f"endpoint: {instance.endpoints.uri} (statefulctl endpoint {spec.name})")
    if spec.config:
        facts.append("config: " + ", ".join(f"{k}={v}" for k, v in sorted(spec.config.items())))
    if spec.labels:
        facts.append("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(spec.labels.items())))
    if instance.paused:
        facts.append(f"paused: no new step starts; `statefulctl resume {spec.name}` continues")
    if instance.last_error:
        facts.append(f"last error: {instance.last_error}")
    parts.append(Text("\n".join(facts)))
    if instance.HasField("plan") and instance.plan.name:
        parts.append(plan_table(instance.plan))
        typed = [line for s in instance.plan.steps for line in (fence_line(s), decision_line(s)) if line]
        if typed:
            parts.append(Text("\n".join(typed)))
    if instance.members:
        parts.append(members_table(instance))
        problems = health_details(instance)
        if problems:
            parts.append(Text("replication problems:\n" + problems))
        failures = launch_failure_lines(instance)
        if failures:
            parts.append(Text("launch failures:\n" + failures))
        maintenance = maintenance_lines(instance)
        if maintenance:
            parts.append(Text("agent maintenance:\n" + maintenance))
    if secrets:
        parts.append(Text("secrets: " + ", ".join(f"{k}={v}" for k, v in sorted(secrets.items()))))
    return Group(*parts)


def workloads_table(workloads: list[types_pb2.Workload]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "TOPOLOGY", "ENDPOINT", "DEFAULTS", "REPLICAS", "CONFIG KEYS", "SUMMARY"):
        table.add_column(column)
    for workload in workloads:
        d = workload.description
        r = d.default_resources
        low, high = d.min_replicas or 1, d.max_replicas
        table.add_row(
            workload.name,
            types_pb2.Topology.Name(d.topology).removeprefix("TOPOLOGY_"),
            workload.endpoint,
            f"{r.cpus:g} cpus, {r.mem_mb} MiB",
            f"{low}-{high}" if high else f"{low}+",
            ", ".join(k.name for k in d.config_keys) or "-",
            d.summary,
        )
    return table


def event_line(event: api.WatchInstancesResponse) -> str:
    instance = event.instance
    return (
        f"{event.revision:>8}  {event_type(event.type):<8}  {instance.spec.name:<20} {phase(instance):<10} "
        f"{ready(instance):>5}  {plan_status(instance)}"
    )
