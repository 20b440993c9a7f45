#!/usr/bin/env bash
# Download one model revision into the host's Hugging Face cache before any worker starts, so a
# cold start loads from local disk and vLLM can run offline.
#
# Usage: prefetch-hf.sh REPO REVISION CACHE_DIR VENV    (the HF token, possibly empty, on stdin)
#   REVISION is a 40-hex commit: a branch name would let the weights drift under a pinned config.
#   The token goes to `hf` as a file named by HF_TOKEN_PATH in a private temporary directory; it
#   is never in an argument, an environment variable or the output.
# Exit codes:
#   0   the revision is in the cache (downloaded now or before)
#   1   unexpected failure (the failing command's own message comes first)
#   2   bad arguments (REPO not org/name, REVISION not a 40-hex commit, relative paths)
#   12  VENV has no `hf` (run tools.sh first), or `hf download` failed or left no snapshot
#   130 interrupted (SIGINT); 143 terminated (SIGTERM or SIGHUP); the token file is removed either way
set -euo pipefail

die() {
  local code=$1
  shift
  printf 'prefetch-hf: error: %s\n' "$*" >&2
  exit "$code"
}

[ "$#" -eq 4 ] || die 2 "usage: prefetch-hf.sh REPO REVISION CACHE_DIR VENV (token on stdin)"
repo=$1
revision=$2
cache_dir=$3
venv=$4
[[ $repo =~ ^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$ ]] || die 2 "REPO must look like org/name, not '$repo'"
[[ $revision =~ ^[0-9a-f]{40}$ ]] || die 2 "REVISION must be a 40-hex commit id, not '$revision'"
[[ $cache_dir == /* ]] || die 2 "CACHE_DIR must be an absolute path, not '$cache_dir'"
[[ $venv == /* ]] || die 2 "VENV must be an absolute path, not '$venv'"

# Where huggingface_hub keeps this revision (models--org--name/snapshots/REV), which is where
# vLLM looks for it offline.
snapshot="$cache_dir/hub/models--${repo//\//--}/snapshots/$revision"
marker="$snapshot/.inference-stack-complete"

# Drain stdin when the token is not needed: the caller's write must not fail on a closed pipe.
drain_stdin() {
  [ -t 0 ] || cat >/dev/null
}

if [ -f "$marker" ]; then
  drain_stdin
  echo "weights: $repo@$revision already cached"
  exit 0
fi

hf="$venv/bin/hf"
[ -x "$hf" ] || die 12 "$hf not found: run tools.sh first"

# /run is a root-only tmpfs on systemd hosts, so the token file never reaches a disk there.
base=${TMPDIR:-/tmp}
[ -d /run ] && [ -w /run ] && base=/run
umask 077
secret_dir=$(mktemp -d "$base/inference-stack-hf.XXXXXXXX")
trap 'rm -rf "$secret_dir"' EXIT
# The EXIT trap runs on these signals only when they are trapped.
trap 'exit 130' INT
trap 'exit 143' TERM HUP
token_file="$secret_dir/token"
# cat writes stdin straight to the file: the token never sits in a variable or an argument.
if [ -t 0 ]; then
  : >"$token_file"
else
  cat >"$token_file"
fi

echo "weights: downloading $repo@$revision into $cache_dir/hub"
# HF_TOKEN and its old name would override HF_TOKEN_PATH, so they are unset; hf's progress
# and the path it prints go to stderr so stdout stays the status lines.
env -u HF_TOKEN -u HUGGING_FACE_HUB_TOKEN -u HF_HUB_OFFLINE \
  HF_TOKEN_PATH="$token_file" HF_HUB_DISABLE_TELEMETRY=1 \
  "$hf" download "$repo" --revision "$revision" --cache-dir "$cache_dir/hub" >&2 ||
  die 12 "hf download $repo --revision $revision failed (see above)"
[ -d "$snapshot" ] || die 12 "hf download finished but $snapshot does not exist"
: >"$marker"
# Under sudo the download is root's; the workers run as CACHE_DIR's owner (storage.sh set it)
# and need to write the cache's lock and ref files too.
if [ "$(id -u)" -eq 0 ]; then
  chown -R --reference="$cache_dir" "$cache_dir/hub"
fi
echo "weights: $repo@$revision downloaded"
