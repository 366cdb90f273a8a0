'use strict';
// Part of the workload library statefulctl new-workload --lang node writes; the same module as
// services/redis-node/src/context.js of mesos-stateful.
// Helpers on a CallbackContext (stateful.v1.CallbackContext as loaded by @grpc/proto-loader:
// snake_case fields, enums as names, maps as objects). Same rules as services/mesos_stateful/workloads/base.py.

const { invalidArgument, failedPrecondition, unavailable, CallbackError } = require('./errors');

// Where a member's persistent volume appears in its sandbox when the member record does not say.
const DATA_DIR = 'data';

/** The context of a request; INVALID_ARGUMENT when it has no instance. */
function contextOf(request) {
  const ctx = request && request.context;
  if (!ctx || !ctx.instance || !ctx.instance.spec || !ctx.instance.spec.name) {
    throw invalidArgument('context.instance is missing (the whole instance, with its spec and members)', {
      'context.instance': 'required',
    });
  }
  ctx.instance.members = ctx.instance.members || [];
  ctx.secrets = ctx.secrets || {};
  return ctx;
}

/** The member the callback is about. */
function member(ctx) {
  const found = ctx.instance.members.find((m) => m.id === ctx.member_id);
  if (!found) {
    throw invalidArgument(`member '${ctx.member_id}' is not in instance '${ctx.instance.spec.name}'`, {
      'context.member_id': 'not a member of context.instance',
    });
  }
  return found;
}

function memberInRole(ctx, ...roles) {
  const me = member(ctx);
  if (!roles.includes(me.role)) {
    const names = roles.join(' or ');
    throw invalidArgument(`member ${me.id} has role ${me.role}; ${ctx.instance.spec.workload} members are ${names}`, {
      'context.instance.members.role': `must be ${names}`,
    });
  }
  return me;
}

function hasMaster(ctx) {
  return ctx.instance.members.some((m) => m.role === 'ROLE_MASTER');
}

function master(ctx) {
  const found = ctx.instance.members.find((m) => m.role === 'ROLE_MASTER');
  if (!found) throw failedPrecondition(`instance '${ctx.instance.spec.name}' has no master member`);
  return found;
}

/** Every member but the one the callback is about, by ordinal. */
function others(ctx) {
  return ctx.instance.members.filter((m) => m.id !== ctx.member_id).sort((a, b) => a.ordinal - b.ordinal);
}

/** The members named by candidate_ids / replica_ids, by ordinal; INVALID_ARGUMENT for strangers. */
function candidates(ctx, ids, field = 'candidate_ids') {
  const byId = new Map(ctx.instance.members.map((m) => [m.id, m]));
  const unknown = [...new Set(ids)].filter((i) => !byId.has(i)).sort();
  if (unknown.length) {
    throw invalidArgument(`candidate(s) ${unknown.join(', ')} are not members of '${ctx.instance.spec.name}'`, {
      [field]: 'must name members of context.instance',
    });
  }
  return [...new Set(ids)].map((i) => byId.get(i)).sort((a, b) => a.ordinal - b.ordinal);
}

function hasAddress(m, portName) {
  return Boolean(m.host && m.ports && m.ports[portName]);
}

/** [host, port] of a member's named port; FAILED_PRECONDITION when it has none yet. */
function endpoint(m, portName) {
  if (!hasAddress(m, portName)) throw failedPrecondition(`member ${m.id} has no address for port '${portName}' yet`);
  return [m.host, Number(m.ports[portName])];
}

/** The member's volume relative to its sandbox (Volume.container_path, else "data"). */
function volumePath(m) {
  const path = (m.volume && m.volume.container_path) || DATA_DIR;
  if (path.startsWith('/') || path.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw invalidArgument(`member ${m.id}: volume container_path '${path}' must be a relative path inside the sandbox`, {
      'context.instance.members.volume.container_path': "a relative path without '..'",
    });
  }
  return path;
}

const dataDir = (m) => '${MESOS_SANDBOX}/' + volumePath(m);
const inDocker = (ctx) => ctx.instance.spec.runtime === 'RUNTIME_DOCKER';

/**
 * Ask every member at once: {answers: [[member, result]], problems: ["<id>: <why>"]}. A member
 * without an address, or whose ask raised a CallbackError, is a problem (the caller waits for it
 * instead of skipping it: the rule of MasterLost and Fence); any other error propagates.
 */
async function askMembers(members, portName, ask) {
  const results = await Promise.allSettled(
    members.map(async (m) => {
      if (!hasAddress(m, portName)) throw unavailable('no address yet');
      return ask(m);
    }),
  );
  const answers = [];
  const problems = [];
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') answers.push([members[i], r.value]);
    else if (r.reason instanceof CallbackError) problems.push(`${members[i].id}: ${r.reason.message}`);
    else throw r.reason;
  });
  return { answers, problems };
}

/** One MemberCondition of a CheckMember answer. */
const condition = (type, ok, reason = '', message = '') => ({ type, ok, reason, message });

module.exports = {
  contextOf, member, memberInRole, hasMaster, master, others, candidates, hasAddress, endpoint,
  volumePath, dataDir, inDocker, askMembers, condition,
};
