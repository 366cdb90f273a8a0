'use strict';
// Talking to a member's redis-server: replication state, promotion, re-pointing, self-fencing
// (min-replicas-to-write) and fencing (demote, detach); choosing whom to promote. Connection
// failures and timeouts are UNAVAILABLE (lifecycle retries); a refused password is
// FAILED_PRECONDITION. Every operation is idempotent. The rules and their sources are those of
// services/mesos_stateful/workloads/redis/replication.py (Redis docs, replication; replication.c).

const Redis = require('ioredis');
const { CallbackError, unavailable, failedPrecondition } = require('./errors');
const { NOWHERE } = require('./config');

const NO_REPLID = '0'.repeat(40);
const address = (host, port) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

/**
 * Run fn(client) on a fresh connection to server {host, port, password, timeout (s), retries}
 * and close it. Errors become CallbackErrors.
 */
async function withServer(server, fn) {
  const where = address(server.host, server.port);
  const ms = Math.max(1, Math.round(server.timeout * 1000));
  let attempts = 0;
  for (;;) {
    const client = new Redis({
      host: server.host,
      port: server.port,
      password: server.password || undefined,
      lazyConnect: true,
      connectTimeout: ms,
      commandTimeout: ms,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      enableReadyCheck: false,
      retryStrategy: () => null, // no reconnects: lifecycle retries the callback
    });
    client.on('error', () => {}); // reported through the awaited call
    try {
      await client.connect();
      return await fn(client);
    } catch (error) {
      const text = String((error && error.message) || error);
      if (/WRONGPASS|NOAUTH|invalid password|AUTH failed/i.test(text)) {
        throw failedPrecondition(`redis at ${where} refused the password: ${text}`);
      }
      if (error instanceof CallbackError) throw error;
      const connection = !(error && error.name === 'ReplyError');
      if (connection && attempts < server.retries) {
        attempts += 1;
        await new Promise((r) => setTimeout(r, 100 * attempts));
        continue;
      }
      if (/^LOADING/.test(text)) throw unavailable(`redis at ${where} is loading its dataset: ${text}`);
      throw unavailable(`redis at ${where} ${connection ? 'is unreachable' : 'failed'}: ${text}`);
    } finally {
      client.disconnect();
    }
  }
}

/** INFO <section> text -> {field: string}. */
function parseInfo(text) {
  const out = {};
  for (const line of String(text).split(/\r?\n/)) {
    if (!line || line.startsWith('#')) continue;
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

const infoReplication = (server) => withServer(server, async (c) => parseInfo(await c.info('replication')));
const int = (v, dflt) => (v === undefined || v === '' ? dflt : Number.parseInt(v, 10));

/** What to keep on the member: role, offset and, for a replica, its link. */
function status(info) {
  const keys = ['role', 'master_repl_offset', 'connected_slaves'];
  if (info.role === 'slave') {
    keys.push('master_host', 'master_port', 'master_link_status', 'master_sync_in_progress', 'slave_repl_offset', 'master_last_io_seconds_ago');
  }
  const out = {};
  for (const k of keys) if (k in info) out[k] = String(info[k]);
  return out;
}

/** [host, port] a replica follows; null for a master. */
const following = (info) => (info.role !== 'slave' ? null : [String(info.master_host || ''), int(info.master_port, 0)]);
const same = (a, b) => a !== null && b !== null && a[0] === b[0] && a[1] === b[1];
const positionOf = (info) => `${info.master_replid || ''}:${int(info.master_repl_offset, 0)}`;

/** REPLICAOF NO ONE unless it is a master already. */
function promote(server) {
  return withServer(server, async (c) => {
    let info = parseInfo(await c.info('replication'));
    if (info.role !== 'master') {
      console.info(`promoting redis at ${address(server.host, server.port)} (was a replica at offset ${int(info.slave_repl_offset, -1)})`);
      await c.call('REPLICAOF', 'NO', 'ONE');
      info = parseInfo(await c.info('replication'));
    }
    return status(info);
  });
}

/** Make it a replica of host:port unless it follows it already; masterauth set again first. */
function follow(server, host, port) {
  return withServer(server, async (c) => {
    if (server.password) await c.config('SET', 'masterauth', server.password);
    let info = parseInfo(await c.info('replication'));
    if (!same(following(info), [host, port])) {
      console.info(`re-pointing redis at ${address(server.host, server.port)} to master ${address(host, port)}`);
      await c.call('REPLICAOF', host, String(port));
      info = parseInfo(await c.info('replication'));
    }
    return status(info);
  });
}

/** CONFIG SET min-replicas-to-write / min-replicas-max-lag (the self-fence), when different. */
function setMinReplicas(server, toWrite, maxLag) {
  return withServer(server, async (c) => {
    const flat = await c.config('GET', 'min-replicas-*');
    const current = {};
    for (let i = 0; i + 1 < flat.length; i += 2) current[flat[i]] = flat[i + 1];
    if (current['min-replicas-to-write'] !== String(toWrite) || current['min-replicas-max-lag'] !== String(maxLag)) {
      console.info(`redis at ${address(server.host, server.port)}: min-replicas-to-write ${toWrite}, min-replicas-max-lag ${maxLag}s`);
      await c.config('SET', 'min-replicas-to-write', String(toWrite), 'min-replicas-max-lag', String(maxLag));
    }
  });
}

/**
 * Seconds after which a cut-off master with min-replicas-to-write 1 refuses every write:
 * min_replicas_max_lag + 2 (whole-second ACK times, plus replicationCron's once-per-second
 * recount; the derivation is in services/mesos_stateful/workloads/redis/replication.py self_fence_seconds).
 */
const selfFenceSeconds = (maxLag) => maxLag + 2;

/** Fence a reachable old master: a read-only replica of nobody, its normal clients disconnected. */
function demote(server) {
  return withServer(server, async (c) => {
    const info = parseInfo(await c.info('replication'));
    const done = [];
    const ro = await c.config('GET', 'replica-read-only');
    if (ro[1] !== 'yes') {
      await c.config('SET', 'replica-read-only', 'yes');
      done.push('replica-read-only yes');
    }
    const now = following(info);
    if (info.role === 'master') {
      console.warn(`fencing redis at ${address(server.host, server.port)}: demoting the old master to a read-only replica of nobody`);
      await c.call('REPLICAOF', NOWHERE[0], String(NOWHERE[1]));
      done.push(`demoted from master (at ${positionOf(info)}) to a read-only replica of nobody`);
    } else if (!same(now, NOWHERE)) {
      return `already a read-only replica of ${address(...now)}; left as it is`;
    } else {
      done.push('already a read-only replica of nobody');
    }
    const killed = await c.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    done.push(`${killed} client connection(s) closed`);
    return done.join('; ');
  });
}

/** Detach a replica from the unreachable old master host:port (a read-only replica of nobody). */
function detach(server, oldHost, oldPort) {
  return withServer(server, async (c) => {
    const info = parseInfo(await c.info('replication'));
    const now = following(info);
    if (same(now, [oldHost, oldPort])) {
      console.warn(`fencing: detaching redis at ${address(server.host, server.port)} from unreachable master ${address(oldHost, oldPort)}`);
      await c.call('REPLICAOF', NOWHERE[0], String(NOWHERE[1]));
      return `detached from ${address(oldHost, oldPort)} at ${positionOf(info)}`;
    }
    if (same(now, NOWHERE)) return 'already detached (a read-only replica of nobody)';
    if (now === null) return 'a master, not following the old master';
    return `follows ${address(...now)}, not the old master`;
  });
}

// --- positions and the choice of MasterLost ------------------------------------------------------

/** A member's place in a replication history (master_replid:master_repl_offset, and the history it continued). */
function positionFromInfo(memberId, ordinal, info) {
  return {
    memberId,
    ordinal,
    role: String(info.role || ''),
    replid: String(info.master_replid || ''),
    offset: int(info.master_repl_offset, 0),
    replid2: String(info.master_replid2 || NO_REPLID),
    secondOffset: int(info.second_repl_offset, -1),
  };
}

/** Whether a holds everything b holds (the same history at least as far, or b's history up to where a continued it). */
function contains(a, b) {
  if (a.replid === b.replid) return a.offset >= b.offset;
  return a.replid2 === b.replid && b.replid !== NO_REPLID && b.offset + 1 <= a.secondOffset;
}

const notation = (p) => `${p.replid}:${p.offset}`;
const describe = (p) => `${p.memberId}=${p.role} ${p.replid.slice(0, 8)}:${p.offset}`;
const behind = (p, replid, offset) => (p.replid === replid ? offset - p.offset : null);

/** "<replid>:<offset>" -> [replid, offset]; throws Error when malformed. */
function parsePosition(text) {
  const i = text.lastIndexOf(':');
  const replid = text.slice(0, i);
  const offset = text.slice(i + 1);
  if (i < 0 || !replid || !/^\d+$/.test(offset)) throw new Error(`expected <replid>:<offset>, got '${text}'`);
  return [replid, Number(offset)];
}

/**
 * The member to promote among every candidate's position (all answered): one already master
 * (an earlier attempt promoted it); else one whose data contains every other's (most advanced,
 * ties: lowest ordinal); else the lost master itself when it is a candidate and nobody is known to
 * be ahead of it; else FAILED_PRECONDITION (a person decides). Returns [position, reason].
 */
function choosePosition(positions, lostId) {
  const listed = positions.map(describe).join(', ');
  const masters = positions.filter((p) => p.role === 'master').sort((a, b) => a.ordinal - b.ordinal);
  if (masters.length) return [masters[0], `${masters[0].memberId} was already promoted (positions: ${listed})`];
  const winners = positions.filter((p) => positions.every((q) => q === p || contains(p, q)));
  if (winners.length) {
    const best = winners.sort((a, b) => b.offset - a.offset || a.ordinal - b.ordinal)[0];
    return [best, `${best.memberId} holds every other candidate's data (offset ${best.offset}; positions: ${listed})`];
  }
  const lost = positions.find((p) => p.memberId === lostId);
  if (lost && !positions.some((q) => contains(q, lost) && !contains(lost, q))) {
    return [
      lost,
      `${lostId} is the lost master restarted on its volume: it holds every write it answered that reached its AOF; ` +
        `the others' positions cannot be compared to it (restarted from disk; positions: ${listed})`,
    ];
  }
  throw failedPrecondition(
    'no candidate holds every other candidate\'s data and the lost master is not among them ' +
      `(replication histories unrelated, e.g. restarted from disk): ${listed}; a person must decide`,
  );
}

module.exports = {
  withServer, parseInfo, infoReplication, status, following, same, address, positionOf, promote, follow,
  setMinReplicas, selfFenceSeconds, demote, detach, positionFromInfo, contains, notation, describe, behind,
  parsePosition, choosePosition, NO_REPLID, int,
};
