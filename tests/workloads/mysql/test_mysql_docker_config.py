"""Config of the MySQL workload for the Docker runtime: the bootstrap run by the image's Python with
the image's MariaDB binaries, the suite's MariaDB image by default, checks on the executor's
interpreter (they run outside the container)."""

from __future__ import annotations

import json
import sys

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common.images import IMAGE_PYTHON, MARIADB_IMAGE
from mesos_stateful.testing.workloads import context, instance, pending_member
from mesos_stateful.workloads.mysql.config import BOOTSTRAP_MODULE, build_launch
from mesos_stateful.workloads.mysql.description import description
from mesos_stateful.workloads.mysql.member_file import FILE_NAME
from mesos_stateful.workloads.mysql.settings import MysqlSettings

SECRETS = {"admin_password": "a", "replication_password": "r"}
MASTER, SLAVE = types_pb2.ROLE_MASTER, types_pb2.ROLE_SLAVE
DOCKER, PROCESS = types_pb2.RUNTIME_DOCKER, types_pb2.RUNTIME_PROCESS


def launch(runtime: int, member: int = 0, image: str = "", **settings: object) -> types_pb2.LaunchSpec:
    members = [pending_member("db", 0, MASTER), pending_member("db", 1, SLAVE)]
    members[0].state, members[0].host, members[0].ports["mysql"] = (
        types_pb2.MEMBER_STATE_RUNNING,
        "10.0.0.1",
        3306,
    )
    inst = instance("db", "mysql", members)
    inst.spec.runtime, inst.spec.image = runtime, image  # type: ignore[assignment]
    ctx = context(inst, f"db-{member}", SECRETS)
    return build_launch(ctx, MysqlSettings(register_in_state=False, **settings))  # type: ignore[arg-type]


def member_file(launch: types_pb2.LaunchSpec) -> dict[str, object]:
    (f,) = [f for f in launch.files if f.path == FILE_NAME]
    data: dict[str, object] = json.loads(f.content)
    return data


def test_docker_member_runs_the_bootstrap_with_the_images_python_and_binaries() -> None:
    for member in (0, 1):
        docker, process = launch(DOCKER, member), launch(PROCESS, member)
        assert docker.runtime == DOCKER and process.runtime == PROCESS
        assert list(docker.argv) == [IMAGE_PYTHON, "-m", BOOTSTRAP_MODULE, "${MESOS_SANDBOX}"]
        assert list(process.argv) == [sys.executable, "-m", BOOTSTRAP_MODULE, "${MESOS_SANDBOX}"]
        assert docker.image == MARIADB_IMAGE
        docker_file, process_file = member_file(docker), member_file(process)
        assert docker_file["mariadbd"] == "/usr/sbin/mariadbd"
        assert docker_file["install_db"] == "/usr/bin/mariadb-install-db"
        # Everything else in the member file and my.cnf is the same: sandbox and volume at their
        # own paths, the agent's network.
        for key in ("mariadbd", "install_db"):
            del docker_file[key], process_file[key]
        assert docker_file == process_file
        assert [f for f in docker.files if f.path != FILE_NAME] == [
            f for f in process.files if f.path != FILE_NAME
        ]
        # Checks run in the executor, outside the container: the executor's interpreter.
        assert docker.readiness == process.readiness and docker.health == process.health
        assert docker.readiness.command.argv[0] == sys.executable


def test_unspecified_runtime_is_the_process_runtime() -> None:
    old = launch(types_pb2.RUNTIME_UNSPECIFIED)
    assert old.runtime == PROCESS and old.argv[0] == sys.executable


def test_image_and_binary_settings() -> None:
    assert launch(DOCKER, image="my/mariadb:11").image == "my/mariadb:11"
    custom = launch(
        DOCKER,
        default_image="other/mariadb:1",
        image_python="/usr/bin/python3",
        docker_mariadbd="/opt/mariadb/bin/mariadbd",
        docker_install_db="/opt/mariadb/bin/mariadb-install-db",
    )
    assert custom.image == "other/mariadb:1" and custom.argv[0] == "/usr/bin/python3"
    assert member_file(custom)["mariadbd"] == "/opt/mariadb/bin/mariadbd"
    assert member_file(custom)["install_db"] == "/opt/mariadb/bin/mariadb-install-db"


def test_description_names_the_suites_image() -> None:
    assert description().default_image == MARIADB_IMAGE
    assert MysqlSettings(register_in_state=False).default_image == MARIADB_IMAGE
