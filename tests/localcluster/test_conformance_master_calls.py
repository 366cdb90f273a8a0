"""Issue 11 item 2: a call without the body its type requires is refused with 400 and Mesos's text
(``validation::scheduler::call::validate``, src/master/validation.cpp, answered by
``Master::Http::scheduler`` as "Failed to validate scheduler::Call: <error>"), for every call type
the master accepts; the call types without a body are accepted."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from localcluster.mesos_json import Json, RawScheduler, parse_call
from mesos_stateful.testing.cluster import RunningCluster

WITH_BODY = [
    "ACCEPT",
    "DECLINE",
    "ACCEPT_INVERSE_OFFERS",
    "DECLINE_INVERSE_OFFERS",
    "KILL",
    "SHUTDOWN",
    "ACKNOWLEDGE",
    "ACKNOWLEDGE_OPERATION_STATUS",
    "RECONCILE",
    "RECONCILE_OPERATIONS",
    "MESSAGE",
    "REQUEST",
    "UPDATE_FRAMEWORK",
]


@pytest.fixture
def sched(local_cluster: RunningCluster) -> Iterator[RawScheduler]:
    s = RawScheduler(local_cluster.master_address, name="calls")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def post(sched: RawScheduler, call: Json) -> tuple[int, str]:
    parse_call(call)  # what is sent is a valid Call: only the body is missing
    host, port = sched.master.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(
            "POST",
            "/api/v1/scheduler",
            body=json.dumps(call).encode(),
            headers={"Content-Type": "application/json", "Mesos-Stream-Id": sched.stream_id},
        )
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize("kind", WITH_BODY)
def test_call_without_its_body_is_bad_request(sched: RawScheduler, kind: str) -> None:
    status, text = post(sched, {"type": kind, "framework_id": {"value": sched.framework_id}})
    assert (status, text) == (
        400,
        f"Failed to validate scheduler::Call: Expecting '{kind.lower()}' to be present",
    )


def test_calls_without_a_body_are_accepted(sched: RawScheduler) -> None:
    for kind in ("SUPPRESS", "REVIVE"):
        assert post(sched, {"type": kind, "framework_id": {"value": sched.framework_id}}) == (202, "")


def test_call_rules_beyond_the_body(sched: RawScheduler) -> None:
    fid = {"value": sched.framework_id}
    # UPDATE_FRAMEWORK's FrameworkInfo must carry the call's framework id.
    info = {"user": "test", "name": "calls", "id": {"value": "other"}}
    assert post(
        sched, {"type": "UPDATE_FRAMEWORK", "framework_id": fid, "update_framework": {"framework_info": info}}
    ) == (
        400,
        "Failed to validate scheduler::Call: "
        "'framework_id' differs from 'update_framework.framework_info.id'",
    )
    # An empty body is a present body: RECONCILE {} is implicit reconciliation.
    assert post(sched, {"type": "RECONCILE", "framework_id": fid, "reconcile": {}}) == (202, "")
    sched.check()


def test_subscribe_without_its_body(local_cluster: RunningCluster) -> None:
    host, port = local_cluster.master_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(
            "POST",
            "/api/v1/scheduler",
            body=json.dumps(parse_call_json({"type": "SUBSCRIBE"})).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        resp = conn.getresponse()
        assert (resp.status, resp.read().decode()) == (
            400,
            "Failed to validate scheduler::Call: Expecting 'subscribe' to be present",
        )
    finally:
        conn.close()


def parse_call_json(call: Json) -> Json:
    parse_call(call)
    return call


def test_unknown_call_is_not_implemented(sched: RawScheduler) -> None:
    assert post(sched, {"type": "UNKNOWN", "framework_id": {"value": sched.framework_id}})[0] == 501


def test_update_framework(sched: RawScheduler) -> None:
    """``Master::updateFramework``: 200 OK; the FrameworkInfo validated as at SUBSCRIBE; principal,
    user and checkpoint cannot change; suppressed roles must be the framework's."""
    fid = {"value": sched.framework_id}
    info = dict(sched.info, id=fid)

    def update(framework_info: Json, suppressed: list[str] | None = None) -> tuple[int, str]:
        body: Json = {"framework_info": framework_info}
        if suppressed is not None:
            body["suppressed_roles"] = suppressed
        return post(sched, {"type": "UPDATE_FRAMEWORK", "framework_id": fid, "update_framework": body})

    assert update(dict(info, roles=["a", "a"])) == (
        400,
        "Supplied FrameworkInfo is not valid: 'FrameworkInfo.roles' contains duplicate items: { a }",
    )
    assert update(dict(info, user="other")) == (
        400,
        "FrameworkInfo update is not valid: Updating 'FrameworkInfo.user' is unsupported; "
        "attempted to update from 'test' to 'other'",
    )
    assert update(dict(info, checkpoint=False)) == (
        400,
        "FrameworkInfo update is not valid: Updating 'FrameworkInfo.checkpoint' is unsupported; "
        "attempted to update from 'true' to 'false'",
    )
    assert update(info, ["nope"]) == (
        400,
        "'UpdateFramework' call is not valid: "
        "Suppressed roles { nope } are not contained in the set of roles",
    )
    # Accepted: the new name shows in /master/state.
    sched.wait("OFFERS")
    assert update(dict(info, name="renamed"), [sched.role]) == (200, "")
    state_name = None
    host, port = sched.master.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/master/state")
        state = json.loads(conn.getresponse().read())
        state_name = next(f["name"] for f in state["frameworks"] if f["id"] == sched.framework_id)
    finally:
        conn.close()
    assert state_name == "renamed"
    sched.check()
