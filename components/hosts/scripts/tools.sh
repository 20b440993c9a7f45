#!/usr/bin/env bash
# Give the host the pinned download tools (huggingface_hub's `hf`, boto3) in a venv of their own,
# so pre-fetching weights never depends on, or changes, the system's Python packages.
#
# Usage: tools.sh VENV HUB_VERSION BOTO3_VERSION   e.g. tools.sh /opt/inference-stack/venv 1.1.5 1.44.8
# Exit codes:
#   0   VENV holds exactly these versions (installed now or before)
#   1   unexpected failure (the failing command's own message comes first)
#   2   bad arguments
#   10  apt-get could not install python3-venv
#   13  python3, the venv or pip install failed, or the installed `hf` is missing or does not run
set -euo pipefail

die() {
  local code=$1
  shift
  printf 'tools: error: %s\n' "$*" >&2
  exit "$code"
}

[ "$#" -eq 3 ] || die 2 "usage: tools.sh VENV HUB_VERSION BOTO3_VERSION"
venv=$1
hub_version=$2
boto3_version=$3
[[ $venv == /* && $venv != *[[:space:]]* ]] || die 2 "VENV must be an absolute path without spaces, not '$venv'"
for v in "$hub_version" "$boto3_version"; do
  [[ $v =~ ^[0-9][A-Za-z0-9.+!-]*$ ]] || die 2 "'$v' is not a version number"
done

readonly STAMP="$venv/.inference-stack-tools"
wanted="huggingface_hub==$hub_version boto3==$boto3_version"

if [ -x "$venv/bin/python" ] && [ -x "$venv/bin/hf" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
  echo "tools: $venv already has $wanted"
  exit 0
fi

venv_usable() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1
}

if ! venv_usable; then
  command -v python3 >/dev/null || die 13 "python3 not found on this host"
  # Never build a venv over a directory that holds something else: --clear would empty it.
  clear=()
  if [ -f "$venv/pyvenv.cfg" ]; then
    clear=(--clear)
  elif [ -d "$venv" ] && [ -n "$(ls -A "$venv")" ]; then
    die 13 "$venv exists, is not empty and is not a venv; choose another tools venv path"
  fi
  # Debian and Ubuntu split ensurepip out of python3; without it `python3 -m venv` fails.
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    command -v apt-get >/dev/null || die 13 "python3 has no venv/ensurepip module and there is no apt-get to install python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update >&2 || die 10 "apt-get update failed (see above)"
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 install -y python3-venv >&2 ||
      die 10 "apt-get could not install python3-venv"
    echo "tools: installed python3-venv"
  fi
  # --clear rebuilds a venv left half-made by an earlier failure (for example without ensurepip).
  python3 -m venv "${clear[@]}" "$venv" >&2 || die 13 "python3 -m venv $venv failed (see above)"
  echo "tools: created venv $venv"
fi

# shellcheck disable=SC2086 # $wanted is the two requirement words, split on purpose
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $wanted >&2 ||
  die 13 "pip could not install $wanted into $venv (see above)"
# prefetch-hf.sh runs `hf download`, which huggingface_hub ships from 0.34 on.
[ -x "$venv/bin/hf" ] || die 13 "huggingface_hub==$hub_version installed no 'hf' command (it needs 0.34 or later)"
# Run it once: an unpinned transitive dependency can leave a CLI that cannot even import, and
# that should fail here, not later in the middle of a weights download.
"$venv/bin/hf" --help >/dev/null 2>&1 || die 13 "$venv/bin/hf does not run (try: $venv/bin/hf --help); a dependency of huggingface_hub==$hub_version may be missing"

printf '%s\n' "$wanted" >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"
echo "tools: installed $wanted into $venv"
