"""Settings of the Redis workload service (``STATEFUL_REDIS_*`` / ``--flag``)."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mesos_stateful.sdk import WorkloadSettings
from mesos_stateful.workloads.redis.description import DEFAULT_IMAGE


class RedisSettings(WorkloadSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_REDIS_")

    listen: str = Field("127.0.0.1:7401", description="host:port the gRPC server binds (port 0: any)")
    redis_server: str = Field(
        "redis-server",
        description="the redis-server binary members run (process runtime: looked up on the agent's PATH)",
    )
    redis_server_versions: dict[str, str] = Field(
        {},
        description="other redis-server builds members may run (process runtime), name -> binary, e.g. "
        '{"7.2": "/opt/redis-7.2/bin/redis-server"}; an instance picks one with config version=<name>',
    )
    docker_redis_server: str = Field(
        "/usr/bin/redis-server",
        description="the redis-server binary in the image members run (Docker runtime; Debian's path)",
    )
    default_image: str = Field(
        DEFAULT_IMAGE, description="image of members when the instance names none (Docker runtime)"
    )
    probe: Literal["python", "redis-cli"] = Field(
        "python",
        description="how readiness/health are checked: 'python' runs probe_python -m "
        "mesos_stateful.workloads.redis.probe (the executor on the same machine and venv, whatever the "
        "runtime: checks run in the executor, outside the container); 'redis-cli' runs a sh script "
        "using redis-cli (needs only sh, grep and redis-cli where the executor runs)",
    )
    probe_python: str = Field(
        sys.executable,
        description="Python that runs the readiness/health probe (python -m "
        "mesos_stateful.workloads.redis.probe) on the agent; default: this service's own interpreter, "
        "right for the process runtime on the same machine",
    )
    check_interval_ms: int = Field(1000, description="interval of the readiness and health checks")
    health_grace_period_ms: int = Field(
        30000, description="health check failures ignored after start (a large dataset loads slowly)"
    )
    link_down_repair_seconds: float = Field(
        10.0,
        gt=0,
        description="CheckMember: a replica whose link to the master stays down longer than this "
        "(not a reconnect in progress) asks to be re-pointed (StartSlave sets its credentials again)",
    )
    max_lag_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="CheckMember: a replica further behind its master than this many bytes of the "
        "replication stream (master_repl_offset - the replica's offset) is not CAUGHT_UP",
    )
    min_replicas_max_lag: int = Field(
        2,
        ge=2,
        description="self-fencing, in whole seconds: a master of an instance with more than one member "
        "runs with min-replicas-to-write 1 and this min-replicas-max-lag, so it refuses writes "
        "(NOREPLICAS) once no replica has acknowledged within this many seconds. At least 2: replicas "
        "acknowledge once per second and Redis counts in whole seconds, so a healthy replica can show "
        "a lag of 2. Fence answers SELF_FENCED with self_fence_seconds = this + 2 (see README)",
    )
    fence_timeout_seconds: float = Field(
        1.0,
        gt=0,
        description="Fence: how long the old master gets to answer before it is taken for unreachable "
        "(then its replicas are detached and it fences itself)",
    )

    @property
    def self_fence_seconds(self) -> float:
        """Seconds after the last replica of a cut-off master was detached by which the master
        refuses every write: ``min_replicas_max_lag + 2`` (see ``replication.self_fence_seconds``)."""
        return float(self.min_replicas_max_lag + 2)
