"""The suite's container images: names, and where things live inside them.

Built here by ``make images`` (``scripts/build_images.sh``; nothing is pulled), from
``deploy/images/``. Every image derives from the suite image, so a workload image also runs the
suite's own member helpers (the MariaDB and etcd bootstrap modules) with :data:`IMAGE_PYTHON`.
"""

from __future__ import annotations

from importlib import metadata

#: The image tag: the project's version (``pyproject.toml``).
try:
    TAG = metadata.version("mesos-stateful")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a tree without install
    TAG = "0.1.0"

#: Debian bookworm root file system (pulled ``debian:bookworm-slim`` or built with debootstrap).
BASE_IMAGE = "mesos-stateful/base:bookworm"
#: Python 3.11 with the suite installed in :data:`IMAGE_VENV`; runs every service and the executor.
SUITE_IMAGE = f"mesos-stateful/suite:{TAG}"
#: The suite image plus redis-server / redis-tools.
REDIS_IMAGE = f"mesos-stateful/redis:{TAG}"
#: The suite image plus mariadb-server / mariadb-client.
MARIADB_IMAGE = f"mesos-stateful/mariadb:{TAG}"
#: The suite image plus etcd-server / etcd-client.
ETCD_IMAGE = f"mesos-stateful/etcd:{TAG}"
ALL_IMAGES = (SUITE_IMAGE, REDIS_IMAGE, MARIADB_IMAGE, ETCD_IMAGE)

#: The virtual environment inside every image (first on PATH).
IMAGE_VENV = "/opt/mesos-stateful/venv"
#: The interpreter a member container runs the suite's helper modules with.
IMAGE_PYTHON = f"{IMAGE_VENV}/bin/python"

#: Label keys on every member container (``docker ps --filter label=...``).
LABEL_PREFIX = "org.mesos-stateful."
LABEL_INSTANCE = LABEL_PREFIX + "instance"
LABEL_MEMBER = LABEL_PREFIX + "member"
LABEL_TASK = LABEL_PREFIX + "task"
LABEL_AGENT = LABEL_PREFIX + "agent-id"
LABEL_FRAMEWORK = LABEL_PREFIX + "framework-id"
LABEL_EXECUTOR = LABEL_PREFIX + "executor-id"
