"""The console's watch of a gateway that does not answer: one warning for the outage, not one per
retry (a new-user run saw one about every second)."""

from __future__ import annotations

import logging

import pytest

from mesos_stateful.console.server import Console
from mesos_stateful.console.settings import ConsoleSettings
from mesos_stateful.testing.poll import eventually
from mesos_stateful.testing.ports import free_ports


async def test_a_gateway_away_is_one_warning_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    settings = ConsoleSettings(gateway_endpoint=f"127.0.0.1:{free_ports(1)[0]}")  # nobody listens
    console = Console(settings)
    caplog.set_level(logging.DEBUG, logger="console")
    console.start()
    try:

        def retries() -> int:
            return sum("recent events are not live" in r.getMessage() for r in caplog.records)

        await eventually(lambda: retries() >= 3, "three failed watch attempts", 60)
    finally:
        await console.close()
    warnings = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and "recent events are not live" in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "cannot get the watch from the gateway" in warnings[0].getMessage()
