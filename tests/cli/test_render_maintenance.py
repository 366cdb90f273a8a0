"""What `statefulctl get` / `describe` show of an agent scheduled for maintenance: a line per member
being drained off it."""

from __future__ import annotations

from rich.console import Console

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.cli import render

NOW = 1_800_000_000.0


def _instance() -> T.Instance:
    i = T.Instance(spec=T.InstanceSpec(name="cache", workload="redis", replicas=3))
    soon = i.members.add(id="cache-0", role=T.ROLE_MASTER, state=T.MEMBER_STATE_RUNNING, host="127.1.1.2")
    soon.maintenance.start.FromNanoseconds(int((NOW + 300) * 1e9))
    soon.maintenance.duration.FromSeconds(3600)
    soon.maintenance.hostname = "127.1.1.2"
    late = i.members.add(id="cache-1", role=T.ROLE_SLAVE, state=T.MEMBER_STATE_RUNNING, host="127.1.1.3")
    late.maintenance.start.FromNanoseconds(int((NOW - 10) * 1e9))
    i.members.add(id="cache-2", role=T.ROLE_SLAVE, state=T.MEMBER_STATE_RUNNING, host="127.1.1.4")
    return i


def test_a_line_per_member_on_an_agent_under_maintenance() -> None:
    assert render.maintenance_lines(_instance(), now=NOW).splitlines() == [
        "  cache-0 on 127.1.1.2: agent down in 5m for 60m; draining",
        "  cache-1 on 127.1.1.3: agent down now until further notice; draining",
    ]


def test_get_shows_the_maintenance_section_only_when_an_agent_is_scheduled() -> None:
    console = Console(width=250, record=True)
    console.print(render.instance_details(_instance()))
    assert "agent maintenance:" in console.export_text()
    plain = T.Instance(spec=T.InstanceSpec(name="db", workload="redis", replicas=1))
    plain.members.add(id="db-0", role=T.ROLE_MASTER, state=T.MEMBER_STATE_RUNNING)
    console = Console(width=250, record=True)
    console.print(render.instance_details(plain))
    assert "agent maintenance" not in console.export_text()
