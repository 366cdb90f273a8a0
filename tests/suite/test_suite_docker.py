"""`make run RUNTIME=docker` (`python -m mesos_stateful.suite --runtime docker`): the gateway's
default runtime is docker, and the preflight fails fast, before anything starts, with a message
naming `make docker-engine` / `make images` when the engine does not answer or an image is missing.
Against the real engine; the last test runs the whole suite with members as containers."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from mesos_stateful.common.images import ETCD_IMAGE, LABEL_INSTANCE, MARIADB_IMAGE, REDIS_IMAGE
from mesos_stateful.suite.main import member_images, plan_children
from mesos_stateful.suite.preflight import PreflightError, check_docker
from mesos_stateful.suite.settings import SuiteSettings

from .suite_helpers import ctl, processes_under, start_suite, stop_suite, suite_env, wait_until


def test_runtime_flag_sets_the_gateways_default_runtime() -> None:
    for argv, expected in (([], "process"), (["--runtime", "docker"], "docker")):
        settings = SuiteSettings.load(argv)
        assert settings.runtime == expected
        (gateway,) = [c for group in plan_children(settings) for c in group if c.name == "gateway"]
        assert gateway.env["STATEFUL_GATEWAY_DEFAULT_RUNTIME"] == expected
    with pytest.raises(SystemExit) as caught:
        SuiteSettings.load(["--runtime", "vm"])
    assert "runtime" in str(caught.value)


def test_member_images_are_the_workloads_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert member_images(SuiteSettings.load([])) == [REDIS_IMAGE, MARIADB_IMAGE, ETCD_IMAGE]
    monkeypatch.setenv("STATEFUL_REDIS_DEFAULT_IMAGE", "my/redis:7")
    assert member_images(SuiteSettings.load(["--workloads", '["redis"]'])) == ["my/redis:7"]


def test_engine_that_does_not_exist(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/no-engine.sock"
    with pytest.raises(PreflightError) as caught:
        check_docker([REDIS_IMAGE], 5, {"DOCKER_HOST": url})
    message = str(caught.value)
    assert f"does not answer at {url}" in message and "`make docker-engine`" in message


def test_engine_that_never_answers_is_given_up_on_in_time(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(path))
        silent.listen(8)  # accepts connections (the backlog), never answers
        started = time.monotonic()
        with pytest.raises(PreflightError) as caught:
            check_docker([REDIS_IMAGE], 1.5, {"DOCKER_HOST": f"unix://{path}"})
        assert time.monotonic() - started < 5
    assert "no answer within 1.5s" in str(caught.value) or "timed out" in str(caught.value), caught.value
    assert "`make docker-engine`" in str(caught.value)


def test_missing_image_names_make_images(docker_client: docker.DockerClient) -> None:
    missing = f"mesos-stateful-test/absent-{secrets.token_hex(4)}:1"
    with pytest.raises(PreflightError) as caught:
        check_docker([missing], 10)
    message = str(caught.value)
    assert missing in message and "`make images`" in message and "nothing is pulled" in message


def test_engine_with_the_images_passes(docker_images: None) -> None:
    check_docker([REDIS_IMAGE, MARIADB_IMAGE, ETCD_IMAGE], 10)


def test_runner_fails_fast_and_starts_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    _, env = suite_env(data_dir)
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mesos_stateful.suite", "--runtime", "docker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "`make docker-engine`" in done.stdout + done.stderr
    assert time.monotonic() - started < 30
    assert not processes_under(data_dir)
    assert not (data_dir / "suite-status.json").exists()  # no service was started


@pytest.fixture
def docker_suite(tmp_path: Path, docker_images: None) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    data_dir = tmp_path / "state"
    endpoint, env = suite_env(data_dir)
    runner = start_suite(env, tmp_path / "suite.log", "--runtime", "docker")
    try:
        yield endpoint, runner, tmp_path / "suite.log"
    finally:
        stop_suite(runner, 90)


@pytest.mark.slow
def test_make_run_runtime_docker_runs_members_as_containers(
    docker_suite: tuple[str, subprocess.Popen[str], Path], docker_client: docker.DockerClient
) -> None:
    endpoint, runner, log = docker_suite
    name = f"dk{secrets.token_hex(3)}"  # the engine is shared: containers of this instance only
    label = f"{LABEL_INSTANCE}={name}"

    def registered() -> bool:
        assert runner.poll() is None, log.read_text()
        listed = ctl(endpoint, "-o", "json", "workloads")
        return listed.returncode == 0 and "redis" in listed.stdout

    wait_until(registered, 120, "the suite to serve the redis workload")
    created = ctl(
        endpoint, "create", "redis", name, "--replicas", "3", "--wait", "--timeout", "180", timeout=200
    )
    assert created.returncode == 0, created.stdout + created.stderr + log.read_text()[-4000:]
    shown = json.loads(ctl(endpoint, "get", name, "-o", "json").stdout)["instance"]
    assert shown["spec"]["runtime"] == "RUNTIME_DOCKER"  # the suite's default, stored
    assert "runtime: docker" in ctl(endpoint, "get", name).stdout
    containers = docker_client.containers.list(filters={"label": label})
    assert len(containers) == 3, [c.name for c in containers]
    assert {c.image.tags[0] for c in containers if c.image is not None} == {REDIS_IMAGE}
    assert all(c.image is not None for c in containers)

    runner.send_signal(2)  # Ctrl-C
    assert runner.wait(120) == 0, log.read_text()[-4000:]
    wait_until(
        lambda: not docker_client.containers.list(all=True, filters={"label": label}),
        60,
        "every member container of the suite to be removed",
    )
