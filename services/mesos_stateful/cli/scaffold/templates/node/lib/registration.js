'use strict';
// Part of the workload library statefulctl new-workload --lang node writes; the same module as
// services/redis-node/src/registration.js of mesos-stateful.
// Keeps Workload{name, endpoint, description} registered in the state service under a lease, as
// services/mesos_stateful/workloads/base.py Registration does: grant a lease, put the record on it, keep the
// lease alive every ttl/3 s; lease gone (NOT_FOUND or ttl <= 0) -> register again; state service
// unreachable -> retry every ttl/3 s (one warning per outage). stop() revokes the lease.

const grpc = require('@grpc/grpc-js');

const CALL_TIMEOUT_MS = 5000;

class Registration {
  constructor(api, stateEndpoints, workload, ttlSeconds, log) {
    this.clients = stateEndpoints.map((e) => new api.StateService(e, grpc.credentials.createInsecure()));
    this.current = 0;
    this.workload = workload;
    this.ttl = ttlSeconds;
    this.log = log;
    this.leaseId = '0';
    this.registered = false;
    this.stopped = false;
    this.timer = null;
    this.registrations = 0;
  }

  call(method, request) {
    const client = this.clients[this.current];
    return new Promise((resolve, reject) => {
      client[method](request, { deadline: Date.now() + CALL_TIMEOUT_MS }, (error, response) => {
        if (error) {
          if (error.code === grpc.status.UNAVAILABLE || error.code === grpc.status.DEADLINE_EXCEEDED) {
            this.current = (this.current + 1) % this.clients.length; // next replica next time
          }
          reject(error);
        } else resolve(response);
      });
    });
  }

  // The endpoint registered under this workload's name, or null when there is no record.
  async holder() {
    try {
      const answer = await this.call('Get', { key: { kind: 'KIND_WORKLOAD', name: this.workload.name } });
      return answer.record && answer.record.workload ? answer.record.workload.endpoint : '';
    } catch (error) {
      if (error.code === grpc.status.NOT_FOUND) return null;
      throw error;
    }
  }

  async register() {
    // A second copy of a service must never take a live registration over (stopping it would
    // then delete the record of the one that stays).
    const holder = await this.holder();
    if (holder && holder !== this.workload.endpoint) {
      throw Object.assign(
        new Error(`workload '${this.workload.name}' is registered by the service at ${holder}: not taking it over (registering once its lease ends; another name: set the service's name setting)`),
        { code: grpc.status.ALREADY_EXISTS },
      );
    }
    if (this.leaseId === '0') this.leaseId = (await this.call('GrantLease', { ttl_seconds: String(this.ttl) })).lease_id;
    const now = Date.now();
    const record = { ...this.workload, registered_at: { seconds: String(Math.floor(now / 1000)), nanos: (now % 1000) * 1e6 } };
    try {
      await this.call('Put', {
        record: { key: { kind: 'KIND_WORKLOAD', name: this.workload.name }, workload: record },
        unconditional: true,
        lease_id: this.leaseId,
      });
    } catch (error) {
      this.leaseId = '0'; // the lease may be what is wrong: take a new one next time
      throw error;
    }
    this.registered = true;
    this.registrations += 1;
    this.log.info(`registered workload ${this.workload.name} at ${this.workload.endpoint} (lease ${this.leaseId}, ttl ${this.ttl}s)`);
  }

  start() {
    let failing = 0;
    const step = async () => {
      if (this.stopped) return;
      try {
        if (!this.registered) await this.register();
        else {
          const answer = await this.call('KeepAliveLease', { lease_id: this.leaseId });
          if (Number(answer.ttl_seconds) <= 0) throw Object.assign(new Error('lease expired'), { code: grpc.status.NOT_FOUND });
          if ((await this.holder()) === null) {
            // The record went while our lease lives (deleted, or put on another lease that was
            // revoked): put it again.
            this.log.warn(`registration of ${this.workload.name} is gone; registering again`);
            this.registered = false;
            if (!this.stopped) this.timer = setTimeout(step, 0);
            return;
          }
        }
        if (failing) this.log.info(`state service reachable again after ${failing} failed attempt(s)`);
        failing = 0;
      } catch (error) {
        if (error.code === grpc.status.NOT_FOUND) {
          this.log.warn(`registration lease of ${this.workload.name} is gone; registering again`);
          this.leaseId = '0';
          this.registered = false;
          if (!this.stopped) this.timer = setTimeout(step, 0);
          return;
        }
        failing += 1;
        if (failing === 1) this.log.warn(`registration of ${this.workload.name}: ${error.details || error.message}; retrying every ${this.ttl / 3}s`);
      }
      if (!this.stopped) this.timer = setTimeout(step, (this.ttl / 3) * 1000);
    };
    step();
  }

  async stop(revoke = true) {
    this.stopped = true;
    clearTimeout(this.timer);
    if (revoke && this.leaseId !== '0') {
      try {
        await this.call('RevokeLease', { lease_id: this.leaseId });
        this.log.info(`deregistered workload ${this.workload.name}`);
      } catch (error) {
        this.log.warn(`could not revoke registration lease (it will expire): ${error.details || error.message}`);
      }
    }
    for (const client of this.clients) client.close();
  }
}

module.exports = { Registration };
