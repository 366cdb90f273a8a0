"""Config of the etcd workload for the Docker runtime: the bootstrap run by the image's Python with
the image's etcd, the suite's etcd image by default, checks on the executor's interpreter (they run
outside the container)."""

from __future__ import annotations

import json
import sys

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common.images import ETCD_IMAGE, IMAGE_PYTHON
from mesos_stateful.testing.workloads import context, instance, pending_member
from mesos_stateful.workloads.etcd.config import BOOTSTRAP_MODULE, build_launch
from mesos_stateful.workloads.etcd.description import description
from mesos_stateful.workloads.etcd.member_file import FILE_NAME
from mesos_stateful.workloads.etcd.settings import EtcdSettings

DOCKER, PROCESS = types_pb2.RUNTIME_DOCKER, types_pb2.RUNTIME_PROCESS


def launch(runtime: int, image: str = "", **settings: object) -> types_pb2.LaunchSpec:
    members = [pending_member("kv", o, types_pb2.ROLE_PEER) for o in range(3)]
    inst = instance("kv", "etcd", members)
    inst.spec.runtime, inst.spec.image = runtime, image  # type: ignore[assignment]
    return build_launch(context(inst, "kv-1"), EtcdSettings(**settings))  # type: ignore[arg-type]


def member_file(launch: types_pb2.LaunchSpec) -> dict[str, object]:
    (f,) = launch.files
    assert f.path == FILE_NAME
    data: dict[str, object] = json.loads(f.content)
    return data


def test_docker_peer_runs_the_bootstrap_with_the_images_python_and_etcd() -> None:
    docker, process = launch(DOCKER), launch(PROCESS)
    assert docker.runtime == DOCKER and process.runtime == PROCESS
    assert list(docker.argv) == [IMAGE_PYTHON, "-m", BOOTSTRAP_MODULE, "${MESOS_SANDBOX}/" + FILE_NAME]
    assert process.argv[0] == sys.executable and list(process.argv[1:]) == list(docker.argv[1:])
    assert docker.image == ETCD_IMAGE
    docker_file, process_file = member_file(docker), member_file(process)
    assert docker_file.pop("etcd") == "/usr/bin/etcd"
    process_file.pop("etcd")
    assert docker_file == process_file
    # Checks run in the executor, outside the container: the executor's interpreter.
    assert docker.readiness == process.readiness and docker.health == process.health
    assert docker.readiness.command.argv[0] == sys.executable


def test_unspecified_runtime_is_the_process_runtime() -> None:
    old = launch(types_pb2.RUNTIME_UNSPECIFIED)
    assert old.runtime == PROCESS and old.argv[0] == sys.executable


def test_image_and_binary_settings() -> None:
    assert launch(DOCKER, image="my/etcd:3").image == "my/etcd:3"
    custom = launch(
        DOCKER, default_image="other/etcd:1", image_python="/usr/bin/python3", docker_etcd="/opt/etcd"
    )
    assert custom.image == "other/etcd:1" and custom.argv[0] == "/usr/bin/python3"
    assert member_file(custom)["etcd"] == "/opt/etcd"


def test_description_names_the_suites_image() -> None:
    assert description().default_image == ETCD_IMAGE
    assert EtcdSettings().default_image == ETCD_IMAGE
