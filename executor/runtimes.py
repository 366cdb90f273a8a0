"""Which runtime runs a launch."""

from __future__ import annotations

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.executor.launch import InvalidTask, Launch
from mesos_stateful.executor.process_runtime import ProcessRuntime
from mesos_stateful.executor.runtime import Runtime


def runtime_for(launch: Launch) -> Runtime:
    """The runtime the launch asks for. Raises :class:`InvalidTask` for one this executor lacks."""
    kind = launch.spec.runtime
    if kind in (types_pb2.RUNTIME_UNSPECIFIED, types_pb2.RUNTIME_PROCESS):
        return ProcessRuntime()
    if kind == types_pb2.RUNTIME_DOCKER:
        raise InvalidTask("the docker runtime is not available in this executor yet")
    raise InvalidTask(f"unknown runtime {kind}")
