"""Settings of the local suite runner (`make run`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.common.settings import ServiceSettings
from mesos_stateful.suite.processes import LivenessPolicy, RestartPolicy


class SuiteSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_SUITE_")

    data_dir: str = Field("state", description="folder for etcd data, agent sandboxes and logs")
    gateway: str = Field("127.0.0.1:7000", description="public API address")
    state: str = Field("127.0.0.1:7100", description="state service address")
    offers: str = Field("127.0.0.1:7200", description="offers service address")
    lifecycle: str = Field("127.0.0.1:7300", description="lifecycle service address")
    master: str = Field("127.0.0.1:5050", description="local cluster master address")
    console: str = Field(
        "127.0.0.1:8080",
        description="the read-only web console's HTTP address (http://<this>/); it calls the gateway with "
        "STATEFUL_GATEWAY_AUTH_TOKEN when that is set",
    )
    agents: int = Field(
        5,
        description="simulated agents in the local cluster (one member of an instance per agent by default)",
    )
    controller_replicas: int = Field(
        2,
        ge=1,
        le=9,
        description="replicas of lifecycle and of offers (one leads, the others stand by); replica i "
        "listens on the offers / lifecycle address's port + i",
    )
    runtime: Literal["process", "docker"] = Field(
        "process",
        description="how members of new instances run (the gateway's default_runtime): 'process' on the "
        "agents, or 'docker' (containers from the suite's images: `make images`; the engine must "
        "answer: `make docker-engine`). `make run RUNTIME=docker` passes --runtime docker",
    )
    docker_timeout_seconds: float = Field(
        10.0, gt=0, description="--runtime docker: how long the preflight waits for the Docker engine"
    )
    workloads: list[str] = Field(
        default_factory=lambda: ["redis", "mysql", "etcd"], description="workload services to start"
    )
    workload_base_port: int = Field(7401, description="redis, mysql, etcd listen on consecutive ports")
    metrics_base_port: int = Field(
        7500,
        ge=0,
        le=65535,
        description="every service's Prometheus /metrics endpoint (127.0.0.1): state, gateway, the offers "
        "replicas, the workload services, the lifecycle replicas on consecutive ports from this one, "
        "in that order; 0: no metrics endpoints. The addresses are in <data_dir>/suite-status.json and "
        "a Prometheus scrape config of them in <data_dir>/prometheus.yml",
    )
    start_timeout_seconds: float = Field(60.0, description="how long a service may take to become healthy")
    stop_grace_seconds: float = Field(15.0, description="SIGTERM to SIGKILL, per service")
    restart_backoff_seconds: float = Field(0.25, description="wait before the first restart of a service")
    restart_backoff_max_seconds: float = Field(
        10.0, description="longest wait between restarts (doubling from restart_backoff_seconds)"
    )
    restart_burst: int = Field(
        5, description="exits within restart_window_seconds that make a service 'restarting too often'"
    )
    restart_window_seconds: float = Field(60.0, description="window in which exits count towards the burst")
    # Liveness probing of every running service (Kubernetes' periodSeconds / timeoutSeconds /
    # failureThreshold): a hung service (SIGSTOP, a blocked event loop) is killed and restarted.
    liveness_interval_seconds: float = Field(
        1.0, description="seconds between the starts of two liveness probes of a service"
    )
    liveness_timeout_seconds: float = Field(
        2.0, description="seconds a service has to answer a liveness probe (any answer counts)"
    )
    liveness_failures: int = Field(
        5,
        description="unanswered liveness probes in a row after which a service is killed (SIGKILL) and "
        "restarted; probing starts once the service was healthy after its (re)start",
    )

    @model_validator(mode="after")
    def _check(self) -> SuiteSettings:
        if not 1 <= self.agents <= 200:
            raise ValueError("agents must be between 1 and 200")
        if self.start_timeout_seconds <= 0 or self.stop_grace_seconds <= 0:
            raise ValueError("timeouts must be positive")
        self.restart_policy()  # checks its invariants
        self.liveness_policy()
        return self

    def restart_policy(self) -> RestartPolicy:
        return RestartPolicy(
            initial_seconds=self.restart_backoff_seconds,
            max_seconds=self.restart_backoff_max_seconds,
            burst=self.restart_burst,
            window_seconds=self.restart_window_seconds,
        )

    def liveness_policy(self) -> LivenessPolicy:
        return LivenessPolicy(
            interval_seconds=self.liveness_interval_seconds,
            timeout_seconds=self.liveness_timeout_seconds,
            failures=self.liveness_failures,
        )
