'use strict';
// Settings from the environment, STATEFUL_REDIS_NODE_<NAME> (the Python workloads' convention:
// STATEFUL_REDIS_*). Every value is checked at start-up; a bad one stops the service with a
// message naming the variable (no stack trace).

const path = require('path');

const PREFIX = 'STATEFUL_REDIS_NODE_';

// name: [default, kind, check?, description]
const SPEC = {
  name: ['redis-node', 'string', (v) => /^[a-z][a-z0-9-]{0,62}$/.test(v), 'workload name registered (what InstanceSpec.workload names)'],
  listen: ['127.0.0.1:7404', 'hostport', null, 'host:port the gRPC server binds (port 0: any)'],
  advertise: ['', 'hostport?', null, 'host:port other services use to reach this one; empty: the bound address'],
  state_endpoint: ['127.0.0.1:7100', 'string', (v) => v.split(',').every((e) => splitHostPort(e.trim())), 'host:port of the state service (several: comma-separated)'],
  register_in_state: [true, 'bool', null, 'register in the state service (false: only serve)'],
  lease_ttl_seconds: [10, 'int', (v) => v >= 3, 'TTL of the registration lease; kept alive every TTL/3 seconds'],
  callback_timeout_seconds: [20, 'float', (v) => v > 0, 'most time one callback may take; past it: UNAVAILABLE'],
  connect_timeout_seconds: [3, 'float', (v) => v > 0, "timeout to connect to, and for one command on, a member's redis-server"],
  grace_seconds: [5, 'float', (v) => v >= 0, 'time in-flight calls get to finish on SIGTERM'],
  redis_server: ['redis-server', 'string', null, 'the redis-server binary members run (process runtime)'],
  docker_redis_server: ['/usr/bin/redis-server', 'string', null, 'the redis-server binary in the image (Docker runtime)'],
  default_image: ['mesos-stateful/redis:latest', 'string', null, 'image of members when the instance names none (Docker runtime)'],
  probe_node: [process.execPath, 'string', null, 'node binary that runs the readiness/health probe (probe.js) where the executor runs'],
  check_interval_ms: [1000, 'int', (v) => v > 0, 'interval of the readiness and health checks'],
  health_grace_period_ms: [30000, 'int', (v) => v >= 0, 'health check failures ignored after start'],
  link_down_repair_seconds: [10, 'float', (v) => v > 0, 'CheckMember: a link down longer than this asks for REPAIR_REPOINT'],
  max_lag_bytes: [1024 * 1024, 'int', (v) => v >= 0, 'CheckMember: a replica further behind than this many bytes is not CAUGHT_UP'],
  min_replicas_max_lag: [2, 'int', (v) => v >= 2, 'self-fencing: min-replicas-max-lag in whole seconds (at least 2; see services/mesos_stateful/workloads/redis/README.md)'],
  fence_timeout_seconds: [1, 'float', (v) => v > 0, 'Fence: how long the old master gets to answer before it is taken for unreachable'],
  protos_dir: [path.resolve(__dirname, '..', '..', '..', 'protos'), 'string', null, "the project's protos/ folder (loaded at run time)"],
  log_level: ['info', 'string', (v) => ['debug', 'info', 'warning', 'error'].includes(v), 'debug, info, warning or error'],
};

function splitHostPort(address) {
  const i = address.lastIndexOf(':');
  if (i <= 0) return null;
  const port = address.slice(i + 1);
  if (!/^\d+$/.test(port) || Number(port) > 65535) return null;
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(port)];
}

class SettingsError extends Error {}

/** The settings: defaults, then STATEFUL_REDIS_NODE_* from env, then overrides. SettingsError on a bad value. */
function loadSettings(env = process.env, overrides = {}) {
  const settings = {};
  for (const [name, [dflt, kind, check, description]] of Object.entries(SPEC)) {
    const variable = PREFIX + name.toUpperCase();
    let raw = name in overrides ? overrides[name] : env[variable];
    let value = dflt;
    if (raw !== undefined && raw !== '') {
      raw = String(raw);
      if (kind === 'int') value = /^-?\d+$/.test(raw) ? Number(raw) : NaN;
      else if (kind === 'float') value = /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : NaN;
      else if (kind === 'bool') value = ['1', 'true', 'yes', 'on'].includes(raw.toLowerCase()) ? true : ['0', 'false', 'no', 'off'].includes(raw.toLowerCase()) ? false : null;
      else value = raw;
      const bad =
        (typeof value === 'number' && Number.isNaN(value)) ||
        value === null ||
        (kind.startsWith('hostport') && !splitHostPort(value));
      if (bad) throw new SettingsError(`${variable}=${raw}: expected ${kind.replace('?', '')} (${description})`);
    }
    if (check && !(kind === 'hostport?' && value === '') && !check(value)) {
      throw new SettingsError(`${variable}=${value}: out of range (${description})`);
    }
    settings[name] = value;
  }
  if (settings.connect_timeout_seconds >= settings.callback_timeout_seconds) {
    throw new SettingsError(`${PREFIX}CONNECT_TIMEOUT_SECONDS must be below ${PREFIX}CALLBACK_TIMEOUT_SECONDS`);
  }
  return settings;
}

module.exports = { loadSettings, splitHostPort, SettingsError, SPEC, PREFIX };
