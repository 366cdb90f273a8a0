"""The agent's clean-up of member containers (the executor's Docker runtime), by their labels.

An executor removes its member's container itself; when it cannot (it was SIGKILLed, its agent
died), the agent does, as Mesos' Docker containerizer destroys a container whose executor is gone
and removes orphans on recovery (``DockerContainerizerProcess::_recover``, ``--docker_kill_orphans``
in ``src/slave/containerizer/docker.cpp``):

* an executor ended: its containers (labels agent-id + framework-id + executor-id) go;
* agent recovery, and the agent's destroy / kill: every container labelled with the agent's id
  that belongs to no live executor goes.

Costs nothing when no engine runs: without a Docker socket (``DOCKER_HOST`` or the default
``/var/run/docker.sock``) nothing is imported or asked. The SDK runs in a thread, never on the
event loop. Failures are logged, never raised: a clean-up must not break the agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

from mesos_stateful.common import images

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/run/docker.sock"
_client: Any = None
_client_lock = threading.Lock()


def engine_configured() -> bool:
    """Whether a Docker engine may be there: ``DOCKER_HOST`` set to a TCP / SSH address or an
    existing unix socket, or the default socket exists."""
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return os.path.exists(host.removeprefix("unix://"))
    if host:
        return True
    return os.path.exists(DEFAULT_SOCKET)


async def remove_executor_containers(agent_id: str, framework_id: str, executor_id: str) -> list[str]:
    """Remove the containers of one executor (it ended). Returns their names."""
    if not agent_id or not engine_configured():
        return []
    labels = {
        images.LABEL_AGENT: agent_id,
        images.LABEL_FRAMEWORK: framework_id,
        images.LABEL_EXECUTOR: executor_id,
    }
    return await asyncio.to_thread(_remove, labels, frozenset())


async def remove_agent_containers(agent_id: str, live: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Remove every container of the agent whose executor (framework id, executor id) is not in
    ``live``. Returns their names."""
    if not agent_id or not engine_configured():
        return []
    return await asyncio.to_thread(_remove, {images.LABEL_AGENT: agent_id}, frozenset(live))


def _remove(labels: dict[str, str], live: frozenset[tuple[str, str]]) -> list[str]:
    global _client
    try:
        import docker
        import requests
        from docker.errors import DockerException, NotFound
    except ImportError:  # pragma: no cover - the docker SDK is a dependency
        return []
    removed: list[str] = []
    with _client_lock:
        try:
            if _client is None:
                _client = docker.from_env(timeout=30)
            filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
            for container in _client.containers.list(all=True, filters=filters):
                owner = (
                    container.labels.get(images.LABEL_FRAMEWORK, ""),
                    container.labels.get(images.LABEL_EXECUTOR, ""),
                )
                if owner in live:
                    continue
                try:
                    container.remove(force=True, v=True)
                except NotFound:
                    continue
                removed.append(container.name)
        except (DockerException, requests.RequestException, OSError) as error:
            _client = None
            log.warning("cannot clean up member containers %s: %s", labels, error)
            return removed
    if removed:
        log.info("removed member containers %s (labels %s)", ", ".join(removed), labels)
    return removed


async def remove_orphans(agent: Any) -> list[str]:
    """On agent recovery: remove the agent's containers of every executor that is not a live one
    (``agent``: a :class:`~mesos_stateful.localcluster.agent.Agent`). Live: known to the agent, not
    terminated, its process there (a recovered executor may already have re-subscribed: RUNNING)."""
    from mesos_stateful.localcluster.procs import is_alive

    live = {
        (ex.framework_id, ex.executor_id)
        for ex in agent.executors.values()
        if ex.state != "TERMINATED" and (ex.pid is None or is_alive(ex.pid, ex.started))
    }
    return await remove_agent_containers(agent.id, live)
