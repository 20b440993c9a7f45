"""Checks that fail `preview` and `up` before a worker is created, instead of a minute into
loading a model: driver vs the image's CUDA, and whether the model fits in the GPU.

Pure functions on numbers, used twice: at config time on what the stack declares (so a first
`preview` can fail), and at `up` time on the inventory the host verification measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stacks.config import ModelShape, WorkerGroup
from stacks.inventory import Gpu

MIB = 1024 * 1024

# Minimum Linux driver for each CUDA toolkit release. Source: NVIDIA CUDA Toolkit Release Notes,
# table "CUDA Toolkit and Corresponding Driver Versions" (GA releases, Linux x86_64).
CUDA_MIN_DRIVER: dict[str, str] = {
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

# CUDA version of official vLLM images, from the `CUDA_VERSION` default of vLLM's
# docker/Dockerfile at the tag. Images not listed need `workers[].cudaVersion`.
IMAGE_CUDA: dict[str, str] = {
    "vllm/vllm-openai:v0.32.0": "12.9",
}

# Measured on an H100 (../shared/fixtures/nvidia-smi/README.md): PyTorch's CUDA context.
CUDA_CONTEXT_MIB = 621
# vLLM's profiling run reserves activation memory for one max-size batch; 1 GiB covers a 7B
# model at the default `max_num_batched_tokens` and is a floor for bigger ones.
ACTIVATIONS_MIB = 1024

# Bytes per parameter as stored on the GPU. 4-bit methods carry group-128 scales and zeros,
# about half a bit more per weight.
QUANT_BYTES: dict[str, float] = {
    "awq": 0.5625,
    "awq_marlin": 0.5625,
    "gptq": 0.5625,
    "gptq_marlin": 0.5625,
    "mxfp4": 0.53,
    "modelopt_fp4": 0.5625,
    "fp8": 1.0,
    "compressed-tensors": 1.0,
    "modelopt": 1.0,
    "experts_int8": 1.0,
    "moe_wna16": 0.5625,
    "quark": 1.0,
    "torchao": 1.0,
}
DTYPE_BYTES: dict[str, float] = {
    "auto": 2.0,
    "half": 2.0,
    "float16": 2.0,
    "bfloat16": 2.0,
    "float": 4.0,
    "float32": 4.0,
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def cuda_of(group: WorkerGroup) -> str | None:
    return group.cuda_version or IMAGE_CUDA.get(group.image)


def driver_problem(driver: str, cuda: str) -> str | None:
    """None when `driver` can run `cuda`; else what is wrong."""
    needed = CUDA_MIN_DRIVER.get(cuda)
    if needed is None:
        return f"CUDA {cuda} is not in the driver table (stacks/preflight.py)"
    if _version(driver) < _version(needed):
        return f"driver {driver} is older than {needed}, the minimum for CUDA {cuda}"
    return None


@dataclass(frozen=True)
class MemoryFit:
    weights_mib: float
    kv_cache_mib: float
    overhead_mib: float
    budget_mib: float

    @property
    def needed_mib(self) -> float:
        return self.weights_mib + self.kv_cache_mib + self.overhead_mib

    @property
    def fits(self) -> bool:
        return self.needed_mib <= self.budget_mib

    def explain(self) -> str:
        verdict = "fits" if self.fits else f"is {self.needed_mib - self.budget_mib:,.0f} MiB over"
        return (
            f"weights {self.weights_mib:,.0f} MiB + KV cache {self.kv_cache_mib:,.0f} MiB + overhead "
            f"{self.overhead_mib:,.0f} MiB = {self.needed_mib:,.0f} MiB per GPU, which {verdict} the "
            f"{self.budget_mib:,.0f} MiB that gpuMemoryUtilization allows"
        )


def kv_bytes_per_element(group: WorkerGroup) -> float:
    args = group.extra_args
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--kv-cache-dtype=") else None
        if arg == "--kv-cache-dtype" and i + 1 < len(args):
            value = args[i + 1]
        if value is not None and value.startswith("fp8"):
            return 1.0
    return DTYPE_BYTES.get(group.model.dtype, 2.0)


def memory_fit(group: WorkerGroup, gpu_memory_mib: int) -> MemoryFit | None:
    """Weights + KV cache + overhead per GPU against `gpu_memory_utilization` x the GPU's memory.

    The KV cache is sized for `max_model_len` x `max_num_seqs` tokens: every batched sequence at
    full length, the worst case vLLM may schedule. None when the model's shape is unknown.
    """
    model = group.model
    shape = model.shape
    if shape is None:
        return None
    tp = model.tensor_parallel_size
    per_param = QUANT_BYTES.get(model.quantization, DTYPE_BYTES.get(model.dtype, 2.0))
    weights = shape.parameters_billion * 1e9 * per_param / tp
    per_token = shape.layers * shape.kv_heads * shape.head_dim * 2 * kv_bytes_per_element(group) / tp
    kv_cache = per_token * model.max_model_len * model.max_num_seqs
    return MemoryFit(
        weights_mib=weights / MIB,
        kv_cache_mib=kv_cache / MIB,
        overhead_mib=CUDA_CONTEXT_MIB + ACTIVATIONS_MIB,
        budget_mib=group.gpu_memory_utilization * gpu_memory_mib,
    )


MEMORY_FIX = (
    "lower `model.maxNumSeqs` or `model.maxModelLen`, use a smaller quantization, add `--kv-cache-dtype fp8` "
    "to extraArgs, raise `model.tensorParallelSize`, or raise `gpuMemoryUtilization` (at most 0.90)"
)


def worker_problems(group: WorkerGroup, devices: tuple[str, ...], gpus: list[Gpu], host: str) -> list[str]:
    """What stops this worker on the GPUs the host verification measured; empty when it can start."""
    problems = []
    by_index = {str(g.index): g for g in gpus}
    by_uuid = {g.uuid: g for g in gpus}
    mine: list[Gpu] = []
    for device in devices:
        gpu = by_index.get(device) or by_uuid.get(device)
        if gpu is not None:
            mine.append(gpu)
        elif device.startswith("MIG-"):
            if not any(g.mig_mode == "Enabled" for g in gpus):
                problems.append(
                    f"host `{host}`: worker assigned MIG device `{device}`, but no GPU has MIG mode enabled; "
                    "enable MIG (`nvidia-smi -mig 1`) or assign whole GPUs in `hosts[].gpus.ids`"
                )
        else:
            problems.append(
                f"host `{host}`: GPU `{device}` does not exist (the host has {len(gpus)}: "
                f"{', '.join(f'{g.index}/{g.uuid}' for g in gpus)}); fix `hosts[].gpus` or `workers[].gpuAssignments`"
            )
    cuda = cuda_of(group)
    if cuda is not None and gpus:
        problem = driver_problem(gpus[0].driver_version, cuda)
        if problem:
            problems.append(
                f"host `{host}`: {problem} that image `{group.image}` needs; upgrade the host's NVIDIA driver "
                "or pin an image built for an older CUDA (`workers[].image`, `workers[].cudaVersion`)"
            )
    if mine:
        smallest = min(mine, key=lambda g: g.memory_mib)
        fit = memory_fit(group, smallest.memory_mib)
        if fit is not None and not fit.fits:
            problems.append(
                f"host `{host}`, GPU {smallest.index} ({smallest.name}, {smallest.memory_mib} MiB): group "
                f"`{group.name}` {fit.explain()}; {MEMORY_FIX}"
            )
    return problems


class PreflightError(RuntimeError):
    """Raised inside an Output during `up`: Pulumi stops before the worker is created."""


def shape_from_config_json(config: Mapping[str, object]) -> ModelShape:
    """A model's shape from its Hugging Face `config.json`, for when the stack declares none.
    The parameter count is estimated from the layer sizes (embeddings, attention, gated MLP)."""

    def num(key: str, default: int | None = None) -> int:
        value = config.get(key, default)
        if not isinstance(value, int):
            raise ValueError(f"config.json has no integer `{key}`")
        return value

    hidden, layers, heads = num("hidden_size"), num("num_hidden_layers"), num("num_attention_heads")
    kv_heads = num("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or hidden // heads
    assert isinstance(head_dim, int)
    embeddings = num("vocab_size") * hidden * (1 if config.get("tie_word_embeddings") else 2)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * num("intermediate_size")
    parameters = embeddings + layers * (attention + mlp + 2 * hidden) + hidden
    return ModelShape(
        parameters_billion=round(parameters / 1e9, 3), layers=layers, kv_heads=kv_heads, head_dim=head_dim
    )
