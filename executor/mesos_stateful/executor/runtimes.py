"""Which runtime runs a launch."""

from __future__ import annotations

import os
from collections.abc import Mapping

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.executor.launch import InvalidTask, Launch
from mesos_stateful.executor.process_runtime import ProcessRuntime
from mesos_stateful.executor.runtime import Runtime
from mesos_stateful.executor.settings import ExecutorSettings


def runtime_for(
    launch: Launch,
    settings: ExecutorSettings | None = None,
    *,
    agent_id: str = "",
    environ: Mapping[str, str] | None = None,
) -> Runtime:
    """The runtime the launch asks for. Raises :class:`InvalidTask` for one this executor lacks.

    ``agent_id`` (the TaskInfo's, or SUBSCRIBED's) and the executor's ``MESOS_FRAMEWORK_ID`` /
    ``MESOS_EXECUTOR_ID`` (from ``environ``) label a member container, so the agent can find it."""
    kind = launch.spec.runtime
    if kind in (types_pb2.RUNTIME_UNSPECIFIED, types_pb2.RUNTIME_PROCESS):
        return ProcessRuntime()
    if kind == types_pb2.RUNTIME_DOCKER:
        # Imported here: the process runtime does not pay for the docker SDK's import.
        from mesos_stateful.executor.docker_runtime import DockerOptions, DockerRuntime

        env = dict(os.environ if environ is None else environ)
        if settings is None:
            settings = ExecutorSettings.model_construct()
        return DockerRuntime(
            DockerOptions(
                agent_id=agent_id,
                framework_id=env.get("MESOS_FRAMEWORK_ID", ""),
                executor_id=env.get("MESOS_EXECUTOR_ID", ""),
                network=settings.docker_network,
                host_paths=settings.docker_host_paths,
                timeout=settings.docker_timeout_seconds,
                environ=env,
            )
        )
    raise InvalidTask(f"unknown runtime {kind}")
