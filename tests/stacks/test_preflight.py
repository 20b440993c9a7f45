"""Memory fit and driver checks on known shapes, with the numbers worked out here."""

from __future__ import annotations

import pytest

from stacks.config import WorkerGroup
from stacks.inventory import Gpu
from stacks.preflight import (
    CUDA_MIN_DRIVER,
    driver_problem,
    memory_fit,
    shape_from_config_json,
    worker_problems,
)

MIB = 1024 * 1024
H100 = Gpu(
    0, "GPU-685c499b-7dab-c713-b625-e3192452190b", "NVIDIA H100 80GB HBM3", 81559, "580.159.04", "9.0", "Disabled"
)


def mistral_awq(max_num_seqs: int, **extra: object) -> WorkerGroup:
    return WorkerGroup.model_validate(
        {
            "name": "mistral",
            "image": "vllm/vllm-openai:v0.32.0",
            "gpuMemoryUtilization": 0.9,
            "model": {
                "id": "solidrust/Mistral-7B-Instruct-v0.3-AWQ",
                "revision": "95b1295ddd1a8673117cdc7bd2a4da2a457bb3f7",
                "servedName": "mistral",
                "quantization": "awq_marlin",
                "dtype": "float16",
                "maxModelLen": 8192,
                "maxNumSeqs": max_num_seqs,
                "coldStartSeconds": 120,
                "shape": {"parametersBillion": 7.25, "layers": 32, "kvHeads": 8, "headDim": 128},
            },
            **extra,
        }
    )


# Worked by hand:
#   weights  = 7.25e9 params x 0.5625 B (4-bit AWQ + group scales)      = 3,889.2 MiB
#   KV/token = 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 B (fp16) = 131,072 B = 0.125 MiB
#   overhead = 621 MiB CUDA context (measured on H100) + 1,024 MiB activations = 1,645 MiB
WEIGHTS = 7.25e9 * 0.5625 / MIB
OVERHEAD = 621 + 1024


def test_80gb_h100_fits_64_sequences_at_8192() -> None:
    fit = memory_fit(mistral_awq(64), 81559)
    assert fit is not None
    assert fit.weights_mib == pytest.approx(3889.2, abs=0.1)
    assert fit.kv_cache_mib == pytest.approx(0.125 * 8192 * 64)  # 65,536 MiB
    assert fit.overhead_mib == OVERHEAD
    assert fit.budget_mib == pytest.approx(0.9 * 81559)  # 73,403.1 MiB
    assert fit.needed_mib == pytest.approx(3889.2 + 65536 + 1645, abs=0.1)  # 71,070.2 MiB
    assert fit.fits


def test_24gb_gpu_fits_16_sequences() -> None:
    fit = memory_fit(mistral_awq(16), 24576)
    assert fit is not None
    assert fit.kv_cache_mib == pytest.approx(16384)
    assert fit.needed_mib == pytest.approx(3889.2 + 16384 + 1645, abs=0.1)  # 21,918.2 MiB
    assert fit.budget_mib == pytest.approx(22118.4)
    assert fit.fits


def test_24gb_gpu_does_not_fit_64_sequences() -> None:
    fit = memory_fit(mistral_awq(64), 24576)
    assert fit is not None and not fit.fits
    assert fit.needed_mib - fit.budget_mib == pytest.approx(71070.2 - 22118.4, abs=0.1)
    assert "48,952 MiB over" in fit.explain()


def test_fp8_kv_cache_halves_it() -> None:
    fit = memory_fit(mistral_awq(64, extraArgs=["--kv-cache-dtype", "fp8"]), 24576)
    assert fit is not None and fit.kv_cache_mib == pytest.approx(32768)


def test_tensor_parallel_splits_weights_and_cache() -> None:
    group = mistral_awq(64)
    split = group.model_copy(update={"model": group.model.model_copy(update={"tensor_parallel_size": 2})})
    fit = memory_fit(split, 24576)
    assert fit is not None and fit.weights_mib == pytest.approx(WEIGHTS / 2) and fit.kv_cache_mib == 32768


def test_unknown_shape_is_not_guessed() -> None:
    group = mistral_awq(64)
    assert memory_fit(group.model_copy(update={"model": group.model.model_copy(update={"shape": None})}), 24576) is None


def test_driver_table() -> None:
    assert driver_problem("580.159.04", "12.9") is None
    assert driver_problem("575.51.03", "12.9") is None
    assert driver_problem("570.86.15", "12.9") == "driver 570.86.15 is older than 575.51.03, the minimum for CUDA 12.9"
    assert "not in the driver table" in (driver_problem("580.1", "11.8") or "")
    assert list(CUDA_MIN_DRIVER) == sorted(CUDA_MIN_DRIVER, key=lambda v: tuple(map(int, v.split("."))))


def test_worker_problems_name_host_gpu_and_knob() -> None:
    problems = worker_problems(
        mistral_awq(64), ("0",), [H100.__class__(**{**H100.__dict__, "memory_mib": 24576})], "gpu-b"
    )
    (problem,) = problems
    assert "host `gpu-b`, GPU 0" in problem and "maxNumSeqs" in problem


def test_missing_gpu_and_old_driver() -> None:
    old = Gpu(**{**H100.__dict__, "driver_version": "550.54.14"})
    problems = worker_problems(mistral_awq(8), ("3",), [old], "gpu-a")
    assert any("GPU `3` does not exist" in p for p in problems)
    assert any("driver 550.54.14 is older than 575.51.03" in p and "workers[].image" in p for p in problems)


def test_mig_device_needs_mig_mode() -> None:
    mig = "MIG-4b5e1a1c-0000-4000-8000-000000000001"
    assert any("no GPU has MIG mode enabled" in p for p in worker_problems(mistral_awq(8), (mig,), [H100], "gpu-a"))
    enabled = Gpu(**{**H100.__dict__, "mig_mode": "Enabled"})
    assert worker_problems(mistral_awq(8), (mig,), [enabled], "gpu-a") == []


def test_healthy_worker_has_no_problems() -> None:
    assert worker_problems(mistral_awq(64), ("0",), [H100], "gpu-a") == []
    assert worker_problems(mistral_awq(64), (H100.uuid,), [H100], "gpu-a") == []


def test_shape_from_mistral_config_json() -> None:
    # mistralai/Mistral-7B-Instruct-v0.3's config.json (the numbers that matter).
    config = {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 14336,
        "vocab_size": 32768,
        "tie_word_embeddings": False,
    }
    shape = shape_from_config_json(config)
    # 2 x 32768 x 4096 embeddings + 32 x (41.9M attention + 176.2M MLP + norms) = 7.248 B
    assert shape.parameters_billion == pytest.approx(7.248, abs=0.001)
    assert (shape.layers, shape.kv_heads, shape.head_dim) == (32, 8, 128)


def test_cached_config_json_enables_the_memory_check(tmp_path) -> None:
    from stacks.config import HostConfig
    from stacks.model_files import CachedModel, read_snapshot, snapshot_dir
    from stacks.placement import with_cached_shape

    group = mistral_awq(64)
    group = group.model_copy(update={"model": group.model.model_copy(update={"shape": None})})
    host = HostConfig.model_validate({"name": "local", "modelCachePath": str(tmp_path)})

    def read() -> dict[tuple[str, str], CachedModel]:
        """The loader's read (`model_files.read_cached`) of this one host's cache."""
        cached = read_snapshot(snapshot_dir(host, group.model.id, group.model.revision))
        return {} if cached is None else {(group.model.id, group.model.revision): cached}

    assert with_cached_shape(group, host, read()).model.shape is None
    snapshot = tmp_path / "hub/models--solidrust--Mistral-7B-Instruct-v0.3-AWQ/snapshots"
    (snapshot / group.model.revision).mkdir(parents=True)
    (snapshot / group.model.revision / "config.json").write_text(
        '{"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,'
        ' "intermediate_size": 14336, "vocab_size": 32768}'
    )
    shaped = with_cached_shape(group, host, read())
    assert shaped.model.shape is not None and shaped.model.shape.kv_heads == 8
    fit = memory_fit(shaped, 24576)
    assert fit is not None and not fit.fits
