#!/usr/bin/env bash
# Set up everything setuptools-grocker needs on a Debian machine, as root, idempotently:
# Docker Engine (Debian's docker.io), mmdebstrap (for the base image), a running dockerd, the project's venv,
# and the bootstrapped base image. Source it (`. scripts/setup.sh`) to get:
#   DEV_VENV        the venv with setuptools-grocker installed (editable, with test extras)
#   DEV_STARTED     space-separated pids of the servers this script started
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV_VENV="${DEV_VENV:-$REPO/.venv}"
DEV_STARTED="${DEV_STARTED:-}"
STATE_DIR="${DEV_STATE_DIR:-/var/tmp/setuptools-grocker}"
mkdir -p "$STATE_DIR"

log() { printf '[setup] %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

engine_answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_dockerd() {
    if engine_answers; then
        log "Docker Engine answers: $(docker version --format '{{.Server.Version}}')"
        return 0
    fi
    log "starting dockerd in the background (log: $STATE_DIR/dockerd.log)"
    # A stale pid file from a killed daemon blocks the start.
    rm -f /var/run/docker.pid
    nohup dockerd --host unix:///var/run/docker.sock >"$STATE_DIR/dockerd.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$STATE_DIR/dockerd.pid"
    # "dockerd": stop_started reads the pid file then, since a test may restart the engine.
    DEV_STARTED="$DEV_STARTED dockerd"
    for _ in $(seq 1 60); do
        engine_answers && { log "dockerd ready (pid $pid)"; return 0; }
        kill -0 "$pid" 2>/dev/null || { tail -20 "$STATE_DIR/dockerd.log" >&2; log "dockerd died"; return 1; }
        sleep 1
    done
    log "dockerd did not answer within 60 s"; return 1
}

stop_started() {
    # Stop every server this script started, newest first.
    local pids
    pids=$(echo "$DEV_STARTED" | tr ' ' '\n' | sed '/^$/d' | tac |
           sed "s|^dockerd\$|$(cat "$STATE_DIR/dockerd.pid" 2>/dev/null)|")
    for pid in $pids; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $pids; do
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}

apt_install docker.io mmdebstrap docker-registry git ca-certificates curl
command -v docker >/dev/null || { log "no docker client after installing docker.io"; exit 1; }
start_dockerd

# Swarm mode, for grocker deploy/rollback: a single-node swarm, its ports on 127.0.0.1 only.
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" != "active" ]; then
    log "docker swarm init (127.0.0.1)"
    docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
fi

if [ ! -x "$DEV_VENV/bin/grocker" ] || [ "$REPO/pyproject.toml" -nt "$DEV_VENV/.installed" ]; then
    log "installing setuptools-grocker into $DEV_VENV"
    python3 -m venv "$DEV_VENV"
    "$DEV_VENV/bin/pip" install -q -e "$REPO[test,buildbot,docs]" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
    "$DEV_VENV/bin/grocker" --version >/dev/null
    touch "$DEV_VENV/.installed"
fi

# No public registry here: the default base image is bootstrapped from Debian's packages.
"$DEV_VENV/bin/grocker" bootstrap-base >&2
export DEV_VENV DEV_STARTED
