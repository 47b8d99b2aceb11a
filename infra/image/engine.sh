#!/usr/bin/env bash
# `make engine` / `make engine-stop`: the Docker Engine the container tests and `make image` need.
#
#   start  installs Debian's docker.io and debootstrap where they are missing (apt-get, as root),
#          starts dockerd as root in the background unless an engine already answers, and waits
#          until it does. Its log is .modelport/dockerd.log, its pid .modelport/dockerd.pid.
#   stop   stops the dockerd that `start` started (an engine it found running is left alone).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="$root/.modelport"
pidfile="$state/dockerd.pid"

answers() { docker info >/dev/null 2>&1; }

start() {
  if command -v docker >/dev/null && answers; then
    echo "Docker Engine: running"
    return 0
  fi
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "engine.sh: docker.io and debootstrap are missing; as root: apt-get install docker.io debootstrap" >&2; exit 2; }
    echo "installing docker.io and debootstrap (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q docker.io debootstrap >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q docker.io debootstrap >/dev/null; }
  fi
  [ "$(id -u)" = 0 ] || { echo "engine.sh: dockerd must be started as root (sudo make engine)" >&2; exit 2; }
  mkdir -p "$state"
  nohup dockerd >"$state/dockerd.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if answers; then echo "Docker Engine: started (pid $(cat "$pidfile"), log $state/dockerd.log)"; return 0; fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.5
  done
  echo "engine.sh: dockerd did not start; the end of its log:" >&2
  tail -20 "$state/dockerd.log" >&2
  exit 1
}

stop() {
  [ -f "$pidfile" ] || { echo "Docker Engine: not started by make engine; left alone"; return 0; }
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "Docker Engine: stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: engine.sh start|stop" >&2; exit 2 ;;
esac
