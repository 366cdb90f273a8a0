"""Wrong calls are answered with the status codes of the Mesos master."""

from __future__ import annotations

import http.client
import json
from typing import Any

from localcluster.harness import Framework, task_info
from mesos_stateful.testing.cluster import RunningCluster


def _call(
    cluster: RunningCluster,
    body: Any,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    path: str = "/api/v1/scheduler",
) -> tuple[int, bytes]:
    host, port = cluster.master_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(
        method,
        path,
        body=data if method == "POST" else None,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def test_bad_calls(local_cluster: RunningCluster, framework: Framework) -> None:
    fid = framework.framework_id
    revive = {"type": "REVIVE", "framework_id": {"value": fid}}
    assert _call(local_cluster, b"{not json")[0] == 400
    assert _call(local_cluster, {"framework_id": {"value": fid}})[0] == 400  # no type
    assert _call(local_cluster, {}, method="GET")[0] == 405
    assert _call(local_cluster, revive, headers={"Content-Type": "text/plain"})[0] == 415
    assert (
        _call(
            local_cluster,
            {"type": "REVIVE", "framework_id": {"value": "unknown"}},
            headers={"Mesos-Stream-Id": "x"},
        )[0]
        == 400
    )
    assert _call(local_cluster, revive)[0] == 400  # no Mesos-Stream-Id
    assert _call(local_cluster, revive, headers={"Mesos-Stream-Id": "wrong"})[0] == 400
    assert _call(local_cluster, revive, headers={"Mesos-Stream-Id": framework.driver.stream_id})[0] == 202
    subscribe = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "n"}}}
    assert _call(local_cluster, subscribe, headers={"Accept": "text/plain"})[0] == 406
    assert _call(local_cluster, {"type": "SUBSCRIBE"})[0] == 400


def test_accept_unknown_offer_is_task_lost(local_cluster: RunningCluster, framework: Framework) -> None:
    offer = framework.offer()
    task = task_info(offer)
    framework.driver.launchTasks({"value": "no-such-offer"}, [task])
    lost = framework.update(task["task_id"]["value"], "TASK_LOST")
    assert lost["reason"] == "REASON_INVALID_OFFERS"


def test_version_state_health(local_cluster: RunningCluster, framework: Framework) -> None:
    status, body = _call(local_cluster, None, method="GET", path="/version")
    assert status == 200 and json.loads(body)["version"].startswith("1.")
    assert _call(local_cluster, None, method="GET", path="/health")[0] == 200
    status, body = _call(local_cluster, None, method="GET", path="/master/state")
    state = json.loads(body)
    assert len(state["slaves"]) == 3 and state["frameworks"][0]["id"] == framework.framework_id
    assert state["slaves"][0]["resources"]["cpus"] == 4.0
