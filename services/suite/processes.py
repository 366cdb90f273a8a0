"""Child processes with prefixed output, started and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from mesos_stateful.common.server import is_serving

COLORS = ["36", "32", "33", "35", "34", "31", "96", "92", "93", "95"]


@dataclass
class Child:
    """One service of the suite: how to run it and how to tell it is up."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    grpc_address: str | None = None
    http_health_url: str | None = None
    process: asyncio.subprocess.Process | None = None
    color: str = "37"

    async def start(self) -> None:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        # Its own session: Ctrl-C reaches only the runner, which stops the children in order.
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        label = f"{self.name:>10} |"
        prefix = f"\x1b[{self.color}m{label}\x1b[0m " if sys.stdout.isatty() else f"{label} "
        async for raw in self.process.stdout:
            sys.stdout.write(prefix + raw.decode(errors="replace"))
            sys.stdout.flush()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited with code {self.process and self.process.returncode}")
            if await self._healthy():
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy within {timeout:.0f}s")

    async def _healthy(self) -> bool:
        if self.grpc_address:
            return await is_serving(self.grpc_address)
        if self.http_health_url:
            import aiohttp

            try:
                async with aiohttp.ClientSession() as session, session.get(
                    self.http_health_url, timeout=aiohttp.ClientTimeout(total=1.0)
                ) as reply:
                    return reply.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False
        return True

    async def stop(self, grace: float) -> None:
        if not self.running:
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
