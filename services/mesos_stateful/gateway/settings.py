"""Settings of the gateway (the public API server): flags and ``STATEFUL_GATEWAY_*`` variables."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.common.metrics_server import METRICS_LISTEN_DESCRIPTION, check_listen
from mesos_stateful.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_GATEWAY_")

    listen: str = Field("127.0.0.1:7000", description="host:port the public gRPC API binds (port 0: any)")
    metrics_listen: str = Field("", description=METRICS_LISTEN_DESCRIPTION)
    state_endpoint: str = Field("127.0.0.1:7100", description="host:port of the state service")
    max_replicas: int = Field(9, description="largest member count an instance may ask for")
    max_cpus: float = Field(16.0, description="largest cpus one member may ask for")
    max_mem_mb: int = Field(65536, description="largest memory (MiB) one member may ask for")
    max_disk_mb: int = Field(1048576, description="largest disk (MiB) one member may ask for")
    max_config_entries: int = Field(64, description="largest number of config entries in a spec")
    auth_token: str | None = Field(
        None,
        description="when set, every call needs the metadata 'authorization: Bearer <token>'",
    )
    default_runtime: Literal["process", "docker"] = Field(
        "process",
        description="how members of an instance created without a runtime run: 'process' (a process "
        "on the agent) or 'docker' (a container from the workload's image; needs `make images`). "
        "Stored in the instance's spec at create, fixed for its life",
    )
    state_timeout_seconds: float = Field(
        10.0, description="how long one call waits for the state service before answering UNAVAILABLE"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_listen(self.metrics_listen)
        if self.max_replicas < 1:
            raise ValueError("max_replicas must be at least 1")
        if self.max_cpus <= 0 or self.max_mem_mb <= 0 or self.max_disk_mb <= 0:
            raise ValueError("max_cpus, max_mem_mb and max_disk_mb must be positive")
        if self.max_config_entries < 0:
            raise ValueError("max_config_entries must not be negative")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ValueError("auth_token must not be blank (leave it unset to disable auth)")
        if self.state_timeout_seconds <= 0:
            raise ValueError("state_timeout_seconds must be positive")
        return self
