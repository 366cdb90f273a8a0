"""Test support for workload services: run a Config'ed member as a real local process, without
Mesos, the way the executor's process runtime would, and serve a workload servicer in-process.

    runner = MemberRunner(tmp_path)                       # or the ``member_runner`` fixture
    member = runner.prepare(launch)                        # free ports, sandbox, files, argv
    await member.start(); await member.wait_ready()        # readiness = launch.readiness
    proto = member.member_proto(ordinal=0, role=ROLE_MASTER)   # for a CallbackContext
    await member.kill()                                    # SIGKILL (or stop(): SIGTERM, then KILL)
    await runner.close()                                   # stops every member it started

The member is run by the executor's own code, so tests run it by the production rules: the
launch (task environment HOST, PORT_<NAME>, MESOS_SANDBOX, MEMBER_ID, INSTANCE, ROLE plus
LaunchSpec.env, ``${VAR}`` expansion with the ``$${VAR}`` escape and unknown references left as
they are, files, checks) is ``mesos_stateful.executor.launch.build_launch``; the process is
started, signalled and killed as a group by the executor's ``ProcessRuntime``; readiness and
health checks are one ``run_check`` attempt each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest_asyncio

from mesos_stateful.api.stateful.v1 import types_pb2, workload_service_pb2, workload_service_pb2_grpc
from mesos_stateful.common.channels import channel_options
from mesos_stateful.executor.checks import CheckSpec, run_check
from mesos_stateful.executor.expand import expand
from mesos_stateful.executor.launch import Launch, build_launch, port_env_name
from mesos_stateful.executor.process_runtime import ProcessRuntime
from mesos_stateful.executor.runtime import ExitStatus
from mesos_stateful.testing.poll import eventually, eventually_sync
from mesos_stateful.testing.ports import free_ports
from mesos_stateful.workloads.base import RunningWorkload, WorkloadBase, start_workload
from mesos_stateful.workloads.etcd.settings import EtcdSettings
from mesos_stateful.workloads.mysql.settings import MysqlSettings

_T = TypeVar("_T")


__all__ = ["expand"]  # the executor's, for tests that expand a Config's text themselves


def port_var(name: str) -> str:
    """The task variable of a named port (the executor's rule)."""
    return port_env_name(name)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool],
    timeout: float = 60.0,
    interval: float = 0.1,
    what: str = "",
) -> None:
    """Poll ``condition`` (async or plain) until it is true; TimeoutError after ``timeout`` seconds."""
    await eventually(condition, what or str(condition), timeout, interval)


def poll_until(condition: Callable[[], _T], timeout: float, what: str, interval: float = 0.1) -> _T:
    """Call ``condition`` (blocking) until it returns something true, and return that;
    AssertionError naming ``what`` after ``timeout`` seconds."""
    return eventually_sync(condition, what, timeout, interval)


@dataclass
class LocalMember:
    """One member's launch, prepared in a sandbox by the executor's ``build_launch``, run as a
    local process by the executor's ``ProcessRuntime`` (one runtime per start: a restart keeps
    the sandbox and ports)."""

    launch: types_pb2.LaunchSpec
    prepared: Launch
    starts: int = 0
    runtime: ProcessRuntime | None = None
    _waiter: asyncio.Task[ExitStatus] | None = field(default=None, repr=False)

    @property
    def sandbox(self) -> Path:
        return self.prepared.sandbox

    @property
    def host(self) -> str:
        return self.prepared.host

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.prepared.ports)

    @property
    def env(self) -> dict[str, str]:
        """The task environment the member runs with."""
        return dict(self.prepared.env)

    @property
    def argv(self) -> list[str]:
        """argv, expanded."""
        return list(self.prepared.argv)

    @property
    def member_id(self) -> str:
        return self.launch.member_id

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """The running (or last) process: its pid is the member's process group."""
        return self.runtime.process if self.runtime is not None else None

    @property
    def running(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def port(self, name: str) -> int:
        return self.prepared.ports[name]

    def member_proto(
        self,
        ordinal: int,
        role: types_pb2.Role,
        state: types_pb2.MemberState = types_pb2.MEMBER_STATE_RUNNING,
    ) -> types_pb2.Member:
        """The Member record lifecycle would keep for this member."""
        return types_pb2.Member(
            id=self.launch.member_id,
            instance=self.launch.instance,
            ordinal=ordinal,
            role=role,
            state=state,
            host=self.host,
            ports=self.ports,
            task_id=self.launch.task_id,
            incarnation=self.starts,
        )

    async def start(self) -> None:
        """Start (or restart, with the same ports and sandbox) the process: the files are written
        again and the process started, as the executor does for a task."""
        if self.running:
            return
        self.starts += 1
        runtime = ProcessRuntime()
        await runtime.prepare(self.prepared)
        await runtime.start()
        self.runtime = runtime
        self._waiter = asyncio.create_task(runtime.wait(), name=f"wait {self.member_id}")

    async def kill(self) -> None:
        """SIGKILL the process group and reap it (a crash, as the tests see it)."""
        if self.runtime is None or self._waiter is None:
            return
        await self.runtime.signal(signal.SIGKILL)
        await self._waiter

    async def stop(self, grace_seconds: float | None = None) -> None:
        """SIGTERM, then SIGKILL after the launch's kill grace (the executor's kill)."""
        if self.runtime is None or self._waiter is None:
            return
        await self.runtime.kill(self.prepared.kill_grace if grace_seconds is None else grace_seconds)
        await self._waiter

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("stdout", "stderr"):
            path = self.sandbox / name
            if path.exists():
                text += f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return text

    async def check(self, check: CheckSpec | types_pb2.Check | None) -> bool:
        """One attempt of a check by the executor's ``run_check``: a prepared one
        (``prepared.readiness`` / ``.health``) or a ``stateful.v1.Check`` (e.g. ``launch.health``),
        prepared by the executor's rules for this member; no check passes."""
        if isinstance(check, types_pb2.Check):
            check = self.prepare_check(check)
        return check is None or (await run_check(check)).ok

    def prepare_check(self, check: types_pb2.Check) -> CheckSpec | None:
        """``check`` as the executor would run it for this member (``${VAR}`` expanded, defaults
        applied); None for an empty check."""
        if check.WhichOneof("kind") is None:
            return None
        spec = types_pb2.LaunchSpec()
        spec.CopyFrom(self.launch)
        spec.readiness.CopyFrom(check)
        return build_launch(
            spec,
            task_id=self.prepared.task_id,
            host=self.host,
            ports=self.prepared.ports,
            sandbox=self.sandbox,
            environ=self.prepared.env,
        ).readiness

    async def ready(self) -> bool:
        return self.running and await self.check(self.prepared.readiness)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll the launch's readiness check; fails early if the process exits."""

        async def ready() -> bool:
            if not self.running:
                status = self.runtime.exit_status if self.runtime else None
                raise RuntimeError(
                    f"{self.member_id} exited ({status.describe() if status else 'not started'})\n"
                    + self.log_tail()
                )
            return await self.check(self.prepared.readiness)

        readiness = self.prepared.readiness
        interval = max(0.1, min(readiness.interval if readiness else 1.0, 0.5))
        await wait_for(ready, timeout, interval, f"{self.member_id} to be ready")


class MemberRunner:
    """Prepares and runs members in sandboxes under ``root``; ``close()`` stops them all."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host
        self.members: list[LocalMember] = []

    def prepare(
        self,
        launch: types_pb2.LaunchSpec,
        ports: Mapping[str, int] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> LocalMember:
        """Lay out the member's sandbox (ports chosen, launch built by the executor's rules; the
        files are written at start). Raises the executor's ``InvalidTask`` for a launch it would
        refuse."""
        name = launch.task_id or launch.member_id or f"member-{len(self.members)}"
        sandbox = self.root / name
        sandbox.mkdir(parents=True, exist_ok=True)
        chosen = dict(ports or {})
        missing = [p for p in launch.port_names if p not in chosen]
        chosen.update(zip(missing, free_ports(len(missing), self.host), strict=True))
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(sandbox)),
            **(extra_env or {}),
        }
        prepared = build_launch(
            launch, task_id=name, host=self.host, ports=chosen, sandbox=sandbox, environ=environ
        )
        member = LocalMember(launch=launch, prepared=prepared)
        self.members.append(member)
        return member

    async def start(
        self, launch: types_pb2.LaunchSpec, ready: bool = True, timeout: float = 60.0
    ) -> LocalMember:
        member = self.prepare(launch)
        await member.start()
        if ready:
            await member.wait_ready(timeout)
        return member

    async def close(self) -> None:
        for member in self.members:
            await member.stop(grace_seconds=5)


@pytest_asyncio.fixture
async def member_runner(tmp_path: Path) -> AsyncIterator[MemberRunner]:
    """A MemberRunner whose members are all stopped at teardown."""
    runner = MemberRunner(tmp_path / "sandboxes")
    try:
        yield runner
    finally:
        await runner.close()


# --- callback contexts ---------------------------------------------------------------------------


def instance(
    name: str,
    workload: str,
    members: Iterable[types_pb2.Member],
    config: Mapping[str, str] | None = None,
    replicas: int | None = None,
) -> types_pb2.Instance:
    ms = sorted(members, key=lambda m: m.ordinal)
    return types_pb2.Instance(
        spec=types_pb2.InstanceSpec(
            name=name, workload=workload, replicas=len(ms) if replicas is None else replicas, config=config
        ),
        phase=types_pb2.INSTANCE_PHASE_RUNNING,
        members=ms,
    )


def context(
    inst: types_pb2.Instance, member_id: str, secrets: Mapping[str, str] | None = None, attempt: int = 1
) -> workload_service_pb2.CallbackContext:
    return workload_service_pb2.CallbackContext(
        instance=inst, member_id=member_id, secrets=secrets, attempt=attempt
    )


def pending_member(inst_name: str, ordinal: int, role: types_pb2.Role) -> types_pb2.Member:
    """A member not launched yet (no host or ports), as lifecycle has it before Config."""
    return types_pb2.Member(
        id=f"{inst_name}-{ordinal}",
        instance=inst_name,
        ordinal=ordinal,
        role=role,
        state=types_pb2.MEMBER_STATE_PENDING,
    )


# --- an in-process workload server ---------------------------------------------------------------


@dataclass
class WorkloadServer:
    """A workload servicer served on 127.0.0.1:<port 0>, with a client stub."""

    running: RunningWorkload
    channel: grpc.aio.Channel
    stub: workload_service_pb2_grpc.WorkloadServiceAsyncStub

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.running.port}"


@contextlib.asynccontextmanager
async def serve_workload(servicer: WorkloadBase) -> AsyncIterator[WorkloadServer]:
    """Serve ``servicer`` (without registering; set ``servicer.settings`` as needed) and yield a
    stub; stops the server after."""
    settings = servicer.settings.model_copy(update={"listen": "127.0.0.1:0", "register_in_state": False})
    running = await start_workload(servicer, settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options())
    try:
        yield WorkloadServer(running, channel, workload_service_pb2_grpc.WorkloadServiceStub(channel))
    finally:
        await channel.close()
        await running.stop(grace_seconds=1)


def member_pids(binary: str, work_dir: str | Path, instance: str, member_id: str | None = None) -> list[int]:
    """pids of live ``binary`` processes whose task environment (set by the executor) names the
    instance, and the member when given, with a sandbox under ``work_dir`` (the test's own local
    cluster: another suite on the machine may run an instance of the same name)."""
    root = str(Path(work_dir).resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().split(b"\0")[0].endswith(binary.encode()):
                continue
            env = dict(
                item.split("=", 1)
                for item in (entry / "environ").read_text(errors="replace").split("\0")
                if "=" in item
            )
        except (OSError, ValueError, IndexError):
            continue
        sandbox = env.get("MESOS_SANDBOX", "")
        if not (sandbox == root or sandbox.startswith(root + "/")):
            continue
        if env.get("INSTANCE") == instance and member_id in (None, env.get("MEMBER_ID")):
            pids.append(int(entry.name))
    return pids


def mysql_test_settings(state_endpoint: str) -> MysqlSettings:
    """The MySQL workload's settings for tests (``MysqlSettings``): fast checks (300 ms) and fast
    health checks (1 s, 3 s grace), so a stopped mariadbd is killed within seconds."""
    return MysqlSettings.model_validate(
        {
            "listen": "127.0.0.1:0",
            "state_endpoint": state_endpoint,
            "lease_ttl_seconds": 6,
            "callback_timeout_seconds": 15.0,
            "connect_timeout_seconds": 3.0,
            "promote_timeout_seconds": 10.0,
            "check_interval_ms": 300,
            "health_interval_ms": 1000,
            "health_grace_period_ms": 3000,
        }
    )


def etcd_test_settings(state_endpoint: str) -> EtcdSettings:
    """The etcd workload's settings for tests (``EtcdSettings``): checks every 300 ms."""
    return EtcdSettings.model_validate(
        {
            "listen": "127.0.0.1:0",
            "state_endpoint": state_endpoint,
            "lease_ttl_seconds": 6,
            "callback_timeout_seconds": 15.0,
            "request_timeout_seconds": 5.0,
            "check_interval_ms": 300,
        }
    )
