#!/bin/sh
# Starts Weaviate with its API keys and S3 credentials read from a secret file, so they are in
# neither `docker inspect` nor argv. Weaviate reads them only from the environment (no _FILE
# variants), so they are exported here, into this process alone, just before exec.
set -eu

secrets=${INFERENCE_STACK_SECRETS_DIR:-/run/secrets}/weaviate.env
if [ ! -r "$secrets" ]; then
    echo "weaviate-start: $secrets is missing; refusing to start without API keys" >&2
    exit 1
fi
set -a
# shellcheck disable=SC1090  # a file the stack generates
. "$secrets"
set +a

exec "${WEAVIATE_BINARY:-/bin/weaviate}" --host 0.0.0.0 --port 8080 --scheme http "$@"
