"""Prometheus metrics of the suite: every metric in one catalogue, so names and labels are
defined once (Prometheus naming conventions: base units in the name, ``_total`` counters,
low-cardinality labels; https://prometheus.io/docs/practices/naming/). Each service exposes its own
part of the catalogue on ``/metrics`` (:data:`LIFECYCLE`, :data:`OFFERS`, :data:`STATE`,
:data:`GATEWAY`, :data:`WORKLOAD`; ``metrics_server.serve_metrics``), so a page holds no metric
that its service never sets. A counter whose label values form a small fixed vocabulary has every
series from the start at 0 (``rate()`` and alerts need the zero; Prometheus "instrumentation"
practices, "avoid missing metrics").

Labels: ``workload`` (redis, mysql, etcd, ...), ``instance`` (instance name), ``member`` (member
id), ``action`` (plan step action: fence, failover, launch, ...), ``outcome`` (ok / retry / error for
calls; the step status name for steps), ``cause`` (why a failover happened: lost, unresponsive,
drain, switchover (asked by an operator); cold-start when no replica ran and every member
restarted, the most advanced elected, e.g. after a restart of the whole suite), ``callback``
(Config, StartMaster, ...), ``method``
(gRPC method of the state service), ``reason`` (why a launch waits, a short fixed vocabulary).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds buckets from 10 ms to 5 min: a process-crash failover takes ~0.1 s, a cut-off one
# waits a self-fence bound (seconds), a cold start tens of seconds.
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# --- lifecycle ---------------------------------------------------------------------------------------
FAILOVER_SECONDS = Histogram(
    "stateful_failover_duration_seconds",
    "From the first sign of a master's loss (status update or missed probe) to its successor "
    "accepting writes (MasterRunning done)",
    ["workload", "cause"],
    buckets=SECONDS_BUCKETS,
)
DETECTION_SECONDS = Histogram(
    "stateful_failure_detection_seconds",
    "From the first sign of a master's loss to the recovery plan that handles it being made "
    "(see detection_seconds)",
    ["workload", "cause"],
    buckets=SECONDS_BUCKETS,
)


def detection_seconds(detected_at: float, plan_made_at: float) -> float:
    """Time to detect, the one definition (DETECTION_SECONDS, ``statefulctl trace``'s detection
    line, the console): from the first sign of a master's loss (``Plan.detected_at``: its task's
    status update or its first missed probe) to the recovery plan that handles it being made
    (``Plan.started_at``). Both in seconds since the epoch; the result in seconds, never negative."""
    return max(0.0, plan_made_at - detected_at)


PLAN_STEP_SECONDS = Histogram(
    "stateful_plan_step_duration_seconds",
    "One run of a plan step, by action and resulting status",
    ["workload", "action", "outcome"],
    buckets=SECONDS_BUCKETS,
)
PLANS_TOTAL = Counter(
    "stateful_plans_total",
    "Plans made, by plan name (deploy, scale, recovery, drain, delete)",
    ["workload", "plan"],
)
CALLBACK_SECONDS = Histogram(
    "stateful_callback_duration_seconds",
    "One workload callback attempt, by callback and outcome (ok, retry, error)",
    ["workload", "callback", "outcome"],
    buckets=(*FAST_BUCKETS, 10.0, 30.0),
)
# --- workload services (server side of the callbacks) ------------------------------------------------
WORKLOAD_CALLBACK_SECONDS = Histogram(
    "stateful_workload_callback_duration_seconds",
    "One workload callback as its workload service served it, by callback and outcome (ok, or the "
    "gRPC status code name it answered with, lower case: unavailable, failed_precondition, ...)",
    ["workload", "callback", "outcome"],
    buckets=(*FAST_BUCKETS, 10.0, 30.0),
)
WORKLOAD_CALLBACK_ERRORS_TOTAL = Counter(
    "stateful_workload_callback_errors_total",
    "Workload callbacks a workload service answered with an error, by callback and gRPC status code "
    "name (lower case: unavailable is retried by lifecycle, failed_precondition is not, unknown is a bug)",
    ["workload", "callback", "code"],
)
MEMBERS = Gauge(
    "stateful_members",
    "Members by instance, role and state (MEMBER_STATE_* without the prefix, lower case)",
    ["workload", "instance", "role", "state"],
)
MEMBER_CONDITION_FAILING = Gauge(
    "stateful_member_condition_failing",
    "1 when the member's condition (reachable, replicating, caught-up, consistent) fails, else 0",
    ["instance", "member", "condition"],
)
REPLICATION_LAG_BYTES = Gauge(
    "stateful_replication_lag_bytes",
    "A replica's replication lag behind its master as its workload measures it (bytes for "
    "Redis offsets, transactions for MariaDB GTIDs); -1 when unknown",
    ["instance", "member"],
)

# --- offers --------------------------------------------------------------------------------------------
OFFERS_RECEIVED_TOTAL = Counter("stateful_offers_received_total", "Mesos offers received")
OFFERS_DECLINED_TOTAL = Counter(
    "stateful_offers_declined_total",
    "Mesos offers declined, by why: nothing_queued (no launch waits), unfit (launches wait but "
    "this offer fits none of them), maintenance (an agent scheduled for maintenance, re-offered soon)",
    ["reason"],
)
for _reason in ("nothing_queued", "unfit", "maintenance"):
    OFFERS_DECLINED_TOTAL.labels(reason=_reason)
LAUNCHES_PENDING = Gauge(
    "stateful_launches_pending", "Queued launches waiting for an offer, by why they wait", ["reason"]
)
TASK_UPDATES_TOTAL = Counter(
    "stateful_task_status_updates_total", "Task status updates stored, by Mesos task state", ["state"]
)

# --- state service -----------------------------------------------------------------------------------
STATE_REQUEST_SECONDS = Histogram(
    "stateful_state_request_duration_seconds",
    "State service requests, by gRPC method and outcome (ok, or the status code name)",
    ["method", "outcome"],
    buckets=FAST_BUCKETS,
)
ETCD_ERRORS_TOTAL = Counter(
    "stateful_etcd_errors_total", "etcd calls of the state service that failed", ["kind"]
)
WATCH_LAG_SECONDS = Histogram(
    "stateful_watch_lag_seconds",
    "From a record's write (its stored update time) to its delivery on a watch",
    buckets=FAST_BUCKETS,
)

# --- what each service exposes ---------------------------------------------------------------------------
LIFECYCLE = (FAILOVER_SECONDS, DETECTION_SECONDS, PLAN_STEP_SECONDS, PLANS_TOTAL, CALLBACK_SECONDS)
OFFERS = (OFFERS_RECEIVED_TOTAL, OFFERS_DECLINED_TOTAL, LAUNCHES_PENDING, TASK_UPDATES_TOTAL)
STATE = (STATE_REQUEST_SECONDS, ETCD_ERRORS_TOTAL, WATCH_LAG_SECONDS)
GATEWAY = (MEMBERS, MEMBER_CONDITION_FAILING, REPLICATION_LAG_BYTES)
WORKLOAD = (WORKLOAD_CALLBACK_SECONDS, WORKLOAD_CALLBACK_ERRORS_TOTAL)
