"""From a Mesos TaskInfo (as pymesos gives it) to a Launch; invalid tasks are refused clearly."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from executor_helpers import make_spec

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.executor.expand import expand
from mesos_stateful.executor.launch import InvalidTask, launch_from_task, port_env_name
from mesos_stateful.executor.runtimes import runtime_for


def task_info(spec: types_pb2.LaunchSpec | None, *, data: Any = None, discovery: bool = True,
              **extra: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "task_id": {"value": "cache-0.1"},
        "name": "cache-0",
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31005, "end": 31006}]}},
        ],
        "data": data,
    }
    if data is None and spec is not None:
        task["data"] = base64.b64encode(spec.SerializeToString()).decode()
    if discovery:
        task["discovery"] = {"visibility": "FRAMEWORK", "ports": {"ports": [
            {"number": 31006, "name": "client", "protocol": "tcp"},
            {"number": 31005, "name": "bus", "protocol": "tcp"},
        ]}}
    task.update(extra)
    return task


def build(task: dict[str, Any], tmp_path: Path) -> Any:
    environ = {"PATH": "/bin", "MESOS_X": "1"}
    return launch_from_task(task, host="127.0.0.3", sandbox=tmp_path, environ=environ)


def test_named_ports_from_discovery(tmp_path: Path) -> None:
    spec = make_spec(["redis-server", "--port", "${PORT_CLIENT}"], port_names=["client", "bus"])
    launch = build(task_info(spec), tmp_path)
    assert launch.ports == {"client": 31006, "bus": 31005}
    assert launch.argv == ("redis-server", "--port", "31006")
    assert launch.env["HOST"] == "127.0.0.3" and launch.env["PORT_BUS"] == "31005"
    assert "MESOS_X" not in launch.env and launch.env["PATH"] == "/bin"
    assert launch.kill_grace == 10.0
    assert isinstance(runtime_for(launch), object)


def test_ports_without_discovery_are_given_in_order(tmp_path: Path) -> None:
    spec = make_spec(["x"], port_names=["client", "bus"])
    launch = build(task_info(spec, discovery=False), tmp_path)
    assert launch.ports == {"client": 31005, "bus": 31006}


def test_raw_bytes_data_is_accepted(tmp_path: Path) -> None:
    spec = make_spec(["x"])
    assert build(task_info(spec, data=spec.SerializeToString()), tmp_path).argv == ("x",)


def test_kill_grace_precedence(tmp_path: Path) -> None:
    spec = make_spec(["x"], kill_grace_seconds=4)
    assert build(task_info(spec), tmp_path).kill_grace == 4.0
    policy = {"grace_period": {"nanoseconds": "1500000000"}}
    assert build(task_info(spec, kill_policy=policy), tmp_path).kill_grace == 1.5


def test_contract_variables_win_over_spec_env(tmp_path: Path) -> None:
    env = {"HOST": "elsewhere", "ADDR": "${HOST}:${PORT_CLIENT}"}
    spec = make_spec(["x"], env=env, port_names=["client"])
    launch = build(task_info(spec), tmp_path)
    assert launch.env["HOST"] == "127.0.0.3" and launch.env["ADDR"] == "127.0.0.3:31006"


@pytest.mark.parametrize(
    ("task", "error"),
    [
        (task_info(None), "task has no data"),
        (task_info(None, data="!!not base64!!"), "not base64"),
        (task_info(None, data=base64.b64encode(b"\xff\xff\xff").decode()), "not a stateful.v1.LaunchSpec"),
        (task_info(make_spec([])), "argv is empty"),
        (task_info(make_spec(["x"], port_names=["admin"]), discovery=False, resources=[]), "port 'admin'"),
        (task_info(make_spec(["x"], files=[types_pb2.FileSpec(path="../escape")])), "must be relative"),
        (task_info(make_spec(["x"], files=[types_pb2.FileSpec(path="/etc/passwd")])), "must be relative"),
        (task_info(make_spec(["x"], files=[types_pb2.FileSpec(path="b", content=b"\xff", expand=True)])),
         "not UTF-8"),
        (task_info(make_spec(["x"], readiness=types_pb2.Check(tcp=types_pb2.TcpCheck(port_name="nope")))),
         "readiness check: port 'nope'"),
        (task_info(make_spec(["x"], health=types_pb2.Check(interval_ms=5))), "neither tcp nor command"),
        (task_info(make_spec(["x"], env={"BAD-NAME": "1"})), "not a valid variable name"),
        ({"data": "x"}, "no task_id"),
    ],
)
def test_invalid_tasks(task: dict[str, Any], error: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidTask, match=error):
        build(task, tmp_path)


def test_docker_runtime_is_chosen_for_a_docker_launch(tmp_path: Path) -> None:
    from mesos_stateful.executor.docker_runtime import DockerRuntime

    launch = build(task_info(make_spec(["x"], runtime=types_pb2.RUNTIME_DOCKER, image="redis")), tmp_path)
    assert isinstance(runtime_for(launch), DockerRuntime)


def test_expansion_rules() -> None:
    env = {"A": "1", "B_2": "two"}
    assert expand("${A}-${B_2}", env) == "1-two"
    assert expand("$${A} $A $$ ${MISSING} ${}", env) == "${A} $A $$ ${MISSING} ${}"
    assert port_env_name("peer-bus.v2") == "PORT_PEER_BUS_V2"
