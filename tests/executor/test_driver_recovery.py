"""The executor's driver while its agent is away (agent recovery, docs/agent-recovery.md): it
retries within the agent's re-registration window and keeps what it could not send for SUBSCRIBE."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pymesos import decode_data, encode_data

from mesos_stateful.executor.driver import ExecutorDriver


class _Listener:
    def acknowledged(self, task_id: str, update_uuid: uuid.UUID) -> None:
        pass

    def killTask(
        self, driver: Any, taskId: dict[str, Any], kill_policy: dict[str, Any] | None = None
    ) -> None:
        pass


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESOS_FRAMEWORK_ID", "fw-1")
    monkeypatch.setenv("MESOS_EXECUTOR_ID", "ex-1")
    monkeypatch.setenv("MESOS_AGENT_ENDPOINT", "127.0.0.1:1")  # nobody listens: the agent is away
    monkeypatch.setenv("MESOS_CHECKPOINT", "1")
    monkeypatch.setenv("MESOS_RECOVERY_TIMEOUT", "15mins")


def test_backoff_stays_within_half_the_agents_window(
    agent_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs")
    driver = ExecutorDriver(_Listener())
    assert driver.checkpoint and driver._timeout == 900
    delays = [driver._backoff(n) for n in range(12) for _ in range(20)]
    assert all(0.0 <= d <= 1.0 for d in delays)
    assert max(delays) > 0.5  # random over the range, not a constant


def test_without_the_variable_pymesos_backoff_applies(
    agent_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESOS_SUBSCRIPTION_BACKOFF_MAX", raising=False)
    driver = ExecutorDriver(_Listener())
    assert driver._backoff(5) > 2.0  # pymesos doubles from 2 s up to 15 s


def test_an_update_sent_while_away_goes_with_the_next_subscribe(agent_env: None) -> None:
    driver = ExecutorDriver(_Listener())
    update_uuid = uuid.uuid4()
    status = {"task_id": {"value": "t-1"}, "state": "TASK_RUNNING", "uuid": encode_data(update_uuid.bytes)}
    with pytest.raises(RuntimeError):
        driver.sendStatusUpdate(status)  # not connected
    request = driver.gen_request().decode()
    body = json.loads(request.split("\r\n\r\n", 1)[1])
    assert body["type"] == "SUBSCRIBE"
    sent = body["subscribe"]["unacknowledged_updates"]
    assert [decode_data(u["status"]["uuid"]) for u in sent] == [update_uuid.bytes]
    # Acknowledged (after the re-subscription): it is not sent again.
    driver.on_acknowledged({"task_id": {"value": "t-1"}, "uuid": status["uuid"]})
    body = json.loads(driver.gen_request().decode().split("\r\n\r\n", 1)[1])
    assert body["subscribe"]["unacknowledged_updates"] == []
