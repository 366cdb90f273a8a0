"""/files/read and /files/browse on an agent in its own process (`python -m mesos_stateful.localcluster
agent`), reached at the URL of its offers, as a Mesos agent: and after the agent process is killed
and started again on its work dir, the recovered executor's sandbox is served again."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from localcluster.mesos_json import RawScheduler
from localcluster.test_split_cluster import (  # noqa: F401 (fixtures)
    Split,
    sched,
    split,
    task,
    unreserved,
)


def get(base: str, endpoint: str, **query: object) -> tuple[int, Any]:
    url = f"{base}/files/{endpoint}?{urllib.parse.urlencode({k: str(v) for k, v in query.items()})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_agent_process_serves_sandboxes_also_after_its_restart(split: Split, sched: RawScheduler) -> None:  # noqa: F811
    offer = sched.offer(lambda o: o["hostname"] == split.ips[0])
    address = offer["url"]["address"]
    base = f"http://{address['ip']}:{address['port']}"
    assert address["ip"] == split.ips[0]
    spec = {"write": {"hello": "from the agent process\n"}, "child": True}
    launch = task(offer, "t-files", [unreserved("cpus", 0.5), unreserved("mem", 64)], spec)
    sched.accept(offer, [{"type": "LAUNCH", "launch": {"task_infos": [launch]}}])
    sched.update("t-files", "TASK_RUNNING", timeout=60)
    sandbox = f"/frameworks/{sched.framework_id}/executors/exec-t-files/runs/latest"
    expected = {"data": "from the agent process\n", "offset": 0}
    assert get(base, "read", path=f"{sandbox}/hello", offset=0) == (200, expected)
    assert get(base, "read", path=f"{sandbox}/hello") == (200, {"data": "", "offset": 23})
    status, listing = get(base, "browse", path=sandbox)
    assert status == 200 and f"{sandbox}/hello" in {e["path"] for e in listing}
    assert get(base, "read", path=f"{sandbox}/nope", offset=0) == (404, "")
    assert get(base, "read", path=f"{sandbox}/hello", offset=-3)[0] == 400

    split.kill9(0)
    split.start_agent(0)
    # Back on its checkpointed port, its recovered executor's sandbox attached again.
    hello = f"{sandbox}/hello"
    split.wait(lambda: get(base, "read", path=hello, offset=0) == (200, expected), "served again")
