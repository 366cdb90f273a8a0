"""Helpers of the Compose tests: a Compose project of its own (name, gateway port, subnet), run
with the docker CLI as a user would, and the engine's view of it through the docker SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from mesos_stateful.common.images import LABEL_INSTANCE
from mesos_stateful.common.settings import S
from mesos_stateful.testing.poll import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
STATEFULCTL = [sys.executable, "-m", "mesos_stateful.cli"]
INSTANCE = "cache"
UP_TIMEOUT = 420


def load_settings(cls: type[S], env: dict[str, str | None]) -> S:
    """``cls`` loaded from a Compose service's ``environment`` alone (no STATEFUL_* of this
    process), as the container loads it; a ``KEY:`` with no value (null: from the shell running
    compose, else unset) is left unset."""
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith("STATEFUL_"):
                patch.delenv(key)
        for key, value in env.items():
            if value is not None:
                patch.setenv(key, value)
        return cls.load([])


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.5) -> Any:
    return eventually_sync(condition, what, timeout, interval)


@dataclass
class Project:
    name: str
    env: dict[str, str]
    gateway: str
    subnet: str
    client: docker.DockerClient
    files: list[Path] = field(default_factory=lambda: [COMPOSE_FILE])
    timings: dict[str, float] = field(default_factory=dict)
    agent_ids: set[str] = field(default_factory=set)

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", *(a for f in self.files for a in ("-f", str(f))), "-p", self.name, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*STATEFULCTL, "--endpoint", self.gateway, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def diagnostics(self) -> str:
        ps = self.compose("ps", "-a", timeout=60)
        logs = self.compose("logs", "--no-color", "--tail", "40", timeout=120)
        return f"{ps.stdout}{ps.stderr}\n{logs.stdout[-12000:]}{logs.stderr[-2000:]}"

    def container(self, service: str) -> Any:
        [found] = self.client.containers.list(
            all=True,
            filters={
                "label": [f"com.docker.compose.project={self.name}", f"com.docker.compose.service={service}"]
            },
        )
        return found

    def agent_containers(self) -> dict[str, Any]:
        return {name: self.container(name) for name in ("agent-0", "agent-1", "agent-2")}

    def members(self, all_states: bool = False) -> list[Any]:
        """The member containers of the instance in this project: in one of its agents' network
        namespaces (other projects and tests may run an instance of the same name)."""
        if not self.agent_ids:  # an agent keeps its container id across a restart
            self.agent_ids = {c.id for c in self.agent_containers().values()}
        agents = self.agent_ids
        found = self.client.containers.list(all=all_states, filters={"label": f"{LABEL_INSTANCE}={INSTANCE}"})
        return [c for c in found if c.attrs["HostConfig"]["NetworkMode"].removeprefix("container:") in agents]

    def instance(self) -> dict[str, Any]:
        shown = self.ctl("get", INSTANCE, "-o", "json", "--show-secrets")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        data: dict[str, Any] = json.loads(shown.stdout)
        return data

    def leftovers(self) -> list[str]:
        label = f"com.docker.compose.project={self.name}"
        left = [
            f"container {c.name}" for c in self.client.containers.list(all=True, filters={"label": label})
        ]
        left += [f"network {n.name}" for n in self.client.networks.list(filters={"label": label})]
        left += [f"volume {v.name}" for v in self.client.volumes.list(filters={"label": label})]
        return left
