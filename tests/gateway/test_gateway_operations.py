"""The gateway's checks of SwitchoverInstance / RestartMember / ReplaceMember (pure: the instance
as the store shows it). The same checks through the API with a real suite are in
tests/lifecycle/test_switchover_e2e.py."""

from __future__ import annotations

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.common import errors
from mesos_stateful.gateway import member_operations as operations


def instance(roles: list[int], has_data: bool = True, name: str = "cache") -> T.Instance:
    inst = T.Instance(
        spec=T.InstanceSpec(name=name, workload="redis", replicas=len(roles)), has_data=has_data
    )
    for ordinal, role in enumerate(roles):
        inst.members.add(
            id=f"{name}-{ordinal}",
            ordinal=ordinal,
            role=role,
            state=T.MEMBER_STATE_RUNNING,
            volume=T.Volume(has_data=has_data),
        )
    return inst


def test_field_level_invalid_argument() -> None:
    with pytest.raises(errors.InvalidArgument) as bad:
        operations.validate_switchover("cache", "db-1")
    assert set(bad.value.fields) == {"target_member_id"}
    assert "cache-<ordinal>" in bad.value.fields["target_member_id"]
    with pytest.raises(errors.InvalidArgument) as both:
        operations.validate_member_request("Bad_Name", "")
    assert set(both.value.fields) == {"instance", "member_id"}
    operations.validate_switchover("cache", "")  # no target: any ready replica
    operations.validate_member_request("cache", "cache-12")


def test_peers_have_no_master_to_switch_over() -> None:
    peers = instance([T.ROLE_PEER] * 3, name="kv")
    with pytest.raises(errors.FailedPrecondition, match="has peers, no master"):
        operations.check_switchover(peers, "", peers=True)


def test_target_must_be_a_ready_replica_and_the_message_names_the_candidates() -> None:
    inst = instance([T.ROLE_MASTER, T.ROLE_SLAVE, T.ROLE_SLAVE])
    inst.members[2].state = T.MEMBER_STATE_STARTING
    with pytest.raises(errors.FailedPrecondition) as not_ready:
        operations.check_switchover(inst, "cache-2", peers=False)
    assert "STARTING" in not_ready.value.message and "ready replicas: cache-1" in not_ready.value.message
    with pytest.raises(errors.NotFound, match="cache-5"):
        operations.check_switchover(inst, "cache-5", peers=False)
    with pytest.raises(errors.FailedPrecondition, match="already the master"):
        operations.check_switchover(inst, "cache-0", peers=False)
    assert operations.check_switchover(inst, "cache-1", peers=False) == "cache-0"


def test_a_replica_without_the_data_is_no_candidate() -> None:
    inst = instance([T.ROLE_MASTER, T.ROLE_SLAVE])
    inst.members[1].volume.has_data = False
    with pytest.raises(errors.FailedPrecondition, match=r"no ready replica.*scale to 3"):
        operations.check_switchover(inst, "", peers=False)


def test_the_last_copy_is_never_replaced() -> None:
    inst = instance([T.ROLE_MASTER, T.ROLE_SLAVE, T.ROLE_SLAVE])
    operations.check_last_copy(inst, inst.members[1])  # others hold the data
    for m in (inst.members[0], inst.members[2]):
        m.volume.has_data = False
    with pytest.raises(errors.FailedPrecondition, match="only up-to-date copy"):
        operations.check_last_copy(inst, inst.members[1])
    fresh = instance([T.ROLE_MASTER, T.ROLE_SLAVE], has_data=False)
    operations.check_last_copy(fresh, fresh.members[1])  # no data yet: nothing to lose
