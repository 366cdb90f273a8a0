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

    agent_reregister_timeout: float = Field(
        600.0,
        description="seconds the agent processes of the master's registry (<work_dir>/master/"
        "registry.json) have to re-register after a master restart before they are marked unreachable "
        "(Mesos master flag --agent_reregister_timeout, default 10mins)",
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
        if self.agent_reregister_timeout <= 0:
            raise ValueError("agent_reregister_timeout must be > 0")
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


class AgentSettings(ServiceSettings):
    """One agent in its own process (``python -m mesos_stateful.localcluster agent``), env prefix
    ``STATEFUL_AGENT_``. Its timings mean what the same names mean in ``LocalClusterSettings``."""

    model_config = SettingsConfigDict(
        env_prefix="STATEFUL_AGENT_", cli_kebab_case=True, cli_implicit_flags=True, extra="ignore"
    )

    master: str = Field("127.0.0.1:5050", description="host:port of the local cluster's master")
    ip: str = Field(
        "127.0.0.2",
        description="address of the agent (its executor API, its members' address, its machine's IP); "
        "'auto': the address its hostname resolves to (a container's own address)",
    )
    port: int = Field(5051, description="port of the agent's executor API on its address (0: any)")
    hostname: str = Field("", description="the agent's hostname (default: its address)")
    work_dir: str = Field("state/agent", description="the agent's work dir (checkpoint, sandboxes, volumes)")
    cpus: float = Field(4.0, description="cpus of the agent")
    mem: float = Field(8192.0, description="mem (MB) of the agent")
    disk: float = Field(20000.0, description="disk (MB) of the agent")
    ports: str = Field("31000-31999", description="the agent's `ports` range BEGIN-END (inclusive)")
    attributes: str = Field("", description="text attributes 'name:value;name:value'")
    executor_shutdown_grace: float = Field(5.0, description="seconds an executor gets to exit after SHUTDOWN")
    kill_grace: float = Field(3.0, description="seconds between SIGTERM and SIGKILL of an executor session")
    executor_registration_timeout: float = Field(
        60.0, description="seconds an executor has to SUBSCRIBE before it is killed"
    )
    executor_reregistration_timeout: float = Field(
        2.0, description="seconds recovered executors have to re-subscribe after a restart (at most 15)"
    )
    recovery_timeout: float = Field(
        900.0, description="seconds an executor of a checkpointing framework waits for its agent to come back"
    )
    reconnect_interval: float = Field(
        1.0, description="longest wait (seconds, randomized) between two attempts to (re-)register"
    )
    crash_at: Literal["", "executor-forked", "executor-checkpointed"] = Field(
        "", description="fault injection for tests (see LocalClusterSettings.crash_at)"
    )

    def port_range(self) -> tuple[int, int]:
        begin, _, end = self.ports.partition("-")
        return int(begin), int(end or begin)

    def attribute_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in self.attributes.split(";"))):
            name, sep, value = item.partition(":")
            if not sep or not name:
                raise ValueError(f"attribute {item!r} is not name:value")
            out[name] = value
        return out

    @model_validator(mode="after")
    def _check_agent(self) -> Self:
        if ":" not in self.master:
            raise ValueError("master must be host:port")
        if min(self.cpus, self.mem, self.disk) < 0:
            raise ValueError("agent resources must be >= 0")
        try:
            begin, end = self.port_range()
        except ValueError:
            raise ValueError(f"ports must be BEGIN-END, not {self.ports!r}") from None
        if not 0 < begin <= end < 65536:
            raise ValueError(f"ports {self.ports!r}: need 0 < BEGIN <= END < 65536")
        self.attribute_map()
        if not 0 < self.executor_reregistration_timeout <= MAX_EXECUTOR_REREGISTRATION_TIMEOUT:
            raise ValueError("executor_reregistration_timeout must be > 0 and <= 15 s")
        if self.recovery_timeout <= self.executor_reregistration_timeout:
            raise ValueError("recovery_timeout must be longer than executor_reregistration_timeout")
        if self.reconnect_interval <= 0:
            raise ValueError("reconnect_interval must be > 0")
        return self
