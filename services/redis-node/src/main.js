#!/usr/bin/env node
'use strict';
// Entry point: `node services/redis-node/src/main.js` (settings: STATEFUL_REDIS_NODE_*, see
// settings.js). Serves stateful.v1.WorkloadService, registers in the state service under a lease,
// and on SIGTERM/SIGINT deregisters and drains in-flight calls for grace_seconds.

const os = require('os');
const grpc = require('@grpc/grpc-js');
const { loadSettings, splitHostPort, SettingsError } = require('./settings');
const { loadProtos } = require('./protos');
const { makeServicer } = require('./servicer');
const { description } = require('./description');
const { Registration } = require('./registration');
const { toServiceError, unavailable } = require('./errors');

const LEVELS = { debug: 10, info: 20, warning: 30, error: 40 };

function makeLog(level) {
  const min = LEVELS[level];
  const line = (lvl, text) => {
    if (LEVELS[lvl] >= min) process.stderr.write(`${new Date().toISOString()} ${lvl.toUpperCase()} workload-redis-node ${text}\n`);
  };
  return { debug: (t) => line('debug', t), info: (t) => line('info', t), warn: (t) => line('warning', t), error: (t) => line('error', t) };
}

/** grpc-js unary handlers: callback timeout (UNAVAILABLE), errors to status, logged. */
function handlers(callbacks, settings, log) {
  const out = {};
  for (const [name, fn] of Object.entries(callbacks)) {
    out[name] = (call, done) => {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(unavailable(`${name} did not finish within ${settings.callback_timeout_seconds}s`)), settings.callback_timeout_seconds * 1000);
      });
      Promise.race([Promise.resolve().then(() => fn(call.request)), timeout])
        .then((response) => done(null, response))
        .catch((error) => {
          const status = toServiceError(error);
          (status.code === grpc.status.INTERNAL ? log.error : log.debug)(`${name}: ${grpc.status[status.code]} ${status.details}${status.code === grpc.status.INTERNAL && error && error.stack ? '\n' + error.stack : ''}`);
          done(status);
        })
        .finally(() => clearTimeout(timer));
    };
  }
  return out;
}

function bind(server, address) {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port)));
  });
}

async function main() {
  let settings;
  try {
    settings = loadSettings();
  } catch (error) {
    if (error instanceof SettingsError) {
      process.stderr.write(`workload-redis-node: bad setting: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  // Route console.* of the callbacks through the leveled log.
  const log = makeLog(settings.log_level);
  console.info = log.info;
  console.warn = log.warn;
  console.log = log.info;

  const api = loadProtos(settings.protos_dir);
  const server = new grpc.Server();
  server.addService(api.WorkloadService.service, handlers(makeServicer(settings), settings, log));
  let port;
  try {
    port = await bind(server, settings.listen);
  } catch (error) {
    process.stderr.write(`workload-redis-node: cannot listen on ${settings.listen}: ${error.message}\n`);
    process.exit(1);
  }
  let [host] = splitHostPort(settings.listen);
  if (['', '0.0.0.0', '::'].includes(host)) host = os.hostname();
  const advertised = settings.advertise || (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
  log.info(`workload ${settings.name} serving on port ${port}, advertised as ${advertised} (pid ${process.pid})`);

  let registration = null;
  if (settings.register_in_state) {
    const endpoints = settings.state_endpoint.split(',').map((e) => e.trim());
    registration = new Registration(api, endpoints, { name: settings.name, endpoint: advertised, description: description(settings) }, settings.lease_ttl_seconds, log);
    registration.start();
  }

  let stopping = false;
  const stop = async (signal) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: deregistering and draining calls for up to ${settings.grace_seconds}s`);
    if (registration) await registration.stop(true);
    const force = setTimeout(() => server.forceShutdown(), settings.grace_seconds * 1000);
    server.tryShutdown(() => {
      clearTimeout(force);
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error) => {
  process.stderr.write(`workload-redis-node: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
