"""Settings of the web console: flags and ``STATEFUL_CONSOLE_*`` variables."""

from __future__ import annotations

import os
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.common.settings import ServiceSettings

GATEWAY_TOKEN_ENV = "STATEFUL_GATEWAY_AUTH_TOKEN"


class ConsoleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_CONSOLE_")

    listen: str = Field(
        "127.0.0.1:8080", description="host:port the console's HTTP server binds (port 0: any)"
    )
    gateway_endpoint: str = Field(
        "127.0.0.1:7000", description="host:port of the gateway (the public gRPC API)"
    )
    token: str | None = Field(
        None,
        description="bearer token sent to the gateway (the gateway's auth_token), if it wants one; "
        "STATEFUL_CONSOLE_TOKEN, else STATEFUL_GATEWAY_AUTH_TOKEN",
    )
    call_timeout_seconds: float = Field(5.0, description="how long one page waits for the gateway")
    events_kept: int = Field(
        200, description="recent events kept in memory per instance (from WatchInstances)"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.token is None:
            # The gateway's own variable: one variable gives the gateway and the console the same
            # token (deploy/compose.yaml passes STATEFUL_GATEWAY_AUTH_TOKEN to both).
            self.token = os.environ.get(GATEWAY_TOKEN_ENV)
        if self.token is not None and not self.token.strip():
            raise ValueError("token must not be blank (leave it unset when the gateway wants none)")
        if self.call_timeout_seconds <= 0 or self.events_kept < 1:
            raise ValueError("call_timeout_seconds must be positive and events_kept at least 1")
        return self
