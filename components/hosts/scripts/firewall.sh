#!/usr/bin/env bash
# Check that the worker ports this host publishes are not open to everyone: a worker speaks
# plain HTTP to the gateway, and only the gateway should reach it.
#
# Usage: firewall.sh PORTS GATEWAY_ADDRESS       e.g. firewall.sh 8000,8001 10.0.0.5
#   PORTS is a comma list (empty: nothing published); GATEWAY_ADDRESS may be empty (unknown).
# Exit codes:
#   0   no exposure found (nftables findings and unreadable rules are warnings on stderr)
#   1   unexpected failure (the failing command's own message comes first)
#   2   bad arguments
#   7   ufw is active and allows a worker port from Anywhere
set -euo pipefail

die() {
  local code=$1
  shift
  printf 'firewall: error: %s\n' "$*" >&2
  exit "$code"
}

warn() {
  printf 'firewall: warning: %s\n' "$*" >&2
}

[ "$#" -eq 2 ] || die 2 "usage: firewall.sh PORTS GATEWAY_ADDRESS"
ports_csv=$1
gateway=$2
if [ -z "$ports_csv" ]; then
  echo "firewall: no published worker ports"
  exit 0
fi
[[ $ports_csv =~ ^[0-9]+(,[0-9]+)*$ ]] || die 2 "PORTS must be a comma list of port numbers, not '$ports_csv'"
IFS=, read -r -a raw_ports <<<"$ports_csv"
ports=()
for port in "${raw_ports[@]}"; do
  ((10#$port >= 1 && 10#$port <= 65535)) || die 2 "port $port is out of range"
  ports+=("$((10#$port))")
done
[[ -z $gateway || $gateway =~ ^[A-Za-z0-9:._/-]+$ ]] || die 2 "GATEWAY_ADDRESS must be an address, not '$gateway'"
source_hint=${gateway:-<gateway address>}
# ufw and nft print translated text under a host locale; the parsing below reads English.
export LC_ALL=C LANGUAGE=

# Does a ufw port spec (8000, 8000:8010, 8000,8001) cover PORT?
spec_covers() {
  local spec=$1 port=$2 item
  local -a items
  IFS=, read -r -a items <<<"$spec"
  for item in "${items[@]}"; do
    if [[ $item =~ ^([0-9]+):([0-9]+)$ ]]; then
      ((port >= BASH_REMATCH[1] && port <= BASH_REMATCH[2])) && return 0
    elif [[ $item =~ ^[0-9]+$ ]]; then
      ((item == port)) && return 0
    fi
  done
  return 1
}

check_ufw() {
  local text=$1 line to action direction from to_spec spec proto port rule exposed=0 seen=" "
  if [[ $text == *"Default: allow (incoming)"* ]]; then
    printf 'firewall: error: ufw allows every port from Anywhere (default incoming policy: allow), so worker ports %s are open; only the gateway should reach them. Fix: ufw default deny incoming, then for each port: ufw allow from %s to any port PORT proto tcp\n' \
      "$ports_csv" "$source_hint" >&2
    exit 7
  fi
  local rules=0
  while IFS= read -r line; do
    if [ "$rules" -eq 0 ]; then
      [[ $line =~ ^--[[:space:]] ]] && rules=1
      continue
    fi
    line=${line%%#*}
    [[ $line =~ ^(.*[^[:space:]])[[:space:]]+(ALLOW|LIMIT|DENY|REJECT)([[:space:]]+(IN|OUT|FWD))?[[:space:]]+(.*[^[:space:]])[[:space:]]*$ ]] || continue
    to=${BASH_REMATCH[1]}
    action=${BASH_REMATCH[2]}
    direction=${BASH_REMATCH[3]}
    from=${BASH_REMATCH[5]}
    # LIMIT only rate-limits: the port is still open to everyone.
    [[ $action == ALLOW || $action == LIMIT ]] || continue
    [[ -z $direction || $direction =~ IN$ ]] || continue
    [[ $from == Anywhere || $from == "Anywhere (v6)" || $from == "Anywhere on "* ]] || continue
    to_spec=${to%% *}
    spec=${to_spec%%/*}
    proto=""
    [[ $to_spec == */* ]] && proto=${to_spec#*/}
    [ "$proto" != udp ] || continue
    for port in "${ports[@]}"; do
      if [ "$spec" = Anywhere ] || spec_covers "$spec" "$port"; then
        rule="${action,,} $to_spec"
        [[ $seen == *" $port:$rule "* ]] && continue
        seen+="$port:$rule "
        printf 'firewall: error: ufw allows worker port %s from Anywhere (rule: %s %s %s); only the gateway should reach it. Fix: ufw delete %s && ufw allow from %s to any port %s proto tcp\n' \
          "$port" "$to" "$action$direction" "$from" "$rule" "$source_hint" "$port" >&2
        exposed=1
      fi
    done
  done <<<"$text"
  [ "$exposed" -eq 0 ] || exit 7
  echo "firewall: ufw active; worker ports $ports_csv are not open to Anywhere"
  # Docker's published ports are DNATed before ufw's INPUT rules see them, so ufw alone does
  # not filter them; say so rather than let "ok" read as "protected".
  warn "Docker-published ports bypass ufw's input rules: publish worker ports on a private address or filter them in the DOCKER-USER chain"
}

# Docker writes rules naming every published port into its own chains; only the operator's
# chains, DOCKER-USER included, say anything about who may connect.
operator_rules() {
  awk '
    /^[[:space:]]*chain[[:space:]]/ { skip = ($2 ~ /^DOCKER/ && $2 != "DOCKER-USER") }
    !skip && /dport/ { print }
    /^[[:space:]]*}[[:space:]]*$/ { skip = 0 }
  '
}

check_nft() {
  local ruleset=$1 rules port unmentioned=()
  rules=$(printf '%s\n' "$ruleset" | operator_rules)
  for port in "${ports[@]}"; do
    [[ $rules =~ (^|[^0-9])$port([^0-9]|$) ]] || unmentioned+=("$port")
  done
  if [ "${#unmentioned[@]}" -eq 0 ]; then
    echo "firewall: nftables rules mention worker ports $ports_csv; make sure they admit only ${source_hint}"
  else
    warn "no nftables rule mentions worker port(s) ${unmentioned[*]}; if nothing else filters them, anyone can reach them: admit only ${source_hint}"
    echo "firewall: nftables present; ${#unmentioned[@]} worker port(s) unmentioned (see warning)"
  fi
}

if command -v ufw >/dev/null; then
  if ufw_status=$(ufw status verbose 2>&1); then
    if [[ $ufw_status == "Status: active"* ]]; then
      check_ufw "$ufw_status"
      exit 0
    fi
  else
    warn "could not read ufw's rules (ufw status: ${ufw_status%%$'\n'*}); not root?"
  fi
fi

if command -v nft >/dev/null; then
  if ruleset=$(nft list ruleset 2>&1); then
    if [ -n "$ruleset" ]; then
      check_nft "$ruleset"
      exit 0
    fi
  else
    warn "could not read the nftables ruleset (${ruleset%%$'\n'*}); not root?"
  fi
fi

echo "firewall: no ufw/nftables found; restrict $ports_csv to ${source_hint} in your network firewall"
