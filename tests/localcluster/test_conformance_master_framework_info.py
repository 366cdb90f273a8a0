"""Issue 11 item 3: an invalid FrameworkInfo is refused as the real master refuses it
(``Master::subscribe``: ``validateFramework`` → ``refuseSubscription``: one ERROR event with the
error of ``validation::framework::validate``, src/master/validation.cpp, then the stream closes; the
framework is not registered). A re-subscription cannot change the principal (``validateUpdate``)."""

from __future__ import annotations

import http.client
import json

import pytest

from localcluster.mesos_json import Json, RawScheduler, parse_call, parse_event
from mesos_stateful.testing.cluster import RunningCluster


def subscribe_events(master: str, info: Json) -> list[Json]:
    """SUBSCRIBE and read the stream to its end (each event parsed strictly)."""
    call: Json = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
    if "id" in info:
        call["framework_id"] = info["id"]
    parse_call(call)
    host, port = master.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(
            "POST",
            "/api/v1/scheduler",
            body=json.dumps(call).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read())
        events: list[Json] = []
        while True:
            size = resp.readline()
            if not size:
                return events
            record = resp.read(int(size))
            parse_event(record.decode())
            events.append(json.loads(record))
            assert len(events) < 5, events
    finally:
        conn.close()


def info(**fields: object) -> Json:
    return {"user": "test", "name": "invalid", **fields}


MULTI_ROLE = [{"type": "MULTI_ROLE"}]

CASES = [
    (
        info(roles=["a"]),
        "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable",
    ),
    (
        info(role="a", roles=["a"], capabilities=MULTI_ROLE),
        "'FrameworkInfo.role' must not be set when the framework is MULTI_ROLE capable",
    ),
    (
        info(roles=["a", "b", "a"], capabilities=MULTI_ROLE),
        "'FrameworkInfo.roles' contains duplicate items: { a }",
    ),
    (
        info(roles=["a", "b/"], capabilities=MULTI_ROLE),
        "'FrameworkInfo.roles' contains invalid role: Role 'b/' cannot end with a slash",
    ),
    (
        info(roles=["-x"], capabilities=MULTI_ROLE),
        "'FrameworkInfo.roles' contains invalid role: "
        "Role component '-x' is invalid because it starts with a dash",
    ),
    (
        info(role="a b"),
        "'FrameworkInfo.role' is not a valid role: Role component 'a b' is invalid because "
        "it contains backspace or whitespace",
    ),
    (
        info(role="a/./b"),
        "'FrameworkInfo.role' is not a valid role: Role 'a/./b' cannot include '.' as a component",
    ),
    (info(failover_timeout=1e10), "The framework failover_timeout (1e+10) is invalid"),
]


@pytest.mark.parametrize(("framework_info", "message"), CASES)
def test_invalid_framework_info_is_an_error_event(
    local_cluster: RunningCluster, framework_info: Json, message: str
) -> None:
    events = subscribe_events(local_cluster.master_address, framework_info)
    assert events == [{"type": "ERROR", "error": {"message": message}}]
    assert not [f for f in local_cluster.state()["frameworks"] if f["name"] == "invalid"]


def test_valid_roles_subscribe(local_cluster: RunningCluster) -> None:
    """The counterpart: a MULTI_ROLE framework with hierarchical roles, and an old-style one."""
    multi = RawScheduler(local_cluster.master_address, role="eng/backend", name="multi")
    single = RawScheduler(local_cluster.master_address, name="single")
    single.info.pop("roles")
    single.info["role"] = "stateful"
    single.info["capabilities"] = []
    try:
        multi.start()
        single.start()
        multi.check()
        single.check()
    finally:
        multi.stop()
        single.stop()


def test_resubscription_cannot_change_the_principal(local_cluster: RunningCluster) -> None:
    first = RawScheduler(local_cluster.master_address, name="principal")
    try:
        fid = first.start()
        changed = dict(first.info, id={"value": fid}, principal="someone-else")
        events = subscribe_events(local_cluster.master_address, changed)
        assert events == [
            {"type": "ERROR", "error": {"message": "Changing framework's principal is not allowed."}}
        ]
        # The subscribed stream is untouched.
        assert first.call("REVIVE") == 202
        first.check()
        assert "ERROR" not in [e["type"] for e in first.seen]
    finally:
        first.stop()
