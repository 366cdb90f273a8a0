"""Settings of the state service (flags ``--field-name``, env ``STATEFUL_STATE_FIELD_NAME``)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.clients import records
from mesos_stateful.common.metrics_server import METRICS_LISTEN_DESCRIPTION, check_listen
from mesos_stateful.common.settings import ServiceSettings
from mesos_stateful.state.embedded import RestartPolicy
from mesos_stateful.state.watchhub import WatchLimits


class StateSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_STATE_")

    listen: str = Field("127.0.0.1:7100", description="host:port the gRPC server binds (port 0: any)")
    metrics_listen: str = Field("", description=METRICS_LISTEN_DESCRIPTION)
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
    key_root: str = Field(
        records.DEFAULT_KEY_ROOT,
        description="etcd key root of the store (records under <root>v1/); another root is a separate "
        "store in the same etcd (tests share one etcd this way)",
    )
    # The embedded etcd's supervisor (embedded.supervise): a crash is noticed within
    # etcd_check_interval_seconds and etcd is started again on the same data dir and ports; the
    # first restart is at once, each further one within etcd_restart_reset_seconds of the previous
    # waits twice as long (from etcd_restart_backoff_seconds up to etcd_restart_backoff_max_seconds),
    # as supervisord / systemd Restart= back off a crash loop.
    etcd_check_interval_seconds: float = Field(
        0.2, description="how often the embedded etcd process is checked (seconds; <= 1)"
    )
    etcd_restart_backoff_seconds: float = Field(
        0.5, description="first backoff before restarting an embedded etcd that keeps crashing (seconds)"
    )
    etcd_restart_backoff_max_seconds: float = Field(
        10.0, description="longest backoff between embedded etcd restarts (seconds)"
    )
    etcd_restart_reset_seconds: float = Field(
        30.0, description="an embedded etcd up this long is stable: the next crash restarts it at once"
    )
    # The watch hub (watchhub.WatchHub).
    watch_queue_size: int = Field(
        10000,
        description="events queued for one watcher; a watcher further behind is told to resync "
        "(FAILED_PRECONDITION: list again), so a slow watcher costs bounded memory",
    )
    watch_retry_seconds: float = Field(0.1, description="first backoff before re-opening a broken etcd watch")
    watch_retry_max_seconds: float = Field(
        1.0,
        description="longest backoff between etcd watch reconnects (a watch resumes this soon after etcd)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_listen(self.metrics_listen)
        if self.etcd_timeout_seconds <= 0 or self.health_interval_seconds <= 0:
            raise ValueError("timeouts and intervals must be positive")
        if self.embedded_client_port == self.embedded_peer_port:
            raise ValueError("embedded etcd client and peer ports must differ")
        if not 0 < self.etcd_check_interval_seconds <= 1.0:
            raise ValueError(
                "etcd_check_interval_seconds must be in (0, 1]: an etcd crash is to be noticed within 1 s"
            )
        if not 0 < self.etcd_restart_backoff_seconds <= self.etcd_restart_backoff_max_seconds:
            raise ValueError(
                "need 0 < etcd_restart_backoff_seconds <= etcd_restart_backoff_max_seconds, got "
                f"{self.etcd_restart_backoff_seconds} and {self.etcd_restart_backoff_max_seconds}"
            )
        if self.etcd_restart_reset_seconds <= 0:
            raise ValueError("etcd_restart_reset_seconds must be positive")
        self.keys()  # a valid key root
        self.watch_limits()  # its own invariants (queue size >= 1, 0 < retry <= max retry)
        return self

    def keys(self) -> records.Keys:
        """The store's key layout (ValueError for a malformed ``key_root``)."""
        return records.Keys(self.key_root)

    def watch_limits(self) -> WatchLimits:
        return WatchLimits(
            queue_size=self.watch_queue_size,
            retry_initial_seconds=self.watch_retry_seconds,
            retry_max_seconds=self.watch_retry_max_seconds,
        )

    def restart_policy(self) -> RestartPolicy:
        return RestartPolicy(
            check_interval_seconds=self.etcd_check_interval_seconds,
            backoff_seconds=self.etcd_restart_backoff_seconds,
            backoff_max_seconds=self.etcd_restart_backoff_max_seconds,
            reset_seconds=self.etcd_restart_reset_seconds,
            start_timeout_seconds=self.etcd_start_timeout_seconds,
        )

    @property
    def endpoints(self) -> list[str]:
        return [e.strip() for e in self.etcd_endpoints.split(",") if e.strip()]
