"""Settings of the state service (flags ``--field-name``, env ``STATEFUL_STATE_FIELD_NAME``)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.common.settings import ServiceSettings


class StateSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_STATE_")

    listen: str = Field("127.0.0.1:7100", description="host:port the gRPC server binds (port 0: any)")
    etcd_endpoints: str = Field(
        "", description="comma-separated etcd client endpoints host:port; empty: run an embedded etcd"
    )
    data_dir: str = Field("state", description="folder of the embedded etcd's data (under <data_dir>/etcd)")
    embedded_client_port: int = Field(2379, description="client port of the embedded etcd (127.0.0.1)")
    embedded_peer_port: int = Field(2380, description="peer port of the embedded etcd (127.0.0.1)")
    etcd_binary: str = Field("etcd", description="etcd executable for the embedded etcd")
    etcd_timeout_seconds: float = Field(5.0, description="deadline of each etcd call")
    etcd_start_timeout_seconds: float = Field(30.0, description="how long to wait for the embedded etcd")
    health_interval_seconds: float = Field(1.0, description="how often etcd reachability is checked")
    cache: bool = Field(True, description="serve reads from the watch-fed cache when it is in sync")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.etcd_timeout_seconds <= 0 or self.health_interval_seconds <= 0:
            raise ValueError("timeouts and intervals must be positive")
        if self.embedded_client_port == self.embedded_peer_port:
            raise ValueError("embedded etcd client and peer ports must differ")
        return self

    @property
    def endpoints(self) -> list[str]:
        return [e.strip() for e in self.etcd_endpoints.split(",") if e.strip()]
