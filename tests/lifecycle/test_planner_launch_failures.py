"""Pure planner logic of placement that learns: a launch that fails before its member is ready is
recorded on the member with its cause, the next launch avoids its ports or agent, and a plan
FAILED on such a launch is retried by itself (never one FAILED because every copy is gone)."""

from __future__ import annotations

from lifecycle.plan_helpers import instance, member, task
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import planner, plans
from mesos_stateful.lifecycle.plans import Action

PORT_TAIL = (
    "exited with code 1\n"
    "1:M 30 Nov 2026 12:00:00.000 # Warning: Could not create server TCP listening socket "
    "127.0.0.2:31000: bind: Address already in use\n"
    "1:M 30 Nov 2026 12:00:00.000 # Failed listening on port 31000 (tcp), aborting."
)


def classify(state: int, reason: str = "", message: str = "") -> int:
    return planner.classify_launch_failure(state, reason, message)[0]


def test_classification_from_status_reason_and_last_output() -> None:
    cause, line = planner.classify_launch_failure(
        T.TASK_STATE_FAILED, "REASON_COMMAND_EXECUTOR_FAILED", PORT_TAIL
    )
    assert cause == T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE
    assert line.startswith("exited with code 1: ") and "Address already in use" in line
    assert (
        classify(T.TASK_STATE_FAILED, "", "Error: No such image: redis:9")
        == T.LAUNCH_FAILURE_CAUSE_IMAGE_MISSING
    )
    launch_failed = "REASON_CONTAINER_LAUNCH_FAILED"
    assert classify(T.TASK_STATE_FAILED, launch_failed, "redis-server: command not found") == (
        T.LAUNCH_FAILURE_CAUSE_IMAGE_MISSING
    )
    # "not found" in a process's own output is not a missing image.
    exited = "REASON_COMMAND_EXECUTOR_FAILED"
    assert classify(T.TASK_STATE_FAILED, exited, "exited with code 1\nkey not found") == (
        T.LAUNCH_FAILURE_CAUSE_EXITED_BEFORE_READY
    )
    assert (
        classify(T.TASK_STATE_FINISHED, "", "exited with code 0")
        == T.LAUNCH_FAILURE_CAUSE_EXITED_BEFORE_READY
    )
    assert classify(T.TASK_STATE_LOST, "REASON_AGENT_REMOVED") == T.LAUNCH_FAILURE_CAUSE_AGENT_LOST
    assert classify(T.TASK_STATE_GONE, "") == T.LAUNCH_FAILURE_CAUSE_AGENT_LOST
    assert classify(T.TASK_STATE_FAILED, "REASON_AGENT_DISCONNECTED") == T.LAUNCH_FAILURE_CAUSE_AGENT_LOST
    assert classify(T.TASK_STATE_ERROR, "REASON_TASK_INVALID", "invalid task") == T.LAUNCH_FAILURE_CAUSE_OTHER
    assert classify(T.TASK_STATE_DROPPED, "", "") == T.LAUNCH_FAILURE_CAUSE_OTHER


def _failed(
    m: T.Member, message: str = PORT_TAIL, state: int = T.TASK_STATE_FAILED, at: float = 1000.0
) -> T.Task:
    t = task(m, state)
    t.message = message
    t.reason = "REASON_COMMAND_EXECUTOR_FAILED"
    t.updated_at.CopyFrom(plans.timestamp(at))
    return t


def test_a_launch_failed_before_ready_is_recorded_once_bounded_newest_last() -> None:
    m = member(0, T.ROLE_MASTER, T.MEMBER_STATE_STARTING)
    synced = planner.sync_member(m, _failed(m))
    assert synced is not None and synced.state == T.MEMBER_STATE_FAILED
    [f] = synced.launch_failures
    assert (f.task_id, f.agent_id, f.host, dict(f.ports)) == (
        "cache-0.1",
        "agent-1",
        "127.0.0.2",
        {"client": 31000},
    )
    assert f.cause == T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE and "Address already in use" in f.message
    assert plans.seconds(f.at) == 1000.0
    # Synced again (another status of the same task): not recorded twice.
    assert planner.sync_member(synced, _failed(m)) is None
    # Bounded: the oldest go.
    current = m
    for incarnation in range(1, planner.MAX_LAUNCH_FAILURES + 3):
        current = T.Member()
        current.CopyFrom(synced)
        current.task_id = plans.task_id(m.id, incarnation + 1)
        current.state = T.MEMBER_STATE_STARTING
        nxt = planner.sync_member(current, _failed(current, at=1000.0 + incarnation))
        assert nxt is not None
        synced = nxt
    ids = [f.task_id for f in synced.launch_failures]
    assert len(ids) == planner.MAX_LAUNCH_FAILURES and ids[-1] == current.task_id


def test_not_a_launch_failure_after_ready_or_on_our_kill() -> None:
    ready = member(0, T.ROLE_MASTER, T.MEMBER_STATE_RUNNING)
    synced = planner.sync_member(ready, _failed(ready))
    assert synced is not None and not synced.launch_failures  # a crash of a ready member: a loss
    starting = member(1, T.ROLE_SLAVE, T.MEMBER_STATE_STARTING)
    killed = task(starting, T.TASK_STATE_KILLED, kill_requested=True)
    synced = planner.sync_member(starting, killed)
    assert synced is not None and not synced.launch_failures
    failed_on_kill = task(starting, T.TASK_STATE_FAILED, kill_requested=True)
    assert planner.launch_failure_of(starting, failed_on_kill) is None


def _with_failures(*failures: tuple[str, list[int], int, float]) -> T.Member:
    m = member(0, T.ROLE_MASTER, T.MEMBER_STATE_FAILED)
    for i, (agent, ports, cause, at) in enumerate(failures):
        f = m.launch_failures.add(
            task_id=f"cache-0.{i + 1}",
            agent_id=agent,
            ports={f"p{j}": p for j, p in enumerate(ports)},
            cause=cause,
        )
        f.at.CopyFrom(plans.timestamp(at))
    return m


def _avoid(m: T.Member, now: float = 1010.0, memory: float = 60.0) -> list[tuple[str, list[int]]]:
    return [(a.agent_id, list(a.ports)) for a in planner.avoid_list(m, now, memory)]


PORT = T.LAUNCH_FAILURE_CAUSE_PORT_IN_USE
EXITED = T.LAUNCH_FAILURE_CAUSE_EXITED_BEFORE_READY


def test_avoid_the_failed_ports_then_the_whole_agent() -> None:
    assert _avoid(_with_failures(("a1", [31000], PORT, 1000))) == [("a1", [31000])]
    m = _with_failures(("a1", [31000], PORT, 1000), ("a2", [32000], PORT, 1001), ("a1", [31001], PORT, 1002))
    assert _avoid(m) == [("a1", []), ("a2", [32000])]
    # A missing image or a lost agent: that agent at once.
    assert _avoid(_with_failures(("a1", [31000], T.LAUNCH_FAILURE_CAUSE_IMAGE_MISSING, 1000))) == [("a1", [])]
    assert _avoid(_with_failures(("a3", [], T.LAUNCH_FAILURE_CAUSE_AGENT_LOST, 1000))) == [("a3", [])]
    # A failure that never reached an agent avoids nothing.
    assert _avoid(_with_failures(("", [], T.LAUNCH_FAILURE_CAUSE_OTHER, 1000))) == []


def test_failures_older_than_the_memory_are_forgotten() -> None:
    m = _with_failures(("a1", [31000], PORT, 1000), ("a1", [31001], PORT, 1050))
    assert _avoid(m, now=1070.0, memory=60.0) == [("a1", [31001])]
    assert _avoid(m, now=1200.0, memory=60.0) == []


def test_the_agent_of_a_volume_with_data_is_never_avoided_only_ports_in_use() -> None:
    m = _with_failures(
        ("a1", [31000], PORT, 1000), ("a1", [31000], EXITED, 1001), ("a1", [31002], EXITED, 1002)
    )
    m.volume.agent_id = "a1"
    m.volume.has_data = True
    assert _avoid(m) == [("a1", [31000])]
    assert not planner.leaves_volume(m, planner.avoid_list(m, 1010.0, 60.0))
    # Without data the volume is left for a fresh one elsewhere.
    m.volume.has_data = False
    avoid = planner.avoid_list(m, 1010.0, 60.0)
    assert _avoid(m) == [("a1", [])]
    assert planner.leaves_volume(m, avoid)
    m.volume.agent_id = "a2"
    assert not planner.leaves_volume(m, avoid)


def test_the_launch_carries_the_avoid_list() -> None:
    m = _with_failures(("a1", [31000], PORT, 1000))
    avoid = planner.avoid_list(m, 1010.0, 60.0)
    description = T.WorkloadDescription(
        port_names=["client"], default_resources=T.Resources(cpus=1, mem_mb=64)
    )
    launch = planner.launch_spec(T.LaunchSpec(), instance(1), m, description, avoid)
    assert [(a.agent_id, list(a.ports)) for a in launch.avoid] == [("a1", [31000])]


def _failed_plan(action: Action, mid: str = "cache-0") -> tuple[T.Plan, T.Step]:
    plan = plans.new_plan(plans.DEPLOY, "create", 1, [plans.step(action, mid)])
    plan.steps[0].status = plans.ERROR
    return plan, plan.steps[0]


def test_a_plan_failed_on_a_launch_failure_is_retried_after_the_interval() -> None:
    m = _with_failures(("a1", [31000], PORT, 1000))
    m.task_id = "cache-0.1"
    snapshot = planner.Snapshot(instance(1), [m], {m.task_id: _failed(m)})
    for action in (Action.LAUNCH, Action.AWAIT, Action.RELAUNCH):
        _, step = _failed_plan(action)
        assert planner.launch_retry_at(snapshot, step, 45.0) == 1045.0


def test_never_retried_by_itself_when_every_copy_is_gone_or_not_a_launch_failure() -> None:
    m = _with_failures(("a1", [31000], PORT, 1000))
    m.task_id = "cache-0.1"
    snapshot = planner.Snapshot(instance(1), [m], {m.task_id: _failed(m)})
    _, elect = _failed_plan(Action.ELECT)
    assert planner.launch_retry_at(snapshot, elect, 45.0) is None  # "every copy gone": a person decides
    _, start = _failed_plan(Action.START_MASTER)
    assert planner.launch_retry_at(snapshot, start, 45.0) is None
    # The member's current launch is not the one that failed (e.g. "can never be placed").
    newer = T.Member()
    newer.CopyFrom(m)
    newer.task_id = "cache-0.2"
    _, launch = _failed_plan(Action.LAUNCH)
    assert planner.launch_retry_at(planner.Snapshot(instance(1), [newer], {}), launch, 45.0) is None
    # No failure recorded at all.
    plain = member(0, T.ROLE_MASTER, T.MEMBER_STATE_FAILED)
    assert planner.launch_retry_at(planner.Snapshot(instance(1), [plain], {}), launch, 45.0) is None
    # Not ERROR.
    _, await_step = _failed_plan(Action.AWAIT)
    await_step.status = plans.DELAYED
    assert planner.launch_retry_at(snapshot, await_step, 45.0) is None
