"""Config of the Redis workload for the Docker runtime: the image's redis-server, the suite's Redis
image by default, checks on the executor's interpreter (they run outside the container)."""

from __future__ import annotations

import sys

from redis_helpers import MASTER, NAME, PASSWORD, SLAVE

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.common.images import REDIS_IMAGE
from mesos_stateful.testing.workloads import WorkloadServer, context, instance, pending_member
from mesos_stateful.workloads.redis.config import build_launch
from mesos_stateful.workloads.redis.settings import RedisSettings

DOCKER, PROCESS = types_pb2.RUNTIME_DOCKER, types_pb2.RUNTIME_PROCESS


def launch(runtime: int, member: int = 0, image: str = "", **settings: object) -> types_pb2.LaunchSpec:
    members = [pending_member(NAME, 0, MASTER), pending_member(NAME, 1, SLAVE)]
    members[0].state, members[0].host, members[0].ports["redis"] = (
        types_pb2.MEMBER_STATE_RUNNING,
        "10.0.0.1",
        31001,
    )
    inst = instance(NAME, "redis", members)
    inst.spec.runtime, inst.spec.image = runtime, image  # type: ignore[assignment]
    ctx = context(inst, f"{NAME}-{member}", {"password": PASSWORD})
    return build_launch(ctx, RedisSettings(register_in_state=False, **settings))  # type: ignore[arg-type]


def test_docker_member_runs_the_images_redis_server_with_the_same_arguments() -> None:
    for member in (0, 1):
        docker, process = launch(DOCKER, member), launch(PROCESS, member)
        assert docker.runtime == DOCKER and process.runtime == PROCESS
        assert docker.argv[0] == "/usr/bin/redis-server"  # Debian's path in mesos-stateful/redis
        assert process.argv[0] == "redis-server"  # the agent's PATH
        # Sandbox and volume are mounted at their own paths and the network is the agent's:
        # every other argument is the same.
        assert list(docker.argv[1:]) == list(process.argv[1:])
        assert list(docker.files) == list(process.files)
        assert docker.image == REDIS_IMAGE
        # Checks run in the executor, outside the container: the executor's interpreter.
        for check in (docker.readiness, docker.health):
            assert check.command.argv[0] == sys.executable
            assert check == (process.readiness if check is docker.readiness else process.health)


def test_unspecified_runtime_is_the_process_runtime() -> None:
    old = launch(types_pb2.RUNTIME_UNSPECIFIED)
    assert old.runtime == PROCESS and old.argv[0] == "redis-server"


def test_image_and_binary_settings() -> None:
    assert launch(DOCKER, image="my/redis:7").image == "my/redis:7"
    custom = launch(DOCKER, default_image="other/redis:1", docker_redis_server="/opt/redis/bin/redis-server")
    assert custom.image == "other/redis:1"
    assert custom.argv[0] == "/opt/redis/bin/redis-server"


async def test_describe_names_the_suites_image(workload: WorkloadServer) -> None:
    d = (await workload.stub.Describe(pb.DescribeRequest())).description
    assert d.default_image == REDIS_IMAGE
