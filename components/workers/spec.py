"""Pure functions that turn a worker's placement into its container spec.

Kept free of Pulumi so tests (and `make render`) can check a command line without a runtime.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from components.hardening import Health
from stacks.config import LmCacheConfig, WorkerGroup
from stacks.placement import Placement

HERE = Path(__file__).parent / "files"
APP_DIR = "/opt/inference-stack"
SECRETS_DIR = "/run/secrets"
HF_HOME = "/root/.cache/huggingface"
VLLM_CACHE_ROOT = "/root/.cache/vllm"
# A worker's stop grace after its drain: what a drain that timed out left running may finish.
GRACE_SECONDS = 60
# The two-tier healthcheck has one name: its file, its path in the container, its upload.
HEALTHCHECK_PATH = f"{APP_DIR}/healthcheck.py"
ENTRYPOINT_PATH = f"{APP_DIR}/entrypoint.sh"
API_KEY_PATH = f"{SECRETS_DIR}/vllm-api-key"
HF_TOKEN_PATH = f"{SECRETS_DIR}/hf-token"


def healthcheck_source() -> str:
    return (HERE / "healthcheck.py").read_text()


def entrypoint_source() -> str:
    return (HERE / "entrypoint.sh").read_text()


LMCACHE_CONFIG_PATH = f"{SECRETS_DIR}/lmcache.yaml"
# vLLM 0.32's connector for LMCache; `kv_both` stores and loads. No secret may go in this JSON:
# vLLM logs its arguments.
KV_TRANSFER_CONFIG = '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}'


def lmcache_yaml(lm: LmCacheConfig, redis_url: str) -> str:
    """LMCache's config file (`LMCACHE_CONFIG_FILE`): the only place the Redis password goes."""
    return (
        f"chunk_size: {lm.chunk_size}\n"
        f"local_cpu: {'true' if lm.local_cpu else 'false'}\n"
        f"max_local_cpu_size: {lm.max_local_cpu_size_gb:g}\n"
        f'remote_url: "{redis_url}"\n'
        "remote_serde: naive\n"
    )


def tracing_args(otlp_endpoint: str, detailed: Sequence[str] = ()) -> list[str]:
    """vLLM's own OpenTelemetry export: a span per request, parented on the `traceparent` the
    gateway passes through, sent over OTLP gRPC (vLLM's default protocol)."""
    args = ["--otlp-traces-endpoint", otlp_endpoint]
    if detailed:
        args += ["--collect-detailed-traces", *detailed]
    return args


def vllm_args(
    group: WorkerGroup, kv_offload: bool = False, tracing: Sequence[str] = (), scale_out: bool = False
) -> list[str]:
    """The `vllm serve` arguments; secrets are not among them (see entrypoint.sh). `tracing` is
    what `tracing_args` gives, or nothing. `scale_out` serves `/v1/chat/completions/render` and
    `/v1/completions/render` (vLLM 0.32's `--enable-scale-out`, vllm/entrypoints/scale_out/
    factories.py), which the prefix-cache router calls on every worker to tokenize each prompt;
    it also registers `/inference/v1/generate`, which only the workers' own network reaches."""
    m = group.model
    options = {
        "--revision": m.revision,
        "--served-model-name": m.served_name,
        "--host": "0.0.0.0",
        "--port": str(group.port),
        "--dtype": m.dtype,
        "--max-model-len": str(m.max_model_len),
        "--max-num-seqs": str(m.max_num_seqs),
        "--tensor-parallel-size": str(m.tensor_parallel_size),
        "--uvicorn-log-level": group.log_level.lower(),
    }
    # The model is positional: vLLM 0.32 deprecates `--model` for `vllm serve` and warns on it.
    args = [m.id]
    for flag, value in options.items():
        args += [flag, value]
    if m.quantization != "none":
        args += ["--quantization", m.quantization]
    if group.accelerator == "nvidia":
        args += ["--gpu-memory-utilization", f"{group.gpu_memory_utilization:g}"]
    if kv_offload:
        args += ["--kv-transfer-config", KV_TRANSFER_CONFIG]
    if scale_out:
        args.append("--enable-scale-out")
    return args + list(tracing) + list(group.extra_args)


def worker_env(group: WorkerGroup, kv_offload: bool = False) -> list[str]:
    env = {
        "HF_HOME": HF_HOME,
        "VLLM_CACHE_ROOT": VLLM_CACHE_ROOT,
        "VLLM_LOGGING_LEVEL": group.log_level,
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if group.model.offline():
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
    if group.accelerator == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(group.cpu_kv_cache_space_gib)
    if kv_offload:
        env["LMCACHE_CONFIG_FILE"] = LMCACHE_CONFIG_PATH
        # LMCache logs its whole config (Redis URL included) at INFO, and its usage telemetry
        # would send that URL off-site: keep both quiet.
        env["LMCACHE_LOG_LEVEL"] = "WARNING"
        env["LMCACHE_TRACK_USAGE"] = "false"
    return [f"{k}={v}" for k, v in sorted(env.items())]


def healthcheck_test(group: WorkerGroup) -> list[str]:
    # The HTTP timeout leaves a margin inside Docker's own timeout, so a slow model reports
    # "timed out" in the health log instead of being killed without a word.
    http_timeout = max(1, group.health.timeout_seconds - 2)
    return [
        "CMD",
        "python3",
        HEALTHCHECK_PATH,
        "--url",
        f"http://127.0.0.1:{group.port}",
        "--model",
        group.model.served_name,
        "--timeout",
        str(http_timeout),
        "--probe-every",
        str(group.health.probe_every_minutes * 60),
        "--api-key-file",
        API_KEY_PATH,
    ]


def shm_size_mb(group: WorkerGroup) -> int:
    if group.shm_size_mb is not None:
        return group.shm_size_mb
    return max(1024, 2048 * group.gpus_per_worker())


def health(group: WorkerGroup) -> Health:
    h = group.health
    return Health(healthcheck_test(group), h.interval_seconds, h.timeout_seconds, h.retries, group.start_period())


def wait_timeout_seconds(group: WorkerGroup) -> int:
    """How long `pulumi up` waits for healthy: the start period plus every retry, with margin."""
    h = group.health
    return group.start_period() + h.retries * (h.interval_seconds + h.timeout_seconds) + 60


def labels(placement: Placement, stack: str) -> dict[str, str]:
    g = placement.group
    return {
        "inference-stack.stack": stack,
        "inference-stack.group": g.name,
        "inference-stack.host": placement.host.name,
        "inference-stack.replica": str(placement.index),
        "inference-stack.model": g.model.served_name,
        "inference-stack.gpus": ",".join(placement.devices),
        "inference-stack.accelerator": g.accelerator,
        # What the policy pack reads: which containers are vLLM workers, and the cold start the
        # healthcheck's start period must cover.
        "inference-stack.role": "worker",
        "inference-stack.cold-start-seconds": str(g.model.cold_start_seconds),
    }


def fingerprint(
    group: WorkerGroup, kv_offload: bool = False, tracing: Sequence[str] = (), scale_out: bool = False
) -> str:
    """A short hash of what a worker's container is made of (its image, command, environment,
    limits, healthcheck and scripts), as the `inference-stack.spec` label: `layout.seat` moves a
    worker to a spare GPU only when this changes, which is when Pulumi replaces it anyway."""
    made_of = {
        "image": group.image,
        "args": vllm_args(group, kv_offload, tracing, scale_out),
        "env": worker_env(group, kv_offload),
        "health": [healthcheck_test(group), group.health.model_dump(), group.start_period()],
        "limits": [group.resources.model_dump(), shm_size_mb(group), group.max_restarts, group.logs.model_dump()],
        "port": group.port,
        "scripts": [healthcheck_source(), entrypoint_source()],
    }
    return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()[:16]
