"""What `statefulctl get` / `describe` show of failed launches: a line per member with a recent one."""

from __future__ import annotations

import time

from rich.console import Console

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.cli import render

NOW = 1_800_000_000.0


def _text(renderable: object) -> str:
    console = Console(width=250, record=True)
    console.print(renderable)
    return console.export_text()


def _failure(
    m: T.Member, task: str, port: int, ago: float, now: float, cause: int = T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE
) -> None:
    f = m.launch_failures.add(
        task_id=task,
        agent_id="agent-1",
        host="127.1.1.2",
        ports={"redis": port},
        cause=cause,
        message="exited with code 1: bind: Address already in use",
    )
    f.at.FromNanoseconds(int((now - ago) * 1e9))


def _instance(now: float = NOW) -> T.Instance:
    i = T.Instance(spec=T.InstanceSpec(name="cache", workload="redis", replicas=3))
    starting = i.members.add(id="cache-0", role=T.ROLE_MASTER, state=T.MEMBER_STATE_FAILED)
    _failure(starting, "cache-0.1", 10000, 5000, now, T.LAUNCH_FAILURE_CAUSE_EXITED_BEFORE_READY)
    _failure(starting, "cache-0.2", 10001, 12, now)
    recent = i.members.add(id="cache-1", role=T.ROLE_SLAVE, state=T.MEMBER_STATE_RUNNING)
    _failure(recent, "cache-1.1", 11000, 300, now)
    old = i.members.add(id="cache-2", role=T.ROLE_SLAVE, state=T.MEMBER_STATE_RUNNING)
    _failure(old, "cache-2.1", 12000, 2 * render.RECENT_LAUNCH_FAILURE_SECONDS, now)
    return i


def test_a_line_per_member_with_a_recent_launch_failure() -> None:
    lines = render.launch_failure_lines(_instance(), now=NOW).splitlines()
    assert lines == [
        "  cache-0 PORT_IN_USE on 127.1.1.2:10001 (redis) 12s ago, 2 failed launches: "
        "exited with code 1: bind: Address already in use",
        "  cache-1 PORT_IN_USE on 127.1.1.2:11000 (redis) 5m ago: "
        "exited with code 1: bind: Address already in use",
    ]


def test_get_shows_them_under_the_members() -> None:
    out = _text(render.instance_details(_instance(time.time())))
    assert "launch failures:\n  cache-0 PORT_IN_USE on 127.1.1.2:10001 (redis) 12s ago, 2 failed" in out
    assert "cache-1 PORT_IN_USE on 127.1.1.2:11000 (redis) 5m ago" in out
    assert "cache-2 PORT_IN_USE" not in out  # ready again, long ago
    quiet = T.Instance(spec=T.InstanceSpec(name="q", workload="redis", replicas=1))
    quiet.members.add(id="q-0", state=T.MEMBER_STATE_RUNNING)
    assert "launch failures" not in _text(render.instance_details(quiet))
