#!/usr/bin/env bash
# Make sure a Docker engine answers, for the tests that run containers.
#
#   scripts/docker-engine.sh      # idempotent: returns at once when `docker version` answers
#
# Installs Debian's docker.io when dockerd is missing and we are root, then starts dockerd in the
# background when none answers. Never a second dockerd (one is looked for first, by its pid file
# and its process), and never `--bridge=none`, which would delete docker0 for everyone.
# Exit codes: 0 engine answers; 1 it could not be started (the log's tail is printed); 3 no
# dockerd and not root to install one.
set -euo pipefail

LOG=${DOCKERD_LOG:-/var/log/inference-stack-dockerd.log}
WAIT_SECONDS=${DOCKERD_WAIT_SECONDS:-60}

answers() { docker version >/dev/null 2>&1; }

if command -v docker >/dev/null && answers; then
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "docker-engine: no dockerd and not root: install docker.io (or Docker Engine) first" >&2
    exit 3
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
fi
if pgrep -x dockerd >/dev/null; then
  echo "docker-engine: a dockerd runs but does not answer yet; waiting for it, not starting another" >&2
else
  [ "$(id -u)" = 0 ] || { echo "docker-engine: dockerd is not running and only root can start it" >&2; exit 3; }
  nohup dockerd >>"$LOG" 2>&1 &
fi
for _ in $(seq 1 "$WAIT_SECONDS"); do
  answers && { echo "docker-engine: $(docker version --format 'engine {{.Server.Version}}')"; exit 0; }
  sleep 1
done
echo "docker-engine: dockerd did not answer within ${WAIT_SECONDS}s; last lines of $LOG:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
