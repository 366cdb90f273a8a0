"""GTID sets and the decisions made on them (pure): containment per (domain, server id) as
MariaDB's master checks a connecting replica, the MasterLost choice, CheckMember conditions."""

from __future__ import annotations

from typing import Any

import pytest
from mysql_helpers import NAME, SECRETS

from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.common import errors
from mesos_stateful.testing.workloads import context, instance
from mesos_stateful.workloads.mysql import gtid, sql
from mesos_stateful.workloads.mysql.servicer import Candidate, decide, master_health, replica_health

T = types_pb2


def test_a_higher_sequence_from_another_server_is_not_ahead() -> None:
    # The master's history: server 1 up to 10, then server 2 (promoted) up to 12.
    master = gtid.GtidSet.parse("0-1-10,0-2-12")
    # A replica that branched off: server 3 wrote 0-3-15 (a higher number, another history).
    branched = gtid.GtidSet.parse("0-1-10,0-3-15")
    assert not branched.contained_in(master)
    assert branched.missing_from(master) == [(0, 3, 15)]
    # By numbers alone it would rank first; as sets neither holds the other.
    assert not master.contains(branched) and not branched.contains(master)
    # A replica behind on the same history is contained, and counted behind by 2.
    behind = gtid.GtidSet.parse("0-1-10")
    assert behind.contained_in(master) and behind.behind(master) == 2
    # Equal sequence, other server: not the same transaction.
    assert not gtid.GtidSet.parse("0-3-12").contained_in(master)


def test_every_server_of_the_history_is_checked_not_only_the_last() -> None:
    # An errant transaction 0-9-11 hidden under a later replicated 0-2-12: the last GTID per
    # domain (0-2-12) is in the master's binlog, the errant one is not.
    master = gtid.GtidSet.parse("0-1-10,0-2-12")
    hidden = gtid.GtidSet.parse("0-1-10,0-9-11,0-2-12")
    assert hidden.current_pos() == "0-2-12"
    assert hidden.missing_from(master) == [(0, 9, 11)]


def test_domains_are_independent_and_an_unknown_domain_diverges() -> None:
    master = gtid.GtidSet.parse("0-1-10,1-1-5")
    assert gtid.GtidSet.parse("0-1-7,1-1-5").contained_in(master)
    assert gtid.GtidSet.parse("0-1-10,1-1-5").behind(gtid.GtidSet.parse("0-1-12,1-1-8")) == 5
    # A domain the master never had: MariaDB refuses it (not in the master's binlog).
    assert not gtid.GtidSet.parse("0-1-10,2-4-1").contained_in(master)
    assert gtid.GtidSet.parse("").contained_in(master) and str(gtid.GtidSet.parse("")) == ""


def test_set_text_round_trips_in_binlog_state_notation() -> None:
    s = gtid.GtidSet(["0-2-12", "0-1-10,0-2-11", "1-5-3"])
    assert str(s) == "0-1-10,0-2-12,1-5-3"
    assert gtid.GtidSet.parse(str(s)) == s
    assert s.current_pos() == "0-2-12,1-5-3"
    with pytest.raises(ValueError):
        gtid.GtidSet.parse("0-1")


def test_a_writer_may_be_ahead_of_its_last_observation() -> None:
    observed = gtid.GtidSet.parse("0-1-10,0-2-12")
    # The master (server 2) wrote 13 and 14 after it was last observed: not a divergence.
    assert gtid.GtidSet.parse("0-1-10,0-2-14").missing_from(observed, writer=2) == []
    assert gtid.GtidSet.parse("0-1-10,0-3-13").missing_from(observed, writer=2) == [(0, 3, 13)]


def state(gtids: str, *, master: bool = False, **replica: Any) -> sql.State:
    row = None if master else {"Slave_IO_Running": "Yes", "Slave_SQL_Running": "Yes", **replica}
    return sql.State(
        read_only=not master, binlog_pos="", slave_pos="", replica=row, binlog_state=gtids, current_pos=""
    )


def cand(ordinal: int, gtids: str, **kw: Any) -> Candidate:
    return Candidate(f"{NAME}-{ordinal}", ordinal, state(gtids, **kw))


def test_decide_never_promotes_a_diverged_candidate() -> None:
    lost_master = 100001  # server id of the lost master
    a = cand(1, "0-100001-10")
    b = cand(2, "0-100001-8,0-300001-9")  # wrote 0-300001-9 itself: a branch
    chosen, reason = decide([a, b], master_position="0-100001-10", master_server_id=lost_master)
    assert chosen.member_id == f"{NAME}-1"
    assert "db-2 diverged" in reason and "0-300001-9" in reason
    # Only diverged candidates left: a person decides.
    with pytest.raises(errors.FailedPrecondition, match="every candidate diverged"):
        decide([b], master_position="0-100001-10", master_server_id=lost_master)
    # Without the master's position, diverged candidates still cannot be ordered.
    c = cand(3, "0-100001-10,0-400001-11")
    with pytest.raises(errors.FailedPrecondition, match="diverged"):
        decide([b, c])


def test_decide_honours_maximum_lag_on_failover() -> None:
    behind = cand(1, "0-100001-7")
    # Three transactions behind the master's last position: allowed with 3, not with 2.
    assert decide([behind], "0-100001-10", maximum_lag=3)[0] is behind
    with pytest.raises(errors.Unavailable, match="3 transaction"):
        decide([behind], "0-100001-10", maximum_lag=2)
    assert decide([behind], "0-100001-10", maximum_lag=0)[0] is behind  # 0: no limit
    # The most advanced wins; a candidate that received past the last observation is fine.
    ahead = cand(2, "0-100001-12")
    chosen, reason = decide([behind, ahead], "0-100001-10", maximum_lag=1, master_server_id=100001)
    assert chosen is ahead and "0 transaction(s) behind" in reason
    # An already promoted candidate (a retry) is answered again.
    promoted = cand(3, "0-100001-7", master=True)
    assert decide([ahead, promoted], "0-100001-10")[0] is promoted


def ctx3() -> Any:
    members = [
        T.Member(
            id=f"{NAME}-{o}",
            ordinal=o,
            role=role,
            state=T.MEMBER_STATE_RUNNING,
            host="10.0.0.1",
            ports={"mysql": 3300 + o},
        )
        for o, role in ((0, T.ROLE_MASTER), (1, T.ROLE_SLAVE), (2, T.ROLE_SLAVE))
    ]
    return context(instance(NAME, "mysql", members), f"{NAME}-1", SECRETS)


def kinds(health: types_pb2.MemberHealth) -> dict[str, tuple[bool, str]]:
    return {
        T.ConditionType.Name(c.type).removeprefix("CONDITION_TYPE_"): (c.ok, c.reason)
        for c in health.conditions
    }


def test_replica_health_conditions_and_repairs() -> None:
    ctx = ctx3()
    at_master: dict[str, Any] = {"Master_Host": "10.0.0.1", "Master_Port": 3300, "Seconds_Behind_Master": 0}
    master = state("0-100001-20", master=True)
    good = replica_health(ctx, state("0-100001-20", **at_master), master, max_lag=5)
    assert kinds(good) == {
        "REACHABLE": (True, ""),
        "REPLICATING": (True, ""),
        "CAUGHT_UP": (True, ""),
        "CONSISTENT": (True, ""),
    }
    assert good.repair == T.REPAIR_UNSPECIFIED and good.following == "10.0.0.1:3300" and good.lag == 0
    lagging = replica_health(ctx, state("0-100001-10", **at_master), master, max_lag=5)
    assert kinds(lagging)["CAUGHT_UP"] == (False, "Lagging") and lagging.lag == 10
    stopped = replica_health(ctx, state("0-100001-20", **at_master, Slave_IO_Running="No"), master, 5)
    assert kinds(stopped)["REPLICATING"] == (False, "IoThreadStopped") and stopped.repair == T.REPAIR_REPOINT
    sql_stopped = replica_health(ctx, state("0-100001-20", **at_master, Slave_SQL_Running="No"), master, 5)
    assert kinds(sql_stopped)["REPLICATING"] == (False, "SqlThreadStopped")
    chained = replica_health(ctx, state("0-100001-20", Master_Host="10.0.0.1", Master_Port=3302), master, 5)
    assert kinds(chained)["REPLICATING"] == (False, "Chained") and chained.repair == T.REPAIR_REPOINT
    wrong = replica_health(ctx, state("0-100001-20", Master_Host="10.9.9.9", Master_Port=1), master, 5)
    assert kinds(wrong)["REPLICATING"] == (False, "WrongMaster")
    refused = replica_health(
        ctx,
        state(
            "0-100001-20", **at_master, Slave_IO_Running="No", Last_IO_Errno=1236, Last_IO_Error="diverged"
        ),
        master,
        5,
    )
    assert kinds(refused)["REPLICATING"] == (False, "ReplicationError")
    assert kinds(refused)["CONSISTENT"] == (False, "Diverged") and refused.repair == T.REPAIR_REBUILD
    diverged = replica_health(ctx, state("0-100001-19,0-200001-20", **at_master), master, 5)
    assert kinds(diverged)["CONSISTENT"] == (False, "Diverged") and diverged.repair == T.REPAIR_REBUILD
    # The master did not answer in time: lag and containment are not checked.
    unknown = replica_health(ctx, state("0-100001-20", **at_master), None, 5)
    assert set(kinds(unknown)) == {"REACHABLE", "REPLICATING"} and unknown.lag == -1


def test_master_health() -> None:
    ok = master_health(state("0-100001-20", master=True))
    assert kinds(ok)["REPLICATING"] == (True, "") and ok.observed_role == T.ROLE_MASTER
    assert ok.position == "0-100001-20"
    ro = master_health(state("0-100001-20"))
    assert kinds(ro)["REPLICATING"] == (False, "ReadOnly") and ro.observed_role == T.ROLE_SLAVE
