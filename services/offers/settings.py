"""Settings of the offers service (the Mesos framework): flags and ``STATEFUL_OFFERS_*`` variables."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.common.settings import ServiceSettings

ONE_WEEK_SECONDS = 7 * 24 * 3600.0


def _default_master() -> str:
    # pymesos' own tools read MESOS_MASTER; honour it when our own variable is not set.
    return os.environ.get("MESOS_MASTER", "127.0.0.1:5050")


def _default_executor_command() -> str:
    return f"{sys.executable} -m mesos_stateful.executor"


class OffersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATEFUL_OFFERS_")

    listen: str = Field("127.0.0.1:7200", description="host:port the OfferService binds (port 0: any)")
    state_endpoint: str = Field("127.0.0.1:7100", description="host:port of the state service")
    master: str = Field(
        default_factory=_default_master,
        description="Mesos master: host:port, http://host:port or zk://host:port/mesos "
        "(default: $MESOS_MASTER, else 127.0.0.1:5050)",
    )
    framework_name: str = Field("mesos-stateful", description="framework name shown by Mesos")
    role: str = Field(
        "stateful",
        description="Mesos role the framework subscribes with; members' resources are reserved for it "
        "(it cannot be '*')",
    )
    user: str = Field("", description="user tasks run as; empty: the user running this service")
    hostname: str = Field("", description="hostname registered with Mesos; empty: this machine's")
    principal: str = Field(
        "mesos-stateful",
        description="principal of the framework: sent in FrameworkInfo and used for reservations and "
        "volumes; authenticates with the master when a secret is set",
    )
    secret: str = Field("", description="secret for the principal (optional)")
    failover_timeout_seconds: float = Field(
        ONE_WEEK_SECONDS,
        description="how long Mesos keeps our tasks running while the framework is away",
    )
    refuse_seconds_idle: float = Field(
        300.0, description="decline filter for offers when nothing is queued (before SUPPRESS)"
    )
    refuse_seconds_unfit: float = Field(
        5.0, description="decline filter for offers that fit none of the queued launches"
    )
    reconcile_interval_seconds: float = Field(
        300.0, description="period of the implicit + explicit task reconciliation (0: only on subscribe)"
    )
    orphan_check_interval_seconds: float = Field(
        60.0,
        description="while offers are suppressed, revive them this often to find reservations and "
        "volumes that no member wants any more (an agent that was gone comes back with them; Mesos "
        "tells a framework nothing then) and release them (0: never)",
    )
    executor_command: str = Field(
        default_factory=_default_executor_command,
        description="shell command that starts the executor on an agent",
    )
    state_retry_seconds: float = Field(
        1.0, description="pause between attempts to store a status update while the state service is down"
    )
    grace_seconds: float = Field(5.0, description="time in-flight calls get to finish on SIGTERM")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.failover_timeout_seconds <= 0:
            raise ValueError("failover_timeout_seconds must be positive (0 would kill tasks on restart)")
        if self.refuse_seconds_idle < 0 or self.refuse_seconds_unfit < 0:
            raise ValueError("refuse_seconds_idle and refuse_seconds_unfit must not be negative")
        if self.orphan_check_interval_seconds < 0:
            raise ValueError("orphan_check_interval_seconds must not be negative")
        if self.reconcile_interval_seconds < 0:
            raise ValueError("reconcile_interval_seconds must not be negative")
        if self.state_retry_seconds <= 0:
            raise ValueError("state_retry_seconds must be positive")
        if not self.master.strip():
            raise ValueError("master must not be empty")
        if not self.framework_name.strip():
            raise ValueError("framework_name must not be empty")
        if not self.executor_command.strip():
            raise ValueError("executor_command must not be empty")
        if not self.role.strip() or self.role.strip() == "*":
            raise ValueError(
                f"role {self.role!r} cannot be used: Mesos makes no reservations for '*', and members' "
                "data lives on volumes reserved for the framework's role (e.g. role=stateful)"
            )
        if not self.principal.strip():
            raise ValueError("principal must not be empty (reservations and volumes are made with it)")
        if bool(self.principal) != bool(self.secret) and self.secret:
            raise ValueError("secret needs a principal")
        return self


def master_address(master: str) -> str:
    """The address pymesos expects: host:port or zk://..., without an http:// scheme or a path."""
    master = master.strip()
    if master.startswith(("zk://", "zoo://")):
        return master
    for scheme in ("http://", "https://"):
        if master.startswith(scheme):
            master = master[len(scheme) :]
    master = master.split("/", 1)[0]
    return master if ":" in master else f"{master}:5050"


def zookeeper_support_missing(master: str) -> str | None:
    """Why a zk:// master cannot be used here (pymesos needs kazoo or zkpython), None if it can."""
    if not master.strip().startswith(("zk://", "zoo://")):
        return None
    if importlib.util.find_spec("kazoo") or importlib.util.find_spec("zookeeper"):
        return None
    return f"master {master} needs ZooKeeper support: install kazoo (not a dependency of this suite)"
