'use strict';
// What the workload is: its Describe answer (the Python workload's, under its own name).

// The one named port every member needs; the task sees it as ${PORT_REDIS}.
const PORT = 'redis';
const PORT_VAR = '${PORT_REDIS}';
const PASSWORD = 'password';

const EVICTION_POLICIES = ['noeviction', 'allkeys-lru', 'allkeys-lfu', 'allkeys-random', 'volatile-lru', 'volatile-lfu', 'volatile-random', 'volatile-ttl'];

const CONFIG_KEYS = [
  { name: 'appendonly', description: 'append-only file persistence (every write logged in the sandbox)', default_value: 'yes', allowed_values: ['yes', 'no'] },
  {
    name: 'appendfsync',
    description: 'when the append-only file is fsynced; always (default): written and fsynced before any reply, so even a crash of every member at once loses nothing acknowledged; everysec is faster but a kill -9 can lose up to ~2 s of answered writes on that member',
    default_value: 'always',
    allowed_values: ['always', 'everysec', 'no'],
  },
  { name: 'save', description: 'RDB snapshot rules, "<seconds> <changes> ..."; empty: no snapshots', default_value: '3600 1 300 100 60 10000', allowed_values: [] },
  { name: 'maxmemory', description: 'memory limit for data, e.g. "200mb"; "0": no limit', default_value: '0', allowed_values: [] },
  { name: 'maxmemory-policy', description: 'what to evict when maxmemory is reached', default_value: 'noeviction', allowed_values: EVICTION_POLICIES },
];

function description(settings) {
  return {
    name: settings.name,
    topology: 'TOPOLOGY_MASTER_REPLICA',
    default_image: settings.default_image,
    port_names: [PORT],
    default_resources: { cpus: 0.5, mem_mb: 256, disk_mb: 1024 },
    secret_names: [PASSWORD],
    min_replicas: 1,
    max_replicas: 0,
    config_keys: CONFIG_KEYS,
    summary: 'Redis (Node.js implementation): one master, asynchronous replicas, the most advanced replica promoted on master loss',
  };
}

module.exports = { PORT, PORT_VAR, PASSWORD, CONFIG_KEYS, description };
