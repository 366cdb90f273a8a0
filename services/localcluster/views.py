"""What the master shows of itself: ``/master/state`` (Mesos' ``readonly_handler.cpp``) and the
operator API's views of the same objects.

Pure functions of the :class:`~mesos_stateful.localcluster.master.Master`; nothing here changes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesos_stateful.localcluster.recordio import Json
from mesos_stateful.localcluster.resources import Resources

if TYPE_CHECKING:
    from mesos_stateful.localcluster.master import Master, Task


def master_state(master: Master) -> Json:
    """`/master/state` as Mesos renders it (`src/master/readonly_handler.cpp`)."""

    def task_json(t: Task) -> Json:
        return {
            "id": t.task_id,
            "name": t.info.get("name", ""),
            "framework_id": t.framework_id,
            "slave_id": t.agent_id,
            "agent_id": t.agent_id,
            "executor_id": t.executor_id,
            "state": t.state,
            "resources": t.resources.to_state(),
            "statuses": [t.status] if t.status else [],
        }

    frameworks = []
    for fw in master.frameworks.values():
        used = Resources()
        for t in fw.tasks.values():
            if t.holds:
                used = used + t.resources
        frameworks.append(
            {
                "id": fw.id,
                "name": fw.info.get("name"),
                "user": fw.info.get("user"),
                "active": fw.connected,
                "connected": fw.connected,
                "role": fw.role,
                "roles": fw.roles,
                "principal": fw.principal,
                "failover_timeout": fw.info.get("failover_timeout", 0),
                "checkpoint": bool(fw.info.get("checkpoint")),
                "capabilities": [c.get("type") for c in fw.info.get("capabilities", [])],
                "registered_time": fw.registered_time,
                "used_resources": used.to_state(),
                "offered_resources": sum(
                    (o.resources for o in master.offers.values() if o.framework_id == fw.id), Resources()
                ).to_state(),
                "tasks": [task_json(t) for t in fw.tasks.values() if t.state != "TASK_UNREACHABLE"],
                "unreachable_tasks": [
                    task_json(t) for t in fw.tasks.values() if t.state == "TASK_UNREACHABLE"
                ],
                "completed_tasks": [task_json(t) for t in fw.completed],
                "offers": [
                    {"id": o.id, "agent_id": o.agent_id, "resources": o.resources.to_state()}
                    for o in master.offers.values()
                    if o.framework_id == fw.id
                ],
            }
        )
    agents = [
        {
            "id": a.id,
            "hostname": a.hostname,
            "port": a.port,
            "pid": f"slave(1)@{a.endpoint}",
            "active": a.state == "ACTIVE",
            "state": a.state,
            "resources": a.total.to_state(),
            "used_resources": master.used(a).to_state(),
            "offered_resources": master.offered(a).to_state(),
            "unreserved_resources": a.total.unreserved().to_state(),
            "reserved_resources": {r: res.to_state() for r, res in a.total.reserved().by_role().items()},
            "unreserved_resources_full": a.total.unreserved().to_json(refinement=True),
            "reserved_resources_full": {
                r: res.to_json(refinement=True) for r, res in a.total.reserved().by_role().items()
            },
            "attributes": dict(a.attributes),
        }
        for a in master.agents.values()
        if a.state in ("ACTIVE", "DISCONNECTED")  # an unreachable agent is no longer registered
    ]
    return {
        "version": master_version(),
        "id": master.id,
        "hostname": master.hostname,
        "port": master.port,
        "start_time": master.start_time,
        "activated_slaves": sum(1 for a in agents if a["active"]),
        "deactivated_slaves": sum(1 for a in agents if not a["active"]),
        "unreachable_slaves": sum(1 for a in master.agents.values() if a.state == "UNREACHABLE"),
        # Agents of the previous run still recovering (not re-registered yet).
        "recovered_slaves": [
            {"id": a.id, "hostname": a.hostname, "port": a.port}
            for a in master.agents.values()
            if a.state == "RECOVERED"
        ],
        "frameworks": frameworks,
        "slaves": agents,
        "agents": agents,
        "completed_frameworks": [{"id": fid} for fid in sorted(master.removed_frameworks)],
        # Not in Mesos' /master/state: the last offer operations the master dropped, and why.
        "dropped_operations": list(master.dropped),
    }


def master_version() -> str:
    from mesos_stateful.localcluster.master import VERSION

    return VERSION
