"""Test support for workload services: run a Config'ed member as a real local process, without
Mesos, the way the executor's process runtime would, and serve a workload servicer in-process.

    runner = MemberRunner(tmp_path)                       # or the ``member_runner`` fixture
    member = runner.prepare(launch)                        # free ports, sandbox, files, argv
    await member.start(); await member.wait_ready()        # readiness = launch.readiness
    proto = member.member_proto(ordinal=0, role=ROLE_MASTER)   # for a CallbackContext
    await member.kill()                                    # SIGKILL (or stop(): SIGTERM, then KILL)
    await runner.close()                                   # stops every member it started

The task environment matches the executor's contract (docs/internals.md): HOST, PORT_<NAME>,
MESOS_SANDBOX, MEMBER_ID, INSTANCE, ROLE, plus LaunchSpec.env; ``${VAR}`` is expanded in argv, env
values, check commands and files with ``expand``. Processes start in their own session and are
killed as a group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest_asyncio

from mesos_stateful.api.stateful.v1 import types_pb2, workload_service_pb2, workload_service_pb2_grpc
from mesos_stateful.common.channels import channel_options
from mesos_stateful.testing.poll import eventually, eventually_sync
from mesos_stateful.testing.ports import free_ports
from mesos_stateful.workloads.base import RunningWorkload, WorkloadBase, start_workload
from mesos_stateful.workloads.etcd.settings import EtcdSettings
from mesos_stateful.workloads.mysql.settings import MysqlSettings

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_T = TypeVar("_T")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` from env; an unknown variable is an error (it is a bug in a Config)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise KeyError(f"${{{name}}} is not in the task environment")
        return env[name]

    return _VAR.sub(one, text)


def port_var(name: str) -> str:
    return "PORT_" + name.upper().replace("-", "_")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float = 60.0, interval: float = 0.1, what: str = ""
) -> None:
    """Poll ``condition`` until it is true; TimeoutError after ``timeout`` seconds."""
    await eventually(condition, what or str(condition), timeout, interval)


def poll_until(condition: Callable[[], _T], timeout: float, what: str, interval: float = 0.1) -> _T:
    """Call ``condition`` (blocking) until it returns something true, and return that;
    AssertionError naming ``what`` after ``timeout`` seconds."""
    return eventually_sync(condition, what, timeout, interval)


@dataclass
class LocalMember:
    """One member's launch, prepared in a sandbox, run as a local process."""

    launch: types_pb2.LaunchSpec
    sandbox: Path
    host: str
    ports: dict[str, int]
    env: dict[str, str]
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    _logs: list[Any] = field(default_factory=list)

    @property
    def member_id(self) -> str:
        return self.launch.member_id

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def port(self, name: str) -> int:
        return self.ports[name]

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
        """Start (or restart, with the same ports and sandbox) the process."""
        if self.running:
            return
        self.starts += 1
        out = (self.sandbox / "stdout").open("ab")
        err = (self.sandbox / "stderr").open("ab")
        self._logs += [out, err]
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.sandbox,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )

    async def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    async def kill(self) -> None:
        """SIGKILL the process group and reap it (a crash, as the tests see it)."""
        if self.process is None:
            return
        await self._signal(signal.SIGKILL)
        await self.process.wait()
        self._close_logs()

    async def stop(self, grace_seconds: float | None = None) -> None:
        """SIGTERM, then SIGKILL after the launch's kill grace (as the executor kills a task)."""
        if self.process is None:
            return
        grace = grace_seconds if grace_seconds is not None else (self.launch.kill_grace_seconds or 10)
        await self._signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await self.process.wait()
        except TimeoutError:
            await self._signal(signal.SIGKILL)
            await self.process.wait()
        self._close_logs()

    def _close_logs(self) -> None:
        for f in self._logs:
            f.close()
        self._logs.clear()

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("stdout", "stderr"):
            path = self.sandbox / name
            if path.exists():
                text += f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return text

    async def check(self, check: types_pb2.Check) -> bool:
        """Run a readiness/health check once, as the executor would."""
        timeout = (check.timeout_ms or 2000) / 1000
        kind = check.WhichOneof("kind")
        if kind == "tcp":
            port = self.ports[check.tcp.port_name]
            return await asyncio.to_thread(port_open, self.host, port, timeout)
        if kind == "command":
            argv = [expand(a, self.env) for a in check.command.argv]
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.sandbox,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                async with asyncio.timeout(timeout):
                    return await proc.wait() == 0
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                return False
        return True  # no check: ready as soon as started

    async def ready(self) -> bool:
        return self.running and await self.check(self.launch.readiness)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll the launch's readiness check; fails early if the process exits."""

        async def ready() -> bool:
            if not self.running:
                raise RuntimeError(
                    f"{self.member_id} exited ({self.process and self.process.returncode})\n"
                    + self.log_tail()
                )
            return await self.check(self.launch.readiness)

        interval = max(0.1, min((self.launch.readiness.interval_ms or 1000) / 1000, 0.5))
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
        """Lay out the member's sandbox (files written, ports chosen, argv expanded)."""
        name = launch.task_id or launch.member_id or f"member-{len(self.members)}"
        sandbox = self.root / name
        sandbox.mkdir(parents=True, exist_ok=True)
        chosen = dict(ports or {})
        missing = [p for p in launch.port_names if p not in chosen]
        chosen.update(zip(missing, free_ports(len(missing), self.host), strict=True))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(sandbox)),
            "HOST": self.host,
            "MESOS_SANDBOX": str(sandbox),
            "MEMBER_ID": launch.member_id,
            "INSTANCE": launch.instance,
            "ROLE": types_pb2.Role.Name(launch.role).removeprefix("ROLE_"),
            **{port_var(n): str(p) for n, p in chosen.items()},
        }
        env.update(extra_env or {})
        env.update({k: expand(v, env) for k, v in launch.env.items()})
        for f in launch.files:
            path = sandbox / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            content = expand(f.content.decode(), env).encode() if f.expand else f.content
            path.write_bytes(content)
            path.chmod(f.mode or 0o644)
        argv = [expand(a, env) for a in launch.argv]
        member = LocalMember(launch=launch, sandbox=sandbox, host=self.host, ports=chosen, env=env, argv=argv)
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
    stub: workload_service_pb2_grpc.WorkloadServiceStub

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
