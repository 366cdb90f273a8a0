#!/usr/bin/env bash
# Installs the Debian packages the suite and its tests run for real (etcd, Redis, MariaDB,
# Prometheus, and Node.js + npm for the Node.js workload services/redis-node), if missing. Needs root (CI and the dev machines run as root); prints what it would
# need otherwise.
set -euo pipefail
packages=(etcd-server etcd-client redis-server redis-sentinel redis-tools mariadb-server mariadb-client prometheus chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js (>= 18: Debian bookworm's nodejs and npm do; a NodeSource node, which bundles npm, is kept).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' own services must not start: the suite starts its own processes.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1; fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ "$created_policy" -eq 1 ] && rm -f "$policy"
# Stop anything the packages started anyway, so its default ports stay free for tests.
for svc in etcd redis-server mariadb prometheus; do service "$svc" stop >/dev/null 2>&1 || true; done
