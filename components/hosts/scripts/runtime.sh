#!/usr/bin/env bash
# Register the NVIDIA runtime with Docker and give container logs a rotation default, changing
# only what this needs in /etc/docker/daemon.json (the host's own settings win), and restart
# Docker only when the file's meaning changed: a restart stops every running container.
#
# Usage: runtime.sh LOG_MAX_SIZE LOG_MAX_FILE      e.g. runtime.sh 100m 5
# Exit codes:
#   0   configured; Docker restarted only if daemon.json changed
#   1   unexpected failure (the failing command's own message comes first)
#   2   bad arguments
#   8   /etc/docker/daemon.json is not a valid JSON object (it is left untouched)
#   14  nvidia-ctk is missing or failed (install the toolkit first: toolkit.sh)
#   15  systemctl restart docker failed
set -euo pipefail

readonly DAEMON_JSON=/etc/docker/daemon.json

die() {
  local code=$1
  shift
  printf 'runtime: error: %s\n' "$*" >&2
  exit "$code"
}

[ "$#" -eq 2 ] || die 2 "usage: runtime.sh LOG_MAX_SIZE LOG_MAX_FILE (e.g. 100m 5)"
max_size=$1
max_file=$2
[[ $max_size =~ ^[1-9][0-9]*[kmg]?$ ]] || die 2 "LOG_MAX_SIZE must be a size like 100m, not '$max_size'"
[[ $max_file =~ ^[1-9][0-9]*$ ]] || die 2 "LOG_MAX_FILE must be a positive integer, not '$max_file'"
command -v python3 >/dev/null || die 1 "python3 is required to edit $DAEMON_JSON"
command -v nvidia-ctk >/dev/null || die 14 "nvidia-ctk not found: install the NVIDIA Container Toolkit first (toolkit.sh)"

# The digest is of the parsed JSON, so nvidia-ctk re-indenting the file is not a change that
# restarts Docker; only a different meaning is.
read -r -d '' DIGEST_PY <<'PY' || true
import hashlib, json, sys
path = sys.argv[1]
try:
    with open(path, encoding="utf-8") as f:
        text = f.read()
except FileNotFoundError:
    print("absent")
    sys.exit(0)
try:
    config = json.loads(text) if text.strip() else {}
except ValueError as error:
    print(f"runtime: error: {path} is not valid JSON ({error}); fix it by hand, it was left untouched", file=sys.stderr)
    sys.exit(8)
if not isinstance(config, dict):
    print(f"runtime: error: {path} must hold a JSON object; fix it by hand, it was left untouched", file=sys.stderr)
    sys.exit(8)
print(hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest())
PY

# Adds only missing keys. A host that chose another log driver keeps it and its options:
# json-file's max-size/max-file would be wrong or invalid for that driver.
read -r -d '' MERGE_PY <<'PY' || true
import json, os, sys, tempfile
path, max_size, max_file = sys.argv[1:4]
def fail(message):
    print(f"runtime: error: {path}: {message}; fix it by hand, it was left untouched", file=sys.stderr)
    sys.exit(8)
try:
    with open(path, encoding="utf-8") as f:
        text = f.read()
except FileNotFoundError:
    text = ""
try:
    config = json.loads(text) if text.strip() else {}
except ValueError as error:
    fail(f"not valid JSON ({error})")
if not isinstance(config, dict):
    fail("must hold a JSON object")
added = []
if "log-driver" not in config:
    config["log-driver"] = "json-file"
    added.append("log-driver")
if config["log-driver"] != "json-file":
    print(f"docker: log-driver is {config['log-driver']!r}, set by this host; its log options are left alone")
else:
    if "log-opts" not in config:
        config["log-opts"] = {}
    opts = config["log-opts"]
    if not isinstance(opts, dict):
        fail("log-opts must be a JSON object")
    for key, value in (("max-size", max_size), ("max-file", max_file)):
        if key not in opts:
            opts[key] = value
            added.append(f"log-opts.{key}")
if added:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".daemon.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=4)
        f.write("\n")
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    print(f"docker: {path}: added {', '.join(added)}")
else:
    print(f"docker: {path}: log rotation already set")
PY

before=$(python3 -c "$DIGEST_PY" "$DAEMON_JSON") || exit
nvidia-ctk runtime configure --runtime=docker >&2 || die 14 "nvidia-ctk runtime configure --runtime=docker failed (see above)"
configured=$(python3 -c "$DIGEST_PY" "$DAEMON_JSON") || exit
if [ "$configured" = "$before" ]; then
  echo "docker: nvidia runtime already registered"
else
  echo "docker: nvidia runtime registered (nvidia-ctk)"
fi
python3 -c "$MERGE_PY" "$DAEMON_JSON" "$max_size" "$max_file" || exit
after=$(python3 -c "$DIGEST_PY" "$DAEMON_JSON") || exit

if [ "$before" = "$after" ]; then
  echo "docker: unchanged"
  exit 0
fi
systemctl restart docker || die 15 "systemctl restart docker failed after $DAEMON_JSON changed; see journalctl -u docker"
echo "docker: restarted (daemon.json changed)"
