"""The workload images (real engine): Debian's servers at Debian's paths, and each one works."""

from __future__ import annotations

import docker
import pytest
from images_helpers import shell

from mesos_stateful.common.images import ETCD_IMAGE, IMAGE_PYTHON, MARIADB_IMAGE, REDIS_IMAGE

pytestmark = pytest.mark.usefixtures("docker_images")

# Poll inside the container with a deadline (no fixed sleeps): up to 30 s.
UNTIL = "for _ in $(seq 300); do {probe} >/dev/null 2>&1 && break; sleep 0.1; done; {probe}"


@pytest.mark.parametrize(
    ("image", "binaries"),
    [
        (REDIS_IMAGE, ["/usr/bin/redis-server", "/usr/bin/redis-cli"]),
        (MARIADB_IMAGE, ["/usr/sbin/mariadbd", "/usr/bin/mariadb-install-db", "/usr/bin/mariadb"]),
        (ETCD_IMAGE, ["/usr/bin/etcd", "/usr/bin/etcdctl"]),
    ],
)
def test_binaries_and_the_suite(docker_client: docker.DockerClient, image: str, binaries: list[str]) -> None:
    script = " && ".join(f"test -x {b}" for b in binaries)
    script += f" && {IMAGE_PYTHON} -c 'import mesos_stateful.workloads, mesos_stateful.executor; print(1)'"
    code, out = shell(docker_client, image, script)
    assert (code, out.strip()) == (0, "1"), out


def test_redis_serves(docker_client: docker.DockerClient) -> None:
    probe = "redis-cli -s /tmp/redis.sock ping"
    code, out = shell(
        docker_client,
        REDIS_IMAGE,
        "redis-server --port 0 --unixsocket /tmp/redis.sock --daemonize yes --dir /tmp; "
        + UNTIL.format(probe=probe)
        + "; redis-cli -s /tmp/redis.sock set k v; redis-cli -s /tmp/redis.sock get k",
    )
    assert code == 0, out
    assert out.split()[-3:] == ["PONG", "OK", "v"], out


def test_mariadb_initialises_a_datadir_and_serves(docker_client: docker.DockerClient) -> None:
    # The flags of workloads/mysql/bootstrap.py's initialise() (as root: --user=root).
    probe = "mariadb --socket=/tmp/my.sock -N -e 'SELECT 40+2'"
    code, out = shell(
        docker_client,
        MARIADB_IMAGE,
        "mariadb-install-db --no-defaults --datadir=/data/db --auth-root-authentication-method=normal "
        "--skip-test-db --skip-name-resolve --user=root >/tmp/install.log 2>&1"
        " || { cat /tmp/install.log; exit 1; }; "
        "test -d /data/db/mysql; "
        "mariadbd --no-defaults --datadir=/data/db --socket=/tmp/my.sock --skip-networking --user=root "
        ">/tmp/server.log 2>&1 & " + UNTIL.format(probe=probe) + " || { cat /tmp/server.log; exit 1; }",
    )
    assert code == 0, out
    assert out.split()[-1] == "42", out


def test_etcd_serves(docker_client: docker.DockerClient) -> None:
    endpoint = "http://127.0.0.1:23790"
    probe = f"etcdctl --endpoints={endpoint} endpoint health"
    code, out = shell(
        docker_client,
        ETCD_IMAGE,
        f"etcd --data-dir /tmp/etcd --listen-client-urls {endpoint} --advertise-client-urls {endpoint} "
        "--listen-peer-urls http://127.0.0.1:23800 >/tmp/etcd.log 2>&1 & "
        + UNTIL.format(probe=probe)
        + f" >/dev/null || {{ cat /tmp/etcd.log; exit 1; }}; etcdctl --endpoints={endpoint} put k v; "
        f"etcdctl --endpoints={endpoint} get k --print-value-only",
    )
    assert code == 0, out
    assert out.split()[-2:] == ["OK", "v"], out
