"""Which extra vLLM flags a stack may pass, checked against the pinned release (vLLM 0.32).

An allowlist rather than a pass-through: a misspelt flag makes vLLM exit at start, which on a
fleet means every worker crash-loops after a long image pull. `tests/components/workers/
test_vllm_flags.py` proves every flag here exists in `vllm serve --help=all` of 0.32.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

VLLM_RELEASE = "0.32.0"

# Flags the component sets from typed config; passing them again would fight the schema.
MANAGED: dict[str, str] = {
    "--model": "workers[].model.id",
    "--served-model-name": "workers[].model.servedName",
    "--revision": "workers[].model.revision",
    "--quantization": "workers[].model.quantization",
    "--dtype": "workers[].model.dtype",
    "--max-model-len": "workers[].model.maxModelLen",
    "--max-num-seqs": "workers[].model.maxNumSeqs",
    "--tensor-parallel-size": "workers[].model.tensorParallelSize",
    "--gpu-memory-utilization": "workers[].gpuMemoryUtilization",
    "--api-key": "the `vllmApiKey` secret",
    "--host": "nothing: workers listen on all container interfaces, reached only over the stack's network",
    "--port": "workers[].port",
    "--download-dir": "hosts[].modelCachePath",
    "--uvicorn-log-level": "workers[].logLevel",
    "--log-level": "workers[].logLevel",
    "--otlp-traces-endpoint": "observability.tracing.enabled (the stack's Jaeger)",
    "--collect-detailed-traces": "observability.tracing.collectDetailedTraces",
}

# Refused outright, with the reason.
DENIED: dict[str, str] = {
    "--trust-remote-code": "runs Python from the model repository inside the worker; not allowed from config",
    "--allowed-origins": "CORS belongs on the gateway, not on workers",
    "--ssl-keyfile": "TLS terminates at the gateway",
    "--ssl-certfile": "TLS terminates at the gateway",
}

ALLOWED: frozenset[str] = frozenset(
    {
        "--enable-prefix-caching",
        "--no-enable-prefix-caching",
        "--enable-chunked-prefill",
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        "--block-size",
        "--kv-cache-dtype",
        "--kv-cache-memory-bytes",
        "--enforce-eager",
        "--seed",
        "--pipeline-parallel-size",
        "--data-parallel-size",
        "--enable-expert-parallel",
        "--load-format",
        "--tokenizer",
        "--tokenizer-mode",
        "--tokenizer-revision",
        "--chat-template",
        "--generation-config",
        "--override-generation-config",
        "--max-logprobs",
        "--disable-log-stats",
        "--enable-log-requests",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "--reasoning-parser",
        "--speculative-config",
        "--structured-outputs-config",
        "--disable-uvicorn-access-log",
        "--compilation-config",
        "--kv-transfer-config",
        "--enable-lora",
        "--max-loras",
        "--max-lora-rank",
        "--lora-modules",
        "--limit-mm-per-prompt",
        "--long-prefill-token-threshold",
        "--async-scheduling",
        "--cpu-offload-gb",
        "--disable-custom-all-reduce",
        "--response-role",
        "--return-tokens-as-token-ids",
        "--enable-request-id-headers",
    }
)


@dataclass(frozen=True)
class FlagProblem:
    arg: str
    rule: str
    fix: str


def flag_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def check_extra_args(args: list[str]) -> list[FlagProblem]:
    problems = []
    for arg in args:
        if not arg.startswith("-"):
            continue  # the value of the flag before it
        name = flag_name(arg)
        if name in MANAGED:
            problems.append(FlagProblem(arg, f"`{name}` is set by the stack", f"set {MANAGED[name]} instead"))
        elif name in DENIED:
            problems.append(FlagProblem(arg, f"`{name}` is refused: {DENIED[name]}", "remove it"))
        elif name not in ALLOWED:
            close = difflib.get_close_matches(name, sorted(ALLOWED | set(MANAGED)), n=1, cutoff=0.7)
            hint = f"did you mean `{close[0]}`?" if close else "see ALLOWED in components/workers/vllm_flags.py"
            problems.append(
                FlagProblem(
                    arg,
                    f"`{name}` is not a vLLM {VLLM_RELEASE} flag on the allowlist",
                    hint,
                )
            )
    return problems
