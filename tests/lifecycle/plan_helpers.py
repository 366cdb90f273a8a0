"""Builders of planner snapshots for the pure planner tests."""

from __future__ import annotations

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import plans
from mesos_stateful.lifecycle.planner import Snapshot


def description(peers: bool = False, secrets: tuple[str, ...] = ("password",)) -> T.WorkloadDescription:
    return T.WorkloadDescription(
        name="etcd" if peers else "redis",
        topology=T.TOPOLOGY_PEERS if peers else T.TOPOLOGY_MASTER_REPLICA,
        port_names=["client"],
        default_resources=T.Resources(cpus=0.5, mem_mb=128, disk_mb=64),
        secret_names=list(secrets),
        default_image="redis:7",
    )


def instance(
    replicas: int = 3, phase: int = T.INSTANCE_PHASE_PENDING, generation: int = 1, name: str = "cache"
) -> T.Instance:
    return T.Instance(
        spec=T.InstanceSpec(name=name, workload="redis", replicas=replicas),
        phase=phase,  # type: ignore[arg-type]
        generation=generation,
    )


def member(
    ordinal: int,
    role: int = T.ROLE_SLAVE,
    state: int = T.MEMBER_STATE_RUNNING,
    incarnation: int = 1,
    name: str = "cache",
) -> T.Member:
    mid = plans.member_id(name, ordinal)
    return T.Member(
        id=mid,
        instance=name,
        ordinal=ordinal,
        role=role,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        incarnation=incarnation,
        task_id=plans.task_id(mid, incarnation) if incarnation else "",
        host="127.0.0.2",
        agent_id="agent-1",
        ports={"client": 31000 + ordinal},
        message="RUNNING" if state == T.MEMBER_STATE_RUNNING else "",
    )


def task(m: T.Member, state: int = T.TASK_STATE_RUNNING, kill_requested: bool = False) -> T.Task:
    return T.Task(
        task_id=m.task_id,
        instance=m.instance,
        member_id=m.id,
        agent_id="agent-1",
        host="127.0.0.2",
        ports={"client": 31000 + m.ordinal},
        state=state,  # type: ignore[arg-type]
        kill_requested=kill_requested,
    )


def running_instance(
    replicas: int = 3, master: int = 0, peers: bool = False, phase: int = T.INSTANCE_PHASE_RUNNING
) -> tuple[T.Instance, list[T.Member], dict[str, T.Task]]:
    inst = instance(replicas, phase)
    members = []
    for o in range(replicas):
        role = T.ROLE_PEER if peers else (T.ROLE_MASTER if o == master else T.ROLE_SLAVE)
        members.append(member(o, role))
    tasks = {m.task_id: task(m) for m in members}
    return inst, members, tasks


def snap(
    inst: T.Instance,
    members: list[T.Member],
    tasks: dict[str, T.Task],
    desc: T.WorkloadDescription | None = None,
    peers: bool = False,
) -> Snapshot:
    return Snapshot(
        instance=inst,
        members=sorted(members, key=lambda m: m.ordinal),
        tasks=tasks,
        description=desc if desc is not None else description(peers),
    )


def names(plan: T.Plan) -> list[str]:
    return [s.name for s in plan.steps]


def complete_all(plan: T.Plan, upto: int | None = None) -> T.Plan:
    for s in plan.steps[: upto if upto is not None else len(plan.steps)]:
        s.status = plans.COMPLETE
    plan.status = plans.plan_status(plan)
    return plan
