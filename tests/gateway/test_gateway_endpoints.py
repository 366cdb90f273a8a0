"""Instance.endpoints (gateway/endpoints.py): unit tests over members as the lifecycle writes them,
and through a live gateway (GetInstance, include_secrets, the token)."""

from __future__ import annotations

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.state import StateClient
from mesos_stateful.gateway import endpoints
from mesos_stateful.testing.gateway import fake_workload, register_workload, running_gateway
from mesos_stateful.testing.state import StateService

RUNNING = T.MEMBER_STATE_RUNNING


def member(
    name: str, ordinal: int, role: int, port_name: str, state: int = RUNNING, **ports: int
) -> T.Member:
    return T.Member(
        id=f"{name}-{ordinal}",
        instance=name,
        ordinal=ordinal,
        role=role,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        host=f"127.0.0.{ordinal + 2}",
        ports={port_name: 31000 + ordinal, **ports},
    )


def instance(workload: str, members: list[T.Member]) -> T.Instance:
    spec = T.InstanceSpec(name="db", workload=workload, replicas=len(members))
    return T.Instance(spec=spec, members=members)


def test_redis_primary_reads_and_uri_without_the_secret() -> None:
    members = [
        member("db", 0, T.ROLE_SLAVE, "redis"),
        member("db", 1, T.ROLE_MASTER, "redis"),
        member("db", 2, T.ROLE_SLAVE, "redis", state=T.MEMBER_STATE_STARTING),
    ]
    e = endpoints.compute(instance("redis", members))
    assert e.port_name == "redis"
    assert (e.primary.member_id, e.primary.address, e.primary.ready) == ("db-1", "127.0.0.3:31001", True)
    # A replica that is not ready serves no reads.
    assert [(r.member_id, r.address) for r in e.reads] == [("db-0", "127.0.0.2:31000")]
    assert not e.peers
    assert e.uri == "redis://127.0.0.3:31001"
    assert e.uri_with_secret == ""  # not asked
    asked = endpoints.compute(instance("redis", members), secrets={"password": "p@ss/word"})
    # Redis URIs have no user: redis://:<password>@host:port (the password percent-encoded).
    assert asked.uri_with_secret == "redis://:p%40ss%2Fword@127.0.0.3:31001"
    assert asked.uri == e.uri


def test_mysql_uri_names_the_admin_account() -> None:
    members = [member("db", 0, T.ROLE_MASTER, "mysql", state=T.MEMBER_STATE_LOST)]
    secrets = {"admin_password": "pw", "replication_password": "r"}
    e = endpoints.compute(instance("mysql", members), secrets=secrets)
    # A master that is down is still the primary (not ready): the URI points at it.
    assert e.primary.ready is False
    assert e.uri == "mysql://admin@127.0.0.2:31000/"
    assert e.uri_with_secret == "mysql://admin:pw@127.0.0.2:31000/"


def test_etcd_peers_on_the_client_port() -> None:
    members = [member("db", i, T.ROLE_PEER, "client", peer=32000 + i) for i in range(3)]
    members[2].state = T.MEMBER_STATE_STOPPED  # scaled away: not a peer any more
    e = endpoints.compute(instance("etcd", members))
    assert e.port_name == "client"
    assert not e.HasField("primary") and not e.reads
    assert [p.address for p in e.peers] == ["127.0.0.2:31000", "127.0.0.3:31001"]
    assert e.uri == "http://127.0.0.2:31000,http://127.0.0.3:31001"
    # etcd has no password: nothing to add.
    assert endpoints.compute(instance("etcd", members), secrets={}).uri_with_secret == ""


def test_another_workload_uses_its_first_port_name() -> None:
    members = [member("db", 0, T.ROLE_MASTER, "web", admin=40000)]
    described = T.WorkloadDescription(name="mine", port_names=["web", "admin"])
    e = endpoints.compute(instance("mine", members), described)
    assert e.port_name == "web" and e.uri == "tcp://127.0.0.2:31000"
    # Not registered (no description): the member's ports, sorted.
    assert endpoints.compute(instance("mine", members)).port_name == "admin"


def test_no_address_yet() -> None:
    pending = T.Member(id="db-0", instance="db", role=T.ROLE_MASTER, state=T.MEMBER_STATE_PENDING)
    e = endpoints.compute(instance("redis", [pending]))
    assert not e.HasField("primary") and e.uri == "" and e.port_name == "redis"


async def test_get_instance_fills_endpoints_and_the_secret_only_when_asked(
    stub: api_grpc.InstanceServiceAsyncStub, state_client: StateClient
) -> None:
    spec = T.InstanceSpec(name="cache", workload="redis", replicas=1)
    await stub.CreateInstance(api.CreateInstanceRequest(spec=spec))
    await state_client.put(member("cache", 0, T.ROLE_MASTER, "redis"))
    await state_client.put(T.InstanceSecrets(instance="cache", values={"password": "pw"}))
    plain = await stub.GetInstance(api.GetInstanceRequest(name="cache"))
    assert plain.instance.endpoints.uri == "redis://127.0.0.2:31000"
    assert plain.instance.endpoints.uri_with_secret == ""
    asked = await stub.GetInstance(api.GetInstanceRequest(name="cache", include_secrets=True))
    assert asked.instance.endpoints.uri_with_secret == "redis://:pw@127.0.0.2:31000"
    listed = await stub.ListInstances(api.ListInstancesRequest())
    assert listed.instances[0].endpoints.primary.address == "127.0.0.2:31000"
    assert listed.instances[0].endpoints.uri_with_secret == ""


@pytest.mark.servers
async def test_the_secret_needs_the_token(state_service: StateService, state_client: StateClient) -> None:
    await register_workload(state_client, fake_workload("redis"))
    async with (
        running_gateway(state_service.endpoint, auth_token="s3cret") as gw,
        grpc.aio.insecure_channel(gw.endpoint) as channel,
    ):
        stub = api_grpc.InstanceServiceStub(channel)
        token = (("authorization", "Bearer s3cret"),)
        spec = T.InstanceSpec(name="cache", workload="redis", replicas=1)
        await stub.CreateInstance(api.CreateInstanceRequest(spec=spec), metadata=token)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.GetInstance(api.GetInstanceRequest(name="cache", include_secrets=True))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        asked = api.GetInstanceRequest(name="cache", include_secrets=True)
        ok = await stub.GetInstance(asked, metadata=token)
        assert ok.instance.spec.name == "cache"
