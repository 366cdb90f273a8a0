"""The Docker runtime: the member is a container on the agent's Docker engine (the ``docker`` SDK).

The container runs ``LaunchSpec.image`` with the launch's argv (as entrypoint + command: the
image's own entrypoint is not in the way) and the launch's environment, in the sandbox as working
directory. Paths are the same inside and outside: the sandbox is bind-mounted at its own path, and
so is every directory its symlinks lead to (the persistent volume the agent links into the
sandbox), so ``${MESOS_SANDBOX}/data`` is the volume in the container too. The network is the
agent's (``host``, or ``container:<id>`` when the agent itself runs in a container), so the member
listens on the agent's address and the executor's readiness and health checks reach it as they
reach a process. cpus / memory limits come from ``LaunchSpec.resources`` (as Mesos' cgroups
isolators: ``--cpus``, ``--memory`` without extra swap). Output goes to the sandbox's ``stdout`` /
``stderr`` (threads following the engine's log stream). Mesos' Docker containerizer does the same
(``src/slave/containerizer/docker.cpp``, ``src/docker/docker.cpp``: sandbox mounted as the working
directory, ``--net=host``, ``docker stop -t <grace>``, the container removed after it ended).

Every blocking SDK call runs in a thread (``asyncio.to_thread``): the event loop never waits on the
engine. The container is removed once it ended, whatever ended it; if the executor dies first,
the agent removes it by its labels (``mesos_stateful.localcluster.containers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import signal as signals
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import Mount

from mesos_stateful.common import images
from mesos_stateful.executor.files import write_files
from mesos_stateful.executor.launch import Launch, port_env_name
from mesos_stateful.executor.runtime import ExitStatus, MemberHandle, Runtime, RuntimeFailure

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ENGINE_URL = "unix:///var/run/docker.sock"
#: Network modes: the agent's own network namespace (``host``), or a container's.
NETWORK_HOST = "host"
NETWORK_SELF = "container:self"
#: ``STATEFUL_EXECUTOR_DOCKER_HOST_PATHS``: paths are the engine's host paths, or translated
#: through the mounts of the container the executor runs in.
HOST_PATHS_IDENTITY = "identity"
HOST_PATHS_AUTO = "auto"
# Any failure to talk to the engine (the SDK raises some of requests' errors as they are).
ENGINE_ERRORS = (DockerException, requests.RequestException, OSError)
_LOG_JOIN_SECONDS = 10.0
_REMOVAL_SECONDS = 10.0
_OOM_EVENT_SECONDS = 1.0
_CONTAINER_ID = re.compile(r"\b([0-9a-f]{64})\b")


@dataclass(frozen=True)
class DockerOptions:
    """What the runtime needs beyond the launch: where the container belongs (its labels) and how
    it reaches the engine, the network and the host's paths."""

    agent_id: str = ""
    framework_id: str = ""
    executor_id: str = ""
    #: ``host``, ``container:<name-or-id>``, or ``container:self`` (the executor's own container).
    network: str = NETWORK_HOST
    #: ``identity`` (the executor sees the host's paths) or ``auto`` (translate through its mounts).
    host_paths: str = HOST_PATHS_IDENTITY
    #: Seconds for one engine API call (not for waiting on the container or its stop grace).
    timeout: float = 30.0
    #: Where ``DOCKER_HOST`` & co. are read from (the executor's environment).
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)


@dataclass(frozen=True)
class ContainerExit(ExitStatus):
    """How a container ended: its exit code, and whether the kernel's OOM killer ended it."""

    oom_killed: bool = False
    mem_limit_mb: int = 0
    error: str = ""

    def describe(self) -> str:
        if self.code is None:
            text = f"the container ended, its exit code is unknown ({self.error or 'no status'})"
        else:
            text = f"exited with code {self.code}"
            if 128 < self.code < 128 + 65:
                try:
                    name = signals.Signals(self.code - 128).name
                except ValueError:
                    name = f"signal {self.code - 128}"
                text += f" (128 + {name})"
        if self.oom_killed:
            limit = f" of {self.mem_limit_mb} MiB" if self.mem_limit_mb else ""
            text += f"; OOMKilled: the container ran out of its memory limit{limit}"
        elif self.error and self.code is not None:
            text += f"; {self.error}"
        return text


def engine_url(environ: Mapping[str, str]) -> str:
    """The engine's address as ``docker.from_env`` reads it."""
    return environ.get("DOCKER_HOST") or DEFAULT_ENGINE_URL


def engine_failure(environ: Mapping[str, str], error: BaseException) -> RuntimeFailure:
    return RuntimeFailure(
        f"the Docker engine does not answer at {engine_url(environ)}: {error}; "
        "start it with `make docker-engine`"
    )


def container_name(task_id: str) -> str:
    """``mesos-stateful-<task id sanitized>-<8 hex>`` (unique: a task id may be launched again)."""
    sanitized = re.sub(r"[^a-zA-Z0-9_.-]", "-", task_id).strip("-.") or "member"
    return f"mesos-stateful-{sanitized}-{uuid.uuid4().hex[:8]}"


def container_env(launch: Launch) -> dict[str, str]:
    """The launch's environment as the member's image sees it: ``LaunchSpec.env`` (expanded) and
    the contract variables. What the executor inherited from its own environment (its ``PATH``,
    ``HOME``, virtualenv...) describes the executor's host, not the image, and stays out: the
    image's ``ENV`` applies (Mesos' Docker containerizer passes only the task's variables too)."""
    keys = {"HOST", "MESOS_SANDBOX", "MEMBER_ID", "INSTANCE", "ROLE"}
    keys.update(port_env_name(name) for name in launch.ports)
    keys.update(launch.spec.env.keys())
    return {k: v for k, v in launch.env.items() if k in keys}


def container_labels(launch: Launch, options: DockerOptions) -> dict[str, str]:
    return {
        images.LABEL_INSTANCE: launch.spec.instance,
        images.LABEL_MEMBER: launch.spec.member_id,
        images.LABEL_TASK: launch.task_id,
        images.LABEL_AGENT: options.agent_id,
        images.LABEL_FRAMEWORK: options.framework_id,
        images.LABEL_EXECUTOR: options.executor_id,
    }


def _under(path: PurePosixPath, parent: PurePosixPath) -> bool:
    return path == parent or parent in path.parents


def mount_points(sandbox: Path) -> list[tuple[Path, Path]]:
    """``(path in the container, real path here)``: the sandbox, then every file or directory a
    symlink of the sandbox leads to outside it (the agent links persistent volumes in), each at
    the path the link names, so the links resolve in the container as they do here. Links are
    not followed while walking; a dangling link is left alone (nothing to mount)."""
    sandbox = sandbox.resolve()
    found: list[tuple[Path, Path]] = [(sandbox, sandbox)]
    for root, dirs, files in os.walk(sandbox, followlinks=False):
        for name in dirs + files:
            link = Path(root) / name
            if not link.is_symlink():
                continue
            target = Path(os.path.normpath(Path(root) / os.readlink(link)))
            real = link.resolve()
            if not real.exists() or _under(PurePosixPath(target), PurePosixPath(sandbox)):
                continue
            found.append((target, real))
    # A path under another mount point is already there.
    out: list[tuple[Path, Path]] = []
    for target, real in sorted(found, key=lambda pair: len(pair[0].parts)):
        if not any(_under(PurePosixPath(target), PurePosixPath(t)) for t, _ in out):
            out.append((target, real))
    return out


def translate_path(path: Path, mounts: Sequence[Mapping[str, Any]]) -> Path:
    """A path of the executor's container as the engine's host sees it: through the mount whose
    ``Destination`` holds it (the longest), to that mount's ``Source``. Raises RuntimeFailure for
    a path on the container's own file system (the engine cannot mount it elsewhere)."""
    best: Mapping[str, Any] | None = None
    for mount in mounts:
        destination = PurePosixPath(str(mount.get("Destination", "")))
        if (
            mount.get("Source")
            and _under(PurePosixPath(path), destination)
            and (best is None or len(destination.parts) > len(PurePosixPath(best["Destination"]).parts))
        ):
            best = mount
    if best is None:
        raise RuntimeFailure(
            f"{path} is not on a volume or bind mount of the executor's container, so the Docker "
            "engine cannot mount it into the member's container: put the agent's work directory "
            "on a volume (STATEFUL_EXECUTOR_DOCKER_HOST_PATHS=auto translates through the mounts)"
        )
    relative = PurePosixPath(path).relative_to(PurePosixPath(best["Destination"]))
    return Path(str(best["Source"])) / relative


def nested_mounts(sandbox: Path, mounts: Sequence[Mapping[str, Any]]) -> list[tuple[Path, Path]]:
    """``(path in the container, host source)`` of the executor container's own mounts that lie
    strictly under the sandbox, shallowest first. On a real agent the Docker containerizer mounts
    the sandbox at ``/mnt/mesos/sandbox`` and a member's persistent volume as a second bind mount
    below it (ContainerInfo.volumes, not a symlink), which a sibling given only the sandbox mount
    would see as an empty directory: the member gets each of them too, at the same path."""
    root = PurePosixPath(sandbox.resolve())
    found: list[tuple[Path, Path]] = []
    for mount in mounts:
        destination = PurePosixPath(str(mount.get("Destination", "")))
        source = str(mount.get("Source") or "")
        if source and destination != root and _under(destination, root):
            found.append((Path(str(destination)), Path(source)))
    return sorted(found, key=lambda pair: len(pair[0].parts))


def own_container_candidates() -> list[str]:
    """Ids (or names) the container this process runs in may have: a 64-hex id in
    ``/proc/self/cgroup`` (cgroup v1, or v2 without a private namespace) or
    ``/proc/self/mountinfo`` (``/var/lib/docker/containers/<id>/hostname``), then the host name
    (Docker's default host name is the short id)."""
    out: list[str] = []
    for source in ("/proc/self/cgroup", "/proc/self/mountinfo"):
        with contextlib.suppress(OSError):
            for match in _CONTAINER_ID.finditer(Path(source).read_text()):
                if match.group(1) not in out:
                    out.append(match.group(1))
    out.append(socket.gethostname())
    return out


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(self, options: DockerOptions | None = None) -> None:
        super().__init__()
        self._options = options or DockerOptions()
        self._client: docker.DockerClient | None = None
        self._mounts: list[Mount] = []
        self._network = NETWORK_HOST
        self._container: Container | None = None
        self._exit: ContainerExit | None = None
        self._waiter: asyncio.Future[ContainerExit] | None = None
        self._followers: list[threading.Thread] = []
        self._removed = threading.Event()
        self._stopping = False  # a kill (stop, SIGKILL) was asked for

    # -- prepare ----------------------------------------------------------------------------------

    async def prepare(self, launch: Launch) -> None:
        self._take_launch(launch)
        if not launch.spec.image:
            raise RuntimeFailure("the launch asks for the Docker runtime but names no image")
        try:
            launch.sandbox.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(write_files, launch.files)
        except OSError as error:
            raise RuntimeFailure(f"cannot write the task's files: {error}") from error
        self._client = await self._engine(self._connect)
        await self._engine(self._check_image)
        self._network, self._mounts = await self._engine(self._placement)

    def _connect(self) -> docker.DockerClient:
        options = self._options
        return docker.from_env(environment=dict(options.environ), timeout=math.ceil(options.timeout))

    def _check_image(self) -> None:
        assert self._client is not None and self._launch is not None
        image = self._launch.spec.image
        try:
            self._client.images.get(image)
        except ImageNotFound:
            raise RuntimeFailure(
                f"image {image} is not on this agent's Docker engine (nothing is pulled here): "
                "build or `docker load` it on the agent's engine (`make images` builds the suite's "
                "and the built-in workloads' images)."
            ) from None

    def _placement(self) -> tuple[str, list[Mount]]:
        """The network mode and the mounts, with the engine's host paths as sources."""
        assert self._client is not None and self._launch is not None
        options = self._options
        own: Any = None
        if options.network == NETWORK_SELF or options.host_paths == HOST_PATHS_AUTO:
            own = self._own_container()
        network = options.network or NETWORK_HOST
        if network == NETWORK_SELF:
            network = f"container:{own.id}"
        if options.host_paths not in (HOST_PATHS_IDENTITY, HOST_PATHS_AUTO):
            raise RuntimeFailure(
                f"STATEFUL_EXECUTOR_DOCKER_HOST_PATHS={options.host_paths!r}: expected "
                f"{HOST_PATHS_IDENTITY!r} or {HOST_PATHS_AUTO!r}"
            )
        try:
            points = mount_points(self._launch.sandbox)
        except OSError as error:
            raise RuntimeFailure(f"cannot read the sandbox's links to mount them: {error}") from error
        mounts: list[Mount] = []
        for target, real in points:
            source = real
            if options.host_paths == HOST_PATHS_AUTO:
                source = translate_path(real, own.attrs.get("Mounts") or [])
            mounts.append(Mount(target=str(target), source=str(source), type="bind"))
        if options.host_paths == HOST_PATHS_AUTO:
            mounted = {m["Target"] for m in mounts}
            for target, source in nested_mounts(self._launch.sandbox, own.attrs.get("Mounts") or []):
                if str(target) not in mounted:
                    mounts.append(Mount(target=str(target), source=str(source), type="bind"))
        return network, mounts

    def _own_container(self) -> Any:
        assert self._client is not None
        candidates = own_container_candidates()
        for candidate in candidates:
            with contextlib.suppress(NotFound):
                return self._client.containers.get(candidate)
        raise RuntimeFailure(
            "the executor does not run in a container of this Docker engine (none of "
            f"{', '.join(c[:12] for c in candidates)} is known to it), yet "
            "STATEFUL_EXECUTOR_DOCKER_NETWORK=container:self or STATEFUL_EXECUTOR_DOCKER_HOST_PATHS=auto "
            "asks for its container: unset them when the executor runs on the host"
        )

    async def _engine(self, call: Callable[[], T]) -> T:
        """``call`` in a thread; the engine's errors as RuntimeFailure with what to do."""
        try:
            return await asyncio.to_thread(call)
        except RuntimeFailure:
            raise
        except (NotFound, ImageNotFound) as error:
            raise RuntimeFailure(f"Docker: {error.explanation or error}") from error
        except APIError as error:
            raise RuntimeFailure(f"the Docker engine refused: {error.explanation or error}") from error
        except ENGINE_ERRORS as error:
            raise engine_failure(self._options.environ, error) from error

    # -- start ------------------------------------------------------------------------------------

    async def start(self) -> MemberHandle:
        launch = self._launch
        if launch is None or self._client is None or self._logs is None:
            raise RuntimeFailure("start() before prepare()")
        if self._container is not None:
            raise RuntimeFailure("the member was already started")
        container: Container = await self._engine(self._create)
        self._container = container
        try:
            await self._engine(container.start)
        except RuntimeFailure as error:
            await asyncio.to_thread(self._remove)
            raise RuntimeFailure(f"the container of {launch.task_id} cannot start: {error}") from None
        for stream, path in (("stdout", self._logs.stdout), ("stderr", self._logs.stderr)):
            follower = threading.Thread(
                target=self._follow,
                args=(container, stream, path),
                name=f"docker-logs-{stream}",
                daemon=True,
            )
            follower.start()
            self._followers.append(follower)
        self._handle = MemberHandle(id=container.short_id)
        log.info("started container %s (%s) from %s", container.name, self._handle.id, launch.spec.image)
        return self._handle

    def _create(self) -> Container:
        assert self._client is not None and self._launch is not None
        launch, options = self._launch, self._options
        resources = launch.spec.resources
        limits: dict[str, Any] = {}
        if resources.cpus > 0:
            limits["nano_cpus"] = int(resources.cpus * 1e9)
        if resources.mem_mb > 0:
            limits["mem_limit"] = limits["memswap_limit"] = int(resources.mem_mb) * 1024 * 1024
        joined: dict[str, Any] = {}
        if self._network.startswith("container:"):
            # In another container's network namespace (compose: the agent's container), the
            # member joins its pid namespace too and is removed by the engine once it ended: when
            # that container stops, the kernel ends its pid namespace and the member with it, so
            # no member outlives its agent's container with a dead network.
            joined = {"pid_mode": self._network, "auto_remove": True}
        command: dict[str, Any] = {}
        if launch.argv:  # else the image's own entrypoint and command
            command = {"entrypoint": [launch.argv[0]], "command": list(launch.argv[1:])}
        return self._client.containers.create(
            launch.spec.image,
            name=container_name(launch.task_id),
            environment=container_env(launch),
            working_dir=str(launch.sandbox),
            labels=container_labels(launch, options),
            network_mode=self._network,
            mounts=self._mounts,
            # The executor's user, as the process runtime: the sandbox and volume stay its own.
            user=f"{os.getuid()}:{os.getgid()}",
            # An init as pid 1 forwards signals: a member without a TERM handler ends on TERM, as
            # a process does (pid 1 of a namespace ignores signals it has no handler for).
            init=True,
            stdin_open=False,
            tty=False,
            detach=True,
            **command,
            **limits,
            **joined,
        )

    def _follow(self, container: Container, stream: str, path: Path) -> None:
        """Append one of the container's streams to a sandbox file until the container ends."""
        try:
            with open(path, "ab", buffering=0) as out:
                for chunk in container.logs(
                    stdout=stream == "stdout", stderr=stream == "stderr", stream=True, follow=True
                ):
                    out.write(chunk)
        except ENGINE_ERRORS as error:
            log.warning("the %s of container %s is no longer copied: %s", stream, container.short_id, error)

    # -- wait, signal, kill -----------------------------------------------------------------------

    async def wait(self) -> ExitStatus:
        if self._container is None:
            raise RuntimeFailure("wait() before start()")
        if self._waiter is None:
            self._waiter = asyncio.ensure_future(self._wait_once(self._container))
        return await asyncio.shield(self._waiter)

    async def _wait_once(self, container: Container) -> ContainerExit:
        status = await asyncio.to_thread(self._wait_ended, container)
        # The log streams end with the container: their last lines are in the files before the
        # monitor reads the tail.
        await asyncio.to_thread(self._join_followers)
        self._exit = status
        await asyncio.to_thread(self._remove)
        return status

    def _wait_ended(self, container: Container) -> ContainerExit:
        """Block until the container ended (an interrupted wait is asked again; a container that
        is gone meanwhile ended without a known status)."""
        mem = int(self._launch.spec.resources.mem_mb) if self._launch else 0
        while True:
            try:
                result: dict[str, Any] = dict(container.wait())
                code = int(result.get("StatusCode", -1))
                state = self._final_state(container, oom_possible=bool(mem) and code == 137)
                error = str((result.get("Error") or {}).get("Message") or state.get("Error") or "")
                return ContainerExit(
                    code=code,
                    oom_killed=bool(state.get("OOMKilled")),
                    mem_limit_mb=mem,
                    error=error,
                )
            except NotFound as error:
                return ContainerExit(code=None, error=f"the container is gone: {error.explanation or error}")
            except ENGINE_ERRORS as error:
                if self._removed.is_set():
                    return ContainerExit(code=None, error="the container was removed")
                log.warning("waiting for container %s failed (%s); asking again", container.short_id, error)
                self._removed.wait(1.0)

    def _final_state(self, container: Container, *, oom_possible: bool) -> dict[str, Any]:
        """The ended container's ``State`` ({} once the engine removed it). The engine handles the
        kernel's OOM event apart from the exit: a KILLed container with a memory limit that no
        kill of ours ended is looked at again for up to a second until ``OOMKilled`` shows."""
        deadline = time.monotonic() + (_OOM_EVENT_SECONDS if oom_possible and not self._stopping else 0)
        while True:
            try:
                container.reload()
            except NotFound:  # removed by the engine (auto_remove)
                return {}
            state: dict[str, Any] = container.attrs.get("State") or {}
            if state.get("OOMKilled") or time.monotonic() >= deadline:
                return state
            time.sleep(0.05)

    def _join_followers(self) -> None:
        for follower in self._followers:
            follower.join(_LOG_JOIN_SECONDS)

    def _remove(self) -> None:
        """Remove the container and wait (bounded) until the engine no longer lists it: with
        ``auto_remove`` the engine may be removing it already (409: removal in progress)."""
        container = self._container
        if container is None or self._removed.is_set():
            return
        try:
            container.remove(force=True, v=True)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code != 409:
                log.error(
                    "cannot remove container %s: %s (the agent removes it by label)",
                    container.short_id,
                    error,
                )
                return
        except ENGINE_ERRORS as error:
            log.error(
                "cannot remove container %s: %s (the agent removes it by label)", container.short_id, error
            )
            return
        deadline = time.monotonic() + _REMOVAL_SECONDS
        while time.monotonic() < deadline:
            try:
                container.reload()
            except NotFound:
                break
            except ENGINE_ERRORS:
                break
            time.sleep(0.05)
        else:
            log.warning(
                "container %s is still there %gs after its removal", container.short_id, _REMOVAL_SECONDS
            )
        self._removed.set()

    async def signal(self, sig: int) -> None:
        container = self._container
        if container is None or self._exit is not None or self._removed.is_set():
            return
        if sig in (signals.SIGKILL, signals.SIGTERM):
            self._stopping = True
        try:
            await asyncio.to_thread(container.kill, signal=int(sig))
        except (NotFound, APIError) as error:
            log.debug("signal %s to container %s: %s", sig, container.short_id, error)  # it ended
        except ENGINE_ERRORS as error:
            log.warning("cannot signal container %s: %s", container.short_id, error)

    async def kill(self, grace: float) -> ExitStatus:
        """The engine's stop: TERM (the image's stop signal), ``grace`` seconds (whole seconds, up),
        KILL; then the container is removed (by :meth:`wait`)."""
        container = self._container
        if container is None:
            raise RuntimeFailure("kill() before start()")
        if self._exit is None:
            self._stopping = True
            try:
                await asyncio.to_thread(container.stop, timeout=max(0, math.ceil(grace)))
            except NotFound:
                pass
            except ENGINE_ERRORS as error:
                log.warning("stopping container %s failed (%s): killing it", container.short_id, error)
                await self.signal(signals.SIGKILL)
        return await self.wait()

    def force_kill_sync(self) -> None:
        """Remove the container now (``docker rm -f``), from any thread, without the loop."""
        container, client = self._container, self._client
        if container is None or client is None or container.id is None or self._removed.is_set():
            return
        try:
            client.api.remove_container(container.id, force=True, v=True)
            self._removed.set()
        except NotFound:
            self._removed.set()
        except ENGINE_ERRORS as error:
            log.error("cannot remove container %s: %s", container.short_id, error)

    # -- what the monitor reads -------------------------------------------------------------------

    @property
    def container(self) -> Container | None:
        return self._container
