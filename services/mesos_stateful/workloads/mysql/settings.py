"""Settings of the MySQL (MariaDB) workload service (``STATEFUL_MYSQL_*`` / ``--flag``)."""

from __future__ import annotations

import re
import sys
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.sdk import IMAGE_PYTHON, WorkloadSettings
from mesos_stateful.workloads.mysql.description import DEFAULT_IMAGE

_USER = re.compile(r"^[A-Za-z0-9_]{1,32}$")


class MysqlSettings(WorkloadSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_MYSQL_")

    listen: str = Field("127.0.0.1:7402", description="host:port the gRPC server binds (port 0: any)")
    mariadbd: str = Field(
        "/usr/sbin/mariadbd", description="the MariaDB server binary members run (on the agent)"
    )
    mariadbd_versions: dict[str, str] = Field(
        {},
        description="other MariaDB server builds members may run (process runtime), name -> binary; "
        "an instance picks one with config version=<name>",
    )
    install_db: str = Field(
        "/usr/bin/mariadb-install-db",
        description="the tool that initialises an empty data directory (on the agent)",
    )
    member_python: str = Field(
        sys.executable,
        description="Python that runs the member's bootstrap and checks (python -m "
        "mesos_stateful.workloads.mysql.bootstrap / .check) on the agent; default: this service's own "
        "interpreter, right for the process runtime on the same machine",
    )
    default_image: str = Field(
        DEFAULT_IMAGE, description="image of members when the instance names none (Docker runtime)"
    )
    docker_mariadbd: str = Field(
        "/usr/sbin/mariadbd", description="the MariaDB server binary in the image (Docker runtime)"
    )
    docker_install_db: str = Field(
        "/usr/bin/mariadb-install-db",
        description="the tool that initialises an empty data directory, in the image (Docker runtime)",
    )
    image_python: str = Field(
        IMAGE_PYTHON,
        description="Python in the image that runs the member's bootstrap (Docker runtime; the checks "
        "run in the executor, outside the container, with member_python)",
    )
    admin_user: str = Field(
        "admin",
        description="the account given to people (password: the admin_password secret): every "
        "privilege but READ_ONLY ADMIN, so even it cannot write to a read-only replica by mistake",
    )
    operator_user: str = Field(
        "stateful",
        description="the account the suite itself uses (password: the admin_password secret), with "
        "every privilege: it promotes and re-points members and runs the checks",
    )
    replication_user: str = Field("replicator", description="the account replicas connect to the master as")
    check_interval_ms: int = Field(1000, description="interval of the readiness check")
    health_interval_ms: int = Field(5000, description="interval of the health check (a login)")
    health_grace_period_ms: int = Field(
        60000, description="health check failures ignored after start (crash recovery can be slow)"
    )
    promote_timeout_seconds: float = Field(
        12.0,
        description="most time StartMaster waits for a replica to apply the relay log it already "
        "received before it is made writable (past it: UNAVAILABLE, retried)",
    )
    catchup_probe_seconds: float = Field(
        10.0,
        description="how long a starting replica tries to read the master's GTID position (the "
        "position it must reach before it is ready)",
    )

    max_lag_transactions: int = Field(
        100,
        description="CheckMember: a replica more than this many transactions behind the master "
        "(GTID sequence numbers per domain, applied) is not CAUGHT_UP",
    )
    fence_timeout_seconds: float = Field(
        2.0,
        description="Fence: how long to try to reach the old master before fencing it by detaching "
        "its replicas instead (seconds)",
    )
    fence_lock_wait_seconds: float = Field(
        1.0,
        description="Fence / StartSlave: lock_wait_timeout of one SET GLOBAL read_only attempt "
        "(seconds, whole); commits still waiting for a semi-sync acknowledgement are killed "
        "between attempts",
    )

    @model_validator(mode="after")
    def _check_mysql(self) -> Self:
        for name in ("admin_user", "operator_user", "replication_user"):
            if not _USER.match(getattr(self, name)):
                raise ValueError(f"{name} must be 1-32 letters, digits or '_'")
        if len({self.admin_user, self.operator_user, self.replication_user}) != 3:
            raise ValueError("admin_user, operator_user and replication_user must differ")
        if self.check_interval_ms <= 0 or self.health_interval_ms <= 0 or self.health_grace_period_ms < 0:
            raise ValueError("check and health intervals must be > 0 and health_grace_period_ms >= 0")
        if not 0 < self.promote_timeout_seconds < self.callback_timeout_seconds:
            raise ValueError("promote_timeout_seconds must be > 0 and below callback_timeout_seconds")
        if self.max_lag_transactions < 0:
            raise ValueError("max_lag_transactions must not be negative")
        if not 0 < self.fence_timeout_seconds < self.callback_timeout_seconds:
            raise ValueError("fence_timeout_seconds must be > 0 and below callback_timeout_seconds")
        if not (
            self.fence_lock_wait_seconds >= 1
            and self.fence_lock_wait_seconds * 6 < self.callback_timeout_seconds
        ):
            raise ValueError(
                "fence_lock_wait_seconds must be >= 1 and 6 times it below callback_timeout_seconds"
            )
        if self.catchup_probe_seconds < 0:
            raise ValueError("catchup_probe_seconds must not be negative")
        return self
