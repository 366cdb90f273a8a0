"""The real Docker engine and the suite's images, for tests.

:func:`ensure_engine` returns a client of an engine that answers, running ``scripts/docker_engine.sh``
(at most once per process) when none answers or Compose v2 is not linked yet; :func:`ensure_images`
runs ``scripts/build_images.sh`` once per process (a test session): about a second when nothing
changed, the project layer of each image after a code change. Both raise :class:`RuntimeError`
with the script's output when they fail: the root ``tests/conftest.py`` fixtures ``docker_client``
and ``docker_images`` turn that into a failure (never a skip).

Containers a test starts carry :data:`TEST_LABEL` (value: an id of the test's own) so that the test
finds and removes exactly its own (:func:`remove_containers`).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

import docker
from docker.errors import DockerException, NotFound

from mesos_stateful.common.images import LABEL_PREFIX

#: The repository (the scripts live there; the package is installed editable).
REPO = Path(__file__).resolve().parents[3]  # services/mesos_stateful/testing/docker.py
ENGINE_SCRIPT = REPO / "scripts" / "docker_engine.sh"
IMAGES_SCRIPT = REPO / "scripts" / "build_images.sh"
#: Label of every container a test starts (value: the test's own id).
TEST_LABEL = LABEL_PREFIX + "test"
#: Installing docker.io and starting dockerd, or a cold image build, stays well under this.
SCRIPT_TIMEOUT = 900.0

_lock = threading.Lock()
_engine_output: str | None = None
_images_output: str | None = None


def _run(script: Path) -> tuple[int, str]:
    if not script.is_file():
        return 127, f"{script} does not exist (is {REPO} the mesos-stateful checkout?)"
    env = {**os.environ, "VENV": sys.prefix}
    try:
        done = subprocess.run(
            ["bash", str(script)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=SCRIPT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode() if isinstance(exc.output, bytes) else (exc.output or "")
        return 124, f"{out}\n{script.name} did not finish within {SCRIPT_TIMEOUT:.0f}s"
    return done.returncode, done.stdout


def _answering_client() -> tuple[docker.DockerClient | None, str]:
    try:
        client = docker.from_env(timeout=30)
    except DockerException as exc:
        return None, str(exc)
    try:
        client.ping()
    except DockerException as exc:
        client.close()
        return None, str(exc)
    return client, ""


def _compose_plugin() -> Path:
    config = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(config) / "cli-plugins" / "docker-compose"


def ensure_engine() -> docker.DockerClient:
    """A client of a Docker engine that answers (and ``docker compose`` linked); RuntimeError with
    the output of ``scripts/docker_engine.sh`` when there is none."""
    global _engine_output
    with _lock:
        client, error = _answering_client()
        if client is not None and (_engine_output is not None or _compose_plugin().exists()):
            return client
        if client is not None:
            client.close()
        if _engine_output is None:
            code, _engine_output = _run(ENGINE_SCRIPT)
            if code != 0:
                _engine_output += f"\n(scripts/docker_engine.sh exited with {code})"
        client, error = _answering_client()
        if client is None:
            raise RuntimeError(
                f"no Docker engine answers ({error}); scripts/docker_engine.sh (run it with "
                f"`make docker-engine`) said:\n{_engine_output.strip()}"
            )
        return client


def ensure_images() -> None:
    """Build (or find up to date) the suite's images with ``scripts/build_images.sh``, once per
    process; RuntimeError with the script's output when it fails."""
    global _images_output
    ensure_engine().close()
    with _lock:
        if _images_output is not None:
            return
        code, output = _run(IMAGES_SCRIPT)
        if code != 0:
            raise RuntimeError(
                f"scripts/build_images.sh (`make images`) failed with exit code {code}:\n{output.strip()}"
            )
        _images_output = output


def images_output() -> str:
    """What ``scripts/build_images.sh`` printed in this process ("" before :func:`ensure_images`)."""
    return _images_output or ""


def remove_containers(client: docker.DockerClient, labels: Iterable[str]) -> list[str]:
    """Force-remove every container carrying all ``labels`` (``key`` or ``key=value``); their names."""
    removed: list[str] = []
    for container in client.containers.list(all=True, filters={"label": list(labels)}):
        try:
            container.remove(force=True)
        except NotFound:
            continue
        removed.append(container.name or container.id or "")
    return removed


def free_subnet(client: docker.DockerClient) -> str:
    """First three octets of a /24 that no Docker network and no host route uses (a Compose
    project's network of its own: ``STATEFUL_SUBNET``). RuntimeError when none is found."""
    taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet"):
                taken.append(ipaddress.ip_network(config["Subnet"], strict=False))
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False).stdout
    for line in routes.splitlines():
        first = line.split(" ", 1)[0]
        if "/" in first:
            taken.append(ipaddress.ip_network(first, strict=False))
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{secrets.randbelow(200) + 40}.{secrets.randbelow(250)}.0/24")
        if not any(candidate.overlaps(t) for t in taken):
            return str(candidate.network_address).rsplit(".", 1)[0]
    raise RuntimeError("no free /24 for the compose network")
