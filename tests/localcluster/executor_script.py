"""A minimal executor on pymesos' MesosExecutorDriver, for the local cluster tests.

Task ``data`` (base64 JSON) chooses the behaviour: ``{"child": true}`` starts a ``sleep`` in its own
process group (like a member process), ``{"finish": true}`` reports TASK_FINISHED right away,
``{"exit": N}`` makes the executor die with exit code N without a terminal update,
``{"write": {"<path in the sandbox>": "<text>"}}`` writes files first, ``{"read": "<path>"}`` sends
the file's text (or ``<missing>``) as the message of TASK_RUNNING (and of TASK_FINISHED),
``{"serve": PORT}`` starts (like ``child``) a TCP listener on the agent's address and PORT that
answers every connection with ``member <task id>``, ``{"finish_in": SECONDS}`` reports TASK_FINISHED
that long after TASK_RUNNING.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from pymesos import Executor, MesosExecutorDriver, decode_data, encode_data

SERVER = """
import socket
server = socket.create_server(("{host}", {port}))
while True:
    conn, _ = server.accept()
    conn.sendall(b"{answer}")
    conn.close()
"""


class TestExecutor(Executor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.done = threading.Event()

    def _status(self, driver: Any, task_id: Any, state: str, message: str = "") -> None:
        driver.sendStatusUpdate(
            {
                "task_id": task_id,
                "state": state,
                "message": message,
                "data": encode_data(json.dumps({"pid": os.getpid()}).encode()),
            }
        )

    def launchTask(self, driver: Any, task: Any) -> None:
        spec = json.loads(decode_data(task["data"])) if task.get("data") else {}
        self._status(driver, task["task_id"], "TASK_STARTING")
        for path, text in (spec.get("write") or {}).items():
            with open(path, "w") as f:
                f.write(text)
        message = ""
        if spec.get("read"):
            try:
                with open(spec["read"]) as f:
                    message = f.read()
            except OSError:
                message = "<missing>"
        if spec.get("child"):
            self.children[task["task_id"]["value"]] = subprocess.Popen(["sleep", "1000"], process_group=0)
        if spec.get("serve"):
            host = os.environ["MESOS_AGENT_ENDPOINT"].rsplit(":", 1)[0]
            code = SERVER.format(
                host=host, port=int(spec["serve"]), answer=f"member {task['task_id']['value']}"
            )
            self.children[task["task_id"]["value"]] = subprocess.Popen(
                [sys.executable, "-c", code], process_group=0
            )
        self._status(driver, task["task_id"], "TASK_RUNNING", message)
        if "exit" in spec:
            os._exit(int(spec["exit"]))
        if spec.get("finish"):
            self._status(driver, task["task_id"], "TASK_FINISHED", message)
            self._end_soon(driver)
        if spec.get("finish_in"):

            def finish_later() -> None:
                time.sleep(float(spec["finish_in"]))
                self._status(driver, task["task_id"], "TASK_FINISHED", "finished")

            threading.Thread(target=finish_later, daemon=True).start()

    def killTask(self, driver: Any, task_id: Any) -> None:
        child = self.children.pop(task_id["value"], None)
        if child is not None:
            child.terminate()
            child.wait()
        self._status(driver, task_id, "TASK_KILLED", "killed by the scheduler")
        if not self.children:
            self._end_soon(driver)

    def frameworkMessage(self, driver: Any, message: str) -> None:
        driver.sendFrameworkMessage(encode_data(b"echo:" + decode_data(message)))

    def shutdown(self, driver: Any) -> None:
        for child in self.children.values():
            child.terminate()
        self.done.set()

    def _end_soon(self, driver: Any) -> None:
        def end() -> None:
            time.sleep(1.0)
            self.done.set()

        threading.Thread(target=end, daemon=True).start()


def main() -> None:
    executor = TestExecutor()
    driver = MesosExecutorDriver(executor, use_addict=True)
    driver.start()
    executor.done.wait()
    driver.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
