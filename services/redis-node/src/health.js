'use strict';
// CheckMember answers from INFO replication (pure: infos in, MemberHealth out). The conditions,
// reasons and repairs are those of services/mesos_stateful/workloads/redis/health.py (its docstring states them):
// REACHABLE; REPLICATING (Master / NotMaster; Following / Chained / WrongMaster / NotReplica /
// LinkDown / SyncInProgress / NoMaster); CAUGHT_UP (lag in bytes <= max_lag_bytes); CONSISTENT
// (the replica's history is a prefix of the master's, else Diverged with REPAIR_REPOINT).

const { condition } = require('./context');
const r = require('./replication');
const { NOWHERE } = require('./config');

const ROLES = { master: 'ROLE_MASTER', slave: 'ROLE_SLAVE' };
const observedRole = (info) => ROLES[info.role] || 'ROLE_UNSPECIFIED';

function health(conditions, fields) {
  return {
    observed_role: 'ROLE_UNSPECIFIED', following: '', lag_seconds: -1, lag: -1, position: '', repair: 'REPAIR_UNSPECIFIED',
    ...fields,
    conditions,
  };
}

function masterHealth(info) {
  const reachable = condition('CONDITION_TYPE_REACHABLE', true, 'Answered', 'answered INFO');
  const now = r.following(info);
  let replicating;
  if (now !== null) {
    replicating = condition('CONDITION_TYPE_REPLICATING', false, 'NotMaster', `is a read-only replica of ${r.address(...now)}, not a master: it refuses writes`);
  } else {
    const good = info.min_slaves_good_slaves;
    let detail = `master with ${info.connected_slaves || 0} connected replica(s)`;
    if (good !== undefined) {
      detail += `, ${good} acknowledging within min-replicas-max-lag`;
      if (Number(good) < 1) detail += ' (refusing writes: NOREPLICAS until a replica acknowledges)';
    }
    replicating = condition('CONDITION_TYPE_REPLICATING', true, 'Master', detail);
  }
  return health([reachable, replicating], {
    observed_role: observedRole(info),
    following: now !== null ? r.address(...now) : '',
    position: r.positionOf(info),
  });
}

/**
 * A member the instance calls SLAVE. master: [member id, "host:port"] of the instance's MASTER or
 * null; masterInfo: its INFO read after the replica's (null: unknown); members: "host:port" -> id.
 */
function replicaHealth(info, masterInfo, { master, members, maxLagBytes, linkDownRepairSeconds }) {
  const conditions = [condition('CONDITION_TYPE_REACHABLE', true, 'Answered', 'answered INFO')];
  let repair = 'REPAIR_UNSPECIFIED';
  const now = r.following(info);
  const syncing = Boolean(r.int(info.master_sync_in_progress, 0));
  const linkUp = info.master_link_status === 'up';
  let followsMaster = false;
  if (now === null) {
    conditions.push(condition('CONDITION_TYPE_REPLICATING', false, 'NotReplica',
      'is a master (turned master outside the suite?): it takes writes of its own; re-pointing it at the master resyncs it'));
    repair = 'REPAIR_REPOINT';
  } else {
    const where = r.address(...now);
    let reason; let ok; let message;
    if (master === null) {
      [reason, ok, message] = ['NoMaster', false, `follows ${where}; the instance has no master yet`];
    } else if (where === master[1]) {
      followsMaster = true;
      if (syncing) [reason, ok, message] = ['SyncInProgress', false, `full sync from ${master[0]} (${where}) running`];
      else if (!linkUp) {
        const down = r.int(info.master_link_down_since_seconds, -1) || -1;
        [reason, ok, message] = ['LinkDown', false, `link to ${master[0]} (${where}) is down; connecting`];
        if (down > linkDownRepairSeconds) {
          message = `link to ${master[0]} (${where}) down for ${down}s; re-pointing it`;
          repair = 'REPAIR_REPOINT';
        }
      } else [reason, ok, message] = ['Following', true, `streaming from ${master[0]} (${where})`];
    } else if (where in members) {
      [reason, ok, message] = ['Chained', false, `follows ${members[where]} (${where}), not the master ${master[0]}`];
      repair = 'REPAIR_REPOINT';
    } else {
      const nobody = r.same(now, NOWHERE) ? ' (nobody)' : '';
      [reason, ok, message] = ['WrongMaster', false, `follows ${where}${nobody}, not the master ${master[0]}`];
      repair = 'REPAIR_REPOINT';
    }
    conditions.push(condition('CONDITION_TYPE_REPLICATING', ok, reason, message));
  }

  let lag = -1;
  let lagSeconds = -1;
  if (now !== null && master !== null && masterInfo && masterInfo.role === 'master') {
    const mine = r.positionFromInfo('', 0, info);
    const theirs = r.positionFromInfo(master[0], 0, masterInfo);
    if (syncing) {
      conditions.push(condition('CONDITION_TYPE_CAUGHT_UP', false, 'SyncInProgress', 'a full sync is running'));
    } else if (r.contains(theirs, mine)) {
      lag = Math.max(0, theirs.offset - mine.offset);
      conditions.push(condition('CONDITION_TYPE_CONSISTENT', true, 'Prefix', `its history is a prefix of ${master[0]}'s`));
      const caughtUp = lag <= maxLagBytes;
      conditions.push(condition('CONDITION_TYPE_CAUGHT_UP', caughtUp, caughtUp ? 'CaughtUp' : 'Lagging', `${lag} bytes behind ${master[0]} (limit ${maxLagBytes})`));
      if (lag === 0) lagSeconds = 0;
      else {
        const v = r.int(linkUp ? info.master_last_io_seconds_ago : info.master_link_down_since_seconds, -1);
        lagSeconds = v >= 0 ? v : -1;
      }
    } else if (followsMaster && !linkUp) {
      conditions.push(condition('CONDITION_TYPE_CAUGHT_UP', false, 'LinkDown', `position ${r.notation(mine)} not on ${master[0]}'s history yet; the sync decides`));
    } else {
      const message = `position ${r.notation(mine)} is not contained in ${master[0]}'s ${r.notation(theirs)}`;
      conditions.push(condition('CONDITION_TYPE_CONSISTENT', false, 'Diverged', message));
      conditions.push(condition('CONDITION_TYPE_CAUGHT_UP', false, 'Diverged', message));
      repair = 'REPAIR_REPOINT';
    }
  }
  return health(conditions, {
    observed_role: observedRole(info),
    following: now !== null ? r.address(...now) : '',
    lag_seconds: lagSeconds,
    lag,
    position: r.positionOf(info),
    repair,
  });
}

module.exports = { masterHealth, replicaHealth };
