"""UpdateInstance (issue 15, part 1) through a real gateway over a real state service (etcd): the
update_mask, the etag (AIP-154: stale -> ABORTED), field-level INVALID_ARGUMENT, changes refused
up front (FAILED_PRECONDITION with the reason), generation / observed_generation. The rollout
itself is lifecycle's (tests/lifecycle/test_update_e2e.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import field_mask_pb2

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.gateway import validation
from mesos_stateful.testing.gateway import field_violations

if TYPE_CHECKING:
    Stub = api_grpc.InstanceServiceAsyncStub


async def deployed(stub: Stub, state: StateClient, name: str = "cache") -> types_pb2.Instance:
    """An instance as lifecycle leaves it after its deploy: observed_generation == generation."""
    spec = types_pb2.InstanceSpec(name=name, workload="redis", replicas=3, config={"appendonly": "yes"})
    await stub.CreateInstance(api.CreateInstanceRequest(spec=spec))

    def observe(current: object) -> types_pb2.Instance:
        assert isinstance(current, types_pb2.Instance)
        current.observed_generation = current.generation
        current.phase = types_pb2.INSTANCE_PHASE_RUNNING
        return current

    await state.update(st.KIND_INSTANCE, name, observe)
    return (await stub.GetInstance(api.GetInstanceRequest(name=name))).instance


def request(
    paths: list[str], etag: str = "", name: str = "cache", **spec: object
) -> api.UpdateInstanceRequest:
    return api.UpdateInstanceRequest(
        spec=types_pb2.InstanceSpec(name=name, **spec),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        etag=etag,
    )


async def refused(stub: Stub, req: api.UpdateInstanceRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateInstance(req)
    return caught.value


async def test_config_change_with_the_etag_bumps_the_generation(
    stub: Stub, state_client: StateClient
) -> None:
    before = await deployed(stub, state_client)
    assert before.etag == str(before.revision) and before.observed_generation == before.generation == 1
    after = (
        await stub.UpdateInstance(
            request(["config.maxmemory-policy"], before.etag, config={"maxmemory-policy": "allkeys-lru"})
        )
    ).instance
    assert after.spec.config == {"appendonly": "yes", "maxmemory-policy": "allkeys-lru"}
    assert after.generation == 2 and after.observed_generation == 1  # lifecycle rolls it out
    assert after.etag != before.etag
    # The same change again is no change: no new generation.
    again = (
        await stub.UpdateInstance(
            request(["config.maxmemory-policy"], config={"maxmemory-policy": "allkeys-lru"})
        )
    ).instance
    assert again.generation == 2 and again.etag == after.etag
    # A key named in the mask but absent from the request is removed; resources by sub-path.
    removed = (
        await stub.UpdateInstance(
            request(["config.appendonly", "resources.cpus"], resources=types_pb2.Resources(cpus=0.25))
        )
    ).instance
    assert dict(removed.spec.config) == {"maxmemory-policy": "allkeys-lru"}
    assert (
        removed.spec.resources.cpus == 0.25 and removed.spec.resources.mem_mb == before.spec.resources.mem_mb
    )
    assert removed.generation == 3


async def test_a_stale_etag_is_aborted(stub: Stub, state_client: StateClient) -> None:
    read = await deployed(stub, state_client)
    await stub.UpdateInstance(request(["labels"], labels={"team": "a"}))  # someone else changed it
    now = (await stub.GetInstance(api.GetInstanceRequest(name="cache"))).instance
    error = await refused(stub, request(["image"], read.etag, image="redis:8"))
    assert error.code() == grpc.StatusCode.ABORTED
    assert error.details() == (
        f"instance 'cache' changed since you read it (etag {read.etag}, now {now.etag}): read it again"
    )
    unchanged = (await stub.GetInstance(api.GetInstanceRequest(name="cache"))).instance
    assert unchanged.spec.image == "" and unchanged.generation == now.generation


async def test_labels_only_is_applied_at_once(stub: Stub, state_client: StateClient) -> None:
    read = await deployed(stub, state_client)
    after = (await stub.UpdateInstance(request(["labels.team"], read.etag, labels={"team": "db"}))).instance
    assert after.generation == 2 and after.observed_generation == 2  # no restart needed
    assert dict(after.spec.labels) == {"team": "db"}


async def test_bad_inputs_name_the_field(stub: Stub, state_client: StateClient) -> None:
    await deployed(stub, state_client)
    cases: list[tuple[api.UpdateInstanceRequest, str, str]] = [
        (request([]), "update_mask", "is required"),
        (request(["replicas"], replicas=5), "update_mask.paths[0]", "ScaleInstance"),
        (request(["config", "workload"]), "update_mask.paths[1]", "spec.workload is fixed"),
        (request(["runtime"]), "update_mask.paths[0]", "spec.runtime is fixed"),
        (request(["name"]), "update_mask.paths[0]", "spec.name names the instance"),
        (request(["colour"]), "update_mask.paths[0]", "not a field UpdateInstance changes"),
        (request(["resources.gpus"]), "update_mask.paths[0]", "resources has cpus, mem_mb, disk_mb"),
        (request(["image"], "abc", image="x"), "etag", "not an etag"),
        (request(["config.bogus"], config={"bogus": "1"}), "spec.config.bogus", "unknown key"),
        (
            request(["config.appendonly"], config={"appendonly": "maybe"}),
            "spec.config.appendonly",
            "not allowed",
        ),
        (
            request(["resources.cpus"], resources=types_pb2.Resources(cpus=99)),
            "spec.resources.cpus",
            "at most",
        ),
        (request(["labels"], labels={"-bad": "x"}), "spec.labels", ""),
        (request(["image"], image="has space"), "spec.image", "whitespace"),
        (request(["image"], name="Bad_Name"), "spec.name", ""),
    ]
    for req, field, text in cases:
        error = await refused(stub, req)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (req, error.details())
        violations = field_violations(error)
        matching = [f for f in violations if f.startswith(field)]
        assert matching, (field, violations)
        assert text in violations[matching[0]], (field, violations)
    # A workload change in the spec without the mask is refused too (never silently kept).
    error = await refused(stub, request(["image"], workload="mysql", image="x"))
    assert "spec.workload" in field_violations(error)


async def test_changes_that_cannot_be_applied_are_refused_up_front(
    stub: Stub, state_client: StateClient
) -> None:
    await deployed(stub, state_client)
    error = await refused(stub, request(["resources.disk_mb"], resources=types_pb2.Resources(disk_mb=4096)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "persistent volumes cannot be resized in place" in (error.details() or "")
    grow = await refused(stub, request(["resources.mem_mb"], resources=types_pb2.Resources(mem_mb=512)))
    assert grow.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot grow spec.resources.mem_mb" in (grow.details() or "")
    zone = types_pb2.Placement(required_attributes={"zone": "a"})
    moved = await refused(stub, request(["placement"], placement=zone))
    assert moved.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot require agent attributes zone=a" in (moved.details() or "")
    missing = await refused(stub, request(["image"], name="nope", image="x"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    # Not deployed yet (lifecycle has not observed any generation): refused, saying when to retry.
    await stub.CreateInstance(
        api.CreateInstanceRequest(spec=types_pb2.InstanceSpec(name="fresh", workload="redis", replicas=1))
    )
    early = await refused(stub, request(["image"], name="fresh", image="x"))
    assert early.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not deployed yet" in (early.details() or "")
    await stub.DeleteInstance(api.DeleteInstanceRequest(name="cache"))
    gone = await refused(stub, request(["image"], image="x"))
    assert gone.code() == grpc.StatusCode.FAILED_PRECONDITION and "DELETING" in (gone.details() or "")


async def test_scale_keeps_an_applied_generation_applied(stub: Stub, state_client: StateClient) -> None:
    await deployed(stub, state_client)
    scaled = (await stub.ScaleInstance(api.ScaleInstanceRequest(name="cache", replicas=5))).instance
    assert scaled.generation == 2 and scaled.observed_generation == 2
    pending = (
        await stub.UpdateInstance(request(["config.appendonly"], config={"appendonly": "no"}))
    ).instance
    assert pending.observed_generation == 2 and pending.generation == 3
    rescaled = (await stub.ScaleInstance(api.ScaleInstanceRequest(name="cache", replicas=3))).instance
    assert rescaled.generation == 4 and rescaled.observed_generation == 2  # the image is still to roll


def test_merge_update_follows_aip_134() -> None:
    current = types_pb2.InstanceSpec(
        name="c", workload="redis", replicas=3, config={"a": "1", "b": "2"}, labels={"x": "y"}, image="i:1"
    )
    requested = types_pb2.InstanceSpec(config={"a": "9"}, image="")
    merged = validation.merge_update(current, requested, ["config.a", "config.b", "image"])
    assert dict(merged.config) == {"a": "9"} and merged.image == "" and dict(merged.labels) == {"x": "y"}
    whole = validation.merge_update(current, types_pb2.InstanceSpec(config={"z": "0"}), ["config"])
    assert dict(whole.config) == {"z": "0"}
    assert not validation.needs_relaunch(current, validation.merge_update(current, requested, ["labels"]))
    assert validation.needs_relaunch(current, merged)
    # The process runtime ignores the image: an image change alone restarts nothing there.
    image_only = validation.merge_update(current, types_pb2.InstanceSpec(image="i:2"), ["image"])
    assert not validation.needs_relaunch(current, image_only)
    current.runtime = types_pb2.RUNTIME_DOCKER
    assert validation.needs_relaunch(current, validation.merge_update(current, image_only, ["image"]))
    with pytest.raises(errors.InvalidArgument) as caught:
        validation.check_update_mask(["spec.config", "replicas"], "")
    assert list(caught.value.fields) == ["update_mask.paths[1]"]
    assert validation.check_update_mask(["spec.config.a"], "12") == ["config.a"]
