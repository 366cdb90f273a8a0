"""The launch carries the instance's runtime: lifecycle copies ``InstanceSpec.runtime`` into
``LaunchSpec.runtime`` (a record stored before runtimes existed runs processes), whatever the
workload's Config answered."""

from __future__ import annotations

import pytest

from lifecycle.plan_helpers import description, instance, member
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import planner


@pytest.mark.parametrize(
    ("spec_runtime", "config_runtime", "launched"),
    [
        (T.RUNTIME_UNSPECIFIED, T.RUNTIME_UNSPECIFIED, T.RUNTIME_PROCESS),  # an old record
        (T.RUNTIME_PROCESS, T.RUNTIME_UNSPECIFIED, T.RUNTIME_PROCESS),
        (T.RUNTIME_DOCKER, T.RUNTIME_UNSPECIFIED, T.RUNTIME_DOCKER),
        # The instance decides, not the workload's answer.
        (T.RUNTIME_PROCESS, T.RUNTIME_DOCKER, T.RUNTIME_PROCESS),
        (T.RUNTIME_DOCKER, T.RUNTIME_PROCESS, T.RUNTIME_DOCKER),
    ],
)
def test_launch_runtime_is_the_instances(spec_runtime: int, config_runtime: int, launched: int) -> None:
    inst = instance(3)
    inst.spec.runtime = spec_runtime  # type: ignore[assignment]
    m = member(0, T.ROLE_MASTER)
    config = T.LaunchSpec(argv=["redis-server"], runtime=config_runtime)  # type: ignore[arg-type]
    launch = planner.launch_spec(config, inst, m, description())
    assert launch.runtime == launched
    # The image: the spec's, else the workload's answer, else its default.
    assert launch.image == "redis:7"
    inst.spec.image = "my/redis:1"
    assert planner.launch_spec(config, inst, m, description()).image == "my/redis:1"
