"""scripts/build_images.sh and scripts/docker_engine.sh against the real engine, the Dockerfiles'
shared layers, and the Debian mirror taken from apt sources."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound
from images_helpers import run

from mesos_stateful.testing import docker as testing_docker
from mesos_stateful.testing.docker import REPO, images_output

TOOL = REPO / "deploy" / "images" / "imagetool.py"
DOCKERFILES = sorted((REPO / "deploy" / "images").glob("*.Dockerfile"))


def _script(name: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args],
        cwd=REPO,
        env={**os.environ, "VENV": sys.prefix, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode, done.stdout, time.monotonic() - started


@pytest.mark.usefixtures("docker_images")
def test_build_is_quick_when_nothing_changed() -> None:
    # The session fixture built the images; at once again: the stamp says up to date.
    code, out, seconds = _script("build_images.sh")
    assert code == 0, out
    if "images up to date" not in out:  # a file changed meanwhile (a shared checkout): once more
        code, out, seconds = _script("build_images.sh")
    assert code == 0 and "images up to date" in out, out
    assert seconds < 10, f"an up-to-date check took {seconds:.1f}s:\n{out}"


def test_dockerfiles_share_the_layers_before_the_workload() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "etcd.Dockerfile",
        "mariadb.Dockerfile",
        "redis.Dockerfile",
        "suite.Dockerfile",
    ]
    shared = re.compile(r"^ARG BASE=.*?# ---- end of the shared layers$", re.S | re.M)
    blocks = {p.name: shared.search(p.read_text()) for p in DOCKERFILES}
    assert all(blocks.values()), blocks
    texts = {name: m.group(0) for name, m in blocks.items() if m}
    assert len(set(texts.values())) == 1, "the shared block differs between Dockerfiles"
    for path in DOCKERFILES:
        text = path.read_text()
        # The project comes last, after the dependency wheels and the workload's packages.
        assert text.index("build/wheels/deps/") < text.index("build/wheels/project/"), path.name
        assert "apt-get" not in text[text.index("build/wheels/project/") :], path.name


def _mirror(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), "mirror", "--root", str(root), "--codename", "bookworm"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    apt = tmp_path / "etc" / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "# a comment\nTypes: deb deb-src\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    done = _mirror(tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "http://mirror.example/debian"), done.stderr

    (apt / "sources.list.d" / "debian.sources").unlink()
    (apt / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://line.example/debian bookworm main\n"
    )
    done = _mirror(tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "http://line.example/debian"), done.stderr

    (apt / "sources.list").write_text("")
    done = _mirror(tmp_path)
    assert done.returncode != 0 and "DEBIAN_MIRROR" in done.stderr, done


def test_engine_script_leaves_a_running_engine_alone_and_installs_compose(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    before = docker_client.info()
    pidfile = Path("/var/run/docker.pid")
    pid = pidfile.read_text().strip() if pidfile.exists() else None
    code, out, _ = _script("docker_engine.sh", env={"DOCKER_CONFIG": str(tmp_path)})
    assert code == 0, out
    assert "left as it is" in out and "starting dockerd" not in out, out
    assert re.search(r"Docker Compose version v2\.", out), out
    # A copy, not a link into this checkout's venv (which may go away).
    plugin = tmp_path / "cli-plugins" / "docker-compose"
    assert plugin.is_file() and not plugin.is_symlink() and os.access(plugin, os.X_OK), plugin
    # Run again: the Compose that answers is left alone; a link (an older install) is replaced.
    code, out, _ = _script("docker_engine.sh", env={"DOCKER_CONFIG": str(tmp_path)})
    assert code == 0 and "docker compose answers: left as it is" in out, out
    copy = tmp_path / "elsewhere"
    plugin.rename(copy)
    plugin.symlink_to(copy)
    code, out, _ = _script("docker_engine.sh", env={"DOCKER_CONFIG": str(tmp_path)})
    assert code == 0 and "installed" in out and not plugin.is_symlink(), out
    after = docker_client.info()
    assert after["ID"] == before["ID"]
    if pid is not None:
        assert pidfile.read_text().strip() == pid


@pytest.mark.slow
@pytest.mark.usefixtures("docker_images")
def test_base_from_debootstrap_when_nothing_can_be_pulled(docker_client: docker.DockerClient) -> None:
    # A fresh machine's path (nothing can be pulled here): debootstrap from the machine's own
    # mirror, docker import. When this session's build made the base that way (a fresh CI
    # machine), that base is checked; else one is built under a tag of the test's own and removed.
    built_here = re.search(r"^base (\S+): .*\(debootstrap \+ docker import\)$", images_output(), re.M)
    tag = built_here.group(1) if built_here else f"mesos-stateful/test-base:{uuid.uuid4().hex[:12]}"
    try:
        if not built_here:
            env = {"IMAGES_BASE_TAG": tag, "IMAGES_BASE_FROM": "debootstrap"}
            code, out, seconds = _script("build_images.sh", "--base-only", env=env)
            assert code == 0, out
            assert re.search(rf"^base {re.escape(tag)}: .*\(debootstrap \+ docker import\)$", out, re.M), out
            print(f"base image built in {seconds:.1f}s")
        mirror = subprocess.run(
            [sys.executable, str(TOOL), "mirror"], capture_output=True, text=True, check=True
        ).stdout.strip()
        code, listing = run(
            docker_client,
            tag,
            ["sh", "-c", "cat /etc/debian_version /etc/apt/sources.list; command -v apt-get"],
        )
        assert code == 0, listing
        assert listing.startswith("12."), listing
        assert mirror in listing and "/usr/bin/apt-get" in listing, listing
    finally:
        if not built_here:
            with contextlib.suppress(ImageNotFound):
                docker_client.images.remove(tag, noprune=False)


def test_no_engine_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An engine address nothing answers at: the script never starts a local engine for it, and
    # ensure_engine() fails (the fixtures' failure, never a skip) with the script's words.
    silent = f"unix://{tmp_path}/nothing.sock"
    code, out, _ = _script("docker_engine.sh", env={"DOCKER_HOST": silent})
    assert code == 1 and f"DOCKER_HOST={silent} does not answer" in out, out
    monkeypatch.setenv("DOCKER_HOST", silent)
    monkeypatch.setattr(testing_docker, "_engine_output", None)
    with pytest.raises(RuntimeError, match="no Docker engine answers") as failure:
        testing_docker.ensure_engine()
    assert "not starting a local one" in str(failure.value)
    assert "exited with 1" in str(failure.value)
