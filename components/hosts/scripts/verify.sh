#!/usr/bin/env bash
# Prove that a container on this host sees the GPUs and a working CUDA driver stack, before any
# worker starts: without it vLLM would quietly fall back to the CPU or crash at load time.
#
# Usage: verify.sh CUDA_IMAGE                e.g. verify.sh nvidia/cuda:12.9.1-base-ubuntu24.04
# stdout is exactly what the deployment parses: one CSV line per GPU
#   (index,uuid,name,memory.total,driver_version,compute_cap,mig.mode.current), then `uvm=ok`.
#   Status lines therefore go to stderr.
# Exit codes:
#   0   the container saw the GPUs and /dev/nvidia-uvm
#   1   unexpected failure (the failing command's own message comes first)
#   2   bad arguments
#   4   nvidia-smi -L failed on the host: the NVIDIA driver is not installed or not loaded
#   5   CUDA check failed: /dev/nvidia-uvm is missing inside the container
#   9   docker run --gpus all failed, or printed something other than the GPU list
set -euo pipefail

readonly QUERY=index,uuid,name,memory.total,driver_version,compute_cap,mig.mode.current
# The container exits with this when the UVM device is missing; nvidia-smi and docker use
# neither it nor anything near it, so it cannot be confused with their failures.
readonly UVM_MISSING=97

die() {
  local code=$1
  shift
  printf 'verify: error: %s\n' "$*" >&2
  exit "$code"
}

status() {
  printf 'verify: %s\n' "$*" >&2
}

[ "$#" -eq 1 ] || die 2 "usage: verify.sh CUDA_IMAGE"
image=$1
[[ $image =~ ^[A-Za-z0-9][^[:space:]]*$ ]] || die 2 "CUDA_IMAGE must be an image reference, not '$image'"

command -v nvidia-smi >/dev/null || die 4 "nvidia-smi not found: the NVIDIA driver is not installed on this host"
if ! listing=$(nvidia-smi -L 2>&1); then
  die 4 "nvidia-smi -L failed: the NVIDIA driver is not loaded on this host (${listing%%$'\n'*})"
fi
host_gpus=$(printf '%s\n' "$listing" | grep -c '^GPU ' || true)
[ "$host_gpus" -gt 0 ] || die 4 "nvidia-smi -L lists no GPU: ${listing%%$'\n'*}"
status "host driver ok ($host_gpus GPU(s))"

command -v docker >/dev/null || die 9 "docker not found on this host"
# nvidia-smi alone passes on a host whose CUDA stack is broken; /dev/nvidia-uvm exists in the
# container only when the nvidia-uvm module is loaded, which CUDA needs for every allocation.
inner="nvidia-smi --query-gpu=$QUERY --format=csv,noheader,nounits || exit \$?
if [ -e /dev/nvidia-uvm ]; then echo uvm=ok; else exit $UVM_MISSING; fi"

rc=0
output=$(docker run --rm --gpus all "$image" sh -c "$inner") || rc=$?
if [ "$rc" -eq "$UVM_MISSING" ]; then
  die 5 "CUDA check failed: /dev/nvidia-uvm missing inside the container; the CUDA driver stack is not working (is the nvidia-uvm module loaded? try 'nvidia-modprobe -u -c=0' and check dmesg)"
fi
[ "$rc" -eq 0 ] || die 9 "docker run --rm --gpus all $image failed (exit $rc); check the NVIDIA Container Toolkit (toolkit.sh, runtime.sh) and that the image exists"

last=$(printf '%s\n' "$output" | tail -n 1)
gpu_lines=$(printf '%s\n' "$output" | grep -vc '^uvm=ok$' || true)
[ "$last" = "uvm=ok" ] || die 9 "the check in $image did not finish with uvm=ok"
[ "$gpu_lines" -gt 0 ] || die 9 "nvidia-smi in $image listed no GPU"
if [ "$gpu_lines" -ne "$host_gpus" ]; then
  status "warning: the container saw $gpu_lines GPU(s), the host lists $host_gpus"
fi
status "CUDA ok in $image ($gpu_lines GPU(s), /dev/nvidia-uvm present)"
printf '%s\n' "$output"
