"""``python -m mesos_stateful.localcluster maintenance ...`` drives maintenance through the operator
API of a running cluster: schedule (DRAINING, offers carry the unavailability), status, start (DOWN:
the agent leaves /master/state), stop (UP), unschedule; refused calls exit 1 with the master's text."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from localcluster.harness import Framework, task_info
from mesos_stateful.testing.cluster import RunningCluster


def cli(cluster: RunningCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mesos_stateful.localcluster",
            "maintenance",
            *args,
            "--master",
            cluster.master_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def lines(out: str) -> list[Any]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_maintenance_cli(local_cluster: RunningCluster, framework: Framework) -> None:
    target, other = local_cluster.agents[0], local_cluster.agents[1]
    machine = {"hostname": target.hostname, "ip": target.ip}

    before = time.time()
    (schedule,) = lines(
        cli(local_cluster, "schedule", target.hostname, "--start-in", "600", "--duration", "60").stdout
    )
    (window,) = schedule["windows"]
    assert window["machine_ids"] == [machine]
    start = int(window["unavailability"]["start"]["nanoseconds"])
    assert before + 600 <= start / 1e9 <= time.time() + 600
    assert int(window["unavailability"]["duration"]["nanoseconds"]) == 60 * 10**9

    # Its offers now carry the window (the master rescinded the old ones and offers again).
    offer = framework.offer(lambda o: o["agent_id"]["value"] == target.id and "unavailability" in o)
    assert int(offer["unavailability"]["start"]["nanoseconds"]) == start

    (report,) = lines(cli(local_cluster, "status", target.id).stdout)
    assert report == {"machine": machine, "mode": "DRAINING", "unavailability": window["unavailability"]}
    (whole,) = lines(cli(local_cluster, "status").stdout)
    assert [m["id"] for m in whole["status"]["draining_machines"]] == [machine]

    # An unscheduled machine cannot go down: the master's 400, exit 1.
    refused = cli(local_cluster, "start", other.hostname, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("400: "), refused

    assert lines(cli(local_cluster, "start", "0").stdout) == [{"down": [machine]}]  # index 0
    assert target.id not in [a["id"] for a in local_cluster.state()["slaves"]]
    (report,) = lines(cli(local_cluster, "status", target.ip).stdout)
    assert report["mode"] == "DOWN"

    assert lines(cli(local_cluster, "stop", target.ip).stdout) == [{"up": [machine]}]
    (report,) = lines(cli(local_cluster, "status", target.ip).stdout)
    assert report == {"machine": machine, "mode": "UP", "unavailability": None}

    # schedule + unschedule of another machine leaves an empty schedule.
    cli(local_cluster, "schedule", other.id, "--start-in", "3600")
    (schedule,) = lines(cli(local_cluster, "unschedule", other.id).stdout)
    assert schedule.get("windows", []) == []

    unknown = cli(local_cluster, "start", "no-such-agent", check=False)
    assert unknown.returncode == 1 and "no agent or machine 'no-such-agent'" in unknown.stderr


def test_start_refuses_to_take_down_a_machine_that_still_runs_tasks(
    local_cluster: RunningCluster, framework: Framework
) -> None:
    """A machine whose agent still runs a task is not taken DOWN (its task would be lost) unless
    ``--force``; a window starting in the past is scheduled (as Mesos) with a warning."""
    target = local_cluster.agents[0]
    offer = framework.offer(lambda o: o["agent_id"]["value"] == target.id)
    task = task_info(offer, spec={"child": True})
    framework.driver.launchTasks(offer["id"], [task])
    tid = task["task_id"]["value"]
    framework.update(tid, "TASK_RUNNING")

    scheduled = cli(local_cluster, "schedule", target.hostname, "--start-in", "-60")
    assert "warning: this window starts in the past" in scheduled.stderr

    refused = cli(local_cluster, "start", target.hostname, check=False)
    assert refused.returncode == 1, refused
    assert f"refusing to take {target.hostname} DOWN: 1 task(s) still run there ({tid})" in refused.stderr
    assert target.id in [a["id"] for a in local_cluster.state()["slaves"]]  # still up, task running

    forced = cli(local_cluster, "start", target.hostname, "--force")
    assert lines(forced.stdout) == [{"down": [{"hostname": target.hostname, "ip": target.ip}]}]
    lost = framework.update(tid, "TASK_LOST")
    assert lost["reason"] == "REASON_AGENT_REMOVED"
    cli(local_cluster, "stop", target.hostname)
