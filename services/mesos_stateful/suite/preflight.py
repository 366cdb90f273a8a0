"""Checks `make run` does before it starts anything: one suite per data dir (a lock), every
port it will listen on free, and with ``--runtime docker`` a Docker engine that answers and has the
members' images (:func:`check_docker`).

The lock is ``fcntl.flock`` on ``<data_dir>/suite.lock``: the kernel releases it when the last
process holding the open file is gone. The runner passes the descriptor to its services, so a
second suite is refused until every process of the first one has exited (even a runner killed
with ``kill -9`` whose services are still stopping).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOCK_NAME = "suite.lock"


class PreflightError(Exception):
    """The suite cannot start; the message says why and what to do."""


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir's lock (non-blocking); return its descriptor, to be kept open (and
    passed to every child) for the life of the suite. PreflightError if another suite holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            os.close(fd)
            raise
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f"pid {holder}" if holder.isdigit() else "another process"
        if holder.isdigit() and not _alive(int(holder)):
            who = f"the services of suite pid {holder}, which are still stopping"
        raise PreflightError(
            f"another suite is running on the data dir {data_dir} ({who} holds {path}): "
            "stop it first (Ctrl-C in its terminal), or start this one on another folder "
            "(STATEFUL_SUITE_DATA_DIR=...)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Port:
    """An address the suite will listen on, who listens there and the setting that moves it."""

    host: str
    port: int
    owner: str
    setting: str


@dataclass(frozen=True)
class PortCheck:
    """Ports held by a listener (the suite cannot start) and ports only held by a closing
    connection (TIME_WAIT for up to 60 s on Linux: the service is retried until they are free)."""

    in_use: list[Port]
    busy: list[Port]


def check_ports(ports: list[Port]) -> PortCheck:
    in_use: list[Port] = []
    busy: list[Port] = []
    for p in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As gRPC binds: SO_REUSEADDR, no SO_REUSEPORT (services/mesos_stateful/common/channels.py).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((p.host, p.port))
                continue
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise PreflightError(
                        f"port {p.port} ({p.owner}) cannot be bound on {p.host}: {error.strerror}; "
                        f"set {p.setting}=..."
                    ) from None
        (in_use if _listening(p.host, p.port) else busy).append(p)
    return PortCheck(in_use, busy)


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def port_error(in_use: list[Port]) -> str:
    lines = [
        f"port {p.port} ({p.owner}) is in use: is another suite running? set {p.setting}=... to move it"
        for p in in_use
    ]
    return "\n".join(lines)


DEFAULT_ENGINE = "unix:///var/run/docker.sock"


def engine_url(environ: Mapping[str, str]) -> str:
    """The engine the docker SDK (and the executors) talk to: ``DOCKER_HOST``, else its default."""
    return environ.get("DOCKER_HOST") or DEFAULT_ENGINE


@dataclass
class _EngineAnswer:
    error: str = ""
    missing: list[str] = field(default_factory=list)


def _ask_engine(
    images: Sequence[str], environ: Mapping[str, str], timeout: float, into: _EngineAnswer
) -> None:
    """Ping the engine and look up each image (nothing is pulled); the outcome into ``into``."""
    # Imported here: a suite of processes never loads the SDK.
    import docker
    from docker.errors import DockerException, ImageNotFound

    try:
        client = docker.from_env(environment=dict(environ), timeout=max(1, math.ceil(timeout)))
    except DockerException as error:
        into.error = str(error)
        return
    try:
        client.ping()
        for image in images:
            try:
                client.images.get(image)
            except ImageNotFound:
                into.missing.append(image)
    except DockerException as error:
        into.error = str(error)
    finally:
        client.close()


def check_docker(images: Sequence[str], timeout: float, environ: Mapping[str, str] | None = None) -> None:
    """PreflightError unless the Docker engine answers within ``timeout`` and has every image.
    The SDK runs in a daemon thread: an engine whose socket accepts and never answers cannot hold
    the suite (or its exit) past ``timeout``."""
    env = dict(os.environ if environ is None else environ)
    url = engine_url(env)
    answer = _EngineAnswer()
    asking = threading.Thread(
        target=_ask_engine, args=(images, env, timeout, answer), name="docker-preflight", daemon=True
    )
    asking.start()
    asking.join(timeout)
    if asking.is_alive():
        answer.error = f"no answer within {timeout:g}s"
    if answer.error:
        raise PreflightError(
            f"--runtime docker: the Docker engine does not answer at {url}: {answer.error}; start it "
            "with `make docker-engine` (or point DOCKER_HOST at one), or run members as processes "
            "(`make run` without RUNTIME=docker)"
        )
    if answer.missing:
        raise PreflightError(
            f"--runtime docker: the Docker engine at {url} does not have the image"
            f"{'s' if len(answer.missing) > 1 else ''} {', '.join(answer.missing)} (nothing is pulled "
            f"here): build {'them' if len(answer.missing) > 1 else 'it'} with `make images`"
        )
