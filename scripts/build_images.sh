#!/usr/bin/env bash
# Builds the suite's images (names: services/mesos_stateful/common/images.py) on the local Docker engine, pulling
# nothing that is not there:
#   base     mesos-stateful/base:bookworm: debian:bookworm-slim retagged if it can be pulled, else
#            `debootstrap --variant=minbase bookworm` from this machine's apt mirror + `docker import`
#   suite    deploy/images/suite.Dockerfile: Debian Python 3.11 + the suite in a venv
#   redis, mariadb, etcd   the suite plus the workload's Debian packages
# pip cannot reach an index from inside a build here (TLS), so the wheels are built on the host with
# the venv's pip into build/wheels/ (deps/: the runtime dependencies at the venv's versions; project/:
# the project) and installed offline in the images. The dependency layer comes first, so a code
# change rebuilds only the project layer of each image.
# Idempotent and quick when nothing changed: build/images/stamp records a fingerprint of every input
# (the base image id, Dockerfiles, this script, the project's files, the dependency list) and the
# image ids built from it. One build at a time (a lock in build/images/).
# Prints each step's seconds.
# Usage: VENV=.venv bash scripts/build_images.sh [--force] [--base-only]
#   --force      build even when the stamp says the images are up to date (cached layers still count)
#   --base-only  only make sure the base image exists (IMAGES_BASE_TAG: build it under another tag;
#                IMAGES_BASE_FROM=debootstrap: do not try to pull debian:bookworm-slim)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
py="$venv/bin/python"
force=0
base_only=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --base-only) base_only=1 ;;
    *) echo "usage: $0 [--force] [--base-only]" >&2; exit 2 ;;
  esac
done
# Wheels whose bytes depend only on their inputs (a stable layer checksum for the build cache).
export SOURCE_DATE_EPOCH=315532800
state=build/images
wheels=build/wheels
mkdir -p "$state" "$wheels"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
tool() { "$py" deploy/images/imagetool.py "$@"; }

if [ ! -x "$py" ]; then
  echo "no virtual environment at $venv (run: make setup)" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "no Docker engine answers (run: make docker-engine)" >&2
  exit 1
fi

exec 9>"$state/lock"
if ! flock -n 9; then
  echo "waiting for another build_images.sh to finish"
  flock 9
fi

read -r base suite redis mariadb etcd label_prefix < <("$py" -c '
from mesos_stateful.common import images as i
print(i.BASE_IMAGE, i.SUITE_IMAGE, i.REDIS_IMAGE, i.MARIADB_IMAGE, i.ETCD_IMAGE, i.LABEL_PREFIX)')
# image name -> its Dockerfile in deploy/images/
declare -A dockerfile=([$suite]=suite [$redis]=redis [$mariadb]=mariadb [$etcd]=etcd)
images=("$suite" "$redis" "$mariadb" "$etcd")
base=${IMAGES_BASE_TAG:-$base}

build_base() {
  local started how rootfs mirror
  started=$(now)
  if [ "${IMAGES_BASE_FROM:-}" != debootstrap ] && timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    docker tag debian:bookworm-slim "$base"
    how="debian:bookworm-slim pulled"
  else
    if [ "$(id -u)" -ne 0 ]; then
      echo "debian:bookworm-slim cannot be pulled and building $base with debootstrap needs root" >&2
      exit 1
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
      echo "installing debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    mirror=${DEBIAN_MIRROR:-$(tool mirror --codename bookworm)}
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/mesos-stateful-rootfs.XXXXXX")
    # shellcheck disable=SC2064 # the path is fixed now
    trap "rm -rf '$rootfs'" EXIT
    echo "building $base: debootstrap --variant=minbase bookworm from $mirror"
    if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$state/debootstrap.log" 2>&1; then
      tail -n 20 "$state/debootstrap.log" >&2
      echo "debootstrap failed (log: $state/debootstrap.log)" >&2
      exit 1
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' -m "debootstrap --variant=minbase bookworm" - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    how="debootstrap + docker import"
  fi
  echo "base $base: $(since "$started") s ($how)"
}

up_to_date() {
  # The stamp's fingerprint is this one and every image still has the id built from it.
  [ "$force" -eq 0 ] && [ -f "$state/stamp" ] || return 1
  [ "$(head -n 1 "$state/stamp")" = "$1" ] || return 1
  local ids
  ids=$(docker image inspect -f '{{.Id}}' "${images[@]}" 2>/dev/null) || return 1
  [ "$ids" = "$(tail -n +2 "$state/stamp")" ]
}

build_wheels() {
  local started reqs deps="$wheels/deps" tmp built
  started=$(now)
  # The images run Debian bookworm's Python 3.11: the host's wheels must be cp311.
  if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "the venv's Python is $("$py" -V 2>&1), the images' is Debian bookworm's 3.11:" \
      "make the venv with Python 3.11 (its wheels go into the images)" >&2
    exit 1
  fi
  reqs=$(tool requirements)
  if [ ! -f "$deps/.complete" ] || [ "$(cat "$deps/requirements.txt" 2>/dev/null)" != "$reqs" ]; then
    rm -rf "$deps.new" && mkdir -p "$deps.new"
    # http-parser: the venv's own build (scripts/install_http_parser.sh), repacked as a wheel.
    grep -v '^http-parser==' <<<"$reqs" >"$deps.new/from-index.txt"
    "$venv/bin/pip" wheel -q --no-deps -w "$deps.new" -r "$deps.new/from-index.txt" 2>&1 \
      | grep -v -i "warning: location" || true
    rm -f "$deps.new/from-index.txt"
    tool repack http-parser "$deps.new" >/dev/null
    printf '%s\n' "$reqs" >"$deps.new/requirements.txt"
    touch "$deps.new/.complete"
    rm -rf "$deps" && mv "$deps.new" "$deps"
    echo "dependency wheels ($(grep -c . <<<"$reqs")): $(since "$started") s"
  fi
  started=$(now)
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/mesos-stateful-wheel.XXXXXX")
  tool sources "$tmp/src"
  if ! "$venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$tmp/out" "$tmp/src" >"$state/wheel.log" 2>&1; then
    cat "$state/wheel.log" >&2
    rm -rf "$tmp"
    echo "building the project's wheel failed" >&2
    exit 1
  fi
  built=$(find "$tmp/out" -name '*.whl' -printf '%f\n')
  mkdir -p "$wheels/project"
  # Keep the old file when the bytes are the same (the build cache then keeps the project layer).
  if ! cmp -s "$tmp/out/$built" "$wheels/project/$built"; then
    rm -f "$wheels/project"/*.whl
    cp "$tmp/out/$built" "$wheels/project/$built"
  fi
  rm -rf "$tmp"
  echo "project wheel $built: $(since "$started") s"
}

build_image() {
  local name=$1 file="deploy/images/${dockerfile[$1]}.Dockerfile" started log
  started=$(now)
  log="$state/${dockerfile[$1]}.log"
  if ! docker build --force-rm --build-arg "BASE=$base" --label "${label_prefix}image=${dockerfile[$1]}" \
    -f "$file" -t "$name" . >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "building $name from $file failed (log: $log)" >&2
    exit 1
  fi
  echo "image $name: $(since "$started") s ($(grep -c -- '---> Using cache' "$log" || true) cached steps)"
}

total=$(now)
docker image inspect "$base" >/dev/null 2>&1 || build_base
[ "$base_only" -eq 1 ] && exit 0
fingerprint=$(tool fingerprint "base=$(docker image inspect -f '{{.Id}}' "$base")" "images=${images[*]}")
prune() {
  # Superseded builds of these images (untagged now, labelled by this script, used by no container).
  docker image prune -f --filter "label=${label_prefix}image" >/dev/null
}
if up_to_date "$fingerprint"; then
  prune
  echo "images up to date (${images[*]}): $(since "$total") s"
  exit 0
fi
build_wheels
for name in "${images[@]}"; do build_image "$name"; done
prune
{
  echo "$fingerprint"
  docker image inspect -f '{{.Id}}' "${images[@]}"
} >"$state/stamp"
echo "images built (${images[*]}): $(since "$total") s"
