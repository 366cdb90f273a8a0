"""Drains off an agent scheduled for maintenance (issue 11, item 8), decided by the pure planner.

Every member's task carries ``Task.maintenance`` once the offers service received an inverse
offer for its agent (Mesos docs/maintenance.md). The rules checked here: replicas first, one at a
time; the master last, by switchover (fence + failover while it runs); never without a ready
replica on another agent; peers one at a time keeping the quorum; a master loss preempts a drain,
which is planned again from state afterwards (also after a lifecycle restart).
"""

from __future__ import annotations

from typing import Any

from mesos_stateful.api.stateful.v1 import offer_service_pb2 as opb
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import planner, plans
from mesos_stateful.lifecycle.planner import decide

from .plan_helpers import complete_all, names, running_instance, snap

START = 1_800_000_000  # 2027-01-15T08:00:00Z


def maintenance(hostname: str = "127.0.0.2") -> T.AgentMaintenance:
    m = T.AgentMaintenance(inverse_offer_id="io-1", hostname=hostname)
    m.start.FromSeconds(START)
    m.duration.FromSeconds(3600)
    return m


def spread(
    members: list[T.Member], tasks: dict[str, T.Task], agents: list[str]
) -> tuple[list[T.Member], dict[str, T.Task]]:
    """Member i runs on agents[i] (its task and its placed volume, holding data)."""
    for m, agent in zip(members, agents, strict=True):
        m.agent_id = agent
        m.volume.persistence_id = f"{m.id}.abc.v1"
        m.volume.agent_id = agent
        m.volume.has_data = True
        t = tasks[m.task_id]
        t.agent_id = agent
        t.host = f"host-{agent}"
    return members, tasks


def schedule(tasks: dict[str, T.Task], agent: str) -> None:
    """The offers service's part: every live task on ``agent`` carries its maintenance window."""
    for t in tasks.values():
        if t.agent_id == agent:
            t.maintenance.CopyFrom(maintenance(f"host-{agent}"))


def redis(
    replicas: int = 3, agents: list[str] | None = None
) -> tuple[T.Instance, list[T.Member], dict[str, T.Task]]:
    inst, members, tasks = running_instance(replicas)
    inst.has_data = True
    members, tasks = spread(members, tasks, agents or [f"a{i}" for i in range(replicas)])
    return inst, members, tasks


def test_no_maintenance_no_drain() -> None:
    inst, members, tasks = redis()
    assert decide(snap(inst, members, tasks)) == (None, False)


def test_a_replica_on_a_draining_agent_is_drained_alone_with_the_reason_naming_it() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a1")
    plan, new = decide(snap(inst, members, tasks))
    assert new and plan is not None and plan.name == plans.DRAIN
    assert plan.reason == "drain cache-1 off agent host-a1 (maintenance at 2027-01-15T08:00:00Z)"
    assert names(plan) == [
        "drain cache-1",
        "launch cache-1",
        "await-running cache-1",
        "start-slave cache-1",
        "slave-running cache-1",
    ]
    s = snap(inst, members, tasks)
    assert planner.phase_for(s, plan) == T.INSTANCE_PHASE_DRAINING


def test_replicas_first_one_at_a_time_then_the_master_by_switchover() -> None:
    # Every member on one agent scheduled for maintenance.
    inst, members, tasks = redis(agents=["a0", "a0", "a0"])
    schedule(tasks, "a0")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan)[0] == "drain cache-1"
    assert all(s.member_id == "cache-1" for s in plan.steps)  # one member per plan

    # cache-1 moved to a1 (its new task there carries no maintenance): cache-2 next.
    t1 = tasks[members[1].task_id]
    t1.ClearField("maintenance")
    t1.agent_id = "a1"
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan)[0] == "drain cache-2"

    t2 = tasks[members[2].task_id]
    t2.ClearField("maintenance")
    t2.agent_id = "a2"
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and plan.name == plans.DRAIN
    # The drain step of a master appends the switchover once it may (see the step tests).
    assert names(plan) == ["drain cache-0"]
    assert plan.reason.startswith("drain cache-0 off agent host-a0 (maintenance at 2027-01-15T08:00:00Z)")
    assert plan.reason.endswith("by switchover")
    assert [s.name for s in planner.switchover("cache-0")] == ["fence cache-0", "failover cache-0"]


def test_a_drain_waits_while_a_member_is_not_ready() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a1")
    members[2].state = T.MEMBER_STATE_STARTING
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and plan.name != plans.DRAIN  # bringing cache-2 up comes first
    assert "drain" not in " ".join(names(plan))


def test_switchover_promotes_only_a_replica_on_another_agent_not_going_down() -> None:
    inst, members, tasks = redis(agents=["a0", "a1", "a2"])
    schedule(tasks, "a0")
    schedule(tasks, "a2")
    # cache-2 is on a2, draining too but not moved yet: replicas come first.
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan)[0] == "drain cache-2"
    s = snap(inst, members, tasks)
    assert [m.id for m in planner.switchover_candidates(s, "cache-0")] == ["cache-1"]


def test_after_a_switchover_the_old_master_is_drained_before_it_comes_back_as_a_replica() -> None:
    inst, members, tasks = redis()
    steps = planner.after_failover(snap(inst, members, tasks), "cache-0", "cache-1", drain=True)
    assert [s.name for s in steps] == [
        "start-master cache-1",
        "master-running cache-1",
        "start-slave cache-2",
        "drain cache-0",
        "launch cache-0",
        "await-running cache-0",
        "start-slave cache-0",
        "slave-running cache-0",
    ]
    plain = planner.after_failover(snap(inst, members, tasks), "cache-0", "cache-1")
    assert "drain cache-0" not in [s.name for s in plain]


def test_a_master_without_a_ready_replica_elsewhere_is_not_moved_and_the_plan_says_why() -> None:
    inst, members, tasks = redis(replicas=1)
    schedule(tasks, "a0")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and plan.name == plans.DRAIN
    assert names(plan) == ["drain cache-0"]  # waits (DELAYED), never fences
    assert "no ready replica to switch over to (replicas=1); scale to 2 replicas" in plan.reason

    # The only replica is on the same agent: it is drained first (then the master can move).
    inst, members, tasks = redis(replicas=2, agents=["a0", "a0"])
    schedule(tasks, "a0")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan)[0] == "drain cache-1"

    # The only replica is not ready: no switchover (and no drain at all until it is).
    inst, members, tasks = redis(replicas=2)
    schedule(tasks, "a0")
    tasks[members[1].task_id].state = T.TASK_STATE_STARTING
    members[1].state = T.MEMBER_STATE_STARTING
    s = snap(inst, members, tasks)
    assert "not running" in planner.switchover_blocker(s, members[0])
    plan, _ = decide(s)
    assert plan is None or plan.name != plans.DRAIN


def test_a_blocked_master_drain_is_replaced_by_a_scale_up() -> None:
    inst, members, tasks = redis(replicas=1)
    schedule(tasks, "a0")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    inst.plan.CopyFrom(plan)
    inst.spec.replicas = 2
    inst.generation = 2
    replaced, new = decide(snap(inst, members, tasks))
    assert new and replaced is not None and replaced.name == plans.SCALE


def test_a_switchover_in_progress_is_not_replaced_by_a_spec_change() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a0")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan) == ["drain cache-0"]
    complete_all(plan)
    plan.steps.extend(planner.switchover("cache-0"))  # what the drain step appends
    plan.steps[1].status = plans.STARTING  # the fence is under way
    inst.plan.CopyFrom(plan)
    inst.spec.replicas = 5
    inst.generation = 2
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan


def test_a_master_loss_during_a_replica_drain_yields_to_the_recovery_and_the_drain_resumes_after() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a1")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan)[0] == "drain cache-1"
    complete_all(plan, upto=1)  # cache-1 got a fresh volume and was killed
    tasks[members[1].task_id].kill_requested = True
    tasks[members[1].task_id].state = T.TASK_STATE_KILLED
    members[1].volume.Clear()
    members[1].state = T.MEMBER_STATE_STOPPED
    inst.plan.CopyFrom(plan)
    tasks[members[0].task_id].state = T.TASK_STATE_FAILED  # the master dies meanwhile
    recovery, new = decide(snap(inst, members, tasks))
    assert new and recovery is not None and recovery.name == plans.RECOVERY
    assert recovery.reason.startswith("master cache-0 lost")

    # After the recovery (cache-2 promoted, cache-0 back as a replica, cache-1 relaunched on its
    # fresh volume elsewhere), a restarted lifecycle plans the drains from state again.
    inst, members, tasks = redis(agents=["a0", "a3", "a2"])
    members[0].role, members[2].role = T.ROLE_SLAVE, T.ROLE_MASTER
    schedule(tasks, "a1")  # nothing of the instance is on a1 any more
    assert decide(snap(inst, members, tasks)) == (None, False)
    schedule(tasks, "a2")  # the new master's agent goes down too: switchover from it
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan) == ["drain cache-2"]
    assert plan.reason.endswith("by switchover")


def test_a_lost_master_in_a_switchover_is_handled_by_the_drain_plan() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a0")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    complete_all(plan)
    plan.steps.extend(planner.switchover("cache-0"))
    inst.plan.CopyFrom(plan)
    tasks[members[0].task_id].state = T.TASK_STATE_FAILED  # not killed by us: lost
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan  # its fence + failover handle the loss


def test_a_master_lost_before_its_switchover_started_gets_the_recovery_plan() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a0")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan) == ["drain cache-0"]
    inst.plan.CopyFrom(plan)
    tasks[members[0].task_id].state = T.TASK_STATE_FAILED
    recovery, new = decide(snap(inst, members, tasks))
    assert new and recovery is not None and recovery.name == plans.RECOVERY
    assert names(recovery) == ["fence cache-0", "failover cache-0"]


def test_a_replica_lost_during_a_drain_replans() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a1")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    inst.plan.CopyFrom(plan)
    tasks[members[2].task_id].state = T.TASK_STATE_LOST
    replanned, new = decide(snap(inst, members, tasks))
    assert new and replanned is not None and replanned.name == plans.RECOVERY


def test_a_drain_in_progress_resumes_as_the_same_plan_after_a_restart() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a1")
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    complete_all(plan, upto=2)  # drained, launched; the lifecycle restarts here
    inst.plan.CopyFrom(plan)
    old = tasks.pop(members[1].task_id)
    old.state, old.kill_requested = T.TASK_STATE_KILLED, True
    tasks[old.task_id] = old
    members[1].state = T.MEMBER_STATE_STOPPED
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan and plans.first_open(kept) == 2


def test_peers_are_drained_one_at_a_time_keeping_the_quorum() -> None:
    inst, members, tasks = running_instance(3, peers=True)
    inst.has_data = True
    members, tasks = spread(members, tasks, ["a0", "a0", "a2"])
    schedule(tasks, "a0")
    plan, _ = decide(snap(inst, members, tasks, peers=True))
    assert plan is not None and plan.name == plans.DRAIN
    assert names(plan) == [
        "remove-member cache-0",
        "drain cache-0",
        "launch cache-0",
        "await-running cache-0",
        "start cache-0",
        "peer-running cache-0",
    ]
    assert plan.reason == "drain cache-0 off agent host-a0 (maintenance at 2027-01-15T08:00:00Z)"
    inst.plan.CopyFrom(plan)
    # The removed etcd peer exits by itself: progress of the drain, not a loss to replan.
    complete_all(plan, upto=1)
    inst.plan.CopyFrom(plan)
    tasks[members[0].task_id].state = T.TASK_STATE_FAILED
    kept, new = decide(snap(inst, members, tasks, peers=True))
    assert not new and kept is inst.plan
    # Another peer lost meanwhile: the drain yields to a recovery (quorum first).
    tasks[members[2].task_id].state = T.TASK_STATE_LOST
    replanned, new = decide(snap(inst, members, tasks, peers=True))
    assert new and replanned is not None and replanned.name == plans.RECOVERY


def test_a_single_peer_is_not_drained() -> None:
    inst, members, tasks = running_instance(1, peers=True)
    members, tasks = spread(members, tasks, ["a0"])
    schedule(tasks, "a0")
    plan, _ = decide(snap(inst, members, tasks, peers=True))
    assert plan is not None and names(plan) == ["drain cache-0"]
    assert plan.reason.endswith("cannot move it: no other peer to resync from")


def test_launches_avoid_every_draining_agent_but_a_pinned_volume_s() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a1")
    schedule(tasks, "a2")
    s = snap(inst, members, tasks)
    assert [a.agent_id for a in planner.maintenance_avoid(s, members[0])] == ["a1", "a2"]
    assert [a.agent_id for a in planner.maintenance_avoid(s, members[1])] == ["a2"]  # pinned to a1
    members[1].volume.agent_id = ""  # drained: a fresh volume, placed anywhere but a1 / a2
    assert [a.agent_id for a in planner.maintenance_avoid(s, members[1])] == ["a1", "a2"]
    assert all(not a.ports for a in planner.maintenance_avoid(s, members[1]))


def test_the_member_shows_its_task_s_maintenance_while_it_is_on_that_agent() -> None:
    _, members, tasks = redis()
    schedule(tasks, "a1")
    updated = planner.sync_member(members[1], tasks[members[1].task_id])
    assert updated is not None and updated.maintenance == maintenance("host-a1")
    moved = tasks[members[1].task_id]
    moved.ClearField("maintenance")
    cleared = planner.sync_member(updated, moved)
    assert cleared is not None and not cleared.HasField("maintenance")
    unchanged = planner.sync_member(members[0], tasks[members[0].task_id])
    assert unchanged is None or not unchanged.HasField("maintenance")


def test_a_launch_pinned_to_an_agent_down_for_maintenance_is_replaced_unless_it_holds_the_only_copy() -> None:
    inst, members, tasks = redis()
    schedule(tasks, "a1")
    # cache-1 lost there, relaunched in place: its new task waits for an offer from a1.
    queued = T.Task(task_id="cache-1.2", instance="cache", member_id="cache-1", state=T.TASK_STATE_QUEUED)
    queued.launch.volume.agent_id = "a1"
    members[1].task_id = queued.task_id
    members[1].state = T.MEMBER_STATE_LAUNCHING
    tasks[queued.task_id] = queued
    s = snap(inst, members, tasks)
    assert planner.down_for_maintenance(s, members[1], queued, START - 1) is None  # not started yet
    window = planner.down_for_maintenance(s, members[1], queued, START + 1)
    assert window is not None and window.hostname == "host-a1"
    # The only member holding the data (the others' volumes hold none): it waits for the agent.
    for m in (members[0], members[2]):
        m.volume.has_data = False
    assert planner.down_for_maintenance(snap(inst, members, tasks), members[1], queued, START + 1) is None


# --- a plan that began handling the master keeps it until its new master is started ---------------


def _switched_over(name: str = plans.DRAIN) -> tuple[T.Instance, list[T.Member], dict[str, T.Task]]:
    """cache-0's agent drained: fenced (demoted), cache-1 promoted (the failover step COMPLETE),
    its start-master not run yet — the moment issue 11's scale replaced the plan."""
    inst, members, tasks = redis(agents=["a0", "a1", "a2"])
    schedule(tasks, "a0")
    s = snap(inst, members, tasks)
    plan = plans.new_plan(name, "drain cache-0 off agent host-a0 by switchover", 1, [])
    if name == plans.DRAIN:
        plan.steps.append(plans.step(plans.Action.DRAIN, "cache-0"))
    plan.steps.extend(planner.switchover("cache-0"))
    complete_all(plan)
    plan.steps.extend(planner.after_failover(s, "cache-0", "cache-1", drain=name == plans.DRAIN))
    plan.status = plans.plan_status(plan)
    members[0].role, members[0].state = T.ROLE_SLAVE, T.MEMBER_STATE_LOST
    members[1].role = T.ROLE_MASTER  # promoted: still RUNNING, but a read-only replica of nobody
    inst.plan.CopyFrom(plan)
    return inst, members, tasks


def _started(plan: T.Plan, member: str) -> None:
    for st in plan.steps:
        if st.name in (f"start-master {member}", f"master-running {member}"):
            st.status = plans.COMPLETE
    plan.status = plans.plan_status(plan)


def test_a_scale_right_after_the_switchover_s_failover_does_not_replace_the_drain() -> None:
    inst, members, tasks = _switched_over()
    assert planner.handing_over(snap(inst, members, tasks), inst.plan)
    inst.spec.replicas, inst.generation = 4, 2
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan
    # Once the new master runs in its role the scale may replace what is left of the drain.
    _started(inst.plan, "cache-1")
    assert not planner.handing_over(snap(inst, members, tasks), inst.plan)
    replaced, new = decide(snap(inst, members, tasks))
    assert new and replaced is not None and replaced.name == plans.SCALE


def test_a_fence_started_is_not_replaced_by_a_spec_change_nor_a_new_loss() -> None:
    inst, members, tasks = redis(agents=["a0", "a1", "a2"])
    schedule(tasks, "a0")
    plan = plans.new_plan(plans.DRAIN, "drain", 1, [plans.step(plans.Action.DRAIN, "cache-0")])
    complete_all(plan)
    plan.steps.extend(planner.switchover("cache-0"))
    plan.steps[1].status = plans.DELAYED  # the fence is under way (a first attempt failed)
    inst.plan.CopyFrom(plan)
    inst.spec.replicas, inst.generation = 5, 2
    tasks[members[2].task_id].state = T.TASK_STATE_LOST  # and a replica is lost meanwhile
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan


def test_new_losses_do_not_replace_a_switchover_before_its_new_master_started() -> None:
    inst, members, tasks = _switched_over()
    tasks[members[2].task_id].state = T.TASK_STATE_LOST
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan
    _started(inst.plan, "cache-1")
    replaced, new = decide(snap(inst, members, tasks))
    assert new and replaced is not None and replaced.name == plans.RECOVERY


def test_a_rebuild_asked_for_does_not_replace_a_handover_before_its_new_master_started() -> None:
    for name in (plans.DRAIN, plans.RECOVERY):
        inst, members, tasks = _switched_over(name)
        members[2].health.repair = T.REPAIR_REBUILD  # its check asks for a rebuild
        kept, new = decide(snap(inst, members, tasks))
        assert not new and kept is inst.plan, name
        # Started: a plan waiting on start-slave of a replica that must be rebuilt is replaced.
        _started(inst.plan, "cache-1")
        replaced, new = decide(snap(inst, members, tasks))
        assert new and replaced is not None, name


def test_a_recovery_is_protected_the_same_way() -> None:
    inst, members, tasks = _switched_over(plans.RECOVERY)
    inst.spec.replicas, inst.generation = 4, 2
    tasks[members[2].task_id].state = T.TASK_STATE_LOST
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan


def test_a_cold_start_election_keeps_its_plan_until_the_elected_master_started() -> None:
    inst, members, tasks = redis(agents=["a0", "a1", "a2"])
    s = snap(inst, members, tasks)
    plan = plans.new_plan(plans.RECOVERY, "cold start", 1, planner.cold_start(s, "cache-0", fence=False))
    complete_all(plan)
    plan.steps.extend(planner.after_election(s, "cache-2"))
    inst.plan.CopyFrom(plan)
    members[0].role, members[2].role = T.ROLE_SLAVE, T.ROLE_MASTER
    members[1].health.repair = T.REPAIR_REBUILD
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan


def test_a_delete_still_wins_over_a_handover() -> None:
    inst, members, tasks = _switched_over()
    inst.phase = T.INSTANCE_PHASE_DELETING
    plan, new = decide(snap(inst, members, tasks))
    assert new and plan is not None and plan.name == plans.DELETE


# --- room elsewhere before a member is stopped for a drain -----------------------------------------


def _agent(agent_id: str, cpus: float = 8, mem: int = 8192, disk: int = 100_000, **kw: Any) -> opb.Agent:
    """An offers-service Agent; ``kw``: more Agent fields (maintenance, reservations)."""
    return opb.Agent(
        agent_id=agent_id,
        hostname=f"host-{agent_id}",
        total=T.Resources(cpus=cpus, mem_mb=mem, disk_mb=disk),
        **kw,
    )


NO_ROOM = (
    "no agent to move cache-1 to: every other agent is scheduled for maintenance or holds a member of cache"
)


def test_a_drain_has_room_only_on_an_agent_not_scheduled_nor_holding_a_member() -> None:
    inst, members, tasks = redis(agents=["a0", "a1", "a2"])
    schedule(tasks, "a1")
    s = snap(inst, members, tasks)
    # Every other agent holds a member: no room (the member is not stopped).
    assert planner.drain_room(s, members[1], [_agent("a0"), _agent("a1"), _agent("a2")]) == NO_ROOM
    # A free agent: room.
    assert planner.drain_room(s, members[1], [_agent("a0"), _agent("a1"), _agent("a3")]) == ""
    # The free agent is scheduled too (a task of ours there says so): no room.
    tasks["other.1"] = T.Task(task_id="other.1", agent_id="a3", state=T.TASK_STATE_KILLED)
    tasks["other.1"].maintenance.CopyFrom(maintenance("host-a3"))
    s = snap(inst, members, tasks)
    assert planner.drain_room(s, members[1], [_agent("a1"), _agent("a3")]) == NO_ROOM
    del tasks["other.1"]
    # An agent holding another member's volume (its task elsewhere or ended) is not room either.
    members[2].volume.agent_id = "a4"
    s = snap(inst, members, tasks)
    assert planner.drain_room(s, members[1], [_agent("a4")]) == NO_ROOM


def test_a_drain_has_no_room_on_a_free_agent_the_offers_service_says_is_scheduled() -> None:
    # No task of ours on a3: only GetCluster's Agent.maintenance (its offers' unavailability)
    # says it is scheduled for maintenance.
    inst, members, tasks = redis(agents=["a0", "a1", "a2"])
    schedule(tasks, "a1")
    s = snap(inst, members, tasks)
    assert planner.drain_room(s, members[1], [_agent("a3")]) == ""
    scheduled = _agent("a3", maintenance=maintenance("host-a3"))
    assert planner.drain_room(s, members[1], [scheduled]) == NO_ROOM
    assert planner.drain_room(s, members[1], [scheduled, _agent("a4")]) == ""


def test_a_drain_has_no_room_on_an_agent_without_the_member_s_resources() -> None:
    from mesos_stateful.api.stateful.v1 import offer_service_pb2 as opb

    inst, members, tasks = redis(agents=["a0", "a1", "a2"])
    inst.spec.resources.CopyFrom(T.Resources(cpus=1, mem_mb=512, disk_mb=100))
    members[1].volume.size_mb = 100
    schedule(tasks, "a1")
    s = snap(inst, members, tasks)
    used = opb.Reservation(instance="other", member_id="other-0", resources=T.Resources(cpus=7.5, mem_mb=100))
    why = planner.drain_room(s, members[1], [_agent("a3", reservations=[used])])
    assert why.startswith(NO_ROOM + ", or lacks its resources (cpus 1, mem 512 MB, disk 100 MB): host-a3 has")
    # An orphaned reservation is being destroyed: it does not count.
    used.orphaned = True
    assert planner.drain_room(s, members[1], [_agent("a3", reservations=[used])]) == ""
