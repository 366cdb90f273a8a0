"""Settings of the Redis workload service (``STATEFUL_REDIS_*`` / ``--flag``)."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mesos_stateful.workloads.base import WorkloadSettings


class RedisSettings(WorkloadSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_REDIS_")

    listen: str = Field("127.0.0.1:7401", description="host:port the gRPC server binds (port 0: any)")
    redis_server: str = Field(
        "redis-server",
        description="the redis-server binary members run (process runtime: looked up on the agent's PATH)",
    )
    probe: Literal["python", "redis-cli"] = Field(
        "python",
        description="how readiness/health are checked: 'python' runs probe_python -m "
        "mesos_stateful.workloads.redis.probe (process runtime: same machine and venv); 'redis-cli' "
        "runs a sh script using redis-cli (needs only sh, grep and redis-cli, as in the redis image)",
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
