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
