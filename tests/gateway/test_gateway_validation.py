"""Unit tests of the pure validation functions (no processes)."""

from __future__ import annotations

import math

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.gateway import validation
from mesos_stateful.gateway.service import decode_page_token, encode_page_token
from mesos_stateful.testing.gateway import fake_workload

LIMITS = validation.Limits(
    max_replicas=9, max_cpus=16, max_mem_mb=65536, max_disk_mb=1048576, max_config_entries=3
)
REDIS = fake_workload("redis", max_replicas=7).description
WORKLOADS = {"redis": REDIS}


def spec(**fields: object) -> types_pb2.InstanceSpec:
    base = types_pb2.InstanceSpec(name="cache", workload="redis", replicas=3)
    extra = types_pb2.InstanceSpec(**fields)  # type: ignore[arg-type]
    base.MergeFrom(extra)
    for name in ("name", "workload", "replicas", "image"):
        if name in fields:
            setattr(base, name, fields[name])
    return base


def violations_of(s: types_pb2.InstanceSpec) -> dict[str, str]:
    with pytest.raises(errors.InvalidArgument) as caught:
        validation.validate_spec(s, WORKLOADS, LIMITS)
    return caught.value.fields


def test_valid_spec_takes_workload_defaults() -> None:
    filled = validation.validate_spec(spec(resources=types_pb2.Resources(mem_mb=512)), WORKLOADS, LIMITS)
    assert filled.resources.cpus == 0.5
    assert filled.resources.mem_mb == 512
    assert filled.resources.disk_mb == 128


@pytest.mark.parametrize(
    "name",
    ["", "Cache", "1cache", "cache-", "ca_che", "ca.che", "a" * 41, "café"],
)
def test_bad_names(name: str) -> None:
    assert "spec.name" in violations_of(spec(name=name))


@pytest.mark.parametrize("name", ["a", "cache", "my-cache-2", "a" * 40])
def test_good_names(name: str) -> None:
    validation.validate_spec(spec(name=name), WORKLOADS, LIMITS)


def test_every_violation_is_collected() -> None:
    bad = spec(
        name="Bad",
        replicas=0,
        resources=types_pb2.Resources(cpus=-1, mem_mb=10**9, disk_mb=10**9),
        image="has space",
        config={"nope": "x", "appendonly": "maybe"},
        labels={"-bad": "ok"},
        placement=types_pb2.Placement(required_attributes={"zone": "a b"}),
    )
    assert set(violations_of(bad)) == {
        "spec.name",
        "spec.replicas",
        "spec.resources.cpus",
        "spec.resources.mem_mb",
        "spec.resources.disk_mb",
        "spec.image",
        "spec.config.nope",
        "spec.config.appendonly",
        "spec.labels.-bad",
        "spec.placement.required_attributes.zone",
    }


def test_unknown_workload_lists_registered_ones() -> None:
    found = violations_of(spec(workload="mongo"))
    assert "redis" in found["spec.workload"]
    assert "mongo" in found["spec.workload"]


@pytest.mark.parametrize(("replicas", "ok"), [(1, True), (7, True), (8, False), (10, False), (0, False)])
def test_replicas_within_limits_and_workload(replicas: int, ok: bool) -> None:
    if ok:
        validation.validate_spec(spec(replicas=replicas), WORKLOADS, LIMITS)
    else:
        assert "spec.replicas" in violations_of(spec(replicas=replicas))


def test_workload_minimum() -> None:
    peers = fake_workload("etcd", min_replicas=3).description
    with pytest.raises(errors.InvalidArgument) as caught:
        validation.validate_spec(spec(workload="etcd", replicas=2), {"etcd": peers}, LIMITS)
    assert "at least 3" in caught.value.fields["spec.replicas"]


@pytest.mark.parametrize("cpus", [math.nan, math.inf, -0.5, 16.5])
def test_bad_cpus(cpus: float) -> None:
    assert "spec.resources.cpus" in violations_of(spec(resources=types_pb2.Resources(cpus=cpus)))


def test_config_entries_limit_and_values() -> None:
    many = {"appendonly": "yes", "maxmemory-policy": "x", "a": "1", "b": "2"}
    assert "spec.config" in violations_of(spec(config=many))
    assert "spec.config.maxmemory-policy" in violations_of(spec(config={"maxmemory-policy": "x" * 1025}))
    assert "spec.config.maxmemory-policy" in violations_of(spec(config={"maxmemory-policy": "a\nb"}))
    validation.validate_spec(
        spec(config={"appendonly": "yes", "maxmemory-policy": "allkeys-lru"}), WORKLOADS, LIMITS
    )


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        ("app", "web", True),
        ("example.com/tier", "front-end", True),
        ("app", "", True),
        ("a" * 64, "x", False),
        ("app", "v" * 64, False),
        ("/app", "x", False),
        ("Bad_Prefix/app", "x", False),
        ("app", "has space", False),
        ("app-", "x", False),
    ],
)
def test_labels(key: str, value: str, ok: bool) -> None:
    s = spec(labels={key: value})
    if ok:
        validation.validate_spec(s, WORKLOADS, LIMITS)
    else:
        assert f"spec.labels.{key}" in violations_of(s)


def test_image_and_placement() -> None:
    assert "spec.image" in violations_of(spec(image="x" * 256))
    placement = types_pb2.Placement(max_members_per_agent=5000)
    assert "spec.placement.max_members_per_agent" in violations_of(spec(placement=placement))
    bad_key = types_pb2.Placement(required_attributes={"bad key": "a"})
    assert "spec.placement.required_attributes.bad key" in violations_of(spec(placement=bad_key))


def test_scale_and_filters() -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        validation.validate_scale("cache", 10, None, LIMITS)
    assert set(caught.value.fields) == {"replicas"}
    with pytest.raises(errors.InvalidArgument) as caught:
        validation.validate_list_filter("Bad!", {"x y": "z"})
    assert set(caught.value.fields) == {"workload", "labels.x y"}
    with pytest.raises(errors.InvalidArgument) as caught:
        validation.validate_watch_filter("", "", -1)
    assert set(caught.value.fields) == {"start_revision"}


def test_page_token_round_trip_and_garbage() -> None:
    assert decode_page_token(encode_page_token("cache")) == "cache"
    for garbage in ("garbage", "!!!", encode_page_token("x")[:-3] + "A"):
        with pytest.raises(errors.InvalidArgument) as caught:
            decode_page_token(garbage)
        assert "page_token" in caught.value.fields
