"""Executor settings (``STATEFUL_EXECUTOR_*``; the agent's ``MESOS_*`` variables come on top)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.common.settings import ServiceSettings


class ExecutorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_EXECUTOR_")

    default_kill_grace_seconds: float = Field(
        10.0, ge=0, description="SIGTERM→SIGKILL grace when neither the launch nor a kill policy gives one"
    )
    ack_timeout_seconds: float = Field(
        10.0, gt=0, description="how long to wait for the terminal update's acknowledgement before exiting"
    )
    shutdown_margin_seconds: float = Field(
        1.0, ge=0, description="time kept from the agent's shutdown grace period to report and exit"
    )
    default_shutdown_grace_seconds: float = Field(
        5.0, gt=0, description="shutdown grace if the agent sets no MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"
    )

    docker_network: str = Field(
        "host",
        description="Docker runtime: the members' network: host (the agent's), container:<name-or-id>, "
        "or container:self (the container this executor runs in)",
    )
    docker_host_paths: Literal["identity", "auto"] = Field(
        "identity",
        description="Docker runtime: identity (the executor sees the engine host's paths) or auto "
        "(the executor runs in a container: paths translated through its mounts)",
    )
    docker_timeout_seconds: float = Field(
        30.0, gt=0, description="Docker runtime: timeout of one engine call"
    )

    @model_validator(mode="after")
    def _margin_fits(self) -> Self:
        if self.shutdown_margin_seconds >= self.default_shutdown_grace_seconds:
            raise ValueError("shutdown_margin_seconds must be below default_shutdown_grace_seconds")
        return self
