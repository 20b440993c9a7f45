#!/bin/sh
# Gateway membership, run inside the gateway container by the per-worker Pulumi commands
# (components/gateway/members.py). A worker joins once it is healthy and leaves before it is
# stopped, so nginx never routes to a container that is gone. One file per worker under
# MEMBERS/<pool>/; nginx reads them on a graceful reload, and old nginx workers finish their
# streams first.
#
# Usage: members.sh admit POOL MEMBER SERVER...        e.g. admit chat w0 ci-chat-0:8000 max_fails=2
#        members.sh drain POOL MEMBER ADDRESS TIMEOUT  e.g. drain chat w0 ci-chat-0:8000 120
# Exit codes:
#   0  done (a drain that timed out still exits 0 after a warning: the container's stop grace
#      is the last bound)
#   2  bad arguments
#   3  nginx refused the config with the member in it (it is left out again)
set -eu

MEMBERS=${INFERENCE_STACK_MEMBERS:-/etc/nginx/inference-stack/members}

die() {
  code=$1
  shift
  printf 'members: error: %s\n' "$*" >&2
  exit "$code"
}

# nginx worker processes of the running master that still accept requests (a worker of the old
# generation renames itself "... is shutting down" once it stops accepting).
accepting() {
  master=$(cat /tmp/nginx.pid)
  for dir in /proc/[0-9]*; do
    read -r _ _ _ ppid _ <"$dir/stat" 2>/dev/null || continue
    [ "$ppid" = "$master" ] || continue
    title=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || continue
    case $title in *"is shutting down"*) ;; "nginx: worker process"*) echo "${dir#/proc/}" ;; esac
  done
}

reload() {
  # A config that fails here never reaches the running nginx.
  if ! nginx -t -q 2>/tmp/members-nginx-t.err; then
    return 1
  fi
  before=$(accepting | tr '\n' ' ')
  nginx -s reload
  # Return once only new workers accept: the caller (the next wave of a rolling update) may
  # take another worker out right after, and must find this change in effect. Bounded: 15 s.
  tries=0
  while [ "$tries" -lt 150 ]; do
    fresh=0 stale=0
    for pid in $(accepting); do
      case " $before " in *" $pid "*) stale=1 ;; *) fresh=1 ;; esac
    done
    [ "$fresh" = 1 ] && [ "$stale" = 0 ] && return 0
    sleep 0.1
    tries=$((tries + 1))
  done
  echo "members: warning: nginx did not finish reloading within 15 s" >&2
}

# Requests the worker is generating right now: the sum of vLLM's running-requests gauge. Empty
# when the worker does not answer (already stopped: nothing left to wait for).
running() {
  # busybox wget (the alpine image) has no --tries; `timeout` bounds GNU wget's retries too.
  timeout 5 wget -q -T 2 -O - "http://$1/metrics" 2>/dev/null |
    awk '/^vllm:num_requests_running[{ ]/ { s += $NF; n++ } END { if (n) printf "%d", s }'
}

[ "$#" -ge 3 ] || die 2 "usage: members.sh admit POOL MEMBER SERVER... | drain POOL MEMBER ADDRESS TIMEOUT"
action=$1 pool=$2 member=$3
shift 3
case $pool$member in
  *[!A-Za-z0-9_.-]*) die 2 "POOL and MEMBER may hold only letters, digits, . _ and -" ;;
esac
file=$MEMBERS/$pool/$member.conf

case $action in
  admit)
    [ "$#" -ge 1 ] || die 2 "admit needs the server address (and its parameters)"
    mkdir -p "$MEMBERS/$pool"
    printf 'server %s;\n' "$*" >"$file.tmp"
    mv "$file.tmp" "$file"
    if ! reload; then
      rm -f "$file"
      cat /tmp/members-nginx-t.err >&2
      die 3 "nginx refused $member in pool $pool; left it out"
    fi
    echo "members: $member joined $pool ($1)"
    ;;
  drain)
    [ "$#" -eq 2 ] || die 2 "drain needs ADDRESS and TIMEOUT"
    address=$1 timeout=$2
    case $timeout in '' | *[!0-9]*) die 2 "TIMEOUT must be whole seconds, not '$timeout'" ;; esac
    if [ -e "$file" ]; then
      rm -f "$file"
      reload || die 3 "nginx refused the config without $member: $(cat /tmp/members-nginx-t.err)"
    fi
    waited=0
    while :; do
      now=$(running "$address")
      if [ -z "$now" ] || [ "$now" -eq 0 ]; then
        echo "members: $member left $pool; ${now:-no} running requests after ${waited}s"
        exit 0
      fi
      if [ "$waited" -ge "$timeout" ]; then
        echo "members: warning: $member still runs $now requests after ${timeout}s; stopping it anyway" >&2
        exit 0
      fi
      sleep 1
      waited=$((waited + 1))
    done
    ;;
  *) die 2 "unknown action '$action': admit or drain" ;;
esac
