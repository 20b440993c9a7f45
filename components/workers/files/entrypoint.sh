#!/bin/sh
# Starts `vllm serve` with its secrets read from files uploaded by Pulumi.
# Secrets stay out of `docker inspect` (no env entries in the container config) and out of argv
# (visible to every user on the host through /proc): vLLM reads the key from VLLM_API_KEY.
set -eu

secrets_dir=${INFERENCE_STACK_SECRETS_DIR:-/run/secrets}

if [ -r "$secrets_dir/vllm-api-key" ]; then
    VLLM_API_KEY=$(cat "$secrets_dir/vllm-api-key")
    export VLLM_API_KEY
fi
if [ -r "$secrets_dir/hf-token" ]; then
    HF_TOKEN=$(cat "$secrets_dir/hf-token")
    export HF_TOKEN
fi

exec vllm serve "$@"
