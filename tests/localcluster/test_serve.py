"""The ``serve`` command: a cluster in its own process; SIGTERM leaves no executor process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pymesos import decode_data

from localcluster.harness import Framework, task_info
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.ports import free_port as _free_port


def _session_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[3])


def test_serve_and_sigterm_leaves_nothing(tmp_path: Path) -> None:
    port = _free_port()
    env = dict(os.environ, STATEFUL_CLUSTER_AGENT_PORT="0", STATEFUL_CLUSTER_AGENTS="2")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesos_stateful.localcluster",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--work-dir",
            str(tmp_path / "cluster"),
            "--allocation-interval",
            "0.2",
        ],
        env=env,
    )
    fw: Framework | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # The master answers before its agents have all registered: wait for both.
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/master/state", timeout=5) as resp:
                    if len(json.loads(resp.read())["slaves"]) == 2:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the cluster did not come up with 2 agents"
            time.sleep(0.1)
        fw = Framework(f"127.0.0.1:{port}", failover_timeout=3600)
        fw.start()
        offer = fw.offer()
        task = task_info(offer, spec={"child": True})
        fw.driver.launchTasks(offer["id"], [task])
        running = fw.update(task["task_id"]["value"], "TASK_RUNNING")
        sid = _session_of(json.loads(decode_data(running["data"]))["pid"])
        assert len(session_members(sid)) >= 2  # the executor and its member child
        fw.stop(failover=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert session_members(sid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
