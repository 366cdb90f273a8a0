"""Settings of the lifecycle service: flags and ``STATEFUL_LIFECYCLE_*`` variables."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mesos_stateful.clients.endpoints import check_endpoint as check_state_endpoint
from mesos_stateful.clients.leadership import LeadershipSettings
from mesos_stateful.common.metrics_server import METRICS_LISTEN_DESCRIPTION, check_listen
from mesos_stateful.common.settings import ServiceSettings


def _check_endpoint(name: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{name} must be host:port, got {value!r}")


def advertised(listen: str, advertise: str, port: int) -> str:
    """The address others reach a service at: ``advertise`` when set, else the listen host with
    the port actually bound (a wildcard host becomes 127.0.0.1, which only local peers can use:
    set ``advertise`` when peers run elsewhere)."""
    if advertise:
        return advertise
    host = listen.rpartition(":")[0]
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


class LifecycleSettings(ServiceSettings):
    """The lifecycle service's settings. Timing of failure detection (the health monitor):

    - A silent master is declared failed after ``probe_failures`` CheckMember probes in a row not
      answered; probes start every ``probe_interval_seconds`` and each waits at most
      ``probe_timeout_seconds``, so detection takes at most
      ``probe_failures * max(probe_interval_seconds, probe_timeout_seconds) + probe_interval_seconds``
      (:attr:`detection_bound_seconds`), besides Mesos task status updates, which come at once for
      a process crash and only after the Mesos master's agent ping timeouts for a cut-off agent.
    - A miss counts only when the workload service itself answers (a Describe right after the
      failed probe): a workload service that is down never gets a master failed over.
    - Leader election (``leader_*``, role "lifecycle"): only the leader runs the controller; a
      standby takes over within ``leader_lease_duration_seconds + leader_retry_period_seconds``
      of the leader's last renewal; invariants retry period < renew deadline < lease duration.
    - Invariants (checked at start-up, patroni-style): ``probe_timeout_seconds <
      callback_timeout_seconds``; ``check_interval_seconds >= probe_interval_seconds``;
      ``probe_failures >= 2`` (one lost packet is not a failure).
    """

    model_config = SettingsConfigDict(env_prefix="STATEFUL_LIFECYCLE_")

    listen: str = Field("127.0.0.1:7300", description="host:port of the health endpoint (port 0: any)")
    metrics_listen: str = Field("", description=METRICS_LISTEN_DESCRIPTION)
    state_endpoint: str = Field("127.0.0.1:7100", description="host:port of the state service")
    offers_endpoint: str = Field(
        "127.0.0.1:7200",
        description="host:port of an offers service, used only while no offers leader is recorded "
        "in state; otherwise calls go to the leader's advertised address (found in its lease)",
    )
    advertise: str = Field(
        "",
        description="host:port others reach this replica at, stored in its leader lease; empty: the "
        "listen host with the bound port",
    )
    leader_lease_duration_seconds: float = Field(
        1.5,
        description="leader election (client-go leaderelection's LeaseDuration): a standby takes "
        "over when the leader has not renewed its lease for this long",
    )
    leader_renew_deadline_seconds: float = Field(
        1.0,
        description="client-go's RenewDeadline: a leader that could not renew for this long stops "
        "acting (before its lease can have expired for a standby); below the lease duration",
    )
    leader_retry_period_seconds: float = Field(
        0.2, description="client-go's RetryPeriod: renew and campaign interval; below the renew deadline"
    )
    callback_timeout_seconds: float = Field(
        30.0, description="deadline of one workload callback; past it the call is retried with backoff"
    )
    offers_timeout_seconds: float = Field(10.0, description="deadline of one call to the offers service")
    fence_kill_timeout_seconds: float = Field(
        1.5,
        description="a fence sends the Mesos kill of the old master's task best-effort and waits at "
        "most this long for the offers service to take it, then fences through the workload anyway "
        "(a Mesos kill is not a fence: DESIGN rule 2; a frozen Mesos master must not hold up a "
        "failover). Must be below offers_timeout_seconds",
    )
    retry_initial_seconds: float = Field(0.5, description="first delay before retrying a failed step")
    retry_max_seconds: float = Field(30.0, description="largest delay between two attempts of a step")
    resync_interval_seconds: float = Field(
        30.0, description="every instance is reconciled at least this often, events or not"
    )
    launch_timeout_seconds: float = Field(
        120.0,
        description="a launched member not RUNNING after this long has its step marked DELAYED with "
        "the reason (it keeps waiting)",
    )
    max_launch_attempts: int = Field(
        5, description="launches of one member in one plan before its step fails (ERROR)"
    )
    drain_settle_seconds: float = Field(
        2.0,
        ge=0,
        description="a master on an agent scheduled for maintenance is switched over only this long "
        "after the offers service learnt of the maintenance (AgentMaintenance.announced_at): the "
        "inverse offers of the other agents of the same schedule arrive meanwhile, so their "
        "replicas are drained first and the master is switched over once, to a replica that stays",
    )
    launch_failure_retry_seconds: float = Field(
        45.0,
        gt=0,
        description="a launch that failed before its member was ready is avoided (its agent or ports) "
        "for this long; a plan FAILED on such a launch is tried again by itself this long after it",
    )
    kill_timeout_seconds: float = Field(
        60.0, description="a killed task not terminal after this long has its step marked DELAYED"
    )
    secret_bytes: int = Field(24, description="random bytes in each generated secret")
    replace_after_seconds: float = Field(
        300.0,
        description="a member whose volume's agent has not offered its resources for this long is "
        "replaced: a fresh volume on another agent, resynced from the others (dcos-commons' "
        "permanent-failure timeout). Until then it is waited for, to restart in place",
    )
    elect_timeout_seconds: float = Field(
        300.0,
        description="in a restart of every member, how long the election waits for a member "
        "holding data that is not running yet before saying so in the step (it keeps waiting)",
    )
    release_timeout_seconds: float = Field(
        60.0,
        description="how long a delete waits for the offers service to destroy the instance's "
        "volumes and reservations; past it the delete completes and the offers service destroys "
        "the rest when their agents come back",
    )

    probe_interval_seconds: float = Field(
        0.25, description="the health monitor probes every master (CheckMember) this often"
    )
    probe_timeout_seconds: float = Field(
        0.4, description="a probe not answered within this many seconds is a miss"
    )
    probe_failures: int = Field(
        3,
        description="misses in a row after which a master is declared failed (unresponsive) and "
        "failed over, although Mesos may still report its task RUNNING",
    )
    check_interval_seconds: float = Field(
        2.0,
        description="every running replica's replication (link, master followed, lag, history) is "
        "checked this often; a problem shows as a condition on the member within two intervals",
    )
    maximum_lag_on_failover: int = Field(
        1048576,
        description="patroni's maximum_lag_on_failover: a replica further behind the lost master's "
        "last known position than this (in the workload's unit: Redis bytes, MariaDB transactions) "
        "is not promoted; the failover waits and says why. 0: no limit",
    )

    @property
    def leadership(self) -> LeadershipSettings:
        """The leader election's timing (role "lifecycle"); its invariants are checked at start-up."""
        return LeadershipSettings(
            lease_duration_seconds=self.leader_lease_duration_seconds,
            renew_deadline_seconds=self.leader_renew_deadline_seconds,
            retry_period_seconds=self.leader_retry_period_seconds,
        )

    @property
    def detection_bound_seconds(self) -> float:
        """Longest time from a master going silent to it being declared failed (see the class)."""
        return (
            self.probe_failures * max(self.probe_interval_seconds, self.probe_timeout_seconds)
            + self.probe_interval_seconds
        )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_listen(self.metrics_listen)
        _check_endpoint("listen", self.listen)
        check_state_endpoint("state_endpoint", self.state_endpoint)  # one or several replicas
        _check_endpoint("offers_endpoint", self.offers_endpoint)
        if self.advertise:
            _check_endpoint("advertise", self.advertise)
        try:
            _ = self.leadership
        except ValueError as error:  # pydantic's ValidationError is one too
            raise ValueError(
                "leader_retry_period_seconds < leader_renew_deadline_seconds < "
                f"leader_lease_duration_seconds must hold (client-go leaderelection's rule): {error}"
            ) from None
        positive = {
            "callback_timeout_seconds": self.callback_timeout_seconds,
            "offers_timeout_seconds": self.offers_timeout_seconds,
            "fence_kill_timeout_seconds": self.fence_kill_timeout_seconds,
            "retry_initial_seconds": self.retry_initial_seconds,
            "retry_max_seconds": self.retry_max_seconds,
            "resync_interval_seconds": self.resync_interval_seconds,
            "launch_timeout_seconds": self.launch_timeout_seconds,
            "kill_timeout_seconds": self.kill_timeout_seconds,
            "replace_after_seconds": self.replace_after_seconds,
            "elect_timeout_seconds": self.elect_timeout_seconds,
            "release_timeout_seconds": self.release_timeout_seconds,
            "probe_interval_seconds": self.probe_interval_seconds,
            "probe_timeout_seconds": self.probe_timeout_seconds,
            "check_interval_seconds": self.check_interval_seconds,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.retry_max_seconds < self.retry_initial_seconds:
            raise ValueError("retry_max_seconds must be at least retry_initial_seconds")
        if self.max_launch_attempts < 1:
            raise ValueError("max_launch_attempts must be at least 1")
        if self.fence_kill_timeout_seconds >= self.offers_timeout_seconds:
            raise ValueError("fence_kill_timeout_seconds must be below offers_timeout_seconds")
        if self.probe_timeout_seconds >= self.callback_timeout_seconds:
            raise ValueError("probe_timeout_seconds must be below callback_timeout_seconds")
        if self.check_interval_seconds < self.probe_interval_seconds:
            raise ValueError("check_interval_seconds must be at least probe_interval_seconds")
        if self.probe_failures < 2:
            raise ValueError("probe_failures must be at least 2 (one lost probe is not a failure)")
        if self.maximum_lag_on_failover < 0:
            raise ValueError("maximum_lag_on_failover must be >= 0 (0: no limit)")
        if self.secret_bytes < 16:
            raise ValueError("secret_bytes must be at least 16")
        return self

    def backoff(self, attempts: int) -> float:
        """Delay before the next attempt after ``attempts`` failed ones (exponential, capped)."""
        exponent = max(0, min(attempts - 1, 30))
        return float(min(self.retry_max_seconds, self.retry_initial_seconds * (2**exponent)))
