"""Member and plan messages stay on one line when a task's status message carries the end of the
member's output (the executor adds up to 20 lines): the telling line is kept with a pointer to
`statefulctl logs MEMBER`; and a member learns where its sandbox is from its task."""

from __future__ import annotations

from lifecycle.plan_helpers import member, running_instance, snap, task
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.lifecycle import planner

TAIL = "\n".join(
    ["exited with code 1", "last lines of stderr:"]
    + [f"1:M 30 Nov 2026 12:00:{i:02d}.000 * starting, step {i}" for i in range(18)]
    + [
        "1:M 30 Nov 2026 12:00:19.000 # Could not create server TCP listening socket *:31000: bind: "
        "Address already in use",
        "1:M 30 Nov 2026 12:00:20.000 # Failed listening on port 31000 (tcp), aborting.",
    ]
)


def test_a_failed_launch_leaves_one_line_on_the_member() -> None:
    m = member(0, T.ROLE_MASTER, T.MEMBER_STATE_STARTING)
    t = task(m, T.TASK_STATE_FAILED)
    t.message = TAIL
    t.reason = "REASON_COMMAND_EXECUTOR_FAILED"
    new = planner.sync_member(m, t)
    assert new is not None
    assert "\n" not in new.message
    assert new.message.startswith("FAILED: exited with code 1 (output: statefulctl logs cache-0): ")
    assert "Address already in use" in new.message
    assert "step 3" not in new.message
    assert "\n" not in new.launch_failures[-1].message


def test_a_one_line_message_is_kept_as_it_is() -> None:
    t = task(member(1), T.TASK_STATE_FAILED)
    t.message = "exited with code 1"
    assert planner.one_line(t, "cache-1") == "exited with code 1"
    t.message = ""
    assert planner.one_line(t, "cache-1") == ""


def test_the_failover_reason_is_one_line() -> None:
    inst, members, tasks = running_instance(3, master=0)
    lost = tasks[members[0].task_id]
    lost.state = T.TASK_STATE_FAILED
    lost.message = TAIL
    members[0].message = TAIL  # as stored before this fix
    plan, _ = planner.decide(snap(inst, members, tasks))
    assert plan is not None
    assert "\n" not in plan.reason and "statefulctl logs cache-0" in plan.reason
    assert all("\n" not in step.message for step in plan.steps)


def test_the_member_learns_its_sandbox_from_its_task() -> None:
    m = member(2, state=T.MEMBER_STATE_STARTING)
    t = task(m, T.TASK_STATE_RUNNING)
    t.agent_url = "http://127.0.0.3:5051"
    t.sandbox_directory = "/frameworks/F-0000/executors/cache-2.1/runs/latest"
    new = planner.sync_member(m, t)
    assert new is not None
    assert (new.agent_url, new.sandbox_directory) == (t.agent_url, t.sandbox_directory)
