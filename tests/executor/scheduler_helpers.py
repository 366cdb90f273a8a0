"""A real pymesos scheduler for the end-to-end tests: its callbacks (on pymesos' thread) only put
events on a thread-safe queue; the test reads them with deadlines."""

from __future__ import annotations

import queue
import sys
import time
from collections.abc import Callable
from typing import Any

from pymesos import MesosSchedulerDriver, Scheduler, encode_data

from mesos_stateful.api.stateful.v1 import types_pb2

Event = tuple[str, Any]
EXECUTOR_COMMAND = f"{sys.executable} -m mesos_stateful.executor"


class Recorder(Scheduler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.events: queue.Queue[Event] = queue.Queue()

    def registered(self, driver: Any, framework_id: Any, master_info: Any) -> None:
        self.events.put(("registered", framework_id["value"]))

    def resourceOffers(self, driver: Any, offers: Any) -> None:
        for offer in offers:
            self.events.put(("offer", offer))

    def statusUpdate(self, driver: Any, status: Any) -> None:
        self.events.put(("update", status))

    def error(self, driver: Any, message: str) -> None:
        self.events.put(("error", message))


class E2EFramework:
    def __init__(self, master: str, partition_aware: bool = True) -> None:
        self.recorder = Recorder()
        info: dict[str, Any] = {"user": "test", "name": "executor-e2e", "failover_timeout": 60.0,
                                "checkpoint": True, "hostname": "127.0.0.1"}
        if partition_aware:  # as the offers service: tasks on a cut-off agent are not killed
            info["capabilities"] = [{"type": "PARTITION_AWARE"}]
        self.driver = MesosSchedulerDriver(self.recorder, info, master, use_addict=False,
                                           implicit_acknowledgements=True)
        self.seen: list[Event] = []
        self.framework_id = ""
        self._stopped = False

    def start(self) -> None:
        self.driver.start()
        self.framework_id = self.wait("registered")

    def stop(self) -> None:
        """Stop without failover: the master tears the framework down (agents shut executors down)."""
        if not self._stopped:
            self._stopped = True
            self.driver.stop()
            self.driver.join()

    def wait(self, kind: str, pred: Callable[[Any], bool] = lambda _v: True, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.recorder.events.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                continue
            self.seen.append(event)
            if event[0] == kind and pred(event[1]):
                return event[1]
        raise AssertionError(f"no {kind} event within {timeout}s; seen: {self.seen[-10:]}")

    def update(self, task_id: str, state: str, timeout: float = 60.0) -> Any:
        def matches(status: Any) -> bool:
            return bool(status["task_id"]["value"] == task_id and status["state"] == state)

        return self.wait("update", matches, timeout)

    def states(self, task_id: str) -> list[str]:
        return [e[1]["state"] for e in self.seen if e[0] == "update" and e[1]["task_id"]["value"] == task_id]


def task_for(offer: Any, spec: types_pb2.LaunchSpec | None, *, data: str | None = None) -> dict[str, Any]:
    """A TaskInfo as the offers service builds it: ExecutorInfo with executor_id = task id, the
    LaunchSpec in data, ports from the offer's ranges named in discovery."""
    task_id = spec.task_id if spec is not None else "bad-0.1"
    names = list(spec.port_names) if spec is not None else []
    ranges = [r for res in offer["resources"] if res["name"] == "ports" for r in res["ranges"]["range"]]
    ports = [ranges[0]["begin"] + i for i in range(len(names))]
    resources: list[dict[str, Any]] = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
    ]
    if ports:
        resources.append({"name": "ports", "type": "RANGES",
                          "ranges": {"range": [{"begin": p, "end": p} for p in ports]}})
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": offer["agent_id"]["value"]},
        "resources": resources,
        "executor": {
            "executor_id": {"value": task_id},
            "name": f"stateful executor {task_id}",
            "command": {"value": EXECUTOR_COMMAND, "shell": True},
        },
        "discovery": {"visibility": "FRAMEWORK", "name": task_id, "ports": {"ports": [
            {"number": p, "name": n, "protocol": "tcp"} for p, n in zip(ports, names, strict=True)
        ]}},
        "data": data if data is not None else encode_data(spec.SerializeToString() if spec else b""),
    }
