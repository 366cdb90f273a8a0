"""Records: the mapping between a kind, its protobuf message, its name and its etcd key.

Shared by the state service (validation, keys) and ``StateClient`` (deriving keys from values).
Names follow docs/internals.md: Instance -> spec.name, Member -> "<instance>/<id>", Task -> task_id,
Framework -> "", Workload -> name, InstanceSecrets -> instance, Event -> "<instance>/<id>",
LeaderLease -> its role (the value does not hold it: leader records are written with an explicit
name, ``make_record(lease, name=role)``).

A leader record has a side key, ``leader_term_key(role)`` (outside ROOT, so watches and the cache
never see it), whose value is the term while the lease is held, written in the same etcd
transaction as every change of the record: fenced writes compare its VALUE (etcd compares cannot
look inside a protobuf).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

from google.protobuf.message import Message

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors

ROOT = "/stateful/v1/"

# One segment of a name: starts alphanumeric; dots, dashes, underscores and colons inside (task ids).
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")


@dataclass(frozen=True)
class KindInfo:
    kind: int
    message: type[Message]
    field: str  # the Record oneof case
    directory: str  # key space under ROOT; the framework's key is ROOT + directory itself


KINDS: dict[int, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo(pb.KIND_INSTANCE, types_pb2.Instance, "instance", "instances"),
        KindInfo(pb.KIND_MEMBER, types_pb2.Member, "member", "members"),
        KindInfo(pb.KIND_TASK, types_pb2.Task, "task", "tasks"),
        KindInfo(pb.KIND_FRAMEWORK, types_pb2.Framework, "framework", "framework"),
        KindInfo(pb.KIND_WORKLOAD, types_pb2.Workload, "workload", "workloads"),
        KindInfo(pb.KIND_SECRETS, types_pb2.InstanceSecrets, "secrets", "secrets"),
        KindInfo(pb.KIND_LEADER, types_pb2.LeaderLease, "leader", "leaders"),
        KindInfo(pb.KIND_EVENT, types_pb2.Event, "event", "events"),
    )
}
_BY_MESSAGE = {info.message.DESCRIPTOR.full_name: info for info in KINDS.values()}
_BY_FIELD = {info.field: info for info in KINDS.values()}


def record_key(kind: int, name: str) -> pb.RecordKey:
    return pb.RecordKey(kind=cast(pb.Kind, kind), name=name)


def info_of(kind: int) -> KindInfo:
    info = KINDS.get(kind)
    if info is None:
        raise errors.InvalidArgument(f"unknown kind {kind}", {"key.kind": "must be set to a known kind"})
    return info


def kind_of(value: Message) -> int:
    """The kind whose records hold messages of this type."""
    info = _BY_MESSAGE.get(value.DESCRIPTOR.full_name)
    if info is None:
        raise errors.InvalidArgument(f"{value.DESCRIPTOR.full_name} is not a stored record type")
    return info.kind


def member_name(instance: str, member_id: str) -> str:
    return f"{instance}/{member_id}"


def event_name(instance: str, event_id: str) -> str:
    """The record name of an instance's event: ``<instance>/<event id>``."""
    return f"{instance}/{event_id}"


def name_of(kind: int, value: Message, name: str | None = None) -> str:
    """The record name of ``value`` in ``kind``'s key space (its identity fields). A LeaderLease
    does not name its role: ``name`` gives it (InvalidArgument without it)."""
    if kind == pb.KIND_INSTANCE and isinstance(value, types_pb2.Instance):
        return value.spec.name
    if kind == pb.KIND_MEMBER and isinstance(value, types_pb2.Member):
        return member_name(value.instance, value.id)
    if kind == pb.KIND_TASK and isinstance(value, types_pb2.Task):
        return value.task_id
    if kind == pb.KIND_FRAMEWORK and isinstance(value, types_pb2.Framework):
        return ""
    if kind == pb.KIND_WORKLOAD and isinstance(value, types_pb2.Workload):
        return value.name
    if kind == pb.KIND_SECRETS and isinstance(value, types_pb2.InstanceSecrets):
        return value.instance
    if kind == pb.KIND_EVENT and isinstance(value, types_pb2.Event):
        return event_name(value.instance, value.id)
    if kind == pb.KIND_LEADER and isinstance(value, types_pb2.LeaderLease):
        if name is None:
            raise errors.InvalidArgument(
                "a LeaderLease does not name its role: give the record's name",
                {"key.name": "must be the role"},
            )
        return name
    raise errors.InvalidArgument(
        f"a {value.DESCRIPTOR.full_name} cannot be stored as kind {pb.Kind.Name(kind)}",
        {"record.value": "case must match key.kind"},
    )


def key_of(value: Message, name: str | None = None) -> pb.RecordKey:
    kind = kind_of(value)
    return record_key(kind, name_of(kind, value, name))


def make_record(
    value: Message, mod_revision: int = 0, create_revision: int = 0, name: str | None = None
) -> pb.Record:
    """A Record holding a copy of ``value`` under its derived key (``name`` for a LeaderLease)."""
    key = key_of(value, name)
    record = pb.Record(key=key, mod_revision=mod_revision, create_revision=create_revision)
    getattr(record, KINDS[key.kind].field).CopyFrom(value)
    return record


def value_of(record: pb.Record) -> Message:
    """The record's value message (the set oneof case)."""
    case = record.WhichOneof("value")
    if case is None:
        raise errors.InvalidArgument("record has no value", {"record.value": "must be set"})
    value: Message = getattr(record, case)
    return value


def kind_of_case(case: str) -> int:
    return _BY_FIELD[case].kind


def validate_name(kind: int, name: str, field: str = "key.name") -> None:
    """InvalidArgument unless ``name`` is a valid name in ``kind``'s key space."""
    info_of(kind)
    if kind == pb.KIND_FRAMEWORK:
        if name:
            raise errors.InvalidArgument("the framework record has an empty name", {field: "must be empty"})
        return
    segments = name.split("/")
    wanted = 2 if kind in (pb.KIND_MEMBER, pb.KIND_EVENT) else 1
    if len(segments) != wanted or not all(_SEGMENT.match(s) for s in segments):
        shapes: dict[int, str] = {
            pb.KIND_MEMBER: "<instance>/<member id>",
            pb.KIND_EVENT: "<instance>/<event id>",
        }
        shape = shapes.get(kind, "a name")
        raise errors.InvalidArgument(
            f"invalid {pb.Kind.Name(kind)} name {name!r}",
            {field: f"must be {shape} of letters, digits, '.', '_', ':', '-' (starting alphanumeric)"},
        )


def validate_prefix(kind: int, prefix: str) -> None:
    info_of(kind)
    if any(ch.isspace() or not ch.isprintable() for ch in prefix):
        raise errors.InvalidArgument("invalid name prefix", {"name_prefix": "must be printable, no spaces"})


def validate_record(record: pb.Record) -> None:
    """InvalidArgument unless key and value agree and the name is valid."""
    kind = record.key.kind
    info = info_of(kind)
    case = record.WhichOneof("value")
    if case != info.field:
        raise errors.InvalidArgument(
            f"record value case {case!r} does not match kind {pb.Kind.Name(kind)}",
            {"record.value": f"must be {info.field}"},
        )
    validate_name(kind, record.key.name, "record.key.name")
    derived = name_of(kind, value_of(record), record.key.name)
    if derived != record.key.name:
        raise errors.InvalidArgument(
            f"record key name {record.key.name!r} does not match the value's identity {derived!r}",
            {"record.key.name": f"must be {derived!r}"},
        )


def validate_fence(fence: pb.LeaderFence, field: str = "fence") -> None:
    """InvalidArgument unless ``fence`` names a role and a term >= 1."""
    if not fence.role:
        raise errors.InvalidArgument("a fence must name its role", {f"{field}.role": "must be set"})
    validate_name(pb.KIND_LEADER, fence.role, f"{field}.role")
    if fence.term <= 0:
        raise errors.InvalidArgument(
            f"fence term {fence.term} of {fence.role} is not a term", {f"{field}.term": "must be >= 1"}
        )


def validate_leader(lease: types_pb2.LeaderLease) -> None:
    """InvalidArgument unless the lease has a term >= 1 and a positive lease duration."""
    if lease.term <= 0:
        raise errors.InvalidArgument(
            f"leader term {lease.term} is not a term", {"record.leader.term": "must be >= 1"}
        )
    if not lease.lease_duration_seconds > 0:
        raise errors.InvalidArgument(
            "a leader lease needs its duration", {"record.leader.lease_duration_seconds": "must be > 0"}
        )


LEADER_TERMS = "/stateful/fence/v1/leaders/"


def leader_term_key(role: str) -> bytes:
    """The side key holding the current term of ``role`` while its lease is held (absent or
    ``released/<term>`` otherwise). Outside ROOT: not a record, never watched or cached."""
    return DEFAULT_KEYS.leader_term_key(role)


def held_term_value(term: int) -> bytes:
    return str(term).encode()


def released_term_value(term: int) -> bytes:
    return f"released/{term}".encode()


def parse_term_value(data: bytes) -> tuple[int, bool]:
    """(term, held) of a side key's value."""
    text = data.decode(errors="replace")
    held = not text.startswith("released/")
    try:
        return int(text.removeprefix("released/")), held
    except ValueError:
        return 0, False


DEFAULT_KEY_ROOT = "/stateful/"
_KEY_ROOT = re.compile(r"^/([A-Za-z0-9._-]+/)+$")


@dataclass(frozen=True)
class Keys:
    """Where the store keeps its keys in etcd, under one key root (default ``/stateful/``):
    records under ``<root>v1/`` (the watched and cached prefix), leader term side keys under
    ``<root>fence/v1/leaders/``. Another root gives a separate store in the same etcd (one etcd
    serves a whole test session). ValueError for a root that is not ``/segment/.../``."""

    root: str = DEFAULT_KEY_ROOT

    def __post_init__(self) -> None:
        if not _KEY_ROOT.match(self.root):
            raise ValueError(
                f"key root {self.root!r} must be /-separated segments of [A-Za-z0-9._-], "
                "starting and ending with '/' (e.g. /stateful/)"
            )

    @property
    def records_root(self) -> str:
        """The prefix of every record key (``/stateful/v1/`` by default)."""
        return self.root + "v1/"

    def etcd_key(self, kind: int, name: str) -> bytes:
        info = info_of(kind)
        if kind == pb.KIND_FRAMEWORK:
            return (self.records_root + info.directory).encode()
        return f"{self.records_root}{info.directory}/{name}".encode()

    def etcd_prefix(self, kind: int, name_prefix: str = "") -> bytes:
        info = info_of(kind)
        if kind == pb.KIND_FRAMEWORK:
            return (self.records_root + info.directory).encode()
        return f"{self.records_root}{info.directory}/{name_prefix}".encode()

    def parse_etcd_key(self, key: bytes) -> pb.RecordKey | None:
        """The RecordKey of an etcd key under the records root, None for keys the store does not own."""
        return _parse_etcd_key(key, self.records_root)

    def leader_term_key(self, role: str) -> bytes:
        return f"{self.root}fence/v1/leaders/{role}".encode()


def etcd_key(kind: int, name: str) -> bytes:
    return DEFAULT_KEYS.etcd_key(kind, name)


def etcd_prefix(kind: int, name_prefix: str = "") -> bytes:
    return DEFAULT_KEYS.etcd_prefix(kind, name_prefix)


def parse_etcd_key(key: bytes) -> pb.RecordKey | None:
    """The RecordKey of an etcd key under ROOT, None for keys the store does not own."""
    return _parse_etcd_key(key, ROOT)


def _parse_etcd_key(key: bytes, root: str) -> pb.RecordKey | None:
    text = key.decode(errors="replace")
    if not text.startswith(root):
        return None
    rest = text[len(root) :]
    directory, _, name = rest.partition("/")
    for info in KINDS.values():
        if info.directory == directory:
            if info.kind == pb.KIND_FRAMEWORK:
                return record_key(info.kind, "") if rest == directory else None
            return record_key(info.kind, name) if name else None
    return None


def decode(key: pb.RecordKey, data: bytes, mod_revision: int, create_revision: int) -> pb.Record:
    """A Record from stored bytes; Instance.revision is set to the mod_revision."""
    info = KINDS[key.kind]
    record = pb.Record(key=key, mod_revision=mod_revision, create_revision=create_revision)
    target = getattr(record, info.field)
    target.ParseFromString(data)
    if isinstance(target, types_pb2.Instance):
        target.revision = mod_revision
    return record


def encode(record: pb.Record) -> bytes:
    """Stored bytes of a record's value. Derived fields (Instance.revision, members) are not stored."""
    value = value_of(record)
    if isinstance(value, types_pb2.Instance):
        copy = types_pb2.Instance()
        copy.CopyFrom(value)
        copy.revision = 0
        del copy.members[:]
        return copy.SerializeToString(deterministic=True)
    return value.SerializeToString(deterministic=True)


DEFAULT_KEYS = Keys()
