"""What a model's own files say about it, from the Hugging Face cache on this machine.

`read_cached` is the one filesystem read: the loader calls it and hands the result to the pure
rules (`rules.check`). Only hosts without `ssh` are this machine, so only their caches are
read; a model whose revision is in none of them is not checked here (vLLM still refuses it when
the worker starts).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from stacks.config import HostConfig, StackConfig
from stacks.errors import ConfigIssue, key_path

ModelFiles = Mapping[tuple[str, str], "CachedModel"]
"""By (model id, revision): a revision pins the files, so any host's copy will do."""


@dataclass(frozen=True)
class CachedModel:
    config: Mapping[str, Any]
    """The parsed `config.json`."""
    tokenizer_config: Mapping[str, Any] | None = None
    """The parsed `tokenizer_config.json`, when the snapshot has one."""


def snapshot_dir(host: HostConfig, model_id: str, revision: str) -> Path:
    """The snapshot in the host's cache, in the hub layout workers read through `HF_HOME`
    (`<modelCachePath>/hub/models--org--name/snapshots/<revision>`)."""
    org, name = model_id.split("/", 1)
    return Path(host.model_cache_path) / "hub" / f"models--{org}--{name}" / "snapshots" / revision


def read_cached(cfg: StackConfig) -> dict[tuple[str, str], CachedModel]:
    """Every served revision (canaries' too) whose `config.json` is in a local host's cache."""
    found: dict[tuple[str, str], CachedModel] = {}
    local = [h for h in cfg.hosts if h.ssh is None]
    for group in cfg.workers:
        for model in {
            group.model.revision: group.model,
            group.released().model.revision: group.released().model,
        }.values():
            key = (model.id, model.revision)
            for host in local:
                if key in found or (group.hosts is not None and host.name not in group.hosts):
                    continue
                cached = read_snapshot(snapshot_dir(host, model.id, model.revision))
                if cached is not None:
                    found[key] = cached
    return found


def read_snapshot(directory: Path) -> CachedModel | None:
    config = _read_json(directory / "config.json")
    if config is None:
        return None
    return CachedModel(config, _read_json(directory / "tokenizer_config.json"))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class ContextLimit:
    tokens: int
    """The longest `--max-model-len` vLLM accepts for the model."""
    source: str
    """Where it comes from, e.g. `max_position_embeddings=8192 x rope factor 4.0`."""


# vLLM's derivation, `_get_and_verify_max_len` in vllm/config/model.py (read at vllm-project/vllm
# 0052a5b818980ce8a0477706aaf9f75bd5af72cd; later commits move the key scan, unchanged, into
# transformers_utils/model_arch_config_convertor.py `derive_max_model_len_and_key`): the smallest
# of these keys in the text config, `model_max_length` winning when set, capped by the tokenizer
# config's `model_max_length`...
_LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
# ... times the RoPE scaling factor, except for these types, whose length is already scaled.
_ROPE_UNSCALED = ("su", "longrope", "llama3")


def context_limit(model: CachedModel) -> ContextLimit | None:
    """The model's own maximum length as vLLM derives it, or None where vLLM would derive none
    (it then takes any `--max-model-len`) or the config's shape is not one this reads."""
    text = _text_config(model.config)
    lengths = {k: text[k] for k in _LENGTH_KEYS if _is_number(text.get(k))}
    if not lengths:
        return None
    key = min(lengths, key=lambda k: lengths[k])
    # Command-R / Cohere: a set `model_max_length` wins over the others.
    if "model_max_length" in lengths:
        key = "model_max_length"
    derived, source = lengths[key], f"{key}={lengths[key]:g}"
    tokenizer_max = (model.tokenizer_config or {}).get("model_max_length")
    if _is_number(tokenizer_max) and tokenizer_max < derived:
        derived, source = tokenizer_max, f"tokenizer_config.json model_max_length={tokenizer_max:g}"
    scaling = _rope_scaling(text)
    if scaling is None:
        return None
    factor, original = scaling
    if original is not None:
        derived, source = original, f"original_max_position_embeddings={original:g}"
    if factor != 1:
        source += f" x rope factor {factor:g}"
    return ContextLimit(int(derived * factor), source)


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language model's part: vLLM reads the length from `hf_text_config`, the `text_config`
    of a multimodal model."""
    text = config.get("text_config")
    return text if isinstance(text, dict) else config


def _rope_scaling(text: Mapping[str, Any]) -> tuple[float, float | None] | None:
    """(RoPE factor, YaRN's `original_max_position_embeddings` that replaces the length), or None
    for a RoPE block this does not read. Gemma 3's length is already scaled, as vLLM notes."""
    rope = text.get("rope_parameters") or text.get("rope_scaling")
    if not rope or "gemma3" in str(text.get("model_type", "")):
        return 1.0, None
    if not isinstance(rope, dict):
        return None
    # Transformers 5 may nest the parameters per layer type (`full_attention`, `sliding_attention`).
    layers = list(rope.values()) if all(isinstance(v, dict) for v in rope.values()) else [rope]
    factor: float = 1.0
    original: float | None = None
    for params in layers:
        # vLLM's patch_rope_parameters_dict reads the legacy `type` as `rope_type`.
        rope_type = params.get("rope_type", params.get("type"))
        if not isinstance(rope_type, str):
            return None
        if rope_type in _ROPE_UNSCALED:
            continue
        factor = params.get("factor", factor)
        if not _is_number(factor):
            return None
        if rope_type == "yarn":
            original = params.get("original_max_position_embeddings")
            if not _is_number(original):
                return None
    return factor, original


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def accepts(model: CachedModel, max_model_len: int) -> bool:
    """Whether vLLM starts with this `--max-model-len`: at most the derived length, or at most the
    config's own `model_max_length`, which vLLM lets override it."""
    limit = context_limit(model)
    if limit is None or max_model_len <= limit.tokens:
        return True
    own = _text_config(model.config).get("model_max_length")
    return _is_number(own) and max_model_len <= own


def model_len_issues(cfg: StackConfig, files: ModelFiles) -> list[ConfigIssue]:
    """`maxModelLen` beyond what the cached model supports: vLLM would refuse to start."""
    issues = []
    for g, group in enumerate(cfg.workers):
        for model in {
            group.model.revision: group.model,
            group.released().model.revision: group.released().model,
        }.values():
            cached = files.get((model.id, model.revision))
            if cached is None or accepts(cached, model.max_model_len):
                continue
            limit = context_limit(cached)
            assert limit is not None
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "model", "maxModelLen")),
                    model.max_model_len,
                    f"`{model.id}` at {model.revision[:12]} supports {limit.tokens} tokens ({limit.source} in its "
                    "cached config.json), and vLLM refuses a longer `--max-model-len` at start",
                    f"set `maxModelLen` to at most {limit.tokens}",
                )
            )
    return issues
