"""Settings of the local cluster (env prefix ``STATEFUL_CLUSTER_``)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.common.settings import ServiceSettings

# Mesos' bound of --executor_reregistration_timeout (src/slave/constants.hpp): the agent must be able
# to re-register with the master well before it is marked unreachable.
MAX_EXECUTOR_REREGISTRATION_TIMEOUT = 15.0


class LocalClusterSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="STATEFUL_CLUSTER_", cli_kebab_case=True, cli_implicit_flags=True, extra="ignore"
    )

    listen: str = Field("127.0.0.1:5050", description="host:port of the master (port 0: any free port)")
    agents: int = Field(3, description="number of simulated agents")
    agent_cpus: float = Field(4.0, description="cpus of each agent")
    agent_mem: float = Field(8192.0, description="mem (MB) of each agent")
    agent_disk: float = Field(20000.0, description="disk (MB) of each agent")
    agent_port: int = Field(5051, description="port of each agent's executor API on its own address (0: any)")
    agent_ip_base: str = Field("127.0.0.2", description="address of agent 0; agent i gets base + i")
    agent_ports_begin: int = Field(31000, description="first port of agent 0's `ports` range")
    agent_ports_step: int = Field(1000, description="agent i's range is begin+i*step .. begin+i*step+count-1")
    agent_ports_count: int = Field(1000, description="number of ports offered per agent")
    agent_attributes: dict[str, str] = Field(
        default_factory=dict,
        description='text attributes of every agent (JSON); "{i}" in a value becomes the agent index',
    )
    work_dir: str = Field("state/cluster", description="directory for agents' sandboxes")
    heartbeat_interval: float = Field(15.0, description="seconds between HEARTBEAT events")
    update_retry_interval: float = Field(
        10.0, description="seconds before an unacknowledged update is re-sent"
    )
    allocation_interval: float = Field(1.0, description="seconds between allocation rounds")
    default_refuse_seconds: float = Field(5.0, description="refuse_seconds when a DECLINE/ACCEPT has none")
    executor_shutdown_grace: float = Field(5.0, description="seconds an executor gets to exit after SHUTDOWN")
    kill_grace: float = Field(3.0, description="seconds between SIGTERM and SIGKILL of an executor session")
    executor_registration_timeout: float = Field(
        60.0, description="seconds an executor has to SUBSCRIBE before it is killed"
    )
    executor_reregistration_timeout: float = Field(
        2.0,
        description="seconds a restarted agent waits for its recovered executors to re-subscribe before "
        "it destroys the others and re-registers with the master (Mesos agent flag "
        "--executor_reregistration_timeout, default 2secs, at most 15secs); also their longest "
        "backoff between two SUBSCRIBE attempts (MESOS_SUBSCRIPTION_BACKOFF_MAX)",
    )
    recovery_timeout: float = Field(
        900.0,
        description="seconds an executor of a checkpointing framework waits for its agent to come back "
        "before it kills its task and exits (Mesos agent flag --recovery_timeout, default 15mins; "
        "handed to executors as MESOS_RECOVERY_TIMEOUT)",
    )
    agent_ping_timeout: float = Field(
        15.0,
        description="seconds the master waits for an agent's pong to each ping (Mesos master flag "
        "--agent_ping_timeout, default 15secs); pings are sent every this many seconds",
    )
    offer_timeout: float | None = Field(
        None,
        description="seconds after which an outstanding offer is rescinded (Mesos master flag "
        "--offer_timeout, unset by default: offers stay until used, declined or rescinded)",
    )
    max_agent_ping_timeouts: int = Field(
        5,
        description="missed pongs in a row after which the master marks an agent unreachable (Mesos "
        "master flag --max_agent_ping_timeouts, default 5): a silent agent is noticed "
        "agent_ping_timeout x max_agent_ping_timeouts after it went silent (75 s by default)",
    )

    crash_at: Literal["", "executor-forked", "executor-checkpointed"] = Field(
        "",
        description="fault injection for tests that run the cluster as a process of its own: the "
        "process SIGKILLs itself when an agent has forked an executor (blocked) and not yet "
        "checkpointed its pid ('executor-forked'), or has checkpointed it and not yet released it "
        "('executor-checkpointed'); empty: never",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.agents < 0:
            raise ValueError("agents must be >= 0")
        if min(self.agent_cpus, self.agent_mem, self.agent_disk) < 0:
            raise ValueError("agent resources must be >= 0")
        if self.agent_ports_count > self.agent_ports_step and self.agents > 1:
            raise ValueError("agent_ports_count must be <= agent_ports_step (ranges would overlap)")
        if min(self.heartbeat_interval, self.update_retry_interval, self.allocation_interval) <= 0:
            raise ValueError("intervals must be > 0")
        if self.agent_ping_timeout <= 0 or self.max_agent_ping_timeouts <= 0:
            raise ValueError("agent_ping_timeout and max_agent_ping_timeouts must be > 0")
        if not 0 < self.executor_reregistration_timeout <= MAX_EXECUTOR_REREGISTRATION_TIMEOUT:
            raise ValueError(
                "executor_reregistration_timeout must be > 0 and <= 15 s (Mesos' "
                "MAX_EXECUTOR_REREGISTRATION_TIMEOUT, src/slave/constants.hpp)"
            )
        if self.recovery_timeout <= self.executor_reregistration_timeout:
            raise ValueError("recovery_timeout must be longer than executor_reregistration_timeout")
        if ":" not in self.listen:
            raise ValueError("listen must be host:port")
        return self
