"""Member gauges from the stored member records: a small collector that lists and then watches
KIND_INSTANCE and KIND_MEMBER records in the state service and keeps (names from
:mod:`mesos_stateful.common.metrics`):

- ``stateful_members{workload, instance, role, state}``: members by role and state (the enum
  names without their prefix, lower case: ``master`` / ``slave`` / ``peer`` / ``unspecified``,
  ``running`` / ``failed`` / ...);
- ``stateful_member_condition_failing{instance, member, condition}``: 1 when a condition of the
  member's last health check (``Member.health.conditions``, written by the lifecycle's health
  monitor) fails, else 0 (``reachable``, ``replicating``, ``caught-up``, ``consistent``);
- ``stateful_replication_lag_bytes{instance, member}``: a replica's ``Member.health.lag`` (bytes
  for Redis, transactions for MariaDB; -1 unknown).

It reads what the lifecycle stores rather than hooking the lifecycle's health monitor, so it is
self-contained and runs in one process of the suite: the gateway (one per suite; the lifecycle
runs as a leader and standbys, which would each report the same members). Label sets of deleted
members and instances are removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.common.metrics import MEMBER_CONDITION_FAILING, MEMBERS, REPLICATION_LAG_BYTES

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


def role_label(role: int) -> str:
    return T.Role.Name(role).removeprefix("ROLE_").lower()


def state_label(state: int) -> str:
    return T.MemberState.Name(state).removeprefix("MEMBER_STATE_").lower()


def condition_label(condition: int) -> str:
    name = T.ConditionType.Name(condition).removeprefix("CONDITION_TYPE_")
    return name.lower().replace("_", "-")


class MemberMetrics:
    """Keeps the member gauges in step with the state service (:meth:`run` until cancelled)."""

    def __init__(self, state: StateClient) -> None:
        self.state = state
        self.workloads: dict[str, str] = {}  # instance name -> workload
        self.members: dict[str, T.Member] = {}  # member record name -> member
        self._members_labels: set[tuple[str, str, str, str]] = set()
        self._condition_labels: set[tuple[str, str, str]] = set()
        self._lag_labels: set[tuple[str, str]] = set()

    async def run(self) -> None:
        while True:
            try:
                revision = await self._load()
                async for event in self.state.watch(
                    [spb.KIND_INSTANCE, spb.KIND_MEMBER], start_revision=revision + 1
                ):
                    self.apply(event)
                    self.publish()
            except asyncio.CancelledError:
                raise
            except errors.StatefulError as error:
                # FailedPrecondition: changes were missed (compaction, a slow watcher): list again.
                log.info("member metrics: %s; listing again", error.message)
            except Exception:
                # Metrics must never take the gateway down: log, list again.
                log.exception("member metrics: unexpected error; listing again")
            await asyncio.sleep(RETRY_SECONDS)

    async def _load(self) -> int:
        instances, _ = await self.state.list(spb.KIND_INSTANCE)
        members, revision = await self.state.list(spb.KIND_MEMBER)
        self.workloads = {r.instance.spec.name: r.instance.spec.workload for r in instances}
        self.members = {r.key.name: r.member for r in members}
        self.publish()
        return revision

    def apply(self, event: spb.WatchResponse) -> None:
        """One change of an instance or member record."""
        record = event.record
        deleted = event.type == spb.EVENT_TYPE_DELETE
        if record.HasField("instance"):
            spec = record.instance.spec
            if deleted:
                self.workloads.pop(spec.name, None)
            else:
                self.workloads[spec.name] = spec.workload
        elif record.HasField("member"):
            if deleted:
                self.members.pop(record.key.name, None)
            else:
                self.members[record.key.name] = record.member

    def publish(self) -> None:
        """Set every gauge from the records held; remove label sets no longer there."""
        counts: Counter[tuple[str, str, str, str]] = Counter()
        conditions: dict[tuple[str, str, str], float] = {}
        lags: dict[tuple[str, str], float] = {}
        for member in self.members.values():
            workload = self.workloads.get(member.instance, "")
            counts[(workload, member.instance, role_label(member.role), state_label(member.state))] += 1
            if not member.HasField("health"):
                continue
            for condition in member.health.conditions:
                key = (member.instance, member.id, condition_label(condition.type))
                conditions[key] = 0.0 if condition.ok else 1.0
            if member.role == T.ROLE_SLAVE:
                lags[(member.instance, member.id)] = float(member.health.lag)
        for labels, count in counts.items():
            MEMBERS.labels(*labels).set(count)
        for labels3, failing in conditions.items():
            MEMBER_CONDITION_FAILING.labels(*labels3).set(failing)
        for labels2, lag in lags.items():
            REPLICATION_LAG_BYTES.labels(*labels2).set(lag)
        for gone in self._members_labels - counts.keys():
            MEMBERS.remove(*gone)
        for gone3 in self._condition_labels - conditions.keys():
            MEMBER_CONDITION_FAILING.remove(*gone3)
        for gone2 in self._lag_labels - lags.keys():
            REPLICATION_LAG_BYTES.remove(*gone2)
        self._members_labels = set(counts)
        self._condition_labels = set(conditions)
        self._lag_labels = set(lags)
