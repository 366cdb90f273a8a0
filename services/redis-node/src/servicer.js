'use strict';
// The Redis WorkloadService callbacks. Each takes the request (as @grpc/proto-loader decodes it)
// and returns the response object, or throws a CallbackError (errors.js). The behaviour is the
// Python workload's (services/mesos_stateful/workloads/redis/servicer.py), including every data-safety rule of
// docs DESIGN "Data safety": self-fencing by min-replicas-to-write, Fence before a promotion,
// MasterLost waiting for every candidate and promoting only one that holds every other's data.

const { invalidArgument, failedPrecondition, unavailable, CallbackError } = require('./errors');
const c = require('./context');
const r = require('./replication');
const health = require('./health');
const { buildLaunch, minReplicasToWrite } = require('./config');
const { PORT, PASSWORD, description } = require('./description');

const MAY_RUN = ['MEMBER_STATE_STARTING', 'MEMBER_STATE_RUNNING', 'MEMBER_STATE_KILLING', 'MEMBER_STATE_LOST'];

function withTimeout(promise, seconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(unavailable(`${what} did not answer within ${seconds}s`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function makeServicer(settings) {
  const server = (ctx, m, timeout, retries = 1) => {
    const [host, port] = c.endpoint(m, PORT);
    return { host, port, password: ctx.secrets[PASSWORD] || '', timeout: timeout || settings.connect_timeout_seconds, retries };
  };

  /** Keep the running master's self-fence in step with the spec (UNAVAILABLE when unreachable). */
  async function selfFenceMaster(ctx) {
    if (!c.hasMaster(ctx)) return;
    await r.setMinReplicas(server(ctx, c.master(ctx)), minReplicasToWrite(ctx.instance), settings.min_replicas_max_lag);
  }

  const callbacks = {
    async Describe() {
      return { description: description(settings) };
    },

    async Config(req) {
      return { launch: buildLaunch(c.contextOf(req), settings) };
    },

    async Start() {
      return { status: {} };
    },

    async StartMaster(req) {
      const ctx = c.contextOf(req);
      const s = server(ctx, c.member(ctx));
      // Self-fence first (inert while it is a replica): it is never a master without it.
      await r.setMinReplicas(s, minReplicasToWrite(ctx.instance), settings.min_replicas_max_lag);
      return { status: await r.promote(s) };
    },

    async StartSlave(req) {
      const ctx = c.contextOf(req);
      const me = c.member(ctx);
      const m = c.master(ctx);
      if (me.id === m.id) throw failedPrecondition(`${me.id} is the master; it cannot follow itself`);
      const [host, port] = c.endpoint(m, PORT);
      return { status: await r.follow(server(ctx, me), host, port) };
    },

    async MasterRunning(req) {
      const ctx = c.contextOf(req);
      return { status: r.status(await r.infoReplication(server(ctx, c.member(ctx)))) };
    },

    async SlaveRunning(req) {
      // The replica's status; and the master's self-fence turned on now that it has a replica.
      const ctx = c.contextOf(req);
      const info = await r.infoReplication(server(ctx, c.member(ctx)));
      if (c.master(ctx).id !== ctx.member_id) await selfFenceMaster(ctx);
      return { status: r.status(info) };
    },

    async SlaveLost(req) {
      const ctx = c.contextOf(req);
      c.member(ctx);
      return { replace: true };
    },

    async PeerRunning() {
      return { status: {} };
    },

    async PeerLost() {
      return { replace: true };
    },

    async RemoveMember(req) {
      // Down to one member: the master's self-fence goes off first (it would refuse every write).
      const ctx = c.contextOf(req);
      const me = c.member(ctx);
      if (me.role !== 'ROLE_MASTER' && c.hasMaster(ctx)) await selfFenceMaster(ctx);
      return {};
    },

    async CheckMember(req) {
      const ctx = c.contextOf(req);
      const timeout = req.timeout_seconds > 0 ? req.timeout_seconds : settings.connect_timeout_seconds;
      const me = c.member(ctx);
      const deadline = Date.now() + timeout * 1000;
      const left = () => Math.max(0.001, (deadline - Date.now()) / 1000);
      const info = await withTimeout(r.infoReplication(server(ctx, me, timeout, 0)), timeout, `${me.id}: redis`);
      if (me.role === 'ROLE_MASTER') return { health: health.masterHealth(info) };
      let master = null;
      let masterInfo = null;
      if (c.hasMaster(ctx)) {
        const m = c.master(ctx);
        if (c.hasAddress(m, PORT)) {
          master = [m.id, r.address(...c.endpoint(m, PORT))];
          try {
            masterInfo = await withTimeout(r.infoReplication(server(ctx, m, left(), 0)), left(), `master ${m.id}`);
          } catch (error) {
            if (!(error instanceof CallbackError)) throw error;
          }
        } else master = [m.id, ''];
      }
      const members = {};
      for (const o of c.others(ctx)) if (c.hasAddress(o, PORT)) members[r.address(...c.endpoint(o, PORT))] = o.id;
      return {
        health: health.replicaHealth(info, masterInfo, {
          master, members, maxLagBytes: settings.max_lag_bytes, linkDownRepairSeconds: settings.link_down_repair_seconds,
        }),
      };
    },

    async Fence(req) {
      // Reachable old master: demoted (DEMOTED). Unreachable: every member that may follow it is
      // detached, so its min-replicas-to-write 1 refuses writes within min-replicas-max-lag + 2 s
      // (SELF_FENCED). A member that does not answer: UNAVAILABLE (retried, never skipped).
      const ctx = c.contextOf(req);
      const old = c.member(ctx);
      const listed = c.candidates(ctx, req.replica_ids || [], 'replica_ids');
      if (listed.some((m) => m.id === old.id)) {
        throw invalidArgument(`replica_ids names the old master ${old.id}`, { replica_ids: 'must not name context.member_id' });
      }
      if (!c.hasAddress(old, PORT)) throw failedPrecondition(`the old master ${old.id} has no address: nothing to fence`);
      const [oldHost, oldPort] = c.endpoint(old, PORT);
      const fenceTimeout = settings.fence_timeout_seconds;
      let unreachable;
      try {
        const detail = await withTimeout(r.demote(server(ctx, old, fenceTimeout, 0)), fenceTimeout * 4, `the old master ${old.id}`);
        console.warn(`fenced ${old.id} of ${ctx.instance.spec.name}: ${detail}`);
        return { method: 'FENCE_METHOD_DEMOTED', detail: `${old.id}: ${detail}`, self_fence_seconds: 0 };
      } catch (error) {
        if (!(error instanceof CallbackError) || error.code !== unavailable('').code) throw error;
        unreachable = error.message;
      }
      if (!minReplicasToWrite(ctx.instance)) {
        throw failedPrecondition(
          `the old master ${old.id} is unreachable (${unreachable}) and, the spec having one member, does not fence ` +
            'itself (min-replicas-to-write 0): it cannot be shown fenced',
        );
      }
      const listedIds = new Set(listed.map((m) => m.id));
      const targets = listed.concat(
        c.others(ctx).filter((m) => !listedIds.has(m.id) && c.hasAddress(m, PORT) && MAY_RUN.includes(m.state)),
      );
      const { answers, problems } = await c.askMembers(targets, PORT, async (m) => {
        try {
          return await r.detach(server(ctx, m), oldHost, oldPort);
        } catch (error) {
          if (error instanceof CallbackError && !listedIds.has(m.id)) throw unavailable(`(not listed) ${error.message}`);
          throw error;
        }
      });
      const done = answers.map(([m, result]) => `${m.id}: ${result}`);
      if (problems.length) {
        throw unavailable(
          `the old master ${old.id} is unreachable (${unreachable}) and not every member that may follow it answered, ` +
            `so it cannot be shown fenced: ${problems.join('; ')}` + (done.length ? ` (done: ${done.join('; ')})` : ''),
        );
      }
      const seconds = r.selfFenceSeconds(settings.min_replicas_max_lag);
      const detail =
        `${old.id} unreachable (${unreachable}); replicas detached: ${done.join('; ') || 'none'}; it refuses writes by ` +
        `min-replicas-to-write 1 within min-replicas-max-lag (${settings.min_replicas_max_lag}s) + 2 = ${seconds}s`;
      console.warn(`fenced ${old.id} of ${ctx.instance.spec.name}: ${detail}`);
      return { method: 'FENCE_METHOD_SELF_FENCED', detail, self_fence_seconds: seconds };
    },

    async MasterLost(req) {
      // The member to promote among candidate_ids (without them: every RUNNING SLAVE other than
      // the lost master). Every candidate must answer; the chosen one holds every other's data;
      // patroni's maximum_lag_on_failover (bytes) against the lost master's last position.
      const ctx = c.contextOf(req);
      let members;
      if (req.candidate_ids && req.candidate_ids.length) members = c.candidates(ctx, req.candidate_ids);
      else {
        members = c.others(ctx).filter((m) => m.role === 'ROLE_SLAVE' && m.state === 'MEMBER_STATE_RUNNING');
        if (!members.length) throw unavailable(`${ctx.instance.spec.name} has no running replica to promote now`);
      }
      const maximumLag = Number(req.maximum_lag_on_failover || 0);
      if (maximumLag < 0) throw invalidArgument('maximum_lag_on_failover must be >= 0', { maximum_lag_on_failover: 'bytes, >= 0' });
      let lost = null;
      if (req.master_position) {
        try {
          lost = r.parsePosition(req.master_position);
        } catch (error) {
          throw invalidArgument(error.message, { master_position: '<replid>:<offset>' });
        }
      }
      const { answers, problems } = await c.askMembers(members, PORT, (m) => r.infoReplication(server(ctx, m)));
      const positions = [];
      for (const [m, info] of answers) {
        if (r.int(info.master_sync_in_progress, 0)) problems.push(`${m.id}: a full sync is in progress (its data is partial)`);
        else positions.push(r.positionFromInfo(m.id, m.ordinal, info));
      }
      const listedText = positions.map(r.describe).join(', ') || 'none';
      if (problems.length) {
        throw unavailable(`not every candidate of ${ctx.instance.spec.name} answered: ${problems.join('; ')} (answered: ${listedText})`);
      }
      const [chosen, why] = r.choosePosition(positions, ctx.member_id);
      let reason = why;
      if (maximumLag > 0 && lost !== null && chosen.role !== 'master') {
        const b = r.behind(chosen, ...lost);
        if (b !== null && b > maximumLag) {
          throw unavailable(
            `${chosen.memberId} would be promoted but is ${b} bytes behind the lost master's last known position ` +
              `${req.master_position} (maximum_lag_on_failover ${maximumLag}); waiting (positions: ${listedText})`,
          );
        }
        if (b !== null) reason += `; ${b >= 0 ? `${b} bytes behind` : `${-b} bytes ahead of`} the lost master's last known position (its last probe)`;
      }
      console.info(`master ${ctx.member_id} of ${ctx.instance.spec.name} lost: promote ${reason}`);
      const map = {};
      for (const p of positions) map[p.memberId] = r.notation(p);
      return { promote_member_id: chosen.memberId, reason, positions: map };
    },
  };
  return callbacks;
}

module.exports = { makeServicer };
