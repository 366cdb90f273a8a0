"""The instance's runtime (process or Docker): filled from ``default_runtime`` at create, unknown
values refused, fixed for the life of the instance. Unit tests of the validation functions, then the
public API of a real gateway (real etcd and state service) with each default."""

from __future__ import annotations

import grpc
import pytest

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.gateway import validation
from mesos_stateful.gateway.settings import GatewaySettings
from mesos_stateful.testing.gateway import fake_workload, field_violations, register_workload, running_gateway
from mesos_stateful.testing.state import StateService

PROCESS, DOCKER = types_pb2.RUNTIME_PROCESS, types_pb2.RUNTIME_DOCKER
REDIS = fake_workload("redis").description


def spec(**fields: object) -> types_pb2.InstanceSpec:
    values: dict[str, object] = {"name": "cache", "workload": "redis", "replicas": 3, **fields}
    return types_pb2.InstanceSpec(**values)  # type: ignore[arg-type]


def limits(default: int = PROCESS) -> validation.Limits:
    return validation.Limits(default_runtime=default)


@pytest.mark.parametrize(
    ("given", "default", "stored"),
    [
        (types_pb2.RUNTIME_UNSPECIFIED, PROCESS, PROCESS),
        (types_pb2.RUNTIME_UNSPECIFIED, DOCKER, DOCKER),
        (PROCESS, DOCKER, PROCESS),
        (DOCKER, PROCESS, DOCKER),
    ],
)
def test_unspecified_takes_the_default_and_a_given_runtime_is_kept(
    given: int, default: int, stored: int
) -> None:
    filled = validation.validate_spec(spec(runtime=given), {"redis": REDIS}, limits(default))
    assert filled.runtime == stored


def test_unknown_runtime_value_is_refused_naming_the_known_ones() -> None:
    bad = spec()
    bad.runtime = 7  # type: ignore[assignment]  # a newer client's value: proto3 keeps it
    with pytest.raises(errors.InvalidArgument) as caught:
        validation.validate_spec(bad, {"redis": REDIS}, limits())
    message = caught.value.fields["spec.runtime"]
    assert "unknown runtime 7" in message
    assert "RUNTIME_PROCESS" in message and "RUNTIME_DOCKER" in message


def test_docker_without_any_image_is_refused() -> None:
    no_image = types_pb2.WorkloadDescription()
    no_image.CopyFrom(REDIS)
    no_image.default_image = ""
    with pytest.raises(errors.InvalidArgument) as caught:
        validation.validate_spec(spec(runtime=DOCKER), {"redis": no_image}, limits())
    assert "required for the Docker runtime" in caught.value.fields["spec.image"]
    # The process runtime needs no image; with one given, Docker is fine.
    validation.validate_spec(spec(runtime=PROCESS), {"redis": no_image}, limits())
    validation.validate_spec(spec(runtime=DOCKER, image="my/redis:1"), {"redis": no_image}, limits())


def test_update_may_not_change_the_runtime() -> None:
    stored = spec(runtime=PROCESS)
    with pytest.raises(errors.InvalidArgument) as caught:
        validation.validate_update(stored, spec(runtime=DOCKER))
    message = caught.value.fields["spec.runtime"]
    assert (
        "from RUNTIME_PROCESS to RUNTIME_DOCKER" in message
        and "fixed when the instance is created" in message
    )
    assert "leave it unset" in message  # what a person can do
    # Unset keeps it; the same value is no change.
    validation.validate_update(stored, spec())
    validation.validate_update(stored, spec(runtime=PROCESS))
    # A record written before the field existed runs processes.
    old = spec()
    validation.validate_update(old, spec(runtime=PROCESS))
    with pytest.raises(errors.InvalidArgument):
        validation.validate_update(old, spec(runtime=DOCKER))


def test_default_runtime_setting() -> None:
    assert GatewaySettings.load([]).default_runtime == "process"
    assert GatewaySettings.load(["--default-runtime", "docker"]).default_runtime == "docker"
    with pytest.raises(SystemExit) as caught:
        GatewaySettings.load(["--default-runtime", "vm"])
    assert "default_runtime" in str(caught.value)


async def _create(stub: api_grpc.InstanceServiceAsyncStub, s: types_pb2.InstanceSpec) -> types_pb2.Instance:
    return (await stub.CreateInstance(api.CreateInstanceRequest(spec=s))).instance


@pytest.mark.parametrize(("setting", "default"), [("process", PROCESS), ("docker", DOCKER)])
async def test_create_stores_the_runtime_chosen(
    state_service: StateService, state_client: StateClient, setting: str, default: int
) -> None:
    await register_workload(state_client)
    async with (
        running_gateway(state_service.endpoint, default_runtime=setting) as gateway,
        gateway.channel() as ch,
    ):
        stub = api_grpc.InstanceServiceStub(ch)
        assert (await _create(stub, spec(name="defaulted"))).spec.runtime == default
        assert (await _create(stub, spec(name="as-process", runtime=PROCESS))).spec.runtime == PROCESS
        assert (await _create(stub, spec(name="as-docker", runtime=DOCKER))).spec.runtime == DOCKER
        # The stored record holds the runtime chosen (what lifecycle reads), and Get shows it.
        stored = await state_client.get(st.KIND_INSTANCE, "defaulted")
        assert stored.instance.spec.runtime == default
        got = await stub.GetInstance(api.GetInstanceRequest(name="defaulted"))
        assert got.instance.spec.runtime == default
        # Scale keeps it.
        scaled = await stub.ScaleInstance(api.ScaleInstanceRequest(name="defaulted", replicas=5))
        assert scaled.instance.spec.runtime == default

        bad = spec(name="bad")
        bad.runtime = 9  # type: ignore[assignment]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateInstance(api.CreateInstanceRequest(spec=bad))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown runtime 9" in field_violations(caught.value)["spec.runtime"]


async def test_docker_needs_an_image_through_the_api(
    state_service: StateService, state_client: StateClient
) -> None:
    bare = fake_workload("bare")
    bare.description.default_image = ""
    await register_workload(state_client, bare)
    async with (
        running_gateway(state_service.endpoint, default_runtime="docker") as gateway,
        gateway.channel() as ch,
    ):
        stub = api_grpc.InstanceServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _create(stub, spec(workload="bare"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "--image" in field_violations(caught.value)["spec.image"]
        created = await _create(stub, spec(workload="bare", image="example/bare:1"))
        assert created.spec.runtime == DOCKER and created.spec.image == "example/bare:1"
