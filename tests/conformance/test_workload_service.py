"""Conformance of a ``stateful.v1.WorkloadService``, whatever its language: gRPC only.

Which service: ``STATEFUL_CONFORMANCE_WORKLOAD=host:port`` checks a running one (any language,
any workload: it is told nothing but that address); without it, both Redis implementations of
this repository are checked: ``redis-python`` (services/workloads/redis, in-process) and
``redis-node`` (services/redis-node, its own process).

The requests are recorded ones (``data/*.json``: protobuf JSON of what lifecycle sent the Redis
workload during a create, a master kill and a scale-down; see data/README.md), adapted to the
service under test from its own Describe answer: workload name, port names and secret names.
Members point at loopback ports bound by the test but not listening (connections refused),
so no callback can reach a server, and the test checks what the protocol promises then:

- shapes: Describe and Config answer the fields the proto requires (a launch for the member in
  its role, readiness check, ports among the described ones, no secret on argv or in env);
- bad input: INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming the field, for a missing
  context, a member that is not in the instance, an unknown setting, candidates that are no
  members (rules of the proto comments and services/common/grpc_errors.py);
- retries: a member that cannot be reached is UNAVAILABLE (lifecycle retries it), never a
  permanent failure; MasterLost never names a candidate it could not ask (data-safety rule 3);
  Fence never reports a master fenced that it could not reach nor detach (rule 2);
- idempotence: every call made twice gets the same answer (the proto: callbacks are retried).

The live test (master/replica topologies) launches two members from the service's own Config
answers with :class:`~mesos_stateful.testing.workloads.MemberRunner` (as the executor would) and
calls StartMaster, StartSlave, MasterRunning, SlaveRunning, CheckMember, Fence and MasterLost
twice each, then promotes the replica.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import workload_service_pb2_grpc as pb_grpc
from mesos_stateful.common.channels import channel_options
from mesos_stateful.testing.node_workload import NodeWorkload, redis_node
from mesos_stateful.testing.workloads import MemberRunner, serve_workload, wait_for

DATA = Path(__file__).parent / "data"
ADDRESS_VARIABLE = "STATEFUL_CONFORMANCE_WORKLOAD"
EXTERNAL = os.environ.get(ADDRESS_VARIABLE, "")
TARGETS = ["external"] if EXTERNAL else ["redis-python", "redis-node"]
SECRET = "conformance-secret"
# An answer within this many seconds (the service's own timeout to reach a member is below it).
CALL_TIMEOUT = 20.0
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

_M = TypeVar("_M", bound=Message)


@dataclass
class Target:
    """The service under test: a stub and its Describe answer."""

    name: str
    stub: pb_grpc.WorkloadServiceStub
    description: T.WorkloadDescription


@pytest.fixture(scope="module")
def node_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeWorkload]:
    """services/redis-node as a process, one for the module (it keeps no state between calls)."""
    service = redis_node(
        "127.0.0.1:1",
        tmp_path_factory.mktemp("redis-node"),
        register_in_state=False,
        connect_timeout_seconds=1.0,
        callback_timeout_seconds=10.0,
    )
    service.spawn()
    try:
        yield service
    finally:
        asyncio.run(service.stop())


@pytest_asyncio.fixture(params=TARGETS)
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    kind: str = request.param
    if kind == "external":
        async with _described(kind, EXTERNAL) as found:
            yield found
    elif kind == "redis-python":
        from mesos_stateful.workloads.redis.servicer import RedisWorkload
        from mesos_stateful.workloads.redis.settings import RedisSettings

        settings = RedisSettings.model_validate(
            {"connect_timeout_seconds": 1.0, "callback_timeout_seconds": 10.0, "check_interval_ms": 300}
        )
        async with (
            serve_workload(RedisWorkload(settings)) as server,
            _described(kind, server.endpoint) as found,
        ):
            yield found
    else:
        service: NodeWorkload = request.getfixturevalue("node_redis")
        await service.wait_serving()
        async with _described(kind, service.endpoint) as found:
            yield found


class _described:
    """A channel to ``address`` and the service's Describe answer."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.channel = grpc.aio.insecure_channel(address, options=channel_options())

    async def __aenter__(self) -> Target:
        stub = pb_grpc.WorkloadServiceStub(self.channel)
        answer = await stub.Describe(pb.DescribeRequest(), timeout=CALL_TIMEOUT)
        return Target(self.name, stub, answer.description)

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()


@pytest.fixture
def closed_ports() -> Iterator[list[int]]:
    """Loopback ports bound by this test and never listened on: a connection is refused at once."""
    sockets = []
    for _ in range(4):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    try:
        yield [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def recorded(name: str, kind: type[_M], target: Target, ports: list[int]) -> _M:
    """``data/<name>.json`` as a ``kind`` request, adapted to the target: its workload name and
    secrets; every member with an address at 127.0.0.1 on one of ``ports`` per described port."""
    message = json_format.Parse((DATA / f"{name}.json").read_text(), kind())
    context: pb.CallbackContext = message.context  # type: ignore[attr-defined]
    context.instance.spec.workload = target.description.name
    context.secrets.clear()
    context.secrets.update({n: SECRET for n in target.description.secret_names})
    for index, member in enumerate(context.instance.members):
        member.ClearField("ports")
        if member.host:
            member.host = "127.0.0.1"
            for p, port_name in enumerate(target.description.port_names):
                member.ports[port_name] = ports[(index + p) % len(ports)]
    return message


async def call(target: Target, method: str, request: Message) -> tuple[grpc.StatusCode, Any]:
    """(status code, answer or the error) of one call."""
    try:
        answer = await getattr(target.stub, method)(request, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        return error.code(), error
    return grpc.StatusCode.OK, answer


def _status_keys(answer: Any) -> Any:
    """What must not change between two calls of a callback that reports the member's status:
    the keys (values such as a replication offset move on their own)."""
    return sorted(answer.status)


def _fence_method(answer: Any) -> Any:
    """Fence twice: fenced the same way (the detail says what was left to do the second time)."""
    return answer.method


# Per method, the part of an OK answer two calls must agree on (default: all of it).
SAME: dict[str, Callable[[Any], Any]] = {
    "StartMaster": _status_keys,
    "StartSlave": _status_keys,
    "MasterRunning": _status_keys,
    "SlaveRunning": _status_keys,
    "Fence": _fence_method,
}


async def twice(target: Target, method: str, request: Message) -> tuple[grpc.StatusCode, Any]:
    """Call twice; the same status (and, when OK, the same answer, see SAME) both times."""
    first = await call(target, method, request)
    second = await call(target, method, request)
    assert first[0] == second[0], f"{method}: {first[0]} then {second[0]} for the same request"
    if first[0] == grpc.StatusCode.OK:
        same = SAME.get(method, lambda answer: answer)
        assert same(first[1]) == same(second[1]), (
            f"{method}: different answers to the same request:\n{first[1]}\n{second[1]}"
        )
    return first


def bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the error's google.rpc.BadRequest detail."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status is not None else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


def assert_invalid(
    method: str, code: grpc.StatusCode, answer: Any, allow_unimplemented: bool = False
) -> None:
    allowed = {grpc.StatusCode.INVALID_ARGUMENT} | (
        {grpc.StatusCode.UNIMPLEMENTED} if allow_unimplemented else set()
    )
    assert code in allowed, f"{method}: {code} ({answer}), expected INVALID_ARGUMENT"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert answer.details(), f"{method}: INVALID_ARGUMENT without a message"
        assert bad_fields(answer), f"{method}: INVALID_ARGUMENT without a BadRequest naming the field"


def member_of(context: pb.CallbackContext, member_id: str | None = None) -> T.Member:
    wanted = member_id or context.member_id
    return next(m for m in context.instance.members if m.id == wanted)


# --- shapes ---------------------------------------------------------------------------------------


async def test_describe_answers_a_complete_description(target: Target) -> None:
    code, answer = await twice(target, "Describe", pb.DescribeRequest())
    assert code == grpc.StatusCode.OK
    d = answer.description
    assert d.name and d.name == d.name.lower() and " " not in d.name
    assert d.topology != T.TOPOLOGY_UNSPECIFIED
    assert d.port_names and len(set(d.port_names)) == len(d.port_names)
    assert d.min_replicas >= 1 and (d.max_replicas == 0 or d.max_replicas >= d.min_replicas)
    names = [k.name for k in d.config_keys]
    assert len(set(names)) == len(names), f"config keys named twice: {names}"
    for key in d.config_keys:
        assert not key.allowed_values or key.default_value in key.allowed_values, key


@pytest.mark.parametrize("recording", ["config_master", "config_replica"])
async def test_config_answers_the_members_launch(
    target: Target, closed_ports: list[int], recording: str
) -> None:
    request = recorded(recording, pb.ConfigRequest, target, closed_ports)
    code, answer = await twice(target, "Config", request)
    assert code == grpc.StatusCode.OK, answer
    launch: T.LaunchSpec = answer.launch
    me = member_of(request.context)
    assert launch.member_id == me.id and launch.role == me.role
    assert launch.argv and all(launch.argv)
    assert launch.port_names and set(launch.port_names) <= set(target.description.port_names)
    assert launch.HasField("readiness"), "a member needs a readiness check (lifecycle waits for it)"
    for f in launch.files:
        assert f.path and not f.path.startswith("/") and ".." not in f.path.split("/"), f.path
    exposed = list(launch.argv) + list(launch.env.values())
    assert not any(SECRET in a for a in exposed), "a secret is on argv or in the environment (ps shows them)"


async def test_bad_input_is_invalid_argument_naming_the_field(
    target: Target, closed_ports: list[int]
) -> None:
    request = recorded("config_master", pb.ConfigRequest, target, closed_ports)
    code, answer = await twice(target, "Config", pb.ConfigRequest())
    assert_invalid("Config without context", code, answer)

    stranger = pb.ConfigRequest()
    stranger.CopyFrom(request)
    stranger.context.member_id = "nobody-9"
    assert_invalid("Config of a member not in the instance", *await twice(target, "Config", stranger))

    if target.description.config_keys:
        unknown = pb.ConfigRequest()
        unknown.CopyFrom(request)
        unknown.context.instance.spec.config["no-such-setting"] = "1"
        assert_invalid("Config with an unknown setting", *await twice(target, "Config", unknown))

    start = recorded("start_master", pb.StartMasterRequest, target, closed_ports)
    start.context.member_id = "nobody-9"
    assert_invalid("StartMaster of a member not in the instance", *await twice(target, "StartMaster", start))

    lost = recorded("master_lost", pb.MasterLostRequest, target, closed_ports)
    lost.candidate_ids.append("nobody-9")
    assert_invalid("MasterLost with a stranger among candidates", *await twice(target, "MasterLost", lost))

    fence = recorded("fence", pb.FenceRequest, target, closed_ports)
    fence.replica_ids.append("nobody-9")
    code, answer = await twice(target, "Fence", fence)
    assert_invalid("Fence with a stranger among replicas", code, answer, allow_unimplemented=True)

    check = recorded("check_member_master", pb.CheckMemberRequest, target, closed_ports)
    check.context.member_id = "nobody-9"
    code, answer = await twice(target, "CheckMember", check)
    assert_invalid("CheckMember of a member not in the instance", code, answer, allow_unimplemented=True)


# --- unreachable members: retried, never decided on ----------------------------------------------

ACTIONS: list[tuple[str, str, type[Message]]] = [
    ("start_master", "StartMaster", pb.StartMasterRequest),
    ("start_slave", "StartSlave", pb.StartSlaveRequest),
    ("master_running", "MasterRunning", pb.MasterRunningRequest),
    ("slave_running", "SlaveRunning", pb.SlaveRunningRequest),
    ("remove_member", "RemoveMember", pb.RemoveMemberRequest),
]


@pytest.mark.parametrize(("recording", "method", "kind"), ACTIONS, ids=[a[1] for a in ACTIONS])
async def test_an_unreachable_member_is_unavailable_not_a_permanent_failure(
    target: Target, closed_ports: list[int], recording: str, method: str, kind: type[Message]
) -> None:
    code, answer = await twice(target, method, recorded(recording, kind, target, closed_ports))
    assert code in RETRYABLE | {grpc.StatusCode.OK}, f"{method}: {code} {answer}: lifecycle would give up"


@pytest.mark.parametrize("recording", ["check_member_master", "check_member_replica"])
async def test_check_member_of_an_unreachable_member_never_reports_it_reachable(
    target: Target, closed_ports: list[int], recording: str
) -> None:
    request = recorded(recording, pb.CheckMemberRequest, target, closed_ports)
    request.timeout_seconds = 2.0
    code, answer = await twice(target, "CheckMember", request)
    assert code in RETRYABLE | {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.OK}, f"{code} {answer}"
    if code == grpc.StatusCode.OK:
        reachable = [c for c in answer.health.conditions if c.type == T.CONDITION_TYPE_REACHABLE and c.ok]
        assert not reachable, f"an unreachable member reported REACHABLE: {answer}"


async def test_master_lost_never_promotes_a_candidate_it_could_not_ask(
    target: Target, closed_ports: list[int]
) -> None:
    code, answer = await twice(
        target, "MasterLost", recorded("master_lost", pb.MasterLostRequest, target, closed_ports)
    )
    assert code in RETRYABLE | {grpc.StatusCode.OK}, f"{code} {answer}"
    if code == grpc.StatusCode.OK:
        assert not answer.promote_member_id, f"promoted a candidate that did not answer: {answer}"


async def test_fence_never_reports_an_unreachable_master_fenced(
    target: Target, closed_ports: list[int]
) -> None:
    code, answer = await twice(target, "Fence", recorded("fence", pb.FenceRequest, target, closed_ports))
    assert code in RETRYABLE | {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.FAILED_PRECONDITION}, (
        f"{code} {answer}: neither the old master nor its replicas answered, so it cannot be shown fenced"
    )


async def test_slave_lost_answers_whether_to_replace(target: Target, closed_ports: list[int]) -> None:
    code, answer = await twice(
        target, "SlaveLost", recorded("slave_lost", pb.SlaveLostRequest, target, closed_ports)
    )
    assert code == grpc.StatusCode.OK, answer
    assert isinstance(answer.replace, bool)


# --- live members, launched from the service's own Config ----------------------------------------


def _instance(workload: str, members: list[T.Member]) -> T.Instance:
    return T.Instance(
        spec=T.InstanceSpec(name="conf", workload=workload, replicas=len(members)),
        phase=T.INSTANCE_PHASE_RUNNING,
        members=members,
    )


def _context(target: Target, members: list[T.Member], member_id: str) -> pb.CallbackContext:
    return pb.CallbackContext(
        instance=_instance(target.description.name, members),
        member_id=member_id,
        secrets={n: SECRET for n in target.description.secret_names},
        attempt=1,
    )


def _pending(ordinal: int, role: T.Role) -> T.Member:
    return T.Member(
        id=f"conf-{ordinal}", instance="conf", ordinal=ordinal, role=role, state=T.MEMBER_STATE_PENDING
    )


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await wait_for(check, 60, 0.3, what)


@pytest.mark.slow
async def test_live_members_every_callback_twice_then_a_promotion(target: Target, tmp_path: Path) -> None:
    if target.description.topology != T.TOPOLOGY_MASTER_REPLICA:
        pytest.skip(f"{target.name} is not master/replica; the live test drives a master and a replica")
    runner = MemberRunner(tmp_path / "sandboxes")
    try:
        master_pending = _pending(0, T.ROLE_MASTER)
        code, answer = await twice(
            target, "Config", pb.ConfigRequest(context=_context(target, [master_pending], "conf-0"))
        )
        assert code == grpc.StatusCode.OK, answer
        answer.launch.task_id = "conf-0.1"
        master = await runner.start(answer.launch)
        m0 = master.member_proto(0, T.ROLE_MASTER)

        replica_pending = _pending(1, T.ROLE_SLAVE)
        request = pb.ConfigRequest(context=_context(target, [m0, replica_pending], "conf-1"))
        code, answer = await twice(target, "Config", request)
        assert code == grpc.StatusCode.OK, answer
        answer.launch.task_id = "conf-1.1"
        replica = await runner.start(answer.launch, ready=False)
        m1 = replica.member_proto(1, T.ROLE_SLAVE, T.MEMBER_STATE_STARTING)
        members = [m0, m1]

        code, answer = await twice(
            target, "StartMaster", pb.StartMasterRequest(context=_context(target, members, "conf-0"))
        )
        assert code == grpc.StatusCode.OK, answer
        await replica.wait_ready(60)
        m1.state = T.MEMBER_STATE_RUNNING
        code, answer = await twice(
            target, "StartSlave", pb.StartSlaveRequest(context=_context(target, members, "conf-1"))
        )
        assert code == grpc.StatusCode.OK, answer
        for method, kind, member_id in [
            ("MasterRunning", pb.MasterRunningRequest, "conf-0"),
            ("SlaveRunning", pb.SlaveRunningRequest, "conf-1"),
        ]:
            code, answer = await call(target, method, kind(context=_context(target, members, member_id)))
            assert code == grpc.StatusCode.OK, f"{method}: {answer}"

        async def check(member_id: str, kind: int) -> bool:
            request = pb.CheckMemberRequest(context=_context(target, members, member_id), timeout_seconds=3)
            code, answer = await call(target, "CheckMember", request)
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return True
            assert code == grpc.StatusCode.OK, answer
            return any(c.type == kind and c.ok for c in answer.health.conditions)

        await _eventually(lambda: check("conf-0", T.CONDITION_TYPE_REACHABLE), "the master REACHABLE")
        await _eventually(lambda: check("conf-1", T.CONDITION_TYPE_REPLICATING), "the replica REPLICATING")

        # The master is lost (reachable still): fenced, then the replica chosen, each twice.
        fence = pb.FenceRequest(context=_context(target, members, "conf-0"), replica_ids=["conf-1"])
        code, answer = await twice(target, "Fence", fence)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNIMPLEMENTED), answer
        if code == grpc.StatusCode.OK:
            assert answer.method == T.FENCE_METHOD_DEMOTED, f"a reachable master is demoted: {answer}"
        lost = pb.MasterLostRequest(context=_context(target, members, "conf-0"), candidate_ids=["conf-1"])
        code, answer = await twice(target, "MasterLost", lost)
        assert code == grpc.StatusCode.OK, answer
        assert answer.promote_member_id == "conf-1"
        assert set(answer.positions) <= {"conf-1"}

        # The promotion, twice; the old master re-pointed at the new one, twice.
        promoted = [T.Member(), T.Member()]
        promoted[0].CopyFrom(m0)
        promoted[1].CopyFrom(m1)
        promoted[0].role, promoted[1].role = T.ROLE_SLAVE, T.ROLE_MASTER
        code, answer = await twice(
            target, "StartMaster", pb.StartMasterRequest(context=_context(target, promoted, "conf-1"))
        )
        assert code == grpc.StatusCode.OK, answer
        code, answer = await twice(
            target, "StartSlave", pb.StartSlaveRequest(context=_context(target, promoted, "conf-0"))
        )
        assert code == grpc.StatusCode.OK, answer
        members = promoted
        await _eventually(
            lambda: check("conf-0", T.CONDITION_TYPE_REPLICATING), "the old master REPLICATING from the new"
        )
    finally:
        await runner.close()
