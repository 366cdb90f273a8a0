"""Fixtures of the executor tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from executor_helpers import Runner


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    r = Runner()
    yield r
    for running in r.started:
        running.runtime.force_kill_sync()
        if not running.task.done():
            running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
