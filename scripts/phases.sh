#!/usr/bin/env bash
# Run `make` targets as named phases, one after another, and print how long each took.
#
#   scripts/phases.sh installs=setup lint='lint typecheck' unit=unit integration=integration
#
# Stops at the first phase that fails (its exit code is kept) and prints the times so far, so a
# CI log always says where the time went.
set -uo pipefail

summary=()
report() {
  printf '\n== phases ==\n'
  printf '%s\n' "${summary[@]}"
}
trap report EXIT

for phase in "$@"; do
  name=${phase%%=*}
  targets=${phase#*=}
  printf '\n== phase %s: make %s ==\n' "$name" "$targets"
  start=$(date +%s)
  # shellcheck disable=SC2086  # the targets are words
  ${MAKE:-make} --no-print-directory $targets
  code=$?
  seconds=$(($(date +%s) - start))
  summary+=("$(printf '%-12s %5d s  %s' "$name" "$seconds" "$([ $code = 0 ] && echo ok || echo "FAILED ($code)")")")
  [ $code = 0 ] || exit $code
done
