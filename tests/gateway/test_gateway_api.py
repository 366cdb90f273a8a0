"""The public API against real etcd, a real state service and an in-process gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing import poll
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.gateway import (
    RunningGateway,
    fake_workload,
    field_violations,
    register_workload,
    running_gateway,
)
from mesos_stateful.testing.state import StateService


def spec(name: str = "cache", replicas: int = 3, **fields: object) -> types_pb2.InstanceSpec:
    return types_pb2.InstanceSpec(name=name, workload="redis", replicas=replicas, **fields)  # type: ignore[arg-type]


async def create(stub: api_grpc.InstanceServiceAsyncStub, s: types_pb2.InstanceSpec) -> types_pb2.Instance:
    response = await stub.CreateInstance(api.CreateInstanceRequest(spec=s))
    return response.instance


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    await poll.eventually(check, "the condition", timeout, interval=0.05)


async def test_create_get_list_scale_delete_round_trip(
    stub: api_grpc.InstanceServiceAsyncStub, state_client: StateClient
) -> None:
    created = await create(stub, spec(labels={"team": "web"}, config={"appendonly": "yes"}))
    assert created.phase == types_pb2.INSTANCE_PHASE_PENDING
    assert created.generation == 1
    assert created.revision > 0
    assert created.spec.resources.cpus == 0.5  # the workload's default
    assert created.spec.resources.mem_mb == 256
    assert created.created_at.seconds > 0

    # Members are separate records; reads assemble them, ordered by ordinal.
    for ordinal in (1, 0):
        await state_client.put(
            types_pb2.Member(
                id=f"cache-{ordinal}",
                instance="cache",
                ordinal=ordinal,
                role=types_pb2.ROLE_MASTER if ordinal == 0 else types_pb2.ROLE_SLAVE,
                state=types_pb2.MEMBER_STATE_RUNNING,
            )
        )
    await state_client.put(types_pb2.InstanceSecrets(instance="cache", values={"password": "s3cret"}))

    got = await stub.GetInstance(api.GetInstanceRequest(name="cache"))
    assert got.instance.spec == created.spec
    assert [m.id for m in got.instance.members] == ["cache-0", "cache-1"]
    assert not got.secrets
    with_secrets = await stub.GetInstance(api.GetInstanceRequest(name="cache", include_secrets=True))
    assert dict(with_secrets.secrets) == {"password": "s3cret"}

    listed = await stub.ListInstances(api.ListInstancesRequest())
    assert [i.spec.name for i in listed.instances] == ["cache"]
    assert len(listed.instances[0].members) == 2
    assert not listed.next_page_token

    scaled = await stub.ScaleInstance(api.ScaleInstanceRequest(name="cache", replicas=5))
    assert scaled.instance.spec.replicas == 5
    assert scaled.instance.generation == 2
    stored = await state_client.get(st.KIND_INSTANCE, "cache")
    assert stored.instance.spec.replicas == 5
    assert not stored.instance.members  # never stored in the instance record

    deleted = await stub.DeleteInstance(api.DeleteInstanceRequest(name="cache"))
    assert deleted.instance.phase == types_pb2.INSTANCE_PHASE_DELETING
    again = await stub.DeleteInstance(api.DeleteInstanceRequest(name="cache"))  # idempotent
    assert again.instance.phase == types_pb2.INSTANCE_PHASE_DELETING
    assert again.instance.revision == deleted.instance.revision

    workloads = await stub.ListWorkloads(api.ListWorkloadsRequest())
    assert [w.name for w in workloads.workloads] == ["redis"]


async def test_record_survives_restarts(
    stub: api_grpc.InstanceServiceAsyncStub, state_service: StateService, etcd: EtcdProcess
) -> None:
    await create(stub, spec())

    async def readable() -> bool:
        try:
            got = await stub.GetInstance(api.GetInstanceRequest(name="cache"))
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            return False
        return got.instance.spec.replicas == 3

    await state_service.restart()
    await eventually(readable)
    await etcd.kill()
    error = await rpc_error(stub.GetInstance(api.GetInstanceRequest(name="cache")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    await etcd.restart()
    await eventually(readable)
    # and writes work again
    await stub.ScaleInstance(api.ScaleInstanceRequest(name="cache", replicas=2))


async def test_unavailable_when_state_service_is_down(
    stub: api_grpc.InstanceServiceAsyncStub, state_service: StateService
) -> None:
    await state_service.stop()
    error = await rpc_error(stub.CreateInstance(api.CreateInstanceRequest(spec=spec())))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "state service" in (error.details() or "")
    assert state_service.endpoint in (error.details() or "")


async def test_concurrent_creates_one_wins(stub: api_grpc.InstanceServiceAsyncStub) -> None:
    results = await asyncio.gather(
        *(create(stub, spec(replicas=r)) for r in (1, 2, 3, 4)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, types_pb2.Instance)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == 3
    assert {e.code() for e in losers} == {grpc.StatusCode.ALREADY_EXISTS}
    got = await stub.GetInstance(api.GetInstanceRequest(name="cache"))
    assert got.instance.spec.replicas == winners[0].spec.replicas


async def test_not_found(stub: api_grpc.InstanceServiceAsyncStub) -> None:
    for call in (
        stub.GetInstance(api.GetInstanceRequest(name="nope")),
        stub.DeleteInstance(api.DeleteInstanceRequest(name="nope")),
        stub.ScaleInstance(api.ScaleInstanceRequest(name="nope", replicas=2)),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in (error.details() or "")


async def test_scale_a_deleting_instance_fails_precondition(stub: api_grpc.InstanceServiceAsyncStub) -> None:
    await create(stub, spec())
    await stub.DeleteInstance(api.DeleteInstanceRequest(name="cache"))
    error = await rpc_error(stub.ScaleInstance(api.ScaleInstanceRequest(name="cache", replicas=4)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "DELETING" in (error.details() or "")


async def test_pagination_and_filters(
    stub: api_grpc.InstanceServiceAsyncStub, state_client: StateClient
) -> None:
    await register_workload(state_client, fake_workload("etcd", topology=types_pb2.TOPOLOGY_PEERS))
    names = [f"db-{i:02d}" for i in range(7)]
    for i, name in enumerate(names):
        workload = "etcd" if i % 2 else "redis"
        await create(
            stub,
            types_pb2.InstanceSpec(
                name=name, workload=workload, replicas=1, labels={"parity": "odd" if i % 2 else "even"}
            ),
        )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListInstances(api.ListInstancesRequest(page_size=3, page_token=token))
        seen += [i.spec.name for i in page.instances]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == names
    assert pages == 3

    default = await stub.ListInstances(api.ListInstancesRequest())
    assert len(default.instances) == 7
    big = await stub.ListInstances(api.ListInstancesRequest(page_size=5000))  # capped, not refused
    assert len(big.instances) == 7

    etcds = await stub.ListInstances(api.ListInstancesRequest(workload="etcd"))
    assert [i.spec.name for i in etcds.instances] == ["db-01", "db-03", "db-05"]
    even = await stub.ListInstances(api.ListInstancesRequest(labels={"parity": "even"}))
    assert [i.spec.name for i in even.instances] == ["db-00", "db-02", "db-04", "db-06"]
    none = await stub.ListInstances(api.ListInstancesRequest(workload="etcd", labels={"parity": "even"}))
    assert not none.instances

    error = await rpc_error(stub.ListInstances(api.ListInstancesRequest(page_token="bogus")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(error)


async def test_auth(state_service: StateService, state_client: StateClient) -> None:
    await register_workload(state_client)
    async with (
        running_gateway(state_service.endpoint, auth_token="s3cret") as gw,
        gw.channel() as channel,
    ):
        stub = api_grpc.InstanceServiceStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
            error = await rpc_error(stub.ListWorkloads(api.ListWorkloadsRequest(), metadata=metadata))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            stream = stub.WatchInstances(api.WatchInstancesRequest(), metadata=metadata)
            error = await rpc_error(stream.read())
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer s3cret"),)
        workloads = await stub.ListWorkloads(api.ListWorkloadsRequest(), metadata=good)
        assert [w.name for w in workloads.workloads] == ["redis"]
        # Health stays open for probes.
        health_stub: Any = health_pb2_grpc.HealthStub(channel)
        health = await health_stub.Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


# -- every validated field: (request builder, expected field) ------------------------------------


def _create(**fields: object) -> Callable[[api_grpc.InstanceServiceAsyncStub], Awaitable[object]]:
    base: dict[str, object] = {"name": "cache", "workload": "redis", "replicas": 3}
    base.update(fields)

    def call(stub: api_grpc.InstanceServiceAsyncStub) -> Awaitable[object]:
        s = types_pb2.InstanceSpec(**base)  # type: ignore[arg-type]
        return stub.CreateInstance(api.CreateInstanceRequest(spec=s))

    return call


BAD_REQUESTS: list[tuple[str, Callable[[api_grpc.InstanceServiceAsyncStub], Awaitable[object]], str]] = [
    ("name empty", _create(name=""), "spec.name"),
    ("name uppercase", _create(name="Cache"), "spec.name"),
    ("name too long", _create(name="a" * 41), "spec.name"),
    ("name starts with digit", _create(name="1cache"), "spec.name"),
    ("workload empty", _create(workload=""), "spec.workload"),
    ("workload unknown", _create(workload="mongo"), "spec.workload"),
    ("replicas zero", _create(replicas=0), "spec.replicas"),
    ("replicas over limit", _create(replicas=10), "spec.replicas"),
    ("cpus negative", _create(resources=types_pb2.Resources(cpus=-1)), "spec.resources.cpus"),
    ("cpus nan", _create(resources=types_pb2.Resources(cpus=float("nan"))), "spec.resources.cpus"),
    ("cpus over limit", _create(resources=types_pb2.Resources(cpus=17)), "spec.resources.cpus"),
    ("mem over limit", _create(resources=types_pb2.Resources(mem_mb=65537)), "spec.resources.mem_mb"),
    ("disk over limit", _create(resources=types_pb2.Resources(disk_mb=2**21)), "spec.resources.disk_mb"),
    ("image whitespace", _create(image="redis latest"), "spec.image"),
    ("image too long", _create(image="r" * 256), "spec.image"),
    ("config unknown key", _create(config={"nope": "1"}), "spec.config.nope"),
    ("config value not allowed", _create(config={"appendonly": "maybe"}), "spec.config.appendonly"),
    (
        "config value too long",
        _create(config={"maxmemory-policy": "x" * 1025}),
        "spec.config.maxmemory-policy",
    ),
    (
        "config value control char",
        _create(config={"maxmemory-policy": "a\tb"}),
        "spec.config.maxmemory-policy",
    ),
    ("label key bad", _create(labels={"bad key": "v"}), "spec.labels.bad key"),
    ("label key too long", _create(labels={"k" * 64: "v"}), "spec.labels." + "k" * 64),
    ("label value bad", _create(labels={"app": "-v"}), "spec.labels.app"),
    (
        "placement per agent",
        _create(placement=types_pb2.Placement(max_members_per_agent=100000)),
        "spec.placement.max_members_per_agent",
    ),
    (
        "placement attribute value",
        _create(placement=types_pb2.Placement(required_attributes={"zone": "a b"})),
        "spec.placement.required_attributes.zone",
    ),
    (
        "placement attribute name",
        _create(placement=types_pb2.Placement(required_attributes={"zo ne": "a"})),
        "spec.placement.required_attributes.zo ne",
    ),
    ("get name", lambda s: s.GetInstance(api.GetInstanceRequest(name="Bad_Name")), "name"),
    ("delete name", lambda s: s.DeleteInstance(api.DeleteInstanceRequest(name="")), "name"),
    ("scale name", lambda s: s.ScaleInstance(api.ScaleInstanceRequest(name="x!", replicas=1)), "name"),
    (
        "scale replicas zero",
        lambda s: s.ScaleInstance(api.ScaleInstanceRequest(name="x", replicas=0)),
        "replicas",
    ),
    (
        "scale replicas high",
        lambda s: s.ScaleInstance(api.ScaleInstanceRequest(name="x", replicas=10)),
        "replicas",
    ),
    ("list workload", lambda s: s.ListInstances(api.ListInstancesRequest(workload="Bad!")), "workload"),
    ("list label", lambda s: s.ListInstances(api.ListInstancesRequest(labels={"a b": "c"})), "labels.a b"),
    ("list page token", lambda s: s.ListInstances(api.ListInstancesRequest(page_token="zz")), "page_token"),
    ("watch name", lambda s: s.WatchInstances(api.WatchInstancesRequest(name="Bad")).read(), "name"),
    (
        "watch workload",
        lambda s: s.WatchInstances(api.WatchInstancesRequest(workload="B!")).read(),
        "workload",
    ),
    (
        "watch start revision",
        lambda s: s.WatchInstances(api.WatchInstancesRequest(start_revision=-1)).read(),
        "start_revision",
    ),
]


@pytest.mark.parametrize(
    ("call", "field"), [(c, f) for _, c, f in BAD_REQUESTS], ids=[i for i, _, _ in BAD_REQUESTS]
)
async def test_bad_request(
    stub: api_grpc.InstanceServiceAsyncStub,
    call: Callable[[api_grpc.InstanceServiceAsyncStub], Awaitable[object]],
    field: str,
) -> None:
    error = await rpc_error(call(stub))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    violations = field_violations(error)
    assert field in violations, violations
    assert violations[field]


async def test_many_violations_in_one_answer(stub: api_grpc.InstanceServiceAsyncStub) -> None:
    bad = types_pb2.InstanceSpec(name="X", workload="mongo", replicas=0, image="a b")
    error = await rpc_error(stub.CreateInstance(api.CreateInstanceRequest(spec=bad)))
    assert set(field_violations(error)) == {"spec.name", "spec.workload", "spec.replicas", "spec.image"}
    assert "redis" in field_violations(error)["spec.workload"]  # lists the registered workloads


async def test_workload_limits_apply(
    stub: api_grpc.InstanceServiceAsyncStub, state_client: StateClient
) -> None:
    await register_workload(state_client, fake_workload("etcd", min_replicas=3, max_replicas=5))
    bad = types_pb2.InstanceSpec(name="peers", workload="etcd", replicas=2)
    error = await rpc_error(stub.CreateInstance(api.CreateInstanceRequest(spec=bad)))
    assert "at least 3" in field_violations(error)["spec.replicas"]
    await stub.CreateInstance(
        api.CreateInstanceRequest(spec=types_pb2.InstanceSpec(name="peers", workload="etcd", replicas=3))
    )
    error = await rpc_error(stub.ScaleInstance(api.ScaleInstanceRequest(name="peers", replicas=6)))
    assert "at most 5" in field_violations(error)["replicas"]


async def test_gateway_fixture_endpoint(gateway: RunningGateway) -> None:
    assert gateway.endpoint.startswith("127.0.0.1:")
