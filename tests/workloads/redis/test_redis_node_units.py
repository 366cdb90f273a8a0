"""The Node.js Redis workload's unit tests (``services/redis-node/test``, ``node --test``): the
MasterLost choice, health from INFO and Config, the same cases as the Python workload's."""

from __future__ import annotations

import subprocess

from mesos_stateful.testing.node_workload import REDIS_NODE_DIR, check_installed, node_binary


def test_node_unit_tests_pass() -> None:
    check_installed(REDIS_NODE_DIR)
    run = subprocess.run(
        [node_binary(), "--test", "test/units.test.js"],
        cwd=REDIS_NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout
