"""Settings of the etcd workload service (``STATEFUL_ETCD_*`` / ``--flag``)."""

from __future__ import annotations

import sys
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.sdk import IMAGE_PYTHON, WorkloadSettings
from mesos_stateful.workloads.etcd.description import DEFAULT_IMAGE


class EtcdSettings(WorkloadSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_ETCD_")

    listen: str = Field("127.0.0.1:7403", description="host:port the gRPC server binds (port 0: any)")
    etcd: str = Field("/usr/bin/etcd", description="the etcd binary members run (on the agent)")
    member_python: str = Field(
        sys.executable,
        description="Python that runs the member's bootstrap and check (python -m "
        "mesos_stateful.workloads.etcd.bootstrap / .check) on the agent; default: this service's own "
        "interpreter, right for the process runtime on the same machine",
    )
    default_image: str = Field(
        DEFAULT_IMAGE, description="image of members when the instance names none (Docker runtime)"
    )
    docker_etcd: str = Field("/usr/bin/etcd", description="the etcd binary in the image (Docker runtime)")
    image_python: str = Field(
        IMAGE_PYTHON,
        description="Python in the image that runs the member's bootstrap (Docker runtime; the checks "
        "run in the executor, outside the container, with member_python)",
    )
    check_interval_ms: int = Field(1000, description="interval of the readiness check")
    health_interval_ms: int = Field(5000, description="interval of the health check (a TCP connect)")
    join_timeout_seconds: float = Field(
        60.0,
        description="how long a starting peer keeps trying to add itself to the running cluster "
        "before it exits (and its task fails)",
    )
    request_timeout_seconds: float = Field(
        5.0, description="timeout of one call to etcd's member API (a cluster without quorum hangs)"
    )

    @model_validator(mode="after")
    def _check_etcd(self) -> Self:
        if self.check_interval_ms <= 0 or self.health_interval_ms <= 0:
            raise ValueError("check_interval_ms and health_interval_ms must be > 0")
        if self.join_timeout_seconds <= 0 or self.request_timeout_seconds <= 0:
            raise ValueError("join_timeout_seconds and request_timeout_seconds must be > 0")
        if self.request_timeout_seconds >= self.callback_timeout_seconds:
            raise ValueError("request_timeout_seconds must be below callback_timeout_seconds")
        return self
