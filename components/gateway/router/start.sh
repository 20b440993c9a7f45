#!/bin/sh
# The router's entry point (components/gateway/routing.py). It starts with the members the
# gateway's admit steps recorded on the shared volume, one file per worker holding its URL, so a
# router that Docker restarts (or replaces) comes back with the current workers, not those of its
# first start; admits and drains after that reach it through its API (/add_worker, /remove_worker).
# vllm-router does not wait for a listed worker that is down: its health checker drops it.
set -eu
MEMBERS=${INFERENCE_STACK_ROUTER_MEMBERS:-/members}
urls=""
for f in "$MEMBERS"/*.url; do
  [ -e "$f" ] || continue
  read -r url <"$f" || [ -n "$url" ]
  urls="$urls $url"
done
echo "router: starting with$( [ -n "$urls" ] && echo "$urls" || echo " no workers")" >&2
# shellcheck disable=SC2086 # one URL per word; member files hold no spaces
exec "$@" --worker-urls $urls
