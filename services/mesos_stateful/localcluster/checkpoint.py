"""The agent's checkpoint of what it runs for frameworks that checkpoint, laid out as the Mesos
agent's meta directory (``src/slave/paths.hpp``, read back as ``src/slave/state.hpp`` does):

```
<agent work dir>/meta/slaves/<agent id>/frameworks/<framework id>/framework.info
    .../executors/<executor id>/executor.info
    .../executors/<executor id>/runs/<container id>/pids/forked.pid      (the executor's pid)
    .../executors/<executor id>/runs/<container id>/pids/forked.start    (its /proc start time)
    .../executors/<executor id>/runs/<container id>/http.marker          (it subscribed over HTTP)
    .../executors/<executor id>/runs/<container id>/executor.sentinel    (it terminated)
    .../executors/<executor id>/runs/<container id>/tasks/<task id>/task.info
    .../executors/<executor id>/runs/<container id>/tasks/<task id>/task.updates
```

``*.info`` hold the JSON of FrameworkInfo / ExecutorInfo / TaskInfo (Mesos writes protobuf);
``task.updates`` is the status update stream, one JSON record a line: ``{"type": "UPDATE",
"update": <TaskStatus>}`` or ``{"type": "ACK", "uuid": <uuid>}`` (Mesos' ``StatusUpdateRecord``).
Every file is written atomically or appended and fsync'ed before the agent acts on it. A torn last
line of ``task.updates`` (the agent died while appending) is ignored, as Mesos does.

Independently of checkpointing, ``<agent work dir>/containers/<container id>.json`` records every
executor container (the containerizer's runtime directory), so that a restarted agent destroys the
executors it does not recover (Mesos' orphan containers). As Mesos' containerizer
(``src/slave/containerizer/mesos/containerizer.cpp`` ``launch``/``_launch``/``exec``), the record is
written before the executor process is forked (``pid`` null), the process is forked blocked on a
pipe, its pid and start time are checkpointed (``forked.pid``/``forked.start`` first, then the
record's ``pid``/``start_time``), and only then is it released to exec the executor's command. A
record without a pid is a container whose process never ran executor code: it exits by itself
when the agent that forked it is gone (its end of the pipe closes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Json = dict[str, Any]


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: object) -> None:
    """``data`` as JSON in ``path``: written to a temporary file, fsync'ed, renamed over ``path``,
    and the rename fsync'ed (Mesos' ``state::checkpoint``): after a crash ``path`` holds the old or
    the new content, and once this returns, the new one."""
    write_text_atomically(path, json.dumps(data, indent=1))


def write_text_atomically(path: Path, text: str) -> None:
    """``text`` in ``path``, durably and atomically (see ``write_atomically``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def append_record(path: Path, record: Json) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


class MetaPaths:
    """Paths of one agent's checkpoint (``paths::getMetaRootDir`` and below)."""

    def __init__(self, meta_dir: Path, agent_id: str) -> None:
        self.root = meta_dir / "slaves" / agent_id

    def framework(self, fid: str) -> Path:
        return self.root / "frameworks" / fid

    def framework_info(self, fid: str) -> Path:
        return self.framework(fid) / "framework.info"

    def executor(self, fid: str, eid: str) -> Path:
        return self.framework(fid) / "executors" / eid

    def executor_info(self, fid: str, eid: str) -> Path:
        return self.executor(fid, eid) / "executor.info"

    def run(self, fid: str, eid: str, cid: str) -> Path:
        return self.executor(fid, eid) / "runs" / cid

    def task(self, fid: str, eid: str, cid: str, tid: str) -> Path:
        return self.run(fid, eid, cid) / "tasks" / tid


@dataclass
class TaskState:
    info: Json
    updates: list[Json] = field(default_factory=list)  # every update, in order
    acks: set[str] = field(default_factory=set)  # uuids acknowledged by the framework


@dataclass
class RunState:
    container_id: str
    pid: int | None = None
    start_time: int | None = None
    completed: bool = False
    tasks: dict[str, TaskState] = field(default_factory=dict)


@dataclass
class ExecutorState:
    info: Json
    run: RunState  # the latest run (Mesos recovers only the latest)


@dataclass
class FrameworkState:
    info: Json
    executors: dict[str, ExecutorState] = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _read_updates(path: Path) -> tuple[list[Json], set[str]]:
    updates: list[Json] = []
    acks: set[str] = set()
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return updates, acks
    for n, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if n == len(lines) - 1:
                log.warning("%s: ignoring a torn last record", path)
                continue
            raise
        if record.get("type") == "UPDATE":
            updates.append(record["update"])
        elif record.get("type") == "ACK":
            acks.add(str(record["uuid"]))
    return updates, acks


def _latest_run(executor_dir: Path) -> Path | None:
    runs = [p for p in (executor_dir / "runs").glob("*") if p.is_dir()]
    if not runs:
        return None
    # The latest run is the one whose pid file was written last (Mesos keeps a ``latest`` link).
    return max(
        runs,
        key=lambda p: (
            (p / "pids" / "forked.pid").stat().st_mtime
            if (p / "pids" / "forked.pid").exists()
            else p.stat().st_mtime
        ),
    )


def read_state(paths: MetaPaths) -> dict[str, FrameworkState]:
    """Everything checkpointed under ``paths`` (``state::recover``). A framework or executor whose
    files cannot be read is left out with an error in the log (Mesos' ``--strict=false``)."""
    frameworks: dict[str, FrameworkState] = {}
    root = paths.root / "frameworks"
    if not root.is_dir():
        return frameworks
    for fdir in sorted(root.iterdir()):
        try:
            fw = FrameworkState(_read_json(fdir / "framework.info"))
        except (OSError, ValueError) as error:
            log.error("checkpoint of framework %s unreadable (%s): not recovered", fdir.name, error)
            continue
        frameworks[fdir.name] = fw
        for edir in sorted((fdir / "executors").glob("*")):
            try:
                info = _read_json(edir / "executor.info")
                rdir = _latest_run(edir)
                if rdir is None:
                    continue
                run = RunState(
                    container_id=rdir.name,
                    pid=_read_int(rdir / "pids" / "forked.pid"),
                    start_time=_read_int(rdir / "pids" / "forked.start"),
                    completed=(rdir / "executor.sentinel").exists(),
                )
                for tdir in sorted((rdir / "tasks").glob("*")):
                    updates, acks = _read_updates(tdir / "task.updates")
                    run.tasks[tdir.name] = TaskState(_read_json(tdir / "task.info"), updates, acks)
            except (OSError, ValueError, KeyError) as error:
                log.error(
                    "checkpoint of executor %s of framework %s unreadable (%s): not recovered",
                    edir.name,
                    fdir.name,
                    error,
                )
                continue
            fw.executors[edir.name] = ExecutorState(info, run)
    return frameworks


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
