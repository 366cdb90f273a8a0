#!/usr/bin/env node
'use strict';
// Readiness / health probe of a Redis member, run by the executor as a command check:
//   node probe.js --host H --port P --auth-file F [--replica|--standby] [--timeout S]
// Exit 0 when the server answers PING with the password from F (a redis.conf fragment with
// requirepass) and, with --replica, its link to the master is up, no sync runs and no AOF rewrite
// is in progress or scheduled (after a full sync, until it is done, what the replica acknowledges
// is only in a temporary file); with --standby, it is a replica (read-only) following nobody yet.
// Exit 1 otherwise, the reason on stderr. The same rules as services/mesos_stateful/workloads/redis/probe.py.

const fs = require('fs');
const Redis = require('ioredis');

function parseArgs(argv) {
  const args = { timeout: 2 };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === '--replica' || a === '--standby') args.mode = a.slice(2);
    else if (['--host', '--port', '--auth-file', '--timeout'].includes(a)) args[a.slice(2)] = argv[++i];
    else throw new Error(`unknown argument ${a}`);
  }
  if (!args.host || !/^\d+$/.test(args.port || '')) throw new Error('usage: probe.js --host H --port P [--auth-file F] [--replica|--standby]');
  return args;
}

function readPassword(path) {
  for (const line of fs.readFileSync(path, 'utf8').split('\n')) {
    const m = line.match(/^\s*requirepass\s+"((?:[^"\\]|\\.)*)"\s*$/i) || line.match(/^\s*requirepass\s+(\S+)\s*$/i);
    if (m) return m[1].replace(/\\(.)/g, '$1');
  }
  return '';
}

const info = (text) => Object.fromEntries(text.split(/\r?\n/).filter((l) => l.includes(':') && !l.startsWith('#')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]));

async function probe(args) {
  const ms = Math.round(Number(args.timeout) * 1000);
  const client = new Redis({
    host: args.host, port: Number(args.port), password: args['auth-file'] ? readPassword(args['auth-file']) || undefined : undefined,
    lazyConnect: true, connectTimeout: ms, commandTimeout: ms, maxRetriesPerRequest: 0, enableOfflineQueue: false,
    enableReadyCheck: false, retryStrategy: () => null,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    if ((await client.ping()) !== 'PONG') return [false, 'no PONG'];
    if (!args.mode) return [true, 'PONG'];
    const repl = info(await client.info('replication'));
    if (repl.role !== 'slave') return [false, `role is ${repl.role}, not slave`];
    if (args.mode === 'standby') return [true, 'read-only replica waiting for a master'];
    if (repl.master_link_status !== 'up') return [false, `master link is ${repl.master_link_status}`];
    if (repl.master_sync_in_progress !== '0') return [false, 'initial sync in progress'];
    const persistence = info(await client.info('persistence'));
    if (persistence.aof_rewrite_in_progress !== '0' || persistence.aof_rewrite_scheduled !== '0') return [false, 'AOF rewrite after the sync in progress'];
    return [true, 'replica in sync'];
  } catch (error) {
    return [false, `${error.name}: ${error.message}`];
  } finally {
    client.disconnect();
  }
}

(async () => {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  }
  const [ok, why] = await probe(args).catch((error) => [false, `cannot probe: ${error.message}`]);
  if (!ok) process.stderr.write(`${why}\n`);
  process.exit(ok ? 0 : 1);
})();
