'use strict';
// The launch of one Redis member (the Config answer). Pure: context in, LaunchSpec out. The same
// member as the Python workload's (services/mesos_stateful/workloads/redis/config.py explains every choice):
// - the password only in redis-auth.conf (mode 0600, not expanded): never on argv or in env;
// - data on the member's persistent volume (--dir ${MESOS_SANDBOX}/<volume>), a marker file there;
// - appendonly yes / appendfsync always by default;
// - a replica starts with --replicaof <master>; a SLAVE with no master in the instance (a cold
//   start) starts as a read-only replica of 127.0.0.1:0 (nothing listens there: it keeps its data);
// - --repl-diskless-sync-delay 0; --replica-read-only yes;
// - self-fencing: --min-replicas-to-write 1 --min-replicas-max-lag <setting> when the spec has
//   more than one member (0 with one): a master cut off from every replica refuses writes.
// Readiness and health: `node probe.js` (this package's), run by the executor; it reads the
// password from redis-auth.conf in the sandbox, so no secret is on the check's argv.

const path = require('path');
const { invalidArgument, failedPrecondition } = require('./errors');
const ctxh = require('./context');
const { CONFIG_KEYS, PASSWORD, PORT, PORT_VAR } = require('./description');

const AUTH_FILE = 'redis-auth.conf';
const VOLUME_MARKER = '.stateful-member';
const NOWHERE = ['127.0.0.1', 0];
const PROBE = path.resolve(__dirname, '..', 'probe.js');

/** min-replicas-to-write of the instance's master: 1 with more than one member in the spec, else 0. */
const minReplicasToWrite = (instance) => (Number(instance.spec.replicas) > 1 ? 1 : 0);

/** The instance's settings over the defaults; INVALID_ARGUMENT on unknown keys or values. */
function effectiveConfig(given) {
  const keys = new Map(CONFIG_KEYS.map((k) => [k.name, k]));
  const bad = {};
  for (const [name, value] of Object.entries(given || {})) {
    const key = keys.get(name);
    if (!key) bad[`spec.config.${name}`] = `unknown setting; known: ${[...keys.keys()].sort().join(', ')}`;
    else if (key.allowed_values.length && !key.allowed_values.includes(value)) bad[`spec.config.${name}`] = `must be one of ${key.allowed_values.join(', ')}`;
    else if (/[\r\n]/.test(value)) bad[`spec.config.${name}`] = 'must be one line';
  }
  if (Object.keys(bad).length) throw invalidArgument('invalid redis settings', bad);
  const out = {};
  for (const [name, key] of keys) out[name] = given && name in given ? given[name] : key.default_value;
  return out;
}

const quote = (value) => '"' + value.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';

function probeCheck(settings, mode, graceMs) {
  const argv = [settings.probe_node, PROBE, '--host', '${HOST}', '--port', PORT_VAR, '--auth-file', '${MESOS_SANDBOX}/' + AUTH_FILE];
  if (mode) argv.push('--' + mode);
  return { command: { argv }, interval_ms: settings.check_interval_ms, timeout_ms: 10000, grace_period_ms: graceMs || 0 };
}

function buildLaunch(ctx, settings) {
  const me = ctxh.memberInRole(ctx, 'ROLE_MASTER', 'ROLE_SLAVE');
  const password = ctx.secrets[PASSWORD] || '';
  if (!password) throw invalidArgument(`secret '${PASSWORD}' is missing`, { [`context.secrets.${PASSWORD}`]: 'required' });
  const config = effectiveConfig(ctx.instance.spec.config);
  const docker = ctxh.inDocker(ctx);
  const argv = [
    docker ? settings.docker_redis_server : settings.redis_server,
    '${MESOS_SANDBOX}/' + AUTH_FILE,
    '--port', PORT_VAR,
    '--bind', '${HOST}',
    '--dir', ctxh.dataDir(me),
    '--daemonize', 'no',
    '--replica-announce-ip', '${HOST}',
    '--repl-diskless-sync-delay', '0',
    '--replica-read-only', 'yes',
    '--appendonly', config.appendonly,
    '--appendfsync', config.appendfsync,
    '--save', config.save,
    '--maxmemory', config.maxmemory,
    '--maxmemory-policy', config['maxmemory-policy'],
    '--min-replicas-to-write', String(minReplicasToWrite(ctx.instance)),
    '--min-replicas-max-lag', String(settings.min_replicas_max_lag),
  ];
  let mode = '';
  if (me.role === 'ROLE_SLAVE') {
    if (ctxh.hasMaster(ctx)) {
      const m = ctxh.master(ctx);
      if (m.id === me.id) throw failedPrecondition(`member ${me.id} is both the replica and the master`);
      const [host, port] = ctxh.endpoint(m, PORT);
      argv.push('--replicaof', host, String(port));
      mode = 'replica';
    } else {
      argv.push('--replicaof', NOWHERE[0], String(NOWHERE[1]));
      mode = 'standby';
    }
  }
  const auth = `requirepass ${quote(password)}\nmasterauth ${quote(password)}\n`;
  return {
    instance: ctx.instance.spec.name,
    member_id: me.id,
    workload: settings.name,
    role: me.role,
    port_names: [PORT],
    argv,
    files: [
      { path: AUTH_FILE, content: Buffer.from(auth), mode: 0o600, expand: false },
      { path: `${ctxh.volumePath(me)}/${VOLUME_MARKER}`, content: Buffer.from(`${me.id}\n`), mode: 0o644, expand: false },
    ],
    runtime: docker ? 'RUNTIME_DOCKER' : 'RUNTIME_PROCESS',
    image: ctx.instance.spec.image || settings.default_image,
    readiness: probeCheck(settings, mode, 0),
    health: probeCheck(settings, '', settings.health_grace_period_ms),
    kill_grace_seconds: 10,
    placement: ctx.instance.spec.placement || undefined,
  };
}

module.exports = { buildLaunch, effectiveConfig, minReplicasToWrite, NOWHERE, AUTH_FILE };
