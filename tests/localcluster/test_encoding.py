"""encoding.py: JSON and protobuf bodies of the v1 APIs, parsed and refused as the real master and
agent do (src/master/http.cpp, src/slave/http.cpp, libprocess Request::acceptsMediaType)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.api.mesos.v1.executor import executor_pb2
from mesos_stateful.api.mesos.v1.maintenance import maintenance_pb2
from mesos_stateful.api.mesos.v1.master import master_pb2
from mesos_stateful.api.mesos.v1.scheduler import scheduler_pb2
from mesos_stateful.localcluster import encoding
from mesos_stateful.localcluster.encoding import JSON, PROTOBUF, DecodeError

Json = dict[str, Any]

ACCEPT: Json = {
    "framework_id": {"value": "fw-1"},
    "type": "ACCEPT",
    "accept": {
        "offer_ids": [{"value": "offer-1"}],
        "operations": [
            {
                "type": "RESERVE",
                "reserve": {
                    "resources": [
                        {
                            "name": "cpus",
                            "type": "SCALAR",
                            "scalar": {"value": 0.5},
                            "reservations": [{"type": "DYNAMIC", "role": "stateful", "principal": "p"}],
                        }
                    ]
                },
            }
        ],
        "filters": {"refuse_seconds": 5.0},
    },
}

UNREACHABLE: Json = {
    "type": "UPDATE",
    "update": {
        "status": {
            "task_id": {"value": "t1"},
            "state": "TASK_UNREACHABLE",
            "source": "SOURCE_MASTER",
            "reason": "REASON_AGENT_DISCONNECTED",
            "agent_id": {"value": "a1"},
            "timestamp": 1700000000.25,
            "unreachable_time": {"nanoseconds": 1700000000250000000},
            "uuid": "AAECAwQFBgcICQoLDA0ODw==",
        }
    },
}


def error_of(body: bytes, content_type: str | None, message: Any = scheduler_pb2.Call) -> DecodeError:
    with pytest.raises(DecodeError) as raised:
        encoding.decode(body, content_type, message)
    return raised.value


def test_json_body_decodes_to_the_same_dict() -> None:
    assert encoding.decode(json.dumps(ACCEPT).encode(), JSON, scheduler_pb2.Call) == ACCEPT


def test_protobuf_body_decodes_to_the_json_mesos_writes() -> None:
    body = encoding.encode(ACCEPT, scheduler_pb2.Call, PROTOBUF)
    assert scheduler_pb2.Call.FromString(body).accept.offer_ids[0].value == "offer-1"
    assert encoding.decode(body, PROTOBUF, scheduler_pb2.Call) == ACCEPT


def test_int64_fields_come_back_as_numbers() -> None:
    body = encoding.encode(UNREACHABLE, scheduler_pb2.Event, PROTOBUF)
    decoded = encoding.decode(body, PROTOBUF, scheduler_pb2.Event)
    assert decoded == UNREACHABLE
    assert isinstance(decoded["update"]["status"]["unreachable_time"]["nanoseconds"], int)


def test_int64_in_repeated_and_nested_messages() -> None:
    schedule: Json = {
        "windows": [
            {
                "machine_ids": [{"hostname": "h1", "ip": "127.0.0.2"}],
                "unavailability": {"start": {"nanoseconds": 5}, "duration": {"nanoseconds": 7}},
            },
            {"machine_ids": [{"ip": "127.0.0.3"}], "unavailability": {"start": {"nanoseconds": 9}}},
        ]
    }
    body = encoding.encode(schedule, maintenance_pb2.Schedule, PROTOBUF)
    assert encoding.decode(body, PROTOBUF, maintenance_pb2.Schedule) == schedule


def test_executor_and_operator_calls_round_trip() -> None:
    heartbeat: Json = {"executor_id": {"value": "e"}, "framework_id": {"value": "f"}, "type": "HEARTBEAT"}
    body = encoding.encode(heartbeat, executor_pb2.Call, PROTOBUF)
    assert encoding.decode(body, PROTOBUF, executor_pb2.Call) == heartbeat
    start: Json = {"type": "START_MAINTENANCE", "start_maintenance": {"machines": [{"hostname": "h"}]}}
    body = encoding.encode(start, master_pb2.Call, PROTOBUF)
    assert encoding.decode(body, PROTOBUF, master_pb2.Call) == start


def test_json_encode_is_plain_json() -> None:
    assert json.loads(encoding.encode(ACCEPT, scheduler_pb2.Call, JSON)) == ACCEPT


def test_encode_protobuf_refuses_what_the_contract_lacks() -> None:
    with pytest.raises(ValueError, match="no field named"):
        encoding.encode({"type": "HEARTBEAT", "extra": 1}, scheduler_pb2.Event, PROTOBUF)
    with pytest.raises(ValueError, match=r"Missing required fields: update\.status"):
        encoding.encode({"type": "UPDATE", "update": {}}, scheduler_pb2.Event, PROTOBUF)


def test_no_content_type_is_400() -> None:
    error = error_of(b"{}", None)
    assert (error.status, error.message) == (400, "Expecting 'Content-Type' to be present")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json; charset=utf-8", "APPLICATION/JSON"]
)
def test_other_content_types_are_415(content_type: str) -> None:
    # Master::Http::scheduler compares the header as a string: parameters or case make it another type.
    error = error_of(b"{}", content_type)
    assert error.status == 415
    assert error.message == "Expecting 'Content-Type' of application/json or application/x-protobuf"


def test_bad_json_is_400() -> None:
    error = error_of(b'{"type": ', JSON)
    assert error.status == 400
    assert error.message.startswith("Failed to parse body into JSON: ")


def test_not_an_object_is_400() -> None:
    error = error_of(b"[1]", JSON)
    assert (error.status, error.message) == (
        400,
        "Failed to convert JSON into Call protobuf: Expecting a JSON object",
    )


def test_unknown_field_is_400() -> None:
    error = error_of(json.dumps({"type": "REVIVE", "bogus": {}}).encode(), JSON)
    assert error.status == 400
    assert error.message.startswith("Failed to convert JSON into Call protobuf: ")
    assert '"bogus"' in error.message
    assert "\n" not in error.message


def test_wrong_type_is_400() -> None:
    body = json.dumps({"type": "DECLINE", "decline": {"offer_ids": "o1"}}).encode()
    error = error_of(body, JSON)
    assert error.status == 400
    assert error.message.startswith("Failed to convert JSON into Call protobuf: ")


def test_missing_required_fields_are_named() -> None:
    body = json.dumps({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u"}}}).encode()
    error = error_of(body, JSON)
    assert error.message == (
        "Failed to convert JSON into Call protobuf: Missing required fields: subscribe.framework_info.name"
    )


def test_executor_call_needs_its_ids() -> None:
    error = error_of(b'{"type": "HEARTBEAT"}', JSON, executor_pb2.Call)
    assert error.message == (
        "Failed to convert JSON into Call protobuf: Missing required fields: executor_id, framework_id"
    )


def test_null_is_an_unset_field() -> None:
    body = json.dumps({"type": "REVIVE", "framework_id": {"value": "f"}, "revive": None}).encode()
    assert encoding.decode(body, JSON, scheduler_pb2.Call) == {
        "type": "REVIVE",
        "framework_id": {"value": "f"},
    }


def test_bad_protobuf_is_400() -> None:
    error = error_of(b"\xff\xff\xff", PROTOBUF)
    assert (error.status, error.message) == (400, "Failed to parse body into Call protobuf")


def test_protobuf_missing_required_fields_is_400() -> None:
    call = executor_pb2.Call(type=executor_pb2.Call.HEARTBEAT)
    error = error_of(call.SerializePartialToString(), PROTOBUF, executor_pb2.Call)
    assert (error.status, error.message) == (400, "Failed to parse body into Call protobuf")


def test_operator_response_encodes_strictly() -> None:
    response: Json = {
        "type": "GET_TASKS",
        "get_tasks": {
            "tasks": [
                {
                    "name": "t",
                    "task_id": {"value": "t"},
                    "framework_id": {"value": "f"},
                    "agent_id": {"value": "a"},
                    "state": "TASK_RUNNING",
                    "statuses": [{"task_id": {"value": "t"}, "state": "TASK_RUNNING", "timestamp": 1.5}],
                }
            ]
        },
    }
    body = encoding.encode(response, master_pb2.Response, PROTOBUF)
    assert master_pb2.Response.FromString(body).get_tasks.tasks[0].state == mesos_pb2.TASK_RUNNING
    assert encoding.decode(body, PROTOBUF, master_pb2.Response) == response


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),  # no header: everything is accepted, JSON first
        ("application/json", JSON),
        ("application/x-protobuf", PROTOBUF),
        ("application/x-protobuf, application/json", JSON),  # the server's order decides, not the header's
        ("application/json;q=0, application/x-protobuf", PROTOBUF),
        ("application/json; q=0.0", None),
        ("application/*", JSON),
        ("*/*", JSON),
        ("*/*;q=0", None),
        ("text/html", None),
        ("APPLICATION/X-PROTOBUF", PROTOBUF),  # media types compare case-insensitively here
        ("text/html, application/json;q=0.5", JSON),
    ],
)
def test_accepted_media_type(accept: str | None, expected: str | None) -> None:
    assert encoding.accepted_media_type(accept) == expected


def test_not_acceptable_wording() -> None:
    assert (
        encoding.NOT_ACCEPTABLE
        == "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'"
    )
