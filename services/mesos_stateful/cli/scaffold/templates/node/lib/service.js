'use strict';
// Part of the workload library statefulctl new-workload --lang node writes: serve a
// stateful.v1.WorkloadService, register it in the state service under a lease, stop on SIGTERM.
//
//   run({ name, envPrefix, description, makeServicer })
//
// Settings from the environment, <envPrefix><NAME>: LISTEN (host:port, default 127.0.0.1:0),
// ADVERTISE, STATE_ENDPOINT (default 127.0.0.1:7100; several: comma-separated),
// REGISTER_IN_STATE (true), LEASE_TTL_SECONDS (10), CALLBACK_TIMEOUT_SECONDS (20),
// CONNECT_TIMEOUT_SECONDS (3), CHECK_INTERVAL_MS (1000), NODE (node binary members and checks
// run, default this one), LOG_LEVEL (info). A bad value stops it with a message (exit 2).
// The protos are read from proto/ (the suite's, written by statefulctl). Callbacks not in the servicer answer UNIMPLEMENTED (CheckMember,
// Fence: lifecycle then relies on Mesos alone) or their protocol default.

const os = require('os');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const { Registration } = require('./registration');
const { toServiceError, unavailable } = require('./errors');

const LEVELS = { debug: 10, info: 20, warning: 30, error: 40 };
const DEFAULTS = {
  listen: '127.0.0.1:0', advertise: '', state_endpoint: '127.0.0.1:7100', register_in_state: 'true',
  lease_ttl_seconds: '10', callback_timeout_seconds: '20', connect_timeout_seconds: '3',
  check_interval_ms: '1000', node: process.execPath, log_level: 'info',
};

function splitHostPort(address) {
  const i = address.lastIndexOf(':');
  const port = address.slice(i + 1);
  if (i <= 0 || !/^\d+$/.test(port) || Number(port) > 65535) return null;
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(port)];
}

/** The settings; throws Error naming the variable on a bad value. */
function loadSettings(envPrefix, env = process.env) {
  const raw = {};
  for (const [k, d] of Object.entries(DEFAULTS)) raw[k] = env[envPrefix + k.toUpperCase()] || d;
  const bad = (k, why) => new Error(`${envPrefix}${k.toUpperCase()}=${raw[k]}: ${why}`);
  const number = (k, min) => {
    const v = Number(raw[k]);
    if (!/^\d+(\.\d+)?$/.test(raw[k]) || v < min) throw bad(k, `a number >= ${min}`);
    return v;
  };
  if (!splitHostPort(raw.listen)) throw bad('listen', 'host:port');
  if (raw.advertise && !splitHostPort(raw.advertise)) throw bad('advertise', 'host:port');
  if (!raw.state_endpoint.split(',').every((e) => splitHostPort(e.trim()))) throw bad('state_endpoint', 'host:port[,host:port...]');
  if (!['true', 'false'].includes(raw.register_in_state)) throw bad('register_in_state', 'true or false');
  if (!(raw.log_level in LEVELS)) throw bad('log_level', 'debug, info, warning or error');
  return {
    ...raw,
    register_in_state: raw.register_in_state === 'true',
    lease_ttl_seconds: number('lease_ttl_seconds', 3),
    callback_timeout_seconds: number('callback_timeout_seconds', 0.1),
    connect_timeout_seconds: number('connect_timeout_seconds', 0.1),
    check_interval_ms: number('check_interval_ms', 1),
  };
}

function makeLog(name, level) {
  const line = (lvl, text) => {
    if (LEVELS[lvl] >= LEVELS[level]) process.stderr.write(`${new Date().toISOString()} ${lvl.toUpperCase()} workload-${name} ${text}\n`);
  };
  return { debug: (t) => line('debug', t), info: (t) => line('info', t), warn: (t) => line('warning', t), error: (t) => line('error', t) };
}

function loadApi() {
  const definition = loader.loadSync(['stateful/v1/workload_service.proto', 'stateful/v1/state_service.proto'], {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
    includeDirs: [path.join(__dirname, '..', 'proto')],
  });
  return grpc.loadPackageDefinition(definition).stateful.v1;
}

// The protocol's answers for callbacks a servicer leaves out (as services/mesos_stateful/workloads/base.py).
const FALLBACKS = {
  Start: async () => ({ status: {} }),
  StartMaster: async () => ({ status: {} }),
  StartSlave: async () => ({ status: {} }),
  MasterRunning: async () => ({ status: {} }),
  SlaveRunning: async () => ({ status: {} }),
  MasterLost: async () => ({ promote_member_id: '', reason: '', positions: {} }),
  SlaveLost: async () => ({ replace: true }),
  PeerRunning: async () => ({ status: {} }),
  PeerLost: async () => ({ replace: true }),
  RemoveMember: async () => ({}),
};

function handlers(callbacks, settings, log, name) {
  const out = {};
  for (const method of ['Describe', 'Config', 'Start', 'StartMaster', 'StartSlave', 'MasterRunning', 'SlaveRunning',
    'MasterLost', 'SlaveLost', 'PeerRunning', 'PeerLost', 'RemoveMember', 'CheckMember', 'Fence']) {
    const fn = callbacks[method] || FALLBACKS[method];
    if (!fn) {
      out[method] = (call, done) => done({ code: grpc.status.UNIMPLEMENTED, details: `workload ${name} does not implement ${method}` });
      continue;
    }
    out[method] = (call, done) => {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(unavailable(`${method} did not finish within ${settings.callback_timeout_seconds}s`)), settings.callback_timeout_seconds * 1000);
      });
      Promise.race([Promise.resolve().then(() => fn(call.request)), timeout])
        .then((response) => done(null, response))
        .catch((error) => {
          const status = toServiceError(error);
          if (status.code === grpc.status.INTERNAL) log.error(`${method}: ${error && error.stack ? error.stack : error}`);
          else log.debug(`${method}: ${grpc.status[status.code]} ${status.details}`);
          done(status);
        })
        .finally(() => clearTimeout(timer));
    };
  }
  return out;
}

/** Serve and register until SIGTERM/SIGINT; exits 2 on a bad setting, 1 when it cannot listen. */
async function run({ name, envPrefix, description, makeServicer }) {
  let settings;
  try {
    settings = loadSettings(envPrefix);
  } catch (error) {
    process.stderr.write(`workload-${name}: bad setting: ${error.message}\n`);
    process.exit(2);
  }
  const log = makeLog(name, settings.log_level);
  const api = loadApi();
  const server = new grpc.Server();
  server.addService(api.WorkloadService.service, handlers({ Describe: async () => ({ description: description(settings) }), ...makeServicer(settings, log) }, settings, log, name));
  const port = await new Promise((resolve) => {
    server.bindAsync(settings.listen, grpc.ServerCredentials.createInsecure(), (error, bound) => {
      if (error) {
        process.stderr.write(`workload-${name}: cannot listen on ${settings.listen}: ${error.message}\n`);
        process.exit(1);
      }
      resolve(bound);
    });
  });
  let [host] = splitHostPort(settings.listen);
  if (['', '0.0.0.0', '::'].includes(host)) host = os.hostname();
  const advertised = settings.advertise || (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
  log.info(`workload ${name} serving on port ${port}, advertised as ${advertised} (pid ${process.pid})`);
  let registration = null;
  if (settings.register_in_state) {
    const endpoints = settings.state_endpoint.split(',').map((e) => e.trim());
    registration = new Registration(api, endpoints, { name, endpoint: advertised, description: description(settings) }, settings.lease_ttl_seconds, log);
    registration.start();
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    if (registration) await registration.stop(true);
    const force = setTimeout(() => server.forceShutdown(), 5000);
    server.tryShutdown(() => {
      clearTimeout(force);
      process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

module.exports = { run, loadSettings };
