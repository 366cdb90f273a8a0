"""The agents' /files/read and /files/browse endpoints behave as a Mesos agent's (src/files/files.cpp):
a real executor's sandbox, reached at the agent URL of the offer, under the virtual path
/frameworks/<fid>/executors/<eid>/runs/latest and under its real path."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from localcluster.harness import Framework, task_info
from mesos_stateful.testing.cluster import RunningCluster

TEXT = "hello from the sandbox\nsecond line\n"


def agent_url(offer: Any) -> str:
    address = offer["url"]["address"]
    return f"{offer['url']['scheme']}://{address['ip']}:{address['port']}"


def get(base: str, endpoint: str, **query: object) -> tuple[int, Any]:
    url = f"{base}/files/{endpoint}?{urllib.parse.urlencode({k: str(v) for k, v in query.items()})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def sandbox(local_cluster: RunningCluster, framework: Framework) -> tuple[str, str, Path]:
    """(agent URL, virtual sandbox path, real sandbox path) of a finished task that wrote a file."""
    offer = framework.offer()
    task = task_info(offer, task_id="files-0.1", executor_id="files-0.1", spec={"write": {"hello.txt": TEXT}})
    framework.driver.launchTasks(offer["id"], [task])
    framework.update("files-0.1", "TASK_RUNNING", timeout=60)
    virtual = f"/frameworks/{framework.framework_id}/executors/files-0.1/runs/latest"
    agent = next(a for a in local_cluster.cluster.agents if a.id == offer["agent_id"]["value"])
    real = next(ex.sandbox for ex in agent.executors.values() if ex.executor_id == "files-0.1")
    return agent_url(offer), virtual, real


def test_read(sandbox: tuple[str, str, Path]) -> None:
    base, virtual, real = sandbox
    path = f"{virtual}/hello.txt"
    size = len(TEXT.encode())
    assert get(base, "read", path=path, offset=0) == (200, {"data": TEXT, "offset": 0})
    # No offset, or -1: the size, no data (the web UI's pailer asks so first).
    assert get(base, "read", path=path) == (200, {"data": "", "offset": size})
    assert get(base, "read", path=path, offset=-1, length=5) == (200, {"data": "", "offset": size})
    assert get(base, "read", path=path, offset=6, length=4) == (200, {"data": "from", "offset": 6})
    assert get(base, "read", path=path, offset=6, length=-1) == (200, {"data": TEXT[6:], "offset": 6})
    assert get(base, "read", path=path, offset=size + 10) == (200, {"data": "", "offset": size + 10})
    # The run's real path is served too (Mesos attaches both).
    assert get(base, "read", path=f"{real}/hello.txt", offset=0) == (200, {"data": TEXT, "offset": 0})
    assert get(base, "read", path=f"{virtual}/", offset=0)[0] == 400  # the sandbox is a directory


def test_read_refusals_as_mesos(sandbox: tuple[str, str, Path]) -> None:
    base, virtual, _ = sandbox
    path = f"{virtual}/hello.txt"
    assert get(base, "read") == (400, "Expecting 'path=value' in query.\n")
    assert get(base, "read", path="") == (400, "Expecting 'path=value' in query.\n")
    status, text = get(base, "read", path=path, offset="abc")
    assert status == 400 and text.startswith("Failed to parse offset: ")
    assert get(base, "read", path=path, offset=-2) == (400, "Negative offset provided: -2.\n")
    status, text = get(base, "read", path=path, offset=0, length="1.5")
    assert status == 400 and text.startswith("Failed to parse length: ")
    assert get(base, "read", path=path, offset=0, length=-7) == (400, "Negative length provided: -7.\n")
    assert get(base, "read", path=virtual, offset=0) == (400, "Cannot read a directory.\n")
    assert get(base, "read", path=f"{virtual}/missing.txt", offset=0) == (404, "")
    assert get(base, "read", path="/frameworks/nobody/executors/x/runs/latest/stdout", offset=0) == (404, "")
    assert get(base, "read", path="/etc/passwd", offset=0) == (404, "")  # not attached
    escape = "/".join([".."] * 60)  # above the filesystem's root: the path is /etc/passwd
    status, text = get(base, "read", path=f"{virtual}/{escape}/etc/passwd", offset=0)
    assert status == 400 and text.endswith("is inaccessible.\n")


def test_reads_are_capped_and_bytes_come_back_exactly(sandbox: tuple[str, str, Path]) -> None:
    base, virtual, real = sandbox
    blob = bytes(range(256)) * 400  # 102400 bytes, not UTF-8
    (real / "blob.bin").write_bytes(blob)
    got = b""
    while len(got) < len(blob):
        status, body = get(base, "read", path=f"{virtual}/blob.bin", offset=len(got), length=len(blob))
        assert status == 200 and body["offset"] == len(got)
        chunk = body["data"].encode("utf-8", "surrogateescape")
        assert 0 < len(chunk) <= 16 * 4096  # at most 16 pages per answer, as Mesos
        got += chunk
    assert got == blob


def test_browse(sandbox: tuple[str, str, Path], framework: Framework) -> None:
    base, virtual, _ = sandbox
    status, listing = get(base, "browse", path=virtual)
    assert status == 200
    by_path = {entry["path"]: entry for entry in listing}
    assert [entry["path"] for entry in listing] == sorted(by_path)
    hello = by_path[f"{virtual}/hello.txt"]
    assert hello["size"] == len(TEXT.encode()) and hello["mode"].startswith("-rw") and hello["nlink"] == 1
    assert {"uid", "gid", "mtime"} <= set(hello)
    assert {f"{virtual}/stdout", f"{virtual}/stderr"} <= set(by_path)
    assert get(base, "browse") == (400, "Expecting 'path=value' in query.\n")
    assert get(base, "browse", path=f"{virtual}/nothing")[0] == 404
    # The sandbox stays readable after its task ended (Mesos detaches it only at garbage collection).
    framework.driver.killTask({"value": "files-0.1"})
    framework.update("files-0.1", "TASK_KILLED", timeout=60)
    assert get(base, "read", path=f"{virtual}/hello.txt", offset=0) == (200, {"data": TEXT, "offset": 0})
