"""The real-cluster mode of the offers service (``deploy/compose.cluster.yaml``): with
``executor_image`` set, the TaskInfo it sends has an ExecutorInfo whose ContainerInfo runs the
executor in that image through Mesos's Docker containerizer. Every TaskInfo and operation is parsed
strictly against the project's ``mesos.v1`` messages (unknown fields, wrong types and missing
required fields fail) and passes the local cluster's copy of the master's validation rules."""

from __future__ import annotations

from typing import Any

import pytest
from conformance.test_framework_builders import (
    AGENT,
    FRAMEWORK_ID,
    ROLE,
    assert_valid_operations,
    assert_valid_task,
    offer,
    reserved_group,
    spec,
    task_of,
    unreserved,
)

from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.common.images import IMAGE_PYTHON, SUITE_IMAGE
from mesos_stateful.localcluster import encoding
from mesos_stateful.offers import mesos
from mesos_stateful.offers.matching import PLAIN, RESERVE, RESERVED, Assignment
from mesos_stateful.offers.settings import OffersSettings

Json = dict[str, Any]

PRINCIPAL = "mesos-stateful"


def settings(**values: Any) -> OffersSettings:
    return OffersSettings(executor_image=SUITE_IMAGE, **values)


def container_error(container: mesos_pb2.ContainerInfo) -> str | None:
    """The rules of ``validateContainerInfo`` / ``validateVolume`` (Mesos
    ``src/common/validation.cpp``) that apply to what offers sends."""
    for volume in container.volumes:
        if not volume.HasField("host_path"):
            return "Invalid volume: Only one of them should be set: 'host_path', 'image' and 'source'"
    if container.type == mesos_pb2.ContainerInfo.DOCKER and not container.HasField("docker"):
        return "DockerInfo 'docker' is not set for DOCKER typed ContainerInfo"
    return None


def container_of(info: Json) -> mesos_pb2.ContainerInfo:
    executor = encoding.to_message(info["executor"], mesos_pb2.ExecutorInfo)
    assert isinstance(executor, mesos_pb2.ExecutorInfo)
    assert executor.HasField("container"), "the ExecutorInfo carries no ContainerInfo"
    assert container_error(executor.container) is None
    # Docker::RunOptions::create (src/docker/docker.cpp): a relative host_path needs an absolute
    # container_path; host networking allows no hostname and no port mappings.
    for volume in executor.container.volumes:
        assert volume.host_path.startswith("/"), volume
    assert not executor.container.hostname
    return executor.container


def test_settings_name_the_executor_container() -> None:
    assert OffersSettings().executor_container is None
    container = settings(executor_agent_work_dir="/srv/mesos").executor_container
    assert container is not None
    assert container.image == SUITE_IMAGE
    assert container.command == f"exec {IMAGE_PYTHON} -m mesos_stateful.executor"
    assert container.agent_work_dir == "/srv/mesos"
    with pytest.raises(ValueError, match="executor_agent_work_dir must be an absolute path"):
        settings(executor_agent_work_dir="var/lib/mesos")


def test_plain_launch_runs_the_executor_in_its_image() -> None:
    container = settings().executor_container
    launch = spec(volume=False, port_names=("web",))
    assignment = Assignment(launch.task_id, "O1", AGENT, "127.0.0.2", {"web": 31000}, PLAIN)
    info = mesos.task_info(
        task_of(launch), assignment, offer(unreserved()), "unused", FRAMEWORK_ID, ROLE, PRINCIPAL, container
    )
    assert_valid_task(info, PRINCIPAL)
    parsed = container_of(info)
    assert parsed.type == mesos_pb2.ContainerInfo.DOCKER
    assert parsed.docker.image == SUITE_IMAGE
    assert parsed.docker.network == mesos_pb2.ContainerInfo.DockerInfo.HOST
    assert [(v.container_path, v.host_path, v.mode) for v in parsed.volumes] == [
        ("/var/run/docker.sock", "/var/run/docker.sock", mesos_pb2.Volume.RW)
    ]
    command = encoding.to_message(info["executor"]["command"], mesos_pb2.CommandInfo)
    assert isinstance(command, mesos_pb2.CommandInfo)
    assert command.shell and command.value == f"exec {IMAGE_PYTHON} -m mesos_stateful.executor"
    env = {v.name: v.value for v in command.environment.variables}
    assert env == {"STATEFUL_EXECUTOR_DOCKER_HOST_PATHS": "auto"}


@pytest.mark.parametrize("mode", [RESERVE, RESERVED])
def test_launch_with_a_volume_mounts_it_from_the_agents_work_dir(mode: str) -> None:
    container = settings(executor_agent_work_dir="/var/lib/mesos").executor_container
    launch = spec(volume=True, port_names=("web",), agent=AGENT if mode == RESERVED else "")
    port = 31000 if mode == RESERVE else 31500
    assignment = Assignment(launch.task_id, "O1", AGENT, "127.0.0.2", {"web": port}, mode)
    resources = unreserved() + (reserved_group(PRINCIPAL, with_volume=True) if mode == RESERVED else [])
    the_offer = offer(resources)
    operations = mesos.volume_operations(task_of(launch), assignment, the_offer, ROLE, PRINCIPAL)
    info = mesos.task_info(
        task_of(launch), assignment, the_offer, "unused", FRAMEWORK_ID, ROLE, PRINCIPAL, container
    )
    assert_valid_task(info, PRINCIPAL)
    launch_operation = {"type": "LAUNCH", "launch": {"task_infos": [info]}}
    assert_valid_operations([*operations, launch_operation], PRINCIPAL)
    parsed = container_of(info)
    volumes = {v.container_path: (v.host_path, v.mode) for v in parsed.volumes}
    # Relative: Mesos's Docker containerizer joins it to the mapped sandbox (/mnt/mesos/sandbox/data),
    # where the executor looks for the member's volume.
    assert volumes["data"] == ("/var/lib/mesos/volumes/roles/stateful/vol-0.v1", mesos_pb2.Volume.RW)
    [volume] = [r for r in info["resources"] if "disk" in r]
    assert volume["disk"]["volume"]["container_path"] == "data"


def test_persistent_volume_path_encodes_hierarchical_roles() -> None:
    assert mesos.persistent_volume_path("/w", "eng/stateful", "p1") == "/w/volumes/roles/eng stateful/p1"
