"""The suite's own executor (``python -m mesos_stateful.executor``) on the local cluster: a member
process started in its own process group is killed with its executor's session."""

from __future__ import annotations

import shlex
import sys
import time

import pytest
from pymesos import encode_data

from localcluster.harness import Framework, task_info
from mesos_stateful.localcluster.procs import session_members
from mesos_stateful.testing.cluster import RunningCluster

types_pb2 = pytest.importorskip("mesos_stateful.api.stateful.v1.types_pb2")
pytest.importorskip("mesos_stateful.executor.main")


def test_real_executor_runs_and_kills_a_member(local_cluster: RunningCluster, framework: Framework) -> None:
    offer = framework.offer()
    task = task_info(offer, task_id="lc-0.1", executor_id="lc-0.1")
    spec = types_pb2.LaunchSpec(
        instance="lc",
        member_id="lc-0",
        task_id="lc-0.1",
        workload="test",
        role=types_pb2.ROLE_MASTER,
        argv=["sleep", "1000"],
        kill_grace_seconds=2,
    )
    task["data"] = encode_data(spec.SerializeToString())
    task["executor"]["command"]["value"] = f"{shlex.quote(sys.executable)} -m mesos_stateful.executor"
    framework.driver.launchTasks(offer["id"], [task])
    framework.update("lc-0.1", "TASK_RUNNING", timeout=60)
    sids = [sid for sid in local_cluster.sessions() if session_members(sid)]
    assert sids and len(session_members(sids[0])) >= 2  # the executor (shell) and the member
    framework.driver.killTask({"value": "lc-0.1"})
    framework.update("lc-0.1", "TASK_KILLED", timeout=60)
    deadline = time.monotonic() + 30
    while any(session_members(s) for s in sids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(session_members(s) for s in sids)
