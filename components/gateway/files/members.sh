#!/bin/sh
# Gateway membership, run inside the gateway container by the per-worker Pulumi commands
# (components/gateway/members.py). A worker joins once it is healthy and leaves before it is
# stopped, so nginx never routes to a container that is gone. One file per worker under
# MEMBERS/<pool>/; nginx reads them on a graceful reload, and old nginx workers finish their
# streams first.
#
# A canary pool gets a share of its model's requests from a weights file, WEIGHTS/<model>/<pool>.conf:
# nginx hashes each request id into 100 buckets, and the file sends the first PERCENT of them to
# the pool. A pool that loses its last member loses its share in the same reload.
#
# A pool balanced by its prefix-cache router (components/gateway/routing.py) has the router's
# `host:port` in ROUTERS/<pool>/address. Its members then join and leave the router too, through
# its worker API, and each one's URL is recorded as RECORDS/<router host_port>/<member>.url (a volume
# the routers mount), which a router reads when it (re)starts (router/start.sh), so it never comes
# back with stale members. Groups that join one pool share its router, and so its record.
#
# Usage: members.sh admit POOL MEMBER SERVER...        e.g. admit chat w0 ci-chat-0:8000 max_fails=2
#        members.sh drain POOL MEMBER ADDRESS TIMEOUT  e.g. drain chat w0 ci-chat-0:8000 120
#        members.sh split MODEL POOL PERCENT           e.g. split chat_model chat-canary 10
#        members.sh promote POOL INTO                  every member of POOL joins INTO, POOL loses its share
# Exit codes:
#   0  done (a drain that timed out still exits 0 after a warning: the container's stop grace
#      is the last bound)
#   2  bad arguments
#   3  nginx refused the config with the member in it (it is left out again)
#   4  the pool's router did not take the member (it is left out of nginx and the router again)
set -eu

MEMBERS=${INFERENCE_STACK_MEMBERS:-/etc/nginx/inference-stack/members}
WEIGHTS=${INFERENCE_STACK_WEIGHTS:-${MEMBERS%/*}/weights}
ROUTERS=${INFERENCE_STACK_ROUTERS:-${MEMBERS%/*}/routers}
RECORDS=${INFERENCE_STACK_ROUTER_RECORDS:-/var/lib/inference-stack/routers}

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
  # Running and waiting (queued) requests together.
  # busybox wget (the alpine image) has no --tries; `timeout` bounds GNU wget's retries too.
  timeout 5 wget -q -T 2 -O - "http://$1/metrics" 2>/dev/null |
    awk '/^vllm:num_requests_(running|waiting)[{ ]/ { s += $NF; n++ } END { if (n) printf "%d", s }'
}

# The pool's router address, when it has one.
router_of() {
  [ -r "$ROUTERS/$1/address" ] && cat "$ROUTERS/$1/address"
}

# Router worker API, bounded. Adding a member it already has (a readmit) is a no-op.
router_has() {
  timeout 10 wget -q -T 5 -O - "http://$1/list_workers" 2>/dev/null | grep -q "\"$2\""
}
router_add() {
  router_has "$1" "$2" || timeout 30 wget -q -T 25 -O /dev/null --post-data= "http://$1/add_worker?url=$2"
}
router_remove() {
  timeout 15 wget -q -T 10 -O /dev/null --post-data= "http://$1/remove_worker?url=$2"
}

# The directory of a router's record: its address, `:` made `_` (routing.record_name).
record_of() {
  echo "$RECORDS/$(echo "$1" | tr : _)"
}

# Takes MEMBER (at http://ADDRESS) out of POOL's router and its record, when POOL has a router.
router_leave() {
  pool=$1 member=$2 address=$3
  router=$(router_of "$pool") || return 0
  rm -f "$(record_of "$router")/$member.url"
  router_remove "$router" "http://$address" ||
    echo "members: warning: the router of $pool ($router) did not answer; its health check drops $member" >&2
}

# Puts MEMBER into POOL's router and its record, when POOL has a router; non-zero if it refuses.
router_join() {
  pool=$1 member=$2 address=$3
  router=$(router_of "$pool") || return 0
  record=$(record_of "$router")
  mkdir -p "$record"
  printf 'http://%s\n' "$address" >"$record/$member.url.tmp"
  mv "$record/$member.url.tmp" "$record/$member.url"
  router_add "$router" "http://$address" || {
    rm -f "$record/$member.url"
    return 1
  }
}

# The address a member file names: the first word after `server`.
address_of() {
  read -r _ address _ <"$1"
  echo "${address%;}"
}

# Drops the traffic share of every pool in $@ that has no member left.
unshare_empty() {
  for p in "$@"; do
    for f in "$MEMBERS/$p"/*.conf; do
      [ -e "$f" ] && continue 2
    done
    rm -f "$WEIGHTS"/*/"$p.conf"
  done
}

[ "$#" -ge 3 ] || die 2 "usage: members.sh admit POOL MEMBER SERVER... | drain POOL MEMBER ADDRESS TIMEOUT | split MODEL POOL PERCENT | promote POOL INTO"
action=$1 pool=$2 member=$3
shift 3
case $pool$member in
  *[!A-Za-z0-9_.-]*) die 2 "POOL, MEMBER and MODEL may hold only letters, digits, . _ and -" ;;
esac
file=$MEMBERS/$pool/$member.conf

case $action in
  admit)
    [ "$#" -ge 1 ] || die 2 "admit needs the server address (and its parameters)"
    mkdir -p "$MEMBERS/$pool"
    # A worker is in one pool only: admitting it elsewhere (a promoted canary) moves it.
    left=""
    for old in "$MEMBERS"/*/"$member.conf"; do
      [ -e "$old" ] && [ "$old" != "$file" ] || continue
      moved_from=$(address_of "$old")
      rm -f "$old"
      old=${old%/*}
      (router_leave "${old##*/}" "$member" "$moved_from")
      left="$left ${old##*/}"
    done
    # shellcheck disable=SC2086 # pool names are one word each
    unshare_empty $left
    printf 'server %s;\n' "$*" >"$file.tmp"
    mv "$file.tmp" "$file"
    if ! reload; then
      rm -f "$file"
      cat /tmp/members-nginx-t.err >&2
      die 3 "nginx refused $member in pool $pool; left it out"
    fi
    if ! (router_join "$pool" "$member" "$1"); then
      rm -f "$file"
      reload || true
      die 4 "the router of $pool ($(router_of "$pool")) did not take $member; left it out"
    fi
    echo "members: $member joined $pool ($1)"
    ;;
  drain)
    [ "$#" -eq 2 ] || die 2 "drain needs ADDRESS and TIMEOUT"
    address=$1 timeout=$2
    case $timeout in '' | *[!0-9]*) die 2 "TIMEOUT must be whole seconds, not '$timeout'" ;; esac
    # Out of the router first: it sends nothing new to the member from here on.
    (router_leave "$pool" "$member" "$address")
    if [ -e "$file" ]; then
      rm -f "$file"
      unshare_empty "$pool"
      reload || die 3 "nginx refused the config without $member: $(cat /tmp/members-nginx-t.err)"
    fi
    # Done at the second poll in a row that finds nothing running or waiting: a request nginx sent
    # just before its reload may still be in vLLM's HTTP layer, counted nowhere, for a moment;
    # stopped then, vLLM would answer it 500, which nginx cannot retry.
    waited=0 idle=0
    while :; do
      now=$(running "$address")
      if [ -z "$now" ]; then
        echo "members: $member left $pool; no running requests after ${waited}s"
        exit 0
      fi
      if [ "$now" -eq 0 ]; then
        idle=$((idle + 1))
        if [ "$idle" -ge 2 ]; then
          echo "members: $member left $pool; 0 running requests after ${waited}s"
          exit 0
        fi
      else
        idle=0
      fi
      if [ "$waited" -ge "$timeout" ]; then
        echo "members: warning: $member still runs $now requests after ${timeout}s; stopping it anyway" >&2
        exit 0
      fi
      sleep 1
      waited=$((waited + 1))
    done
    ;;
  split)
    # Here POOL is the model and MEMBER the pool: `split MODEL POOL PERCENT`.
    model=$pool pool=$member
    [ "$#" -eq 1 ] || die 2 "split needs PERCENT"
    case $1 in '' | *[!0-9]*) die 2 "PERCENT must be a whole number from 0 to 100, not '$1'" ;; esac
    [ "$1" -le 100 ] || die 2 "PERCENT must be a whole number from 0 to 100, not '$1'"
    mkdir -p "$WEIGHTS/$model"
    target=$WEIGHTS/$model/$pool.conf
    i=0
    : >"$target.tmp"
    while [ "$i" -lt "$1" ]; do
      printf '%s %s;\n' "$i" "$(echo "$pool" | tr -c 'A-Za-z0-9_\n' _)" >>"$target.tmp"
      i=$((i + 1))
    done
    mv "$target.tmp" "$target"
    [ "$1" -gt 0 ] || rm -f "$target"
    reload || die 3 "nginx refused the split of $model: $(cat /tmp/members-nginx-t.err)"
    echo "members: $pool gets $1 % of $model"
    ;;
  promote)
    # `promote POOL INTO`: POOL's members join INTO.
    into=$member
    [ "$#" -eq 0 ] || die 2 "promote takes POOL and INTO only"
    mkdir -p "$MEMBERS/$into"
    moved=0
    for f in "$MEMBERS/$pool"/*.conf; do
      [ -e "$f" ] || continue
      name=${f##*/} address=$(address_of "$f")
      (router_join "$into" "${name%.conf}" "$address") || die 4 "the router of $into did not take ${name%.conf}"
      mv "$f" "$MEMBERS/$into/$name"
      (router_leave "$pool" "${name%.conf}" "$address")
      moved=$((moved + 1))
    done
    unshare_empty "$pool"
    reload || die 3 "nginx refused the promotion of $pool: $(cat /tmp/members-nginx-t.err)"
    echo "members: $moved workers of $pool joined $into"
    ;;
  *) die 2 "unknown action '$action': admit, drain, split or promote" ;;
esac
