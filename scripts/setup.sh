#!/usr/bin/env bash
# Sets up a fresh Debian machine for running and testing the suite: Debian packages, a virtual
# environment in .venv with the project installed editable with its dev extras, and the Node.js
# workload's dependencies (npm ci: exactly package-lock.json, from the npm registry).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
bash scripts/install_system_deps.sh
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v -i warning || true
bash scripts/install_http_parser.sh "$venv/bin/python"
"$venv/bin/python" -m pip install -q -e '.[dev]' 2>&1 | grep -v -i "warning: location" || true
"$venv/bin/python" -c "import mesos_stateful.api.stateful.v1.types_pb2, pymesos, aetcd"
(cd services/redis-node && npm ci --no-audit --no-fund --loglevel=error)
(cd services/redis-node && node -e "require('./src/protos').loadProtos('../../protos'); require('ioredis')")
