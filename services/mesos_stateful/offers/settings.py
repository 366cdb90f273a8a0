"""Settings of the offers service (the Mesos framework): flags and ``STATEFUL_OFFERS_*`` variables."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.clients.leadership import LeadershipSettings
from mesos_stateful.common.images import IMAGE_PYTHON
from mesos_stateful.common.metrics_server import METRICS_LISTEN_DESCRIPTION, check_listen
from mesos_stateful.common.settings import ServiceSettings
from mesos_stateful.offers.mesos import ExecutorContainer

ONE_WEEK_SECONDS = 7 * 24 * 3600.0


def _default_master() -> str:
    # pymesos' own tools read MESOS_MASTER; honour it when our own variable is not set.
    return os.environ.get("MESOS_MASTER", "127.0.0.1:5050")


def _default_executor_command() -> str:
    return f"{sys.executable} -m mesos_stateful.executor"


class OffersSettings(ServiceSettings):
    """The offers service's settings. Offers runs as a leader and standbys (role "offers", a lease
    in state, client-go leaderelection's timing in ``leader_*``): only the leader subscribes to
    Mesos (with the stored framework id: a framework failover, so Mesos keeps the tasks for
    ``failover_timeout_seconds``) and writes state; a standby answers UNAVAILABLE naming the
    leader. Invariant: ``leader_retry_period_seconds < leader_renew_deadline_seconds <
    leader_lease_duration_seconds``; a standby leads at most ``leader_lease_duration_seconds +
    leader_retry_period_seconds`` after the leader's last renewal."""

    model_config = SettingsConfigDict(env_prefix="STATEFUL_OFFERS_")

    listen: str = Field("127.0.0.1:7200", description="host:port the OfferService binds (port 0: any)")
    metrics_listen: str = Field("", description=METRICS_LISTEN_DESCRIPTION)
    state_endpoint: str = Field("127.0.0.1:7100", description="host:port of the state service")
    advertise: str = Field(
        "",
        description="host:port clients reach this replica at, stored in its leader lease (lifecycle "
        "finds the offers leader there); empty: the listen host with the bound port",
    )
    leader_lease_duration_seconds: float = Field(
        1.5,
        description="client-go leaderelection's LeaseDuration: a standby takes over when the leader "
        "has not renewed its lease for this long",
    )
    leader_renew_deadline_seconds: float = Field(
        1.0,
        description="client-go's RenewDeadline: a leader that could not renew for this long drops "
        "its Mesos connection (with failover) and stops writing state",
    )
    leader_retry_period_seconds: float = Field(
        0.2, description="client-go's RetryPeriod: renew and campaign interval (seconds)"
    )
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
    queued_message_interval_seconds: float = Field(
        5.0,
        description="a queued task's record says why no offer fits (Task.message); it is rewritten "
        "only when that changes, and at most this often per task (seconds)",
    )
    reconcile_interval_seconds: float = Field(
        300.0, description="period of the implicit + explicit task reconciliation (0: only on subscribe)"
    )
    reconcile_unreachable_seconds: float = Field(
        10.0,
        description="period of the explicit reconciliation of tasks last reported TASK_UNREACHABLE or "
        "TASK_UNKNOWN (0: never): an agent that re-registers without them makes the master forget "
        "them without telling the framework, and only a RECONCILE then answers TASK_GONE",
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
    executor_image: str = Field(
        "",
        description="on a real Mesos cluster: the Docker image the executor runs in (the suite image, "
        "e.g. mesos-stateful/suite:<version>), through the agent's Docker containerizer "
        "(mesos-agent --containerizers=docker,mesos): ExecutorInfo.container is type DOCKER, host "
        "network, the agent's Docker socket and the member's persistent volume mounted; empty: "
        "executor_command runs on the agent itself (the local cluster)",
    )
    executor_image_command: str = Field(
        f"exec {IMAGE_PYTHON} -m mesos_stateful.executor",
        description="shell command starting the executor inside executor_image",
    )
    executor_agent_work_dir: str = Field(
        "/var/lib/mesos",
        description="the Mesos agents' --work_dir: with executor_image, the member's persistent volume "
        "(<work_dir>/volumes/roles/<role>/<persistence id> on the agent) is mounted into the "
        "executor's container, which Mesos's Docker containerizer does not do for a custom executor",
    )
    executor_docker_socket: str = Field(
        "/var/run/docker.sock",
        description="with executor_image: the agents' Docker socket, mounted into the executor's "
        "container (members run as sibling containers on the agent's engine)",
    )
    state_retry_seconds: float = Field(
        1.0, description="pause between attempts to store a status update while the state service is down"
    )
    grace_seconds: float = Field(5.0, description="time in-flight calls get to finish on SIGTERM")
    maintenance_rescind_grace_seconds: float = Field(
        5.0,
        description="after a RESCIND_INVERSE_OFFER, how long an agent's maintenance is kept on its "
        "tasks waiting for a new inverse offer (Mesos rescinds and re-sends them on every schedule "
        "update, docs/maintenance.md) before it is cleared as cancelled",
    )
    maintenance_offers_wait_seconds: float = Field(
        2.0,
        description="on news of a maintenance (an inverse offer) while offers are suppressed, they "
        "are revived and the tasks' records get the maintenance once offers came (they show which "
        "other agents are scheduled too) or after this many seconds",
    )
    inverse_offer_refuse_seconds: float = Field(
        3600.0,
        description="filter sent with ACCEPT_INVERSE_OFFERS: no new inverse offer for that agent "
        "meanwhile (a schedule change drops the filter)",
    )

    @property
    def executor_container(self) -> ExecutorContainer | None:
        """How the executor runs in a Docker container (None: as executor_command on the agent)."""
        if not self.executor_image:
            return None
        return ExecutorContainer(
            image=self.executor_image,
            command=self.executor_image_command,
            agent_work_dir=self.executor_agent_work_dir,
            docker_socket=self.executor_docker_socket,
        )

    @property
    def leadership(self) -> LeadershipSettings:
        """The leader election's timing (role "offers")."""
        return LeadershipSettings(
            lease_duration_seconds=self.leader_lease_duration_seconds,
            renew_deadline_seconds=self.leader_renew_deadline_seconds,
            retry_period_seconds=self.leader_retry_period_seconds,
        )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_listen(self.metrics_listen)
        try:
            _ = self.leadership
        except ValueError as error:  # pydantic's ValidationError is one too
            raise ValueError(
                "leader_retry_period_seconds < leader_renew_deadline_seconds < "
                f"leader_lease_duration_seconds must hold (client-go leaderelection's rule): {error}"
            ) from None
        if self.advertise:
            host, sep, port = self.advertise.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ValueError(f"advertise must be host:port, got {self.advertise!r}")
        if self.failover_timeout_seconds <= 0:
            raise ValueError("failover_timeout_seconds must be positive (0 would kill tasks on restart)")
        if self.refuse_seconds_idle < 0 or self.refuse_seconds_unfit < 0:
            raise ValueError("refuse_seconds_idle and refuse_seconds_unfit must not be negative")
        if self.queued_message_interval_seconds < 0:
            raise ValueError("queued_message_interval_seconds must not be negative")
        if self.orphan_check_interval_seconds < 0:
            raise ValueError("orphan_check_interval_seconds must not be negative")
        if self.reconcile_interval_seconds < 0 or self.reconcile_unreachable_seconds < 0:
            raise ValueError(
                "reconcile_interval_seconds and reconcile_unreachable_seconds must not be negative"
            )
        if self.maintenance_rescind_grace_seconds < 0 or self.inverse_offer_refuse_seconds < 0:
            raise ValueError(
                "maintenance_rescind_grace_seconds and inverse_offer_refuse_seconds must not be negative"
            )
        if self.state_retry_seconds <= 0:
            raise ValueError("state_retry_seconds must be positive")
        if not self.master.strip():
            raise ValueError("master must not be empty")
        if not self.framework_name.strip():
            raise ValueError("framework_name must not be empty")
        if not self.executor_command.strip():
            raise ValueError("executor_command must not be empty")
        if self.executor_image:
            if not self.executor_image_command.strip():
                raise ValueError("executor_image_command must not be empty")
            for name in ("executor_agent_work_dir", "executor_docker_socket"):
                if not str(getattr(self, name)).startswith("/"):
                    raise ValueError(
                        f"{name} must be an absolute path on the agents, got {getattr(self, name)!r}"
                    )
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


def advertised(listen: str, advertise: str, port: int) -> str:
    """The address clients reach this replica at: ``advertise`` when set, else the listen host
    with the port actually bound (a wildcard host becomes 127.0.0.1: set ``advertise`` when
    clients run elsewhere)."""
    if advertise:
        return advertise
    host = listen.rpartition(":")[0]
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


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
