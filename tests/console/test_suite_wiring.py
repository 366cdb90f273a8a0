"""`make run` starts the console: its address from STATEFUL_SUITE_CONSOLE, checked by the
preflight under that setting's name, the gateway's token handed on, no metrics port of its own."""

from __future__ import annotations

import pytest

from mesos_stateful.suite.main import _ports, plan_children
from mesos_stateful.suite.settings import SuiteSettings


def test_console_child_port_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEFUL_SUITE_CONSOLE", "127.0.0.1:18080")
    monkeypatch.setenv("STATEFUL_SUITE_GATEWAY", "127.0.0.1:17000")
    monkeypatch.setenv("STATEFUL_GATEWAY_AUTH_TOKEN", "s3cret")
    monkeypatch.delenv("STATEFUL_CONSOLE_TOKEN", raising=False)
    settings = SuiteSettings.load([])
    groups = plan_children(settings)
    (console,) = [c for group in groups for c in group if c.name == "console"]
    assert console.env["STATEFUL_CONSOLE_LISTEN"] == "127.0.0.1:18080"
    assert console.env["STATEFUL_CONSOLE_GATEWAY_ENDPOINT"] == "127.0.0.1:17000"
    assert console.env["STATEFUL_CONSOLE_TOKEN"] == "s3cret"
    assert console.http_health_url == "http://127.0.0.1:18080/health"
    assert console.metrics_address is None
    checked = [p for p in _ports(settings, groups) if p.owner == "console"]
    assert [(p.port, p.setting) for p in checked] == [(18080, "STATEFUL_SUITE_CONSOLE")]
