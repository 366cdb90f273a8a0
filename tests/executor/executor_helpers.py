"""Helpers for the executor tests: a recording status sink, launches built from LaunchSpecs."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.executor.launch import Launch, build_launch
from mesos_stateful.executor.monitor import Monitor
from mesos_stateful.executor.process_runtime import ProcessRuntime
from mesos_stateful.executor.status import StatusUpdate
from mesos_stateful.testing import poll
from mesos_stateful.testing.ports import free_port

PY = sys.executable
DEADLINE = 30.0


@dataclass
class Seen:
    update: StatusUpdate
    at: float


@dataclass
class RecordingSink:
    """Stands in for the Mesos driver: records every update with the time it arrived."""

    seen: list[Seen] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, update: StatusUpdate) -> None:
        self.seen.append(Seen(update, time.time()))
        self.changed.set()

    @property
    def states(self) -> list[str]:
        return [s.update.state for s in self.seen]

    async def wait_for(self, state: str, timeout: float = DEADLINE) -> Seen:
        async with asyncio.timeout(timeout):
            while True:
                for s in self.seen:
                    if s.update.state == state:
                        return s
                self.changed.clear()
                await self.changed.wait()

    async def wait_until(self, predicate: Callable[[StatusUpdate], bool], timeout: float = DEADLINE) -> Seen:
        async with asyncio.timeout(timeout):
            while True:
                for s in self.seen:
                    if predicate(s.update):
                        return s
                self.changed.clear()
                await self.changed.wait()


async def eventually(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (only to catch hangs)."""
    await poll.eventually(condition, "the condition", timeout, interval=0.05)


def make_spec(argv: Iterable[str], **fields: object) -> types_pb2.LaunchSpec:
    spec = types_pb2.LaunchSpec(
        instance="cache", member_id="cache-0", task_id="cache-0.1", workload="redis",
        role=types_pb2.ROLE_MASTER, argv=list(argv),
    )
    for name, value in fields.items():
        if isinstance(value, dict) and name == "env":
            spec.env.update(value)
        elif isinstance(value, list):
            getattr(spec, name).extend(value)
        elif hasattr(value, "SerializeToString"):
            getattr(spec, name).CopyFrom(value)
        else:
            setattr(spec, name, value)
    return spec


def make_launch(spec: types_pb2.LaunchSpec, sandbox: Path, ports: dict[str, int] | None = None,
                **kwargs: object) -> Launch:
    ports = ports if ports is not None else {name: free_port() for name in spec.port_names}
    return build_launch(spec, task_id=spec.task_id, host="127.0.0.1", ports=ports, sandbox=sandbox,
                        environ={"PATH": "/usr/bin:/bin"}, **kwargs)  # type: ignore[arg-type]


@dataclass
class Running:
    launch: Launch
    runtime: ProcessRuntime
    sink: RecordingSink
    monitor: Monitor
    task: asyncio.Task[StatusUpdate]


class Runner:
    """Starts monitors on real processes and makes sure none is left behind."""

    def __init__(self) -> None:
        self.started: list[Running] = []

    def start(self, launch: Launch) -> Running:
        runtime = ProcessRuntime()
        sink = RecordingSink()
        monitor = Monitor(launch, runtime, sink)
        task = asyncio.create_task(monitor.run())
        running = Running(launch, runtime, sink, monitor, task)
        self.started.append(running)
        return running
