#!/usr/bin/env bash
# Pull the workers' images before any worker starts, so a cold start is model loading rather
# than a multi-gigabyte pull. Tags are pinned by the configuration, so an image already present
# is the right one and is not pulled again.
#
# Usage: pull-images.sh IMAGE...             e.g. pull-images.sh vllm/vllm-openai:v0.32.0
# Exit codes:
#   0   every IMAGE is present
#   1   unexpected failure (the failing command's own message comes first)
#   2   bad arguments
#   11  docker pull failed for an image
set -euo pipefail

die() {
  local code=$1
  shift
  printf 'pull-images: error: %s\n' "$*" >&2
  exit "$code"
}

for image in "$@"; do
  [[ $image =~ ^[A-Za-z0-9][^[:space:]]*$ ]] || die 2 "'$image' is not an image reference"
done
if [ "$#" -eq 0 ]; then
  echo "image: no images requested"
  exit 0
fi
command -v docker >/dev/null || die 11 "docker not found on this host"

for image in "$@"; do
  if docker image inspect "$image" >/dev/null 2>&1; then
    echo "image: $image present"
    continue
  fi
  # docker pull's progress goes to stderr: stdout is one status line per image.
  docker pull "$image" >&2 || die 11 "docker pull $image failed (see above): check the name, the tag and registry access"
  echo "image: $image pulled"
done
