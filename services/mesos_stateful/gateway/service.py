"""The gateway's domain: instances and workloads over the state service.

The store keeps an instance's members as their own records; every read here assembles them into
``Instance.members`` (ordered by ordinal) and sets ``Instance.revision`` to the record's
mod_revision. The gateway writes only what the internals contract gives it: new instance records,
the spec on scale, and the phase DELETING.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from mesos_stateful.api.stateful.v1 import instance_service_pb2 as api
from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common import errors
from mesos_stateful.common.grpc_errors import from_rpc_error
from mesos_stateful.gateway import endpoints, validation
from mesos_stateful.gateway.validation import Limits

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_TOKEN_PREFIX = "v1:"
_GONE = (types_pb2.INSTANCE_PHASE_DELETING, types_pb2.INSTANCE_PHASE_DELETED)
# Two consecutive Lists that read the same revision are a consistent snapshot; under constant
# writes give up after this many tries and accept a snapshot that is slightly mixed.
_SNAPSHOT_TRIES = 10


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def encode_page_token(last_name: str) -> str:
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + last_name).encode()).decode()


def decode_page_token(token: str) -> str:
    """The last name of the previous page; InvalidArgument on a token we did not make."""
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise errors.InvalidArgument(
            "invalid page_token: pass back the next_page_token of a previous response",
            fields={"page_token": "not a token this server issued"},
        )
    return text[len(_TOKEN_PREFIX) :]


def sort_members(members: list[types_pb2.Member]) -> list[types_pb2.Member]:
    return sorted(members, key=lambda m: (m.ordinal, m.id))


def matches(instance: types_pb2.Instance, workload: str, labels: Mapping[str, str]) -> bool:
    if workload and instance.spec.workload != workload:
        return False
    return all(instance.spec.labels.get(k) == v for k, v in labels.items())


def assemble(
    record: st.Record,
    members: list[types_pb2.Member],
    description: types_pb2.WorkloadDescription | None = None,
    secrets: Mapping[str, str] | None = None,
) -> types_pb2.Instance:
    """The public Instance of a stored record, with its members, revision and endpoints (see
    gateway/endpoints.py; ``secrets`` only when the caller asked for them)."""
    instance = types_pb2.Instance()
    instance.CopyFrom(record.instance)
    instance.revision = record.mod_revision
    instance.etag = str(record.mod_revision)
    del instance.members[:]
    instance.members.extend(sort_members(members))
    return endpoints.fill(instance, description, secrets)


def _instance_of_member_name(name: str) -> str:
    return name.partition("/")[0]


class InstanceDomain:
    """create / get / list / delete / scale / watch instances and list workloads."""

    def __init__(
        self, state: StateClient, limits: Limits, state_endpoint: str, timeout_seconds: float = 10.0
    ) -> None:
        self._state = state
        self._limits = limits
        self._endpoint = state_endpoint
        self._timeout = timeout_seconds

    # -- store access: every failure to reach the store becomes one clear UNAVAILABLE --------------

    @asynccontextmanager
    async def _store(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError:
            raise self._unavailable(f"no answer within {self._timeout:g}s") from None
        except grpc.RpcError as error:
            domain = from_rpc_error(error)
            if isinstance(domain, errors.TemporaryError):
                raise self._unavailable(domain.message) from None
            raise domain from None
        except errors.Conflict:
            raise
        except errors.TemporaryError as error:
            raise self._unavailable(error.message) from None

    def _unavailable(self, detail: str) -> errors.Unavailable:
        return errors.Unavailable(f"the state service at {self._endpoint} is unavailable: {detail}")

    async def _call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        async with self._store():
            return await call()

    # -- for gateway/operations.py (plan control, events) ---------------------------------------

    @property
    def state(self) -> StateClient:
        return self._state

    async def call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a store call; failing to reach the store is one clear UNAVAILABLE."""
        return await self._call(call)

    async def instance_record(self, name: str) -> st.Record:
        """The stored instance record; NotFound naming it."""
        return await self._instance_record(name)

    async def members(self, name: str) -> list[types_pb2.Member]:
        return await self._members(name)

    async def update_record(self, name: str, change: Callable[[types_pb2.Instance], bool]) -> st.Record:
        """Compare-and-swap the instance with ``change`` (False: no change; it may raise a domain
        error to refuse)."""
        return await self._update(name, change)

    # -- reads ---------------------------------------------------------------------------------

    async def _members(self, name: str) -> list[types_pb2.Member]:
        records, _ = await self._call(lambda: self._state.list(st.KIND_MEMBER, f"{name}/"))
        return [r.member for r in records]

    async def _workloads(self) -> dict[str, types_pb2.Workload]:
        records, _ = await self._call(lambda: self._state.list(st.KIND_WORKLOAD))
        return {r.workload.name: r.workload for r in records}

    async def _instance_record(self, name: str) -> st.Record:
        try:
            return await self._call(lambda: self._state.get(st.KIND_INSTANCE, name))
        except errors.NotFound:
            raise errors.NotFound(f"instance {name!r} not found") from None

    async def get(self, name: str, include_secrets: bool) -> tuple[types_pb2.Instance, dict[str, str]]:
        validation.validate_instance_name(name)
        record = await self._instance_record(name)
        members = await self._members(name)
        secrets: dict[str, str] = {}
        if include_secrets:
            found = await self._call(lambda: self._state.find(st.KIND_SECRETS, name))
            if found is not None:
                secrets = dict(found.secrets.values)
        workload = (await self._workloads()).get(record.instance.spec.workload)
        description = workload.description if workload is not None else None
        instance = assemble(record, members, description, secrets if include_secrets else None)
        return instance, secrets

    async def list_instances(
        self, page_size: int, page_token: str, workload: str, labels: Mapping[str, str]
    ) -> tuple[list[types_pb2.Instance], str]:
        validation.validate_list_filter(workload, labels)
        after = decode_page_token(page_token) if page_token else ""
        size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
        records, _ = await self._call(lambda: self._state.list(st.KIND_INSTANCE))
        chosen = [
            r for r in sorted(records, key=lambda r: r.key.name)
            if r.key.name > after and matches(r.instance, workload, labels)
        ]
        page, more = chosen[:size], len(chosen) > size
        members: dict[str, list[types_pb2.Member]] = {}
        if page:
            member_records, _ = await self._call(lambda: self._state.list(st.KIND_MEMBER))
            for m in member_records:
                members.setdefault(_instance_of_member_name(m.key.name), []).append(m.member)
        workloads = await self._workloads() if page else {}

        def description(r: st.Record) -> types_pb2.WorkloadDescription | None:
            w = workloads.get(r.instance.spec.workload)
            return w.description if w is not None else None

        instances = [assemble(r, members.get(r.key.name, []), description(r)) for r in page]
        return instances, encode_page_token(page[-1].key.name) if more else ""

    async def list_workloads(self) -> list[types_pb2.Workload]:
        workloads = await self._workloads()
        return [workloads[name] for name in sorted(workloads)]

    # -- writes --------------------------------------------------------------------------------

    async def create(self, spec: types_pb2.InstanceSpec) -> types_pb2.Instance:
        workloads = await self._workloads()
        descriptions = {name: w.description for name, w in workloads.items()}
        for name, description in descriptions.items():
            if not description.name:
                description.name = name
        filled = validation.validate_spec(spec, descriptions, self._limits)
        now = _now()
        instance = types_pb2.Instance(
            spec=filled,
            phase=types_pb2.INSTANCE_PHASE_PENDING,
            created_at=now,
            updated_at=now,
            generation=1,
        )
        try:
            record = await self._call(lambda: self._state.put(instance, expected_revision=0))
        except errors.AlreadyExists:
            raise errors.AlreadyExists(f"instance {filled.name!r} already exists") from None
        log.info("created instance %s (%s, %d members)", filled.name, filled.workload, filled.replicas)
        return assemble(record, [])

    async def _update(
        self, name: str, change: Callable[[types_pb2.Instance], bool]
    ) -> st.Record:
        """Compare-and-swap the instance with ``change`` (which returns False for "no change")."""

        def mutate(current: Message | None) -> Message | None:
            if current is None:
                raise errors.NotFound(f"instance {name!r} not found")
            assert isinstance(current, types_pb2.Instance)
            updated = types_pb2.Instance()
            updated.CopyFrom(current)
            if not change(updated):
                return None  # no write: update() returns the current record
            updated.updated_at.CopyFrom(_now())
            return updated

        record = await self._call(lambda: self._state.update(st.KIND_INSTANCE, name, mutate))
        if record is None:
            raise errors.NotFound(f"instance {name!r} not found")
        return record

    async def delete(self, name: str) -> types_pb2.Instance:
        validation.validate_instance_name(name)
        record = await self._instance_record(name)
        if record.instance.phase not in _GONE:

            def to_deleting(instance: types_pb2.Instance) -> bool:
                if instance.phase in _GONE:
                    return False
                instance.phase = types_pb2.INSTANCE_PHASE_DELETING
                return True

            record = await self._update(name, to_deleting)
            log.info("instance %s: deletion requested", name)
        return assemble(record, await self._members(name))

    async def scale(self, name: str, replicas: int) -> types_pb2.Instance:
        validation.validate_scale(name, replicas, None, self._limits)
        current = await self._instance_record(name)
        workload = (await self._workloads()).get(current.instance.spec.workload)
        # The workload may have gone away (its lease lapsed); the operator limits still hold.
        validation.validate_scale(name, replicas, workload.description if workload else None, self._limits)

        def rescale(instance: types_pb2.Instance) -> bool:
            if instance.phase in _GONE:
                phase = types_pb2.InstancePhase.Name(instance.phase).removeprefix("INSTANCE_PHASE_")
                raise errors.FailedPrecondition(f"instance {name!r} is {phase}: it cannot be scaled")
            if instance.spec.replicas == replicas:
                return False
            instance.spec.replicas = replicas
            applied = instance.observed_generation == instance.generation
            instance.generation += 1
            if applied:
                # A member count needs no relaunch of the members running: still applied.
                instance.observed_generation = instance.generation
            return True

        record = await self._update(name, rescale)
        log.info("instance %s: scaled to %d members", name, replicas)
        return assemble(record, await self._members(name))

    async def update(
        self, requested: types_pb2.InstanceSpec, paths: list[str], etag: str
    ) -> types_pb2.Instance:
        """UpdateInstance: the masked fields of ``requested`` (see ``validation.merge_update``)
        into the stored spec, validated as a create is (InvalidArgument with ``spec.<field>``),
        generation + 1 when the spec changes. A stale ``etag`` or a lost compare-and-swap:
        Aborted. A deleting instance, one not deployed yet (observed_generation 0) or a change
        members cannot take (``validation.check_applicable``): FailedPrecondition. A labels-only
        change is applied at once (observed_generation follows if nothing else was pending);
        any other change is rolled out by lifecycle (``lifecycle/rolling.py``)."""
        name = requested.name
        validation.validate_instance_name(name, "spec.name")
        paths = validation.check_update_mask(paths, etag)
        record = await self._instance_record(name)
        current = record.instance
        if etag and etag != str(record.mod_revision):
            raise errors.Aborted(
                f"instance {name!r} changed since you read it (etag {etag}, now {record.mod_revision}): "
                "read it again"
            )
        validation.validate_update(current.spec, requested)
        if current.phase in _GONE:
            phase = types_pb2.InstancePhase.Name(current.phase).removeprefix("INSTANCE_PHASE_")
            raise errors.FailedPrecondition(f"instance {name!r} is {phase}: it cannot be updated")
        if current.observed_generation == 0:
            raise errors.FailedPrecondition(
                f"instance {name!r} is not deployed yet (phase "
                f"{types_pb2.InstancePhase.Name(current.phase).removeprefix('INSTANCE_PHASE_')}): update it "
                "once it is RUNNING (statefulctl get NAME --wait)"
            )
        workloads = await self._workloads()
        workload = workloads.get(current.spec.workload)
        if workload is None:
            raise errors.FailedPrecondition(
                f"workload {current.spec.workload!r} is not registered: its changes cannot be checked; "
                "start its workload service and try again"
            )
        description = workload.description
        description.name = description.name or current.spec.workload
        members = await self._members(name)
        relaunch = False

        def change(instance: types_pb2.Instance) -> bool:
            """The update applied to ``instance`` as stored now (False: nothing changes)."""
            nonlocal relaunch
            if instance.phase in _GONE:
                phase = types_pb2.InstancePhase.Name(instance.phase).removeprefix("INSTANCE_PHASE_")
                raise errors.FailedPrecondition(f"instance {name!r} is {phase}: it cannot be updated")
            merged = validation.merge_update(instance.spec, requested, paths)
            filled = validation.validate_spec(merged, {instance.spec.workload: description}, self._limits)
            validation.check_applicable(instance.spec, filled, members)
            if filled == instance.spec:
                return False
            relaunch = validation.needs_relaunch(instance.spec, filled)
            applied = instance.observed_generation == instance.generation
            instance.spec.CopyFrom(filled)
            instance.generation += 1
            if applied and not relaunch:
                # Nothing to restart (labels; an image the process runtime ignores): applied now.
                instance.observed_generation = instance.generation
            return True

        if etag:
            # AIP-154: the change is made to the version the caller read, or not at all.
            new = types_pb2.Instance()
            new.CopyFrom(current)
            if not change(new):
                return assemble(record, members)
            new.updated_at.CopyFrom(_now())
            try:
                record = await self._call(lambda: self._state.put(new, expected_revision=record.mod_revision))
            except errors.Conflict:
                raise errors.Aborted(
                    f"instance {name!r} changed while it was being updated (etag {etag}): read it again"
                ) from None
        else:
            # No etag: merged into whatever is stored (compare-and-swap, retried on a race).
            generation = current.generation
            record = await self._update(name, change)
            if record.instance.generation == generation:
                return assemble(record, members)
        log.info(
            "instance %s: updated %s (generation %d%s)",
            name,
            ", ".join(paths),
            record.instance.generation,
            ", rolling restart" if relaunch else "",
        )
        return assemble(record, await self._members(name))

    # -- watch ---------------------------------------------------------------------------------

    async def _snapshot(self, name: str) -> tuple[list[st.Record], list[st.Record], int, int]:
        """Instance and member records; (instances, members, instance rev, member rev)."""
        for _ in range(_SNAPSHOT_TRIES):
            instances, r1 = await self._call(lambda: self._state.list(st.KIND_INSTANCE, name))
            members, r2 = await self._call(lambda: self._state.list(st.KIND_MEMBER, name))
            if r1 == r2:
                break
        return instances, members, r1, r2

    async def watch(
        self, name: str, workload: str, start_revision: int
    ) -> AsyncIterator[api.WatchInstancesResponse]:
        """Instance changes in revision order. See WatchInstancesRequest for the contract."""
        validation.validate_watch_filter(name, workload, start_revision)
        view = _WatchView(name, workload)
        instances, members, r_instances, r_members = await self._snapshot(name)
        view.load(instances, members)
        if start_revision == 0:
            for instance in view.current():
                yield api.WatchInstancesResponse(
                    type=api.INSTANCE_EVENT_TYPE_ADDED, instance=instance, revision=r_members
                )
            start, skip_members_until = r_instances + 1, r_members
        else:
            # Replaying history: bodies are assembled from the latest members we know.
            start, skip_members_until = start_revision, 0
        # Events (KIND_EVENT) recorded from here on are delivered too (WatchInstancesResponse.event).
        kinds = (st.KIND_INSTANCE, st.KIND_MEMBER, st.KIND_EVENT)
        stream = self._state.watch(kinds=kinds, prefix=name, start_revision=start)
        try:
            async for event in stream:
                if event.record.key.kind != st.KIND_INSTANCE and event.revision <= skip_members_until:
                    continue
                response = view.apply(event)
                if response is not None:
                    yield response
        except grpc.RpcError as error:
            domain = from_rpc_error(error)
            if isinstance(domain, errors.TemporaryError):
                raise self._unavailable(domain.message) from None
            raise domain from None
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()


class _WatchView:
    """The instances a watch has seen, with their members, kept up to date by store events."""

    def __init__(self, name: str, workload: str) -> None:
        self._name = name
        self._workload = workload
        self._instances: dict[str, st.Record] = {}
        self._members: dict[str, dict[str, types_pb2.Member]] = {}

    def _wanted_instance(self, instance_name: str) -> bool:
        return not self._name or instance_name == self._name

    def load(self, instances: list[st.Record], members: list[st.Record]) -> None:
        for record in instances:
            if self._wanted_instance(record.key.name):
                self._instances[record.key.name] = record
        for record in members:
            owner = _instance_of_member_name(record.key.name)
            if self._wanted_instance(owner):
                self._members.setdefault(owner, {})[record.key.name] = record.member

    def _assembled(self, record: st.Record) -> types_pb2.Instance:
        members = list(self._members.get(record.key.name, {}).values())
        return assemble(record, members)

    def current(self) -> list[types_pb2.Instance]:
        return [
            self._assembled(r)
            for _, r in sorted(self._instances.items())
            if matches(r.instance, self._workload, {})
        ]

    def apply(self, event: st.WatchResponse) -> api.WatchInstancesResponse | None:
        record = event.record
        if record.key.kind == st.KIND_INSTANCE:
            return self._apply_instance(event)
        owner = _instance_of_member_name(record.key.name)
        if not self._wanted_instance(owner):
            return None
        if record.key.kind == st.KIND_EVENT:
            # A new entry of the instance's history; its trimming (deletes) is not news.
            if event.type != st.EVENT_TYPE_PUT:
                return None
            instance = self._instances.get(owner)
            if self._workload and (instance is None or not matches(instance.instance, self._workload, {})):
                return None
            return api.WatchInstancesResponse(event=record.event, revision=event.revision)
        members = self._members.setdefault(owner, {})
        if event.type == st.EVENT_TYPE_DELETE:
            members.pop(record.key.name, None)
        else:
            members[record.key.name] = record.member
        instance = self._instances.get(owner)
        if instance is None or not matches(instance.instance, self._workload, {}):
            return None
        assembled = self._assembled(instance)
        return api.WatchInstancesResponse(
            type=api.INSTANCE_EVENT_TYPE_MODIFIED, instance=assembled, revision=event.revision
        )

    def _apply_instance(self, event: st.WatchResponse) -> api.WatchInstancesResponse | None:
        record = event.record
        name = record.key.name
        if not self._wanted_instance(name):
            return None
        if event.type == st.EVENT_TYPE_DELETE:
            last = self._instances.pop(name, record)
            assembled = self._assembled(record if record.HasField("instance") else last)
            self._members.pop(name, None)
            event_type = api.INSTANCE_EVENT_TYPE_DELETED
        else:
            # The put that created the record is ADDED (also when replaying history).
            created = record.create_revision == event.revision or name not in self._instances
            event_type = api.INSTANCE_EVENT_TYPE_ADDED if created else api.INSTANCE_EVENT_TYPE_MODIFIED
            self._instances[name] = record
            assembled = self._assembled(record)
        if not matches(assembled, self._workload, {}):
            return None
        return api.WatchInstancesResponse(type=event_type, instance=assembled, revision=event.revision)
