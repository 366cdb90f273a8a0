"""Tests find processes only among their own (mesos_stateful.testing.procs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mesos_stateful.testing.procs import belongs_to, own_processes


def test_a_program_of_the_same_name_elsewhere_is_not_the_tests(tmp_path: Path) -> None:
    mine = tmp_path / "sandbox"
    mine.mkdir()
    other = tmp_path.parent / f"{tmp_path.name}-another-suite"
    other.mkdir()
    with (mine / "stdout").open("wb") as out:
        in_cwd = subprocess.Popen(["sleep", "60"], cwd=other, stdout=out)  # writes under mine
    by_cwd = subprocess.Popen(["sleep", "60"], cwd=mine)
    by_argv = subprocess.Popen(["sh", "-c", "sleep 61; true", "sh", str(mine / "x")], cwd="/")
    stranger = subprocess.Popen(["sleep", "60"], cwd=other)
    try:
        found = own_processes([mine], "sleep")
        assert set(found) == {in_cwd.pid, by_cwd.pid}
        assert found[by_cwd.pid] == "sleep 60"
        assert belongs_to(by_argv.pid, [mine]) and not belongs_to(stranger.pid, [mine])
        assert stranger.pid in own_processes([other], "sleep")
        stranger.kill()
        stranger.wait()
        assert not belongs_to(stranger.pid, [other])
    finally:
        for process in (in_cwd, by_cwd, by_argv, stranger):
            process.kill()
            process.wait()
        other.rmdir()
