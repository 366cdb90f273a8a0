"""The public workload SDK (``mesos_stateful.sdk``): its surface is exactly ``__all__``, it is
documented, it stays light for member-side modules, and its error types drive lifecycle's retries
through the real path: an SDK workload served and registered in a real state service (etcd), its
callback called by lifecycle's ``Callbacks`` from a plan step run by lifecycle's ``StepRunner``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from mesos_stateful import sdk
from mesos_stateful.api.stateful.v1 import workload_service_pb2_grpc
from mesos_stateful.clients.state import StateClient
from mesos_stateful.lifecycle import plans
from mesos_stateful.lifecycle.callbacks import Callbacks
from mesos_stateful.lifecycle.planner import Snapshot
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.lifecycle.steps import StepRunner
from mesos_stateful.lifecycle.store import Loaded, Store
from mesos_stateful.sdk import Context, pb, types_pb2
from mesos_stateful.testing.state import StateService, etcd, state_client, state_service  # noqa: F401
from mesos_stateful.workloads.base import RunningWorkload, start_workload

# The public surface, written out: adding or removing a public name means changing this list,
# the module's __all__ and its docstring together.
PUBLIC = frozenset(
    {
        # the servicer and serving it
        "WorkloadBase",
        "WorkloadSettings",
        "Context",
        "callback",
        "run",
        "serve",
        # errors (they decide retries)
        "StatefulError",
        "TemporaryError",
        "Unavailable",
        "PermanentError",
        "InvalidArgument",
        "FailedPrecondition",
        "NotFound",
        # the callback context
        "member",
        "member_in_role",
        "master",
        "others",
        "has_master",
        "candidates",
        "endpoint",
        "ask_members",
        "in_docker",
        # the member's volume
        "DATA_DIR",
        "volume_path",
        "data_dir",
        # launch / config
        "launch_spec",
        "file_spec",
        "command_check",
        "tcp_check",
        "port_var",
        "HOST",
        "SANDBOX",
        "sandbox_path",
        "secret",
        "effective_config",
        "suite_image",
        "IMAGE_PYTHON",
        # CheckMember answers
        "condition",
        "health",
        # the messages
        "pb",
        "types_pb2",
    }
)
# Module plumbing bound in the SDK's namespace that is not API.
PLUMBING = {"annotations", "importlib", "TYPE_CHECKING", "Any"}


def test_public_surface_is_exactly_all() -> None:
    assert len(sdk.__all__) == len(set(sdk.__all__)), "a name is listed twice in __all__"
    assert set(sdk.__all__) == PUBLIC
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None, name
    # Once every lazy name is loaded, nothing else public lives in the module.
    public = {n for n in vars(sdk) if not n.startswith("_")} - PLUMBING
    assert public == PUBLIC
    assert [n for n in dir(sdk) if not n.startswith("_")] == sorted(PUBLIC)
    with pytest.raises(AttributeError, match="no attribute 'Registration'"):
        sdk.Registration  # type: ignore[attr-defined]  # noqa: B018


def test_every_public_name_is_in_the_reference() -> None:
    """The module docstring is the reference: it names every public name."""
    doc = sdk.__doc__ or ""
    missing = [n for n in sorted(PUBLIC) if f"`{n}`" not in doc]
    assert missing == []
    assert "Data safety" in doc and "Never two writable masters" in doc  # the rules, stated
    for name in sorted(
        PUBLIC - {"pb", "types_pb2", "Context", "DATA_DIR", "HOST", "SANDBOX", "IMAGE_PYTHON"}
    ):
        assert getattr(sdk, name).__doc__, f"sdk.{name} has no docstring"


def test_the_errors_are_the_suites_one_vocabulary() -> None:
    from mesos_stateful.common import errors

    assert sdk.Unavailable is errors.Unavailable and sdk.PermanentError is errors.PermanentError
    assert sdk.Unavailable("x").retryable and sdk.TemporaryError("x").retryable
    for kind in (sdk.PermanentError, sdk.InvalidArgument, sdk.FailedPrecondition, sdk.NotFound):
        assert issubclass(kind, sdk.StatefulError) and not kind("x").retryable


def test_member_side_modules_stay_light() -> None:
    """Bootstrap scripts and checks (run every second next to a member) import the SDK's errors
    without loading grpc, pydantic or the servicer base."""
    code = (
        "import json, sys\n"
        "from mesos_stateful import sdk\n"
        "sdk.Unavailable, sdk.StatefulError\n"
        "import mesos_stateful.workloads.mysql.check, mesos_stateful.workloads.mysql.bootstrap\n"
        "import mesos_stateful.workloads.etcd.check, mesos_stateful.workloads.etcd.bootstrap\n"
        "heavy = ('grpc', 'pydantic', 'mesos_stateful.workloads.base', 'mesos_stateful.sdk._launch')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []


def test_launch_helpers() -> None:
    assert sdk.port_var("client") == "${PORT_CLIENT}" and sdk.port_var("admin-ui") == "${PORT_ADMIN_UI}"
    assert sdk.sandbox_path("data/x") == "${MESOS_SANDBOX}/data/x"
    assert sdk.suite_image("redis").startswith("mesos-stateful/redis:")
    with pytest.raises(ValueError, match="known: etcd, mariadb, redis, suite"):
        sdk.suite_image("nope")
    keys = [
        types_pb2.ConfigKey(name="mode", default_value="a", allowed_values=["a", "b"]),
        types_pb2.ConfigKey(name="size", default_value="1"),
    ]

    def digits(key: str, value: str) -> str | None:
        return None if value.isdigit() else "must be a whole number"

    assert sdk.effective_config({"size": "5"}, keys, "demo", digits) == {"mode": "a", "size": "5"}
    with pytest.raises(sdk.InvalidArgument) as bad:
        sdk.effective_config({"mode": "c", "size": "x", "nope": "1"}, keys, "demo", digits)
    assert bad.value.message == "invalid demo settings"
    assert bad.value.fields == {
        "spec.config.mode": "must be one of a, b",
        "spec.config.size": "must be a whole number",
        "spec.config.nope": "unknown setting; known: mode, size",
    }
    ctx = pb.CallbackContext(
        instance=types_pb2.Instance(
            spec=types_pb2.InstanceSpec(name="shop", workload="demo", runtime=types_pb2.RUNTIME_DOCKER),
            members=[types_pb2.Member(id="shop-0", ordinal=0, role=types_pb2.ROLE_PEER)],
        ),
        member_id="shop-0",
    )
    with pytest.raises(sdk.InvalidArgument, match="secret 'password' is missing"):
        sdk.secret(ctx, "password")
    check = sdk.tcp_check("main", interval_ms=500)
    launch = sdk.launch_spec(
        ctx,
        sdk.member(ctx),
        workload="demo",
        port_names=["main"],
        argv=["srv", sdk.port_var("main")],
        default_image="img:1",
        files=[sdk.file_spec("a.conf", "x=${HOST}\n", mode=0o600, expand=True)],
        env={"K": "v"},
        readiness=check,
    )
    assert (launch.instance, launch.member_id, launch.role) == ("shop", "shop-0", types_pb2.ROLE_PEER)
    assert launch.runtime == types_pb2.RUNTIME_DOCKER and launch.image == "img:1"
    assert launch.files[0].content == b"x=${HOST}\n" and launch.files[0].expand
    assert dict(launch.env) == {"K": "v"} and launch.readiness == check
    assert not launch.HasField("health")


# --- errors -> retries, through lifecycle's own step runner --------------------------------------

NAME = "sdk-probe"
INSTANCE = "probe"
MEMBER = plans.member_id(INSTANCE, 0)


class Probe(sdk.WorkloadBase):
    """StartMaster raises ``self.raises`` (or sleeps past the callback timeout for "timeout")
    until it is None, then answers with the attempt it saw."""

    def __init__(self, settings: sdk.WorkloadSettings) -> None:
        description = types_pb2.WorkloadDescription(
            name=NAME, topology=types_pb2.TOPOLOGY_MASTER_REPLICA, port_names=["main"]
        )
        super().__init__(description, settings)
        self.raises: BaseException | str | None = None
        self.attempts: list[int] = []

    @sdk.callback
    async def StartMaster(self, request: pb.StartMasterRequest, context: Context) -> pb.StartMasterResponse:
        self.attempts.append(request.context.attempt)
        if self.raises == "timeout":
            await asyncio.sleep(30)
        elif isinstance(self.raises, BaseException):
            raise self.raises
        return pb.StartMasterResponse(status={"attempt": str(request.context.attempt)})


class World:
    def __init__(self, probe: Probe, running: RunningWorkload, client: StateClient) -> None:
        self.probe = probe
        self.running = running
        self.client = client
        self.store = Store(client)
        self.callbacks = Callbacks(client, timeout_seconds=10.0)
        settings = LifecycleSettings(state_endpoint="127.0.0.1:1", retry_initial_seconds=0.5)
        self.runner = StepRunner(settings, self.store, offers=None, callbacks=self.callbacks)  # type: ignore[arg-type]
        member = types_pb2.Member(
            id=MEMBER,
            instance=INSTANCE,
            ordinal=0,
            role=types_pb2.ROLE_MASTER,
            state=types_pb2.MEMBER_STATE_STARTING,
            incarnation=1,
            task_id=plans.task_id(MEMBER, 1),
            host="127.0.0.1",
            ports={"main": 1},
        )
        task = types_pb2.Task(
            task_id=member.task_id, instance=INSTANCE, member_id=MEMBER, state=types_pb2.TASK_STATE_RUNNING
        )
        instance = types_pb2.Instance(spec=types_pb2.InstanceSpec(name=INSTANCE, workload=NAME, replicas=1))
        self.member = member
        self.loaded = Loaded(
            Snapshot(
                instance=instance,
                members=[member],
                tasks={task.task_id: task},
                description=probe.description,
            )
        )
        self.plan = plans.new_plan(plans.DEPLOY, "test", 1, [plans.step(plans.Action.START_MASTER, MEMBER)])
        self.saves = 0

    async def save(self) -> None:
        self.saves += 1

    async def run_step(self) -> tuple[int, str, float | None]:
        outcome = await self.runner.run(self.loaded, self.plan, 0, True, self.save)
        step = self.plan.steps[0]
        step.status = outcome.status  # type: ignore[assignment]
        step.message = outcome.message
        return outcome.status, outcome.message, outcome.wake_at


@pytest_asyncio.fixture
async def world(state_service: StateService, state_client: StateClient) -> AsyncIterator[World]:  # noqa: F811
    settings = sdk.WorkloadSettings(
        listen="127.0.0.1:0",
        state_endpoint=state_service.endpoint,
        callback_timeout_seconds=1.0,
        connect_timeout_seconds=0.5,
        lease_ttl_seconds=3,
    )
    probe = Probe(settings)
    running = await start_workload(probe, settings)
    w = World(probe, running, state_client)
    try:
        assert running.registration is not None
        async with asyncio.timeout(20):
            await running.registration.wait_registered()  # lifecycle finds it by its registration
        assert await w.store.create_member(w.member)
        yield w
    finally:
        await w.callbacks.close()
        await running.stop(grace_seconds=0.5)


RETRYABLE = [
    pytest.param(sdk.Unavailable("server not up yet"), "server not up yet", id="Unavailable"),
    pytest.param(sdk.TemporaryError("busy now"), "busy now", id="TemporaryError"),
    pytest.param("timeout", "StartMaster did not finish within 1s", id="callback-timeout"),
]
PERMANENT = [
    pytest.param(sdk.PermanentError("cannot"), "FAILED_PRECONDITION: cannot", id="PermanentError"),
    pytest.param(
        sdk.InvalidArgument("bad spec", {"spec.config.x": "no"}),
        "INVALID_ARGUMENT: bad spec",
        id="InvalidArgument",
    ),
    pytest.param(
        sdk.FailedPrecondition("no master"), "FAILED_PRECONDITION: no master", id="FailedPrecondition"
    ),
    pytest.param(sdk.NotFound("gone"), "NOT_FOUND: gone", id="NotFound"),
    pytest.param(RuntimeError("a bug"), "UNKNOWN", id="other-exception"),
]


@pytest.mark.parametrize(("raises", "text"), RETRYABLE)
async def test_retryable_errors_delay_the_step_and_it_is_retried(
    world: World, raises: BaseException | str, text: str
) -> None:
    world.probe.raises = raises
    before = time.time()
    status, message, wake_at = await world.run_step()
    assert status == plans.DELAYED, message
    assert text in message and "UNAVAILABLE" in message
    assert wake_at is not None and wake_at >= before + 0.5  # backoff from retry_initial_seconds
    assert world.plan.steps[0].attempts == 1 and world.saves == 1  # STARTING persisted before the call

    # The retry (lifecycle runs the step again once due): the workload now answers.
    world.probe.raises = None
    status, message, _ = await world.run_step()
    assert status == plans.COMPLETE, message
    assert world.plan.steps[0].attempts == 2
    assert world.probe.attempts == [1, 2]  # the context says which attempt it is
    stored = await world.store.update_member(INSTANCE, MEMBER, lambda m: None)
    assert stored is not None and dict(stored.workload_status) == {"attempt": "2"}


@pytest.mark.parametrize(("raises", "text"), PERMANENT)
async def test_permanent_errors_fail_the_step(world: World, raises: BaseException, text: str) -> None:
    world.probe.raises = raises
    status, message, _ = await world.run_step()
    assert status == plans.ERROR, message
    assert text in message
    assert world.plan.steps[0].attempts == 1 and world.probe.attempts == [1]


@pytest.mark.parametrize(
    ("raises", "code"),
    [
        (sdk.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (sdk.TemporaryError("x"), grpc.StatusCode.UNAVAILABLE),
        (sdk.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (sdk.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (sdk.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (sdk.PermanentError("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (RuntimeError("x"), grpc.StatusCode.UNKNOWN),
    ],
)
async def test_status_codes_are_the_documented_ones(
    world: World, raises: BaseException, code: grpc.StatusCode
) -> None:
    """The table in the SDK's docstring, as seen by any client of the workload service."""
    world.probe.raises = raises
    ctx = pb.CallbackContext(instance=world.loaded.snapshot.instance, member_id=MEMBER, attempt=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.running.port}") as channel:
        stub = workload_service_pb2_grpc.WorkloadServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.StartMaster(pb.StartMasterRequest(context=ctx), timeout=10)
    assert failed.value.code() == code
    assert code.name in (sdk.__doc__ or "")
