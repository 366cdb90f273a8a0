"""Unit tests of the Mesos JSON conversions and of launch validation (pure logic)."""

from __future__ import annotations

import base64

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.offers import mesos
from mesos_stateful.offers.matching import Assignment
from mesos_stateful.offers.validation import validate_launch

OFFER = {
    "id": {"value": "O1"},
    "agent_id": {"value": "A1"},
    "hostname": "127.0.0.2",
    "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}, "role": "*"},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 8192.0}, "role": "*"},
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "other"},
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 100.0}},
        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 32000, "end": 32001}]}},
        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31009}]}},
    ],
    "attributes": [
        {"name": "zone", "type": "TEXT", "text": {"value": "a"}},
        {"name": "rack", "type": "SCALAR", "scalar": {"value": 3}},
    ],
}


def spec() -> types_pb2.LaunchSpec:
    return types_pb2.LaunchSpec(
        instance="cache",
        member_id="cache-0",
        task_id="cache-0.1",
        resources=types_pb2.Resources(cpus=0.5, mem_mb=256),
        port_names=["client", "bus"],
        argv=["redis-server"],
    )


def test_parse_offer_keeps_only_usable_resources() -> None:
    offer = mesos.parse_offer(OFFER)
    assert (offer.offer_id, offer.agent_id, offer.hostname) == ("O1", "A1", "127.0.0.2")
    assert (offer.cpus, offer.mem, offer.disk) == (4.0, 8192.0, 100.0)
    assert offer.ports == [(31000, 31009), (32000, 32001)]
    assert offer.attributes == {"zone": "a", "rack": "3"}
    # Static reservations (even for our role) are left alone: reservations are made from
    # unreserved resources only.
    assert mesos.parse_offer(OFFER, role="other").cpus == 4.0


def test_task_info() -> None:
    task = types_pb2.Task(task_id="cache-0.1", instance="cache", member_id="cache-0", launch=spec())
    assignment = Assignment("cache-0.1", "O1", "A1", "127.0.0.2", {"client": 31000, "bus": 31001})
    info = mesos.task_info(task, assignment, OFFER, "python -m mesos_stateful.executor", "F1")
    assert info["task_id"] == {"value": "cache-0.1"} and info["agent_id"] == {"value": "A1"}
    assert info["executor"]["executor_id"] == {"value": "cache-0.1"}
    assert info["executor"]["command"] == {"value": "python -m mesos_stateful.executor", "shell": True}
    assert types_pb2.LaunchSpec.FromString(base64.b64decode(info["data"])) == spec()
    resources = {r["name"]: r for r in info["resources"]}
    assert resources["cpus"]["scalar"] == {"value": 0.5} and resources["cpus"]["role"] == "*"
    assert resources["mem"]["scalar"] == {"value": 256.0}
    assert "disk" not in resources
    assert resources["ports"]["ranges"] == {"range": [{"begin": 31000, "end": 31001}]}
    assert info["discovery"]["visibility"] == "FRAMEWORK"
    assert info["discovery"]["ports"]["ports"] == [
        {"number": 31000, "name": "client", "protocol": "tcp"},
        {"number": 31001, "name": "bus", "protocol": "tcp"},
    ]
    assert info["labels"] == {"labels": [
        {"key": "instance", "value": "cache"}, {"key": "member_id", "value": "cache-0"}]}


def test_the_launch_trace_context_goes_out_as_a_label_and_comes_back_on_updates() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    task = types_pb2.Task(task_id="cache-0.1", launch=spec(), launch_trace_parent=traceparent)
    assignment = Assignment("cache-0.1", "O1", "A1", "127.0.0.2", {"client": 31000, "bus": 31001})
    info = mesos.task_info(task, assignment, OFFER, "python -m mesos_stateful.executor", "F1")
    assert {"key": "traceparent", "value": traceparent} in info["labels"]["labels"]
    status = {"state": "TASK_FAILED", "labels": {"labels": [{"key": "traceparent", "value": traceparent}]}}
    assert mesos.status_traceparent(status) == traceparent
    assert mesos.status_traceparent({"state": "TASK_LOST"}) == ""
    assert mesos.status_traceparent({"labels": {"labels": "junk"}}) == ""


def test_apply_status() -> None:
    task = types_pb2.Task(task_id="cache-0.1", state=types_pb2.TASK_STATE_STAGING, host="127.0.0.2")
    status = {
        "task_id": {"value": "cache-0.1"},
        "state": "TASK_RUNNING",
        "message": "ready",
        "agent_id": {"value": "A1"},
        "healthy": True,
        "timestamp": 1700000000.5,
        "uuid": "abc",
    }
    mesos.apply_status(task, status, now=0)
    assert task.state == types_pb2.TASK_STATE_RUNNING and task.healthy and task.agent_id == "A1"
    assert task.message == "ready" and task.updated_at.seconds == 1700000000
    mesos.apply_status(task, {"state": "TASK_LOST", "reason": "REASON_AGENT_REMOVED"}, now=5)
    assert task.state == types_pb2.TASK_STATE_LOST and mesos.is_terminal(task.state)
    assert task.healthy  # unchanged when the update does not say
    assert mesos.task_state("TASK_SOMETHING_NEW") == types_pb2.TASK_STATE_UNKNOWN


def test_validation() -> None:
    validate_launch(spec())
    bad = spec()
    bad.task_id = "cache-1.1"
    bad.port_names.append("CLIENT")
    bad.resources.mem_mb = 0
    with pytest.raises(errors.InvalidArgument) as raised:
        validate_launch(bad)
    assert set(raised.value.fields) == {"launch.task_id", "launch.port_names[2]", "launch.resources.mem_mb"}
    for task_id in ("cache-0.0", "cache-0.x", "cache-0"):
        bad = spec()
        bad.task_id = task_id
        with pytest.raises(errors.InvalidArgument):
            validate_launch(bad)
