"""Pure logic of keys and names (no etcd)."""

from __future__ import annotations

import pytest
from state_helpers import instance, member

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients import records
from mesos_stateful.common import errors


def test_keys_follow_the_documented_layout() -> None:
    assert records.etcd_key(pb.KIND_INSTANCE, "cache") == b"/stateful/v1/instances/cache"
    assert records.etcd_key(pb.KIND_MEMBER, "cache/cache-0") == b"/stateful/v1/members/cache/cache-0"
    assert records.etcd_key(pb.KIND_TASK, "cache-0.1") == b"/stateful/v1/tasks/cache-0.1"
    assert records.etcd_key(pb.KIND_FRAMEWORK, "") == b"/stateful/v1/framework"
    assert records.etcd_key(pb.KIND_WORKLOAD, "redis") == b"/stateful/v1/workloads/redis"
    assert records.etcd_key(pb.KIND_SECRETS, "cache") == b"/stateful/v1/secrets/cache"
    for kind, name in [(pb.KIND_MEMBER, "a/a-1"), (pb.KIND_FRAMEWORK, ""), (pb.KIND_TASK, "a-1.2")]:
        assert records.parse_etcd_key(records.etcd_key(kind, name)) == records.record_key(kind, name)
    assert records.parse_etcd_key(b"/stateful/v1/frameworkx") is None
    assert records.parse_etcd_key(b"/other/key") is None


def test_names_derive_from_values() -> None:
    assert records.key_of(instance("cache")) == records.record_key(pb.KIND_INSTANCE, "cache")
    assert records.key_of(member("cache", 2)).name == "cache/cache-2"
    assert records.key_of(types_pb2.Task(task_id="t.1")).name == "t.1"
    assert records.key_of(types_pb2.Framework(framework_id="f")) == records.record_key(pb.KIND_FRAMEWORK, "")
    assert records.key_of(types_pb2.Workload(name="redis")).name == "redis"
    assert records.key_of(types_pb2.InstanceSecrets(instance="cache")).name == "cache"
    record = records.make_record(member("cache", 0), mod_revision=3)
    assert record.WhichOneof("value") == "member" and record.mod_revision == 3
    assert records.value_of(record) == member("cache", 0)


@pytest.mark.parametrize(
    "record",
    [
        pb.Record(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name="a"), member=member("a", 0)),
        pb.Record(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name="b"), instance=instance("a")),
        pb.Record(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name=""), instance=instance("")),
        pb.Record(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name="a b"), instance=instance("a b")),
        pb.Record(key=pb.RecordKey(kind=pb.KIND_MEMBER, name="a-0"), member=types_pb2.Member(id="a-0")),
        pb.Record(key=pb.RecordKey(kind=pb.KIND_UNSPECIFIED, name="a"), instance=instance("a")),
        pb.Record(key=pb.RecordKey(kind=pb.KIND_INSTANCE, name="a")),
    ],
)
def test_bad_records_are_invalid(record: pb.Record) -> None:
    with pytest.raises(errors.InvalidArgument):
        records.validate_record(record)


def test_instance_revision_and_members_are_not_stored() -> None:
    value = instance("cache")
    value.revision = 7
    value.members.add(id="cache-0")
    stored = records.encode(records.make_record(value))
    decoded = records.decode(records.record_key(pb.KIND_INSTANCE, "cache"), stored, 9, 1)
    assert decoded.instance.revision == 9
    assert not decoded.instance.members


def test_protobuf_stays_on_upb() -> None:
    # aetcd's stubs must not force the pure-Python protobuf (14-180x slower).
    from google.protobuf.internal import api_implementation

    import mesos_stateful.state.etcdkv  # noqa: F401

    assert api_implementation.Type() == "upb"
