"""A real pymesos scheduler driver whose callbacks (run on pymesos' own thread) are handed to the
test through a thread-safe queue, and task helpers."""

from __future__ import annotations

import json
import queue
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymesos import MesosSchedulerDriver, Scheduler, encode_data  # imported on the main thread (SIGINT)

from mesos_stateful.testing.cluster import RunningCluster

EXECUTOR = Path(__file__).with_name("executor_script.py")
Event = tuple[str, Any]


class Recorder(Scheduler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.events: queue.Queue[Event] = queue.Queue()

    def registered(self, driver: Any, framework_id: Any, master_info: Any) -> None:
        self.events.put(("registered", framework_id["value"]))

    def reregistered(self, driver: Any, master_info: Any) -> None:
        self.events.put(("reregistered", master_info))

    def resourceOffers(self, driver: Any, offers: Any) -> None:
        for offer in offers:
            self.events.put(("offer", offer))

    def offerRescinded(self, driver: Any, offer_id: Any) -> None:
        self.events.put(("rescind", offer_id["value"]))

    def statusUpdate(self, driver: Any, status: Any) -> None:
        self.events.put(("update", status))

    def frameworkMessage(self, driver: Any, executor_id: Any, agent_id: Any, data: Any) -> None:
        self.events.put(("message", data))

    def slaveLost(self, driver: Any, agent_id: Any) -> None:
        self.events.put(("agent_lost", agent_id["value"]))

    def executorLost(self, driver: Any, executor_id: Any, agent_id: Any, status: Any) -> None:
        self.events.put(("executor_lost", executor_id["value"]))

    def processHeartBeat(self, driver: Any) -> None:
        self.events.put(("heartbeat", None))

    def error(self, driver: Any, message: str) -> None:
        self.events.put(("error", message))


class Framework:
    """A pymesos scheduler driver plus the events it received."""

    def __init__(
        self,
        cluster: RunningCluster | str,
        name: str = "test",
        failover_timeout: float = 60.0,
        implicit_acks: bool = True,
        framework_id: str | None = None,
        partition_aware: bool = False,
        checkpoint: bool = True,
    ) -> None:
        self.recorder = Recorder()
        info: dict[str, Any] = {
            "user": "test",
            "name": name,
            "failover_timeout": failover_timeout,
            "checkpoint": checkpoint,
            "hostname": "127.0.0.1",
        }
        if partition_aware:
            info["capabilities"] = [{"type": "PARTITION_AWARE"}]
        if framework_id:
            info["id"] = {"value": framework_id}
        self.driver = MesosSchedulerDriver(
            self.recorder,
            info,
            cluster if isinstance(cluster, str) else cluster.master_address,
            use_addict=True,
            implicit_acknowledgements=implicit_acks,
        )
        self.seen: list[Event] = []
        self.backlog: list[Event] = []
        self.framework_id = ""

    def start(self) -> str:
        self.driver.start()
        self.framework_id = (
            self.wait("registered", timeout=30)
            if not self.driver.framework_id
            else self.wait_any(("registered", "reregistered"), timeout=30)[1]
        )
        return self.framework_id or self.driver.framework_id

    def stop(self, failover: bool = False) -> None:
        self.driver.stop(failover=failover)
        self.driver.join()

    def _next(self, deadline: float) -> Event | None:
        try:
            event = self.recorder.events.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
        except queue.Empty:
            return None
        self.seen.append(event)
        self.backlog.append(event)
        return event

    def wait_any(
        self, kinds: tuple[str, ...], pred: Callable[[Any], bool] = lambda _v: True, timeout: float = 30.0
    ) -> Event:
        """The first received, not yet consumed event of one of ``kinds`` matching ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.backlog):
                if event[0] in kinds and pred(event[1]):
                    del self.backlog[i]
                    return event
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {kinds} event within {timeout}s; seen: {self.seen[-20:]}")
            self._next(deadline)

    def wait(self, kind: str, pred: Callable[[Any], bool] = lambda _v: True, timeout: float = 30.0) -> Any:
        return self.wait_any((kind,), pred, timeout)[1]

    def none(self, kind: str, pred: Callable[[Any], bool] = lambda _v: True, within: float = 2.0) -> None:
        """Assert that no such event arrives for ``within`` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            event = self._next(deadline)
            if event is not None and event[0] == kind and pred(event[1]):
                raise AssertionError(f"unexpected {kind} event: {event[1]}")

    def clear(self, kind: str) -> None:
        """Forget received events of ``kind`` not consumed yet."""
        self.backlog = [e for e in self.backlog if e[0] != kind]

    def update(self, task_id: str, state: str, timeout: float = 30.0) -> Any:
        return self.wait(
            "update", lambda s: s["task_id"]["value"] == task_id and s["state"] == state, timeout
        )

    def offer(self, pred: Callable[[Any], bool] = lambda _v: True, timeout: float = 30.0) -> Any:
        return self.wait("offer", pred, timeout)


def task_info(
    offer: Any,
    task_id: str | None = None,
    cpus: float = 0.5,
    mem: float = 64,
    spec: dict[str, Any] | None = None,
    executor_id: str | None = None,
    executor_cpus: float = 0.0,
) -> dict[str, Any]:
    task_id = task_id or f"task-{uuid.uuid4().hex[:8]}"
    executor: dict[str, Any] = {
        "executor_id": {"value": executor_id or f"exec-{task_id}"},
        "command": {"value": f"{sys.executable} {EXECUTOR}", "shell": True},
    }
    if executor_cpus:
        executor["resources"] = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": executor_cpus}}]
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": offer["agent_id"]["value"]},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
        ],
        "executor": executor,
        "data": encode_data(json.dumps(spec or {}).encode()),
    }


def scalar(offer: Any, name: str) -> float:
    total: float = sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == name)
    return total
