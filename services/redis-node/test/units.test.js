'use strict';
// Pure logic of the Node.js Redis workload (node --test): the choice of MasterLost, health from
// INFO, the launch of Config. The same cases as the Python workload's unit tests
// (tests/workloads/redis/test_redis_volume.py::test_choose_position_orders_histories).
// Run by `npm test` and by tests/workloads/redis/test_redis_node_units.py.

const test = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const r = require('../src/replication');
const health = require('../src/health');
const { buildLaunch } = require('../src/config');
const { loadSettings } = require('../src/settings');

const pos = (memberId, ordinal, role, replid, offset, replid2 = r.NO_REPLID, secondOffset = -1) => ({
  memberId, ordinal, role, replid, offset, replid2, secondOffset,
});

test('choosePosition orders histories', () => {
  const a = 'a'.repeat(40);
  const b = 'b'.repeat(40);
  const behind = pos('m-1', 1, 'slave', a, 100);
  const ahead = pos('m-2', 2, 'slave', a, 150);
  assert.equal(r.choosePosition([behind, ahead], 'm-0')[0], ahead);
  // m-3 was promoted at offset 120 of history a, then took writes under history b.
  const promoted = pos('m-3', 3, 'slave', b, 40, a, 121);
  assert.ok(r.contains(promoted, behind) && !r.contains(promoted, ahead));
  assert.equal(r.choosePosition([behind, promoted], 'm-0')[0], promoted);
  // Neither contains the other: nobody is safe.
  assert.throws(() => r.choosePosition([ahead, promoted], 'm-0'), (e) => e.code === grpc.status.FAILED_PRECONDITION);
  // Unrelated histories (restarted from disk): the lost master if it is a candidate...
  const restarted = [0, 1, 2].map((o) => pos(`m-${o}`, o, 'slave', String(o).repeat(40), 0));
  assert.equal(r.choosePosition(restarted, 'm-1')[0].memberId, 'm-1');
  assert.throws(() => r.choosePosition(restarted.slice(1), 'm-0'), (e) => e.code === grpc.status.FAILED_PRECONDITION);
  // ...unless a candidate is known to be ahead of it.
  const lost = pos('m-0', 0, 'slave', a, 90);
  assert.throws(() => r.choosePosition([lost, ahead, restarted[1]], 'm-0'), (e) => e.code === grpc.status.FAILED_PRECONDITION);
  // An earlier attempt already promoted one: it again.
  const master = pos('m-2', 2, 'master', b, 0);
  assert.equal(r.choosePosition([behind, master], 'm-0')[0], master);
});

test('parsePosition', () => {
  assert.deepEqual(r.parsePosition('abc:12'), ['abc', 12]);
  assert.throws(() => r.parsePosition('abc'));
  assert.throws(() => r.parsePosition(':12'));
});

test('replica health: chained, diverged, caught up', () => {
  const a = 'a'.repeat(40);
  const info = { role: 'slave', master_host: '10.0.0.2', master_port: '7000', master_link_status: 'up', master_sync_in_progress: '0', master_replid: a, master_repl_offset: '90' };
  const opts = { master: ['m-0', '10.0.0.1:7000'], members: { '10.0.0.1:7000': 'm-0', '10.0.0.2:7000': 'm-2' }, maxLagBytes: 100, linkDownRepairSeconds: 10 };
  const chained = health.replicaHealth(info, null, opts);
  const replicating = chained.conditions.find((c) => c.type === 'CONDITION_TYPE_REPLICATING');
  assert.equal(replicating.reason, 'Chained');
  assert.equal(chained.repair, 'REPAIR_REPOINT');

  const following = { ...info, master_host: '10.0.0.1' };
  const ok = health.replicaHealth(following, { role: 'master', master_replid: a, master_repl_offset: '150' }, opts);
  assert.equal(ok.lag, 60);
  assert.ok(ok.conditions.find((c) => c.type === 'CONDITION_TYPE_CAUGHT_UP').ok);
  assert.equal(ok.repair, 'REPAIR_UNSPECIFIED');

  const diverged = health.replicaHealth(following, { role: 'master', master_replid: 'c'.repeat(40), master_repl_offset: '150' }, opts);
  assert.equal(diverged.conditions.find((c) => c.type === 'CONDITION_TYPE_CONSISTENT').reason, 'Diverged');
  assert.equal(diverged.repair, 'REPAIR_REPOINT');
});

test('master health: a demoted master is NotMaster', () => {
  const h = health.masterHealth({ role: 'slave', master_host: '127.0.0.1', master_port: '0', master_replid: 'x', master_repl_offset: '5' });
  assert.equal(h.conditions.find((c) => c.type === 'CONDITION_TYPE_REPLICATING').reason, 'NotMaster');
  assert.equal(h.position, 'x:5');
});

test('Config: password only in the 0600 auth file, self-fence by spec size, replica follows the master', () => {
  const settings = loadSettings({}, {});
  const members = [
    { id: 'c-0', ordinal: 0, role: 'ROLE_MASTER', host: '127.0.0.2', ports: { redis: 7000 } },
    { id: 'c-1', ordinal: 1, role: 'ROLE_SLAVE', host: '', ports: {} },
  ];
  const ctx = { instance: { spec: { name: 'c', workload: 'redis-node', replicas: 2, config: {} }, members }, member_id: 'c-1', secrets: { password: 's3cret' } };
  const launch = buildLaunch(ctx, settings);
  assert.ok(!launch.argv.some((a) => a.includes('s3cret')));
  const auth = launch.files.find((f) => f.path === 'redis-auth.conf');
  assert.equal(auth.mode, 0o600);
  assert.match(auth.content.toString(), /requirepass "s3cret"/);
  const at = (flag) => launch.argv[launch.argv.indexOf(flag) + 1];
  assert.equal(at('--min-replicas-to-write'), '1');
  assert.equal(at('--appendfsync'), 'always');
  assert.deepEqual(launch.argv.slice(launch.argv.indexOf('--replicaof') + 1, launch.argv.indexOf('--replicaof') + 3), ['127.0.0.2', '7000']);
  assert.ok(launch.readiness.command.argv.includes('--replica'));
  // One member: no self-fence (it would refuse every write).
  const single = buildLaunch({ ...ctx, member_id: 'c-0', instance: { ...ctx.instance, spec: { ...ctx.instance.spec, replicas: 1 } } }, settings);
  assert.equal(single.argv[single.argv.indexOf('--min-replicas-to-write') + 1], '0');
  // Unknown settings are INVALID_ARGUMENT naming the field.
  const bad = { ...ctx, instance: { ...ctx.instance, spec: { ...ctx.instance.spec, config: { nope: '1' } } } };
  assert.throws(() => buildLaunch(bad, settings), (e) => e.code === grpc.status.INVALID_ARGUMENT && 'spec.config.nope' in e.fields);
});

test('settings: a bad value names its variable', () => {
  assert.throws(() => loadSettings({ STATEFUL_REDIS_NODE_MIN_REPLICAS_MAX_LAG: '1' }), /STATEFUL_REDIS_NODE_MIN_REPLICAS_MAX_LAG/);
  assert.throws(() => loadSettings({ STATEFUL_REDIS_NODE_LISTEN: 'nowhere' }), /STATEFUL_REDIS_NODE_LISTEN/);
});
