"""The planner is pure: every decision is checked here from hand-built snapshots."""

from __future__ import annotations

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import planner, plans
from mesos_stateful.lifecycle.planner import Condition, classify, decide, sync_member

from .plan_helpers import complete_all, description, instance, member, names, running_instance, snap, task

# --- deploy ---------------------------------------------------------------------------------------


def test_new_master_replica_instance_gets_a_deploy_plan_master_first() -> None:
    plan, new = decide(snap(instance(3), [], {}))
    assert new and plan is not None
    assert plan.name == plans.DEPLOY and plan.generation == 1
    assert names(plan) == [
        "secrets",
        "create cache-0",
        "create cache-1",
        "create cache-2",
        "launch cache-0",
        "await-running cache-0",
        "start-master cache-0",
        "master-running cache-0",
        "launch cache-1",
        "launch cache-2",
        "await-running cache-1",
        "await-running cache-2",
        "start-slave cache-1",
        "slave-running cache-1",
        "start-slave cache-2",
        "slave-running cache-2",
    ]
    assert all(s.status == plans.PENDING for s in plan.steps)
    assert plan.status == plans.PENDING


def test_new_peer_instance_launches_peers_one_at_a_time() -> None:
    plan, _ = decide(snap(instance(3), [], {}, peers=True))
    assert plan is not None
    assert names(plan)[4:] == [
        f"{a} cache-{o}" for o in range(3) for a in ("launch", "await-running", "start", "peer-running")
    ]


def test_unregistered_workload_plans_nothing() -> None:
    s = planner.Snapshot(instance=instance(3), members=[], tasks={}, description=None)
    assert decide(s) == (None, False)


def test_running_instance_needs_no_plan_and_is_running() -> None:
    inst, members, tasks = running_instance()
    s = snap(inst, members, tasks)
    assert decide(s) == (None, False)
    assert planner.phase_for(s, None) == T.INSTANCE_PHASE_RUNNING


def test_plan_in_progress_is_kept() -> None:
    s = snap(instance(3), [], {})
    plan, _ = decide(s)
    assert plan is not None
    complete_all(plan, upto=6)
    inst = instance(3, T.INSTANCE_PHASE_DEPLOYING)
    inst.plan.CopyFrom(plan)
    m0 = member(0, T.ROLE_MASTER, T.MEMBER_STATE_STARTING)
    kept, new = decide(snap(inst, [m0, member(1, state=T.MEMBER_STATE_PENDING, incarnation=0)], {}))
    assert not new and kept is inst.plan
    assert plans.first_open(kept) == 6


def test_deploy_plan_for_an_older_generation_is_replaced() -> None:
    plan, _ = decide(snap(instance(3), [], {}))
    assert plan is not None
    inst = instance(5, T.INSTANCE_PHASE_DEPLOYING, generation=2)
    inst.plan.CopyFrom(plan)
    members = [member(0, T.ROLE_MASTER, T.MEMBER_STATE_PENDING, incarnation=0)]
    replaced, new = decide(snap(inst, members, {}))
    assert new and replaced is not None and replaced.generation == 2
    assert "create cache-4" in names(replaced)


# --- member state ---------------------------------------------------------------------------------


def test_sync_member_follows_task_states() -> None:
    m = member(1, state=T.MEMBER_STATE_LAUNCHING)
    assert sync_member(m, task(m, T.TASK_STATE_STARTING)).state == T.MEMBER_STATE_STARTING  # type: ignore[union-attr]
    # RUNNING on the member means "ready in its role": a running task alone makes it STARTING.
    assert sync_member(m, task(m, T.TASK_STATE_RUNNING)).state == T.MEMBER_STATE_STARTING  # type: ignore[union-attr]
    ready = member(1)
    assert sync_member(ready, task(ready)) is None
    failed = sync_member(ready, task(ready, T.TASK_STATE_FAILED))
    assert (
        failed is not None and failed.state == T.MEMBER_STATE_FAILED and failed.message.startswith("FAILED")
    )
    assert sync_member(ready, task(ready, T.TASK_STATE_LOST)).state == T.MEMBER_STATE_LOST  # type: ignore[union-attr]
    stopped = sync_member(ready, task(ready, T.TASK_STATE_KILLED, kill_requested=True))
    assert stopped is not None and stopped.state == T.MEMBER_STATE_STOPPED
    # A task of another incarnation does not touch the member.
    old = task(member(1, incarnation=1), T.TASK_STATE_FAILED)
    assert sync_member(member(1, incarnation=2), old) is None


def test_sync_member_takes_host_and_ports_from_the_task() -> None:
    m = member(2, state=T.MEMBER_STATE_LAUNCHING)
    m.host = ""
    m.ports.clear()
    t = task(m, T.TASK_STATE_STARTING)
    t.host, t.agent_id = "127.0.0.4", "agent-3"
    synced = sync_member(m, t)
    assert synced is not None and synced.host == "127.0.0.4" and synced.agent_id == "agent-3"
    assert dict(synced.ports) == {"client": 31002}


def test_classify() -> None:
    m = member(0)
    assert classify(m, task(m)) == Condition.READY
    assert classify(m, None) == Condition.NOT_READY
    assert classify(m, task(m, T.TASK_STATE_STARTING)) == Condition.NOT_READY
    for state in (T.TASK_STATE_FAILED, T.TASK_STATE_LOST, T.TASK_STATE_KILLED, T.TASK_STATE_UNREACHABLE):
        assert classify(m, task(m, state)) == Condition.LOST
    assert classify(m, task(m, T.TASK_STATE_KILLED, kill_requested=True)) == Condition.NOT_READY
    declined = member(0)
    declined.message = planner.DECLINED_PREFIX + ": workload said so"
    assert classify(declined, task(declined, T.TASK_STATE_FAILED)) == Condition.DECLINED


# --- recovery -------------------------------------------------------------------------------------


def _lose(tasks: dict[str, T.Task], m: T.Member, state: int = T.TASK_STATE_FAILED) -> None:
    tasks[m.task_id] = task(m, state)


def test_lost_master_with_ready_replicas_fails_over() -> None:
    inst, members, tasks = running_instance()
    _lose(tasks, members[0])
    plan, new = decide(snap(inst, members, tasks))
    assert new and plan is not None and plan.name == plans.RECOVERY
    assert names(plan) == ["fence cache-0", "failover cache-0"]
    assert "master cache-0 lost: FAILED" in plan.reason


def test_after_failover_starts_new_master_repoints_replicas_then_relaunches_the_old_one() -> None:
    inst, members, tasks = running_instance()
    steps = planner.after_failover(snap(inst, members, tasks), "cache-0", "cache-2")
    assert [s.name for s in steps] == [
        "start-master cache-2",
        "master-running cache-2",
        "start-slave cache-1",
        "launch cache-0",
        "await-running cache-0",
        "start-slave cache-0",
        "slave-running cache-0",
    ]


def test_lost_master_without_ready_replica_is_restarted_in_place_then_elected() -> None:
    inst, members, tasks = running_instance(replicas=1)
    _lose(tasks, members[0], T.TASK_STATE_LOST)
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    # TASK_LOST: it may still run on a cut-off agent; relaunched in place on its volume (one task
    # at a time), it needs no fence.
    assert names(plan) == [
        "demote cache-0",
        "relaunch cache-0",
        "await-running cache-0",
        "elect cache-0",
    ]
    assert "restarting every member on its volume" in plan.reason


def test_every_member_lost_restarts_all_in_place_as_replicas_then_elects() -> None:
    inst, members, tasks = running_instance()
    for m in members:
        _lose(tasks, m, T.TASK_STATE_LOST)
    plan, new = decide(snap(inst, members, tasks))
    assert new and plan is not None and plan.name == plans.RECOVERY
    assert names(plan) == [
        "demote cache-0",
        "relaunch cache-0",
        "relaunch cache-1",
        "relaunch cache-2",
        "await-running cache-0",
        "await-running cache-1",
        "await-running cache-2",
        "elect cache-0",
    ]
    # While it runs, the master's record is a SLAVE: the plan is kept, not replanned.
    inst.plan.CopyFrom(plan)
    members[0].role = T.ROLE_SLAVE
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan


def test_a_replica_without_data_is_no_failover_candidate() -> None:
    inst, members, tasks = running_instance()
    inst.has_data = True
    for m in members:
        m.volume.has_data = m.ordinal != 2
    _lose(tasks, members[0])
    s = snap(inst, members, tasks)
    assert [m.id for m in planner.failover_candidates(s, "cache-0")] == ["cache-1"]
    members[1].volume.has_data = False
    assert planner.failover_candidates(snap(inst, members, tasks), "cache-0") == []
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan)[0] == "demote cache-0"


def test_election_waits_for_every_member_holding_data() -> None:
    inst, members, tasks = running_instance()
    inst.has_data = True
    for m in members:
        m.volume.has_data = m.ordinal != 1
    _lose(tasks, members[2], T.TASK_STATE_STAGING)
    candidates, waited = planner.election_candidates(snap(inst, members, tasks))
    assert [m.id for m in candidates] == ["cache-0"]
    assert [m.id for m in waited] == ["cache-2"]
    inst.has_data = False  # never had data: anybody may lead
    candidates, waited = planner.election_candidates(snap(inst, members, tasks))
    assert [m.id for m in candidates] == ["cache-0", "cache-1"]


def test_after_election_the_chosen_leads_and_every_other_follows() -> None:
    inst, members, tasks = running_instance()
    steps = planner.after_election(snap(inst, members, tasks), "cache-1")
    assert [s.name for s in steps] == [
        "start-master cache-1",
        "master-running cache-1",
        "start-slave cache-0",
        "slave-running cache-0",
        "start-slave cache-2",
        "slave-running cache-2",
    ]


def test_volume_is_recorded_once_a_task_with_it_started() -> None:
    _inst, members, tasks = running_instance()
    m = members[1]
    m.volume.CopyFrom(T.Volume(persistence_id="cache-1.v1", container_path="data", size_mb=64))
    t = tasks[m.task_id]
    t.launch.volume.CopyFrom(m.volume)
    t.agent_id, t.host = "agent-7", "127.0.0.9"
    t.state = T.TASK_STATE_STAGING
    assert (planner.sync_member(m, t) or m).volume.agent_id == ""
    t.state = T.TASK_STATE_STARTING
    synced = planner.sync_member(m, t)
    assert synced is not None and synced.volume.agent_id == "agent-7" and synced.volume.host == "127.0.0.9"
    # A task of another volume (a replacement) does not move the record's volume.
    t.launch.volume.persistence_id = "cache-1.v2"
    assert (planner.sync_member(m, t) or m).volume.agent_id == ""


def test_launch_carries_the_members_volume() -> None:
    inst, members, _ = running_instance()
    m = members[1]
    m.volume.CopyFrom(
        T.Volume(persistence_id="cache-1.v1", container_path="data", size_mb=300, agent_id="a", has_data=True)
    )
    launch = planner.launch_spec(T.LaunchSpec(argv=["x"]), inst, m, description())
    assert launch.volume.persistence_id == "cache-1.v1" and launch.volume.agent_id == "a"
    assert launch.resources.disk_mb == 300
    assert plans.volume_generation("cache-1.v12") == 12
    inst.created_at.FromSeconds(1_800_000_000)
    fresh = planner.new_volume(snap(inst, members, {}), "cache-1", 2)
    uid = plans.instance_uid(inst.created_at)
    assert len(uid) == 6 and fresh.persistence_id == f"cache-1.{uid}.v2"
    # Another instance of the same name (created later) never shares a volume id with it.
    inst.created_at.FromSeconds(1_800_000_001)
    assert planner.new_volume(snap(inst, members, {}), "cache-1", 2).persistence_id != fresh.persistence_id


def test_recovery_in_progress_is_resumed_not_restarted() -> None:
    inst, members, tasks = running_instance()
    _lose(tasks, members[0])
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    plan.steps[0].status = plans.STARTING
    plan.steps[0].attempts = 1
    inst.plan.CopyFrom(plan)
    inst.phase = T.INSTANCE_PHASE_RECOVERING
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan


def test_roles_persisted_by_failover_keep_the_recovery_running() -> None:
    # After the failover step: cache-1 is MASTER, cache-0 a LOST SLAVE; the plan goes on.
    inst, members, tasks = running_instance()
    _lose(tasks, members[0])
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    plan.steps[0].status = plans.COMPLETE
    plan.steps.extend(planner.after_failover(snap(inst, members, tasks), "cache-0", "cache-1"))
    inst.plan.CopyFrom(plan)
    members[0].role, members[0].state = T.ROLE_SLAVE, T.MEMBER_STATE_LOST
    members[1].role = T.ROLE_MASTER
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan


def test_new_master_lost_during_recovery_starts_another_recovery() -> None:
    inst, members, tasks = running_instance()
    _lose(tasks, members[0])
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    plan.steps[0].status = plans.COMPLETE
    plan.steps.extend(planner.after_failover(snap(inst, members, tasks), "cache-0", "cache-1"))
    inst.plan.CopyFrom(plan)
    members[0].role = T.ROLE_SLAVE
    members[1].role = T.ROLE_MASTER
    _lose(tasks, members[1])
    again, new = decide(snap(inst, members, tasks))
    # cache-0 (the first lost master) holds data and does not run: never skipped, so everyone
    # restarts in place and the election waits for it.
    assert new and again is not None
    assert names(again) == [
        "demote cache-1",
        *(f"relaunch cache-{o}" for o in range(3)),
        *(f"await-running cache-{o}" for o in range(3)),
        "elect cache-1",
    ]
    assert "cache-0 (holding data) not running" in again.reason


def test_master_loss_preempts_a_scale_plan() -> None:
    inst, members, tasks = running_instance()
    inst.spec.replicas = 5
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and plan.name == plans.SCALE
    inst.plan.CopyFrom(plan)
    _lose(tasks, members[0])
    recovery, new = decide(snap(inst, members, tasks))
    assert new and recovery is not None and recovery.name == plans.RECOVERY


def test_master_lost_before_it_started_is_relaunched_by_the_deploy_plan() -> None:
    plan, _ = decide(snap(instance(3), [], {}))
    assert plan is not None
    complete_all(plan, upto=5)  # through "launch cache-0"; awaiting it now
    inst = instance(3, T.INSTANCE_PHASE_DEPLOYING)
    inst.plan.CopyFrom(plan)
    m0 = member(0, T.ROLE_MASTER, T.MEMBER_STATE_STARTING)
    others = [member(o, state=T.MEMBER_STATE_PENDING, incarnation=0) for o in (1, 2)]
    kept, new = decide(snap(inst, [m0, *others], {m0.task_id: task(m0, T.TASK_STATE_FAILED)}))
    assert not new and kept is inst.plan


def test_lost_replica_is_replaced_master_untouched() -> None:
    inst, members, tasks = running_instance()
    _lose(tasks, members[2], T.TASK_STATE_KILLED)
    plan, new = decide(snap(inst, members, tasks))
    assert new and plan is not None and plan.name == plans.RECOVERY
    assert names(plan) == [
        "slave-lost cache-2",
        "launch cache-2",
        "await-running cache-2",
        "start-slave cache-2",
        "slave-running cache-2",
    ]
    assert not any(s.member_id == "cache-0" for s in plan.steps)


def test_lost_peers_with_volumes_restart_in_place_together_keeping_their_ids() -> None:
    inst, members, tasks = running_instance(peers=True)
    for m in members:
        m.volume.CopyFrom(T.Volume(persistence_id=f"{m.id}.v1", agent_id="agent-1", has_data=True))
        _lose(tasks, m, T.TASK_STATE_LOST)
    plan, _ = decide(snap(inst, members, tasks, peers=True))
    assert plan is not None
    assert names(plan)[:6] == [
        "launch cache-0",
        "launch cache-1",
        "launch cache-2",
        "await-running cache-0",
        "await-running cache-1",
        "await-running cache-2",
    ]
    assert not any(n.startswith(("remove-member", "peer-lost")) for n in names(plan))


def test_peers_lost_one_after_another_are_restarted_together() -> None:
    inst, members, tasks = running_instance(peers=True)
    for m in members:
        m.volume.CopyFrom(T.Volume(persistence_id=f"{m.id}.v1", agent_id="agent-1", has_data=True))
    _lose(tasks, members[2], T.TASK_STATE_FAILED)
    first, _ = decide(snap(inst, members, tasks, peers=True))
    assert first is not None and names(first)[0] == "launch cache-2"
    inst.plan.CopyFrom(first)
    inst.phase = T.INSTANCE_PHASE_RECOVERING
    # The other two are noticed dead a moment later: the plan is made again, for all three.
    _lose(tasks, members[0], T.TASK_STATE_FAILED)
    _lose(tasks, members[1], T.TASK_STATE_FAILED)
    again, new = decide(snap(inst, members, tasks, peers=True))
    assert new and again is not None
    assert names(again)[:3] == ["launch cache-0", "launch cache-1", "launch cache-2"]


def test_lost_peer_is_removed_then_relaunched() -> None:
    inst, members, tasks = running_instance(peers=True)
    _lose(tasks, members[1])
    plan, _ = decide(snap(inst, members, tasks, peers=True))
    assert plan is not None
    assert names(plan) == [
        "peer-lost cache-1",
        "remove-member cache-1",
        "launch cache-1",
        "await-running cache-1",
        "start cache-1",
        "peer-running cache-1",
    ]


def test_declined_replacement_is_not_planned_again_and_instance_is_degraded() -> None:
    inst, members, tasks = running_instance()
    _lose(tasks, members[2])
    members[2].message = planner.DECLINED_PREFIX + ": the workload declined"
    s = snap(inst, members, tasks)
    assert decide(s) == (None, False)
    assert planner.phase_for(s, None) == T.INSTANCE_PHASE_DEGRADED


def test_replica_lost_during_deploy_after_its_launch_replans() -> None:
    plan, _ = decide(snap(instance(3), [], {}))
    assert plan is not None
    complete_all(plan, upto=12)  # replicas awaited; starting them now
    inst = instance(3, T.INSTANCE_PHASE_DEPLOYING)
    inst.plan.CopyFrom(plan)
    members = [member(0, T.ROLE_MASTER), member(1, state=T.MEMBER_STATE_STARTING), member(2)]
    members[2].state = T.MEMBER_STATE_STARTING
    tasks = {m.task_id: task(m) for m in members}
    _lose(tasks, members[1])
    replanned, new = decide(snap(inst, members, tasks))
    assert new and replanned is not None and replanned.name == plans.RECOVERY
    assert names(replanned) == [
        "slave-lost cache-1",
        "launch cache-1",
        "launch cache-2",
        "await-running cache-1",
        "await-running cache-2",
        "start-slave cache-1",
        "slave-running cache-1",
        "start-slave cache-2",
        "slave-running cache-2",
    ]


# --- scale ----------------------------------------------------------------------------------------


def test_scale_up_adds_the_lowest_free_ordinals_as_replicas() -> None:
    inst, members, tasks = running_instance()
    inst.spec.replicas = 5
    inst.generation = 2
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and plan.name == plans.SCALE and plan.generation == 2
    assert names(plan) == [
        "create cache-3",
        "create cache-4",
        "launch cache-3",
        "launch cache-4",
        "await-running cache-3",
        "await-running cache-4",
        "start-slave cache-3",
        "slave-running cache-3",
        "start-slave cache-4",
        "slave-running cache-4",
    ]


def test_scale_down_removes_highest_ordinals_and_never_the_master() -> None:
    inst, members, tasks = running_instance(replicas=5, master=4)
    inst.spec.replicas = 2
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and plan.name == plans.SCALE
    assert names(plan) == [
        f"{a} cache-{o}" for o in (3, 2, 1) for a in ("remove-member", "kill", "delete-member")
    ]


def test_scale_up_reuses_a_free_ordinal() -> None:
    inst, members, tasks = running_instance(replicas=3)
    del members[1]
    inst.spec.replicas = 3
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and "create cache-1" in names(plan)


def test_next_incarnation_skips_every_task_seen() -> None:
    inst, members, tasks = running_instance()
    fresh = member(1, incarnation=0)
    old = task(member(1, incarnation=3), T.TASK_STATE_KILLED, kill_requested=True)
    s = snap(inst, [members[0], fresh], {**tasks, old.task_id: old})
    assert planner.next_incarnation(s, fresh) == 4


def test_scale_plan_for_an_older_generation_is_replaced() -> None:
    inst, members, tasks = running_instance()
    inst.spec.replicas, inst.generation = 5, 2
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    inst.plan.CopyFrom(plan)
    inst.spec.replicas, inst.generation = 2, 3
    replanned, new = decide(snap(inst, members, tasks))
    assert new and replanned is not None and replanned.generation == 3
    assert names(replanned)[0] == "remove-member cache-2"


# --- delete ---------------------------------------------------------------------------------------


def test_delete_wins_over_a_plan_in_progress() -> None:
    inst, members, tasks = running_instance()
    _lose(tasks, members[0])
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    inst.plan.CopyFrom(plan)
    inst.phase = T.INSTANCE_PHASE_DELETING
    deletion, new = decide(snap(inst, members, tasks))
    assert new and deletion is not None and deletion.name == plans.DELETE
    assert names(deletion) == [
        "kill cache-0",
        "kill cache-1",
        "kill cache-2",
        "cleanup",
        "release",
        "remove-instance",
    ]
    inst.plan.CopyFrom(deletion)
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan
    assert planner.phase_for(snap(inst, members, tasks), kept) == T.INSTANCE_PHASE_DELETING


# --- phases, errors, launches -----------------------------------------------------------------------


def test_phase_follows_the_plan() -> None:
    inst, members, tasks = running_instance()
    s = snap(inst, members, tasks)
    for name, phase in [
        (plans.DEPLOY, T.INSTANCE_PHASE_DEPLOYING),
        (plans.SCALE, T.INSTANCE_PHASE_SCALING),
        (plans.RECOVERY, T.INSTANCE_PHASE_RECOVERING),
    ]:
        plan = plans.new_plan(name, "", 1, [plans.step(plans.Action.LAUNCH, "cache-1")])
        assert planner.phase_for(s, plan) == phase
    failed = plans.new_plan(plans.SCALE, "", 1, [plans.step(plans.Action.LAUNCH, "cache-1")])
    failed.steps[0].status = plans.ERROR
    assert planner.phase_for(s, failed) == T.INSTANCE_PHASE_FAILED


def test_a_failed_plan_stays_until_the_spec_changes() -> None:
    inst, members, tasks = running_instance()
    inst.spec.replicas = 4
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    plan.steps[0].status = plans.ERROR
    inst.plan.CopyFrom(plan)
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan
    inst.generation = 2
    _, new = decide(snap(inst, members, tasks))
    assert new


def test_launch_spec_fills_identity_resources_and_defaults() -> None:
    inst = instance(3)
    inst.spec.resources.mem_mb = 256
    inst.spec.placement.max_members_per_agent = 2
    m = member(1, T.ROLE_SLAVE, incarnation=4)
    config = T.LaunchSpec(argv=["redis-server", "--port", "${PORT_CLIENT}"], env={"A": "b"})
    launch = planner.launch_spec(config, inst, m, description())
    assert (launch.instance, launch.member_id, launch.task_id) == ("cache", "cache-1", "cache-1.4")
    assert launch.workload == "redis" and launch.role == T.ROLE_SLAVE
    assert launch.resources == T.Resources(cpus=0.5, mem_mb=256, disk_mb=64)
    assert list(launch.port_names) == ["client"] and launch.image == "redis:7"
    assert launch.placement.max_members_per_agent == 2
    assert list(launch.argv) == ["redis-server", "--port", "${PORT_CLIENT}"] and launch.env["A"] == "b"


def test_plan_helpers() -> None:
    assert plans.incarnation_of("cache-1.12") == 12
    assert plans.action_of(plans.step(plans.Action.START_MASTER, "x-0")) == plans.Action.START_MASTER
    plan = plans.new_plan(
        "deploy", "", 1, [plans.step(plans.Action.SECRETS), plans.step(plans.Action.CREATE, "a-0")]
    )
    assert plans.is_active(plan) and plans.first_open(plan) == 0
    complete_all(plan)
    assert not plans.is_active(plan) and plan.status == plans.COMPLETE


def test_a_member_ending_while_the_plan_removes_it_keeps_the_plan() -> None:
    inst, members, tasks = running_instance(replicas=3, peers=True)
    inst.spec.replicas = 2
    plan, _ = decide(snap(inst, members, tasks, peers=True))
    assert plan is not None and names(plan)[0] == "remove-member cache-2"
    plan.steps[0].status = plans.COMPLETE
    inst.plan.CopyFrom(plan)
    inst.phase = T.INSTANCE_PHASE_SCALING
    _lose(tasks, members[2], T.TASK_STATE_FINISHED)  # an etcd peer exits once removed
    kept, new = decide(snap(inst, members, tasks, peers=True))
    assert not new and kept is inst.plan


# --- health: the probe, conditions, repairs -------------------------------------------------------


def _condition(kind: int, ok: bool, reason: str = "") -> T.MemberCondition:
    return T.MemberCondition(type=kind, ok=ok, reason=reason)  # type: ignore[arg-type]


def test_unresponsive_master_with_a_running_task_is_lost_and_fenced_before_failover() -> None:
    inst, members, tasks = running_instance()
    members[0].health.unresponsive = True
    members[0].health.conditions.append(_condition(T.CONDITION_TYPE_REACHABLE, False, "Unreachable"))
    s = snap(inst, members, tasks)
    assert s.condition(members[0]) == Condition.LOST
    plan, new = decide(s)
    assert new and plan is not None and plan.name == plans.RECOVERY
    assert names(plan) == ["fence cache-0", "failover cache-0"]
    assert "unresponsive (task still RUNNING)" in plan.reason


def test_unresponsive_replica_is_not_lost_mesos_or_the_failover_decides() -> None:
    inst, members, tasks = running_instance()
    members[1].health.unresponsive = True
    assert snap(inst, members, tasks).condition(members[1]) == Condition.READY


def test_an_unresponsive_master_being_fenced_stays_in_its_recovery() -> None:
    inst, members, tasks = running_instance()
    members[0].health.unresponsive = True
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    tasks[members[0].task_id].kill_requested = True  # the fence step sent a Mesos kill
    inst.plan.CopyFrom(plan)
    kept, new = decide(snap(inst, members, tasks))
    assert not new and kept is inst.plan


def test_a_diverged_replica_is_never_a_failover_candidate() -> None:
    inst, members, tasks = running_instance()
    members[1].health.conditions.append(_condition(T.CONDITION_TYPE_CONSISTENT, False, "Diverged"))
    s = snap(inst, members, tasks)
    assert [m.id for m in planner.failover_candidates(s, "cache-0")] == ["cache-2"]


def test_a_chained_replica_is_repointed_and_the_instance_is_degraded_meanwhile() -> None:
    inst, members, tasks = running_instance()
    members[2].health.conditions.append(_condition(T.CONDITION_TYPE_REPLICATING, False, "Chained"))
    members[2].health.repair = T.REPAIR_REPOINT
    s = snap(inst, members, tasks)
    assert planner.phase_for(s, None) == T.INSTANCE_PHASE_DEGRADED
    plan, new = decide(s)
    assert new and plan is not None and plan.name == plans.RECOVERY
    assert names(plan) == ["start-slave cache-2", "slave-running cache-2"]
    assert "re-point cache-2 to master cache-0 (replicating: Chained)" in plan.reason


def test_a_diverged_replica_is_rebuilt_on_a_fresh_volume() -> None:
    inst, members, tasks = running_instance()
    members[1].health.conditions.append(_condition(T.CONDITION_TYPE_CONSISTENT, False, "Diverged"))
    members[1].health.repair = T.REPAIR_REBUILD
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    assert names(plan) == [
        "rebuild cache-1",
        "launch cache-1",
        "await-running cache-1",
        "start-slave cache-1",
        "slave-running cache-1",
    ]


def test_no_repair_while_the_master_is_not_ready() -> None:
    inst, members, tasks = running_instance()
    members[0].state = T.MEMBER_STATE_STARTING
    members[2].health.repair = T.REPAIR_REPOINT
    steps, _ = planner.repairs(snap(inst, members, tasks))
    assert steps == []


def test_lag_alone_does_not_degrade_the_instance() -> None:
    inst, members, tasks = running_instance()
    members[1].health.conditions.append(_condition(T.CONDITION_TYPE_CAUGHT_UP, False, "Lagging"))
    assert planner.phase_for(snap(inst, members, tasks), None) == T.INSTANCE_PHASE_RUNNING


def test_a_replica_holding_data_that_does_not_run_is_never_skipped() -> None:
    inst, members, tasks = running_instance()
    inst.has_data = True
    for m in members:
        m.volume.has_data = True
    _lose(tasks, members[0])
    _lose(tasks, members[2], T.TASK_STATE_STARTING)  # restarting: its data may be the only copy
    s = snap(inst, members, tasks)
    candidates, waited = planner.failover_view(s, "cache-0")
    assert [m.id for m in candidates] == ["cache-1"] and [m.id for m in waited] == ["cache-2"]
    plan, _ = decide(s)
    assert plan is not None and names(plan)[0] == "demote cache-0" and names(plan)[-1] == "elect cache-0"
    assert "cache-2 (holding data) not running" in plan.reason


def test_an_unresponsive_master_without_ready_replicas_is_fenced_before_the_cold_start() -> None:
    inst, members, tasks = running_instance()
    members[0].health.unresponsive = True
    for m in members[1:]:
        _lose(tasks, m)
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None and names(plan)[:2] == ["fence cache-0", "demote cache-0"]


def test_a_replica_to_rebuild_that_stopped_is_rebuilt_not_restarted_on_its_volume() -> None:
    inst, members, tasks = running_instance()
    members[2].health.repair = T.REPAIR_REBUILD
    members[2].state = T.MEMBER_STATE_STOPPED
    tasks[members[2].task_id].state = T.TASK_STATE_KILLED
    tasks[members[2].task_id].kill_requested = True  # a rebuild cut short by a failover
    plan, _ = decide(snap(inst, members, tasks))
    assert plan is not None
    assert names(plan) == [
        "rebuild cache-2",
        "launch cache-2",
        "await-running cache-2",
        "start-slave cache-2",
        "slave-running cache-2",
    ]


def test_an_old_master_waiting_to_rejoin_is_no_candidate_while_another_member_holds_data() -> None:
    inst, members, tasks = running_instance()
    inst.has_data = True
    for m in members:
        m.volume.has_data = True
    members[2].volume.rejoin_pending = True  # replaced as master by a failover, not back yet
    _lose(tasks, members[0])
    s = snap(inst, members, tasks)
    assert [m.id for m in planner.failover_candidates(s, "cache-0")] == ["cache-1"]
    candidates, waited = planner.election_candidates(s)
    assert "cache-2" not in [m.id for m in candidates + waited]
    for m in members[:2]:
        m.volume.has_data = False  # the branch is the only copy left: it counts again
    assert planner.holds_data(snap(inst, members, tasks), members[2])


def test_a_plan_waiting_on_a_replica_that_must_be_rebuilt_is_replaced_by_the_rebuild() -> None:
    inst, members, tasks = running_instance()
    stuck = planner.converge(snap(inst, members, tasks))
    assert stuck is None
    tasks[members[2].task_id].state = T.TASK_STATE_STARTING  # relaunched on a diverged branch
    members[2].state = T.MEMBER_STATE_STARTING
    waiting, _ = decide(snap(inst, members, tasks))
    assert waiting is not None and "await-running cache-2" in names(waiting)
    inst.plan.CopyFrom(waiting)
    members[2].health.repair = T.REPAIR_REBUILD  # its check: error 1236, rebuild
    plan, new = decide(snap(inst, members, tasks))
    assert new and plan is not None and names(plan)[0] == "rebuild cache-2"
