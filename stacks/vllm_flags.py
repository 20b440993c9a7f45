"""Which extra vLLM flags a stack may pass, checked against the pinned release (vLLM 0.32).

An allowlist rather than a pass-through: a misspelt flag makes vLLM exit at start, which on a
fleet means every worker crash-loops after a long image pull. `tests/stacks/test_vllm_flags.py`
proves every flag here exists in `vllm serve --help=all` of 0.32.

Each allowed flag also has the grammar of what follows it, from how vLLM 0.32 builds its parser
(vllm/engine/arg_utils.py `_compute_kwargs`): a `bool` field becomes an argparse
BooleanOptionalAction, a switch that takes no value; `int` fields are `int` (and
`max_num_batched_tokens`, `kv_cache_memory_bytes` are `human_readable_int`: `2048`, `8k`, `2G`);
`float` is `float`; a `Literal` is argparse `choices`; a config dataclass or `dict` is JSON; the
rest are strings. The values reach vLLM's argv through the container's `command` and
`exec vllm serve "$@"` (entrypoint.sh): no shell reads them, but a stray word becomes a second
model tag, and vLLM exits on it.
"""

from __future__ import annotations

import difflib
import json
import re
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


@dataclass(frozen=True)
class Takes:
    """What follows a flag: one word (`many`: one or more) matching `pattern`, a JSON value, or
    one of `choices`."""

    what: str
    pattern: str = ""
    choices: tuple[str, ...] = ()
    json: bool = False
    many: bool = False
    signed: bool = False
    """Whether a value may start with `-` (a negative integer)."""

    def problem(self, value: str) -> str | None:
        if self.choices:
            return None if value in self.choices else f"one of {', '.join(self.choices)}"
        if self.json:
            return _json_problem(value)
        return None if re.fullmatch(self.pattern, value) else self.what


def _json_problem(value: str) -> str | None:
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    return None if isinstance(parsed, dict) else 'a JSON object like `{"key": 1}`'


SWITCH = None
"""A BooleanOptionalAction or store_true flag: `--x` alone; `--x=true` makes argparse exit."""

INT = Takes("an integer", r"-?[0-9]{1,19}", signed=True)
COUNT = Takes("a positive integer", r"[1-9][0-9]{0,8}")
NON_NEGATIVE = Takes("an integer of 0 or more", r"[0-9]{1,19}")
# vLLM's human_readable_int: a lowercase suffix is decimal and takes decimals (`25.6k`), an
# uppercase one binary (`2G`).
HUMAN_INT = Takes("an integer like `8192`, `8k` or `2G`", r"[0-9]{1,19}|[0-9]+(?:\.[0-9]+)?[kmgt]|[0-9]+[KMGT]")
FLOAT = Takes("a number of 0 or more, like `4` or `2.5`", r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
JSON = Takes("a JSON object", json=True)
# A registered name (a parser, a load format, a role): a plain word, nothing a shell or a path reads.
NAME = Takes("a plain name (letters, digits, `_`, `.`, `-`)", r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
COMMIT = Takes(
    "a 40-hex commit (a branch or tag can move, changing the tokenizer under a pinned model)",
    r"[0-9a-f]{40}",
)
# Inside the container: an absolute path of plain characters, or a Hugging Face repo id.
_PATH = r"/[A-Za-z0-9._+-]+(?:/[A-Za-z0-9._+-]+)*"
_REPO = r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?/)?[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
PATH_OR_REPO = Takes("a Hugging Face repo id or an absolute path in the container", rf"{_PATH}|{_REPO}")
GENERATION_CONFIG = Takes("`auto`, `vllm` or an absolute folder path in the container", rf"auto|vllm|{_PATH}")
# A file path, or the template itself on one line (vLLM loads a path and otherwise takes the
# text as the template): any printable text, but no line breaks or control characters.
TEMPLATE = Takes(
    "a template file path, or the template on one line without control characters", r"[^\x00-\x1f\x7f]{1,32768}"
)
LORA_MODULE = Takes(
    "`name=path` (path a repo id or an absolute path) or a JSON object, one per word",
    rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}=(?:{_PATH}|{_REPO})|\{{.*\}}",
    many=True,
)

# The choices vLLM 0.32's parser lists (`--help=all`; tests/fixtures/vllm-0.32.0-serve-help.txt).
KV_CACHE_DTYPES = (
    "auto", "bfloat16", "float16", "fp8", "fp8_ds_mla", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_per_token_head",
    "int4_per_token_head", "int8_per_token_head", "nvfp4", "nvfp4_4over6", "nvfp4_ds_mla", "turboquant_3bit_nc",
    "turboquant_4bit_nc", "turboquant_k3v4_nc", "turboquant_k8v4", "ultraquant_4bit",
)  # fmt: skip
TOKENIZER_MODES = ("auto", "cohere", "deepseek_v32", "deepseek_v4", "hf", "inkling", "kimi_k3", "mistral")
TOOL_CALL_PARSERS = (
    "apertus", "cohere_command3", "cohere_command4", "deepseek_v3", "deepseek_v31", "deepseek_v32", "deepseek_v4",
    "deepseek_v41", "dots", "ernie45", "functiongemma", "gemma4", "gigachat3", "glm45", "glm47", "granite",
    "granite-20b-fc", "granite4", "hermes", "hf", "hunyuan_a13b", "hy_v3", "hy_v4", "inkling", "internlm", "jamba",
    "k2_horizon", "kimi_k2", "kimi_k3", "lfm2", "ling3", "llama3_json", "llama4_json", "llama4_pythonic", "longcat",
    "mimo", "minicpm5", "minimax_m2", "minimax_m3", "mistral", "muse_glimmer", "olmo3", "openai", "phi4_mini_json",
    "plamo3", "poolside_v1", "pythonic", "qwen3_coder", "qwen3_json", "qwen3_xml", "seed_oss", "step3", "step3p5",
    "xlam",
)  # fmt: skip
MAX_LORA_RANKS = ("1", "8", "16", "32", "64", "128", "256", "320", "512")

# Every flag a stack may pass, and what it takes.
FLAGS: dict[str, Takes | None] = {
    "--enable-prefix-caching": SWITCH,
    "--no-enable-prefix-caching": SWITCH,
    "--enable-chunked-prefill": SWITCH,
    "--no-enable-chunked-prefill": SWITCH,
    "--max-num-batched-tokens": HUMAN_INT,
    "--block-size": COUNT,
    "--kv-cache-dtype": Takes("a KV-cache dtype", choices=KV_CACHE_DTYPES),
    "--kv-cache-memory-bytes": HUMAN_INT,
    "--enforce-eager": SWITCH,
    "--seed": INT,
    "--pipeline-parallel-size": COUNT,
    "--data-parallel-size": COUNT,
    "--enable-expert-parallel": SWITCH,
    "--load-format": NAME,
    "--tokenizer": PATH_OR_REPO,
    "--tokenizer-mode": Takes("a tokenizer mode", choices=TOKENIZER_MODES),
    "--tokenizer-revision": COMMIT,
    "--chat-template": TEMPLATE,
    "--generation-config": GENERATION_CONFIG,
    "--override-generation-config": JSON,
    "--max-logprobs": INT,
    "--disable-log-stats": SWITCH,
    "--enable-log-requests": SWITCH,
    "--enable-auto-tool-choice": SWITCH,
    "--tool-call-parser": Takes("a tool-call parser", choices=TOOL_CALL_PARSERS),
    "--reasoning-parser": NAME,
    "--speculative-config": JSON,
    "--structured-outputs-config": JSON,
    "--disable-uvicorn-access-log": SWITCH,
    "--compilation-config": JSON,
    "--kv-transfer-config": JSON,
    "--enable-lora": SWITCH,
    "--max-loras": COUNT,
    "--max-lora-rank": Takes("a LoRA rank", choices=MAX_LORA_RANKS),
    "--lora-modules": LORA_MODULE,
    "--limit-mm-per-prompt": JSON,
    "--long-prefill-token-threshold": NON_NEGATIVE,
    "--async-scheduling": SWITCH,
    "--cpu-offload-gb": FLOAT,
    "--disable-custom-all-reduce": SWITCH,
    "--response-role": NAME,
    "--return-tokens-as-token-ids": SWITCH,
    "--enable-request-id-headers": SWITCH,
}

ALLOWED: frozenset[str] = frozenset(FLAGS)


@dataclass(frozen=True)
class FlagProblem:
    arg: str
    rule: str
    fix: str


def flag_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def _name_problem(arg: str) -> FlagProblem | None:
    name = flag_name(arg)
    if name in MANAGED:
        return FlagProblem(arg, f"`{name}` is set by the stack", f"set {MANAGED[name]} instead")
    if name in DENIED:
        return FlagProblem(arg, f"`{name}` is refused: {DENIED[name]}", "remove it")
    if name not in ALLOWED:
        close = difflib.get_close_matches(name, sorted(ALLOWED | set(MANAGED)), n=1, cutoff=0.7)
        hint = f"did you mean `{close[0]}`?" if close else "see FLAGS in stacks/vllm_flags.py"
        return FlagProblem(arg, f"`{name}` is not a vLLM {VLLM_RELEASE} flag on the allowlist", hint)
    return None


def _is_value(word: str, takes: Takes) -> bool:
    """Whether argparse hands `word` to the flag before it: anything but an option, and a
    negative number (vLLM's parser has no option that looks like one)."""
    return not word.startswith("-") or (takes.signed and re.fullmatch(r"-[0-9]+", word) is not None)


def _values(args: list[str], i: int, takes: Takes) -> tuple[list[str], int]:
    """The values of the flag at `args[i]`, and the index after them."""
    _, eq, inline = args[i].partition("=")
    if eq:
        return [inline], i + 1
    j = i + 1
    while j < len(args) and _is_value(args[j], takes) and (takes.many or j == i + 1):
        j += 1
    return args[i + 1 : j], j


def _value_problems(flag: str, takes: Takes | None, values: list[str], inline: bool) -> list[FlagProblem]:
    if takes is None:
        if inline:
            return [
                FlagProblem(
                    flag,
                    f"`{flag_name(flag)}` is a switch and takes no value (argparse exits on `=value`)",
                    f"write `{flag_name(flag)}` alone",
                )
            ]
        return []
    if not values:
        return [FlagProblem(flag, f"`{flag}` needs a value: {takes.what}", f"write `{flag} <value>`")]
    problems = []
    for value in values:
        wanted = takes.problem(value)
        if wanted is not None:
            shown = value if len(value) <= 80 else value[:77] + "..."
            problems.append(
                FlagProblem(
                    value,
                    f"`{flag_name(flag)}` takes {wanted}, not `{shown}`",
                    f"give `{flag_name(flag)}` {takes.what}",
                )
            )
    return problems


def check_extra_args(args: list[str]) -> list[FlagProblem]:
    """Every problem with `args`: flags off the allowlist, values that do not fit their flag's
    grammar, flags given twice, and words that belong to no flag."""
    problems: list[FlagProblem] = []
    seen: set[str] = set()
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            problems.append(
                FlagProblem(
                    arg,
                    f"`{arg}` is not a flag and no flag before it takes a value: `vllm serve` would read it as a "
                    "second model and exit",
                    "remove it, or put the flag it belongs to in front of it",
                )
            )
            i += 1
            continue
        name = flag_name(arg)
        bad_name = _name_problem(arg)
        if bad_name is not None:
            problems.append(bad_name)
            # Whatever follows an unknown flag is its value or not; either way the flag is the problem.
            i += 1
            while i < len(args) and not args[i].startswith("-"):
                i += 1
            continue
        if name in seen:
            problems.append(FlagProblem(arg, f"`{name}` is given twice, and vLLM keeps only the last", "keep one"))
        seen.add(name)
        takes = FLAGS[name]
        if takes is None:
            problems += _value_problems(arg, None, [], "=" in arg)
            i += 1
            continue
        values, i = _values(args, i, takes)
        problems += _value_problems(arg, takes, values, "=" in arg)
    return problems
