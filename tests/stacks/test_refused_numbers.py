"""Numbers that contradict each other, numbers that are not numbers, and a context length beyond
the model's own: each refused up front with its key path and rule, and the edge that still fits
passes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.workers import spec
from stacks.config import GATEWAY_TMP_MIB, StackConfig
from stacks.model_files import CachedModel, context_limit, read_cached
from stacks.rules import check, shm_mib
from stacks.validation import validate
from tests.helpers import VALID_MODEL, assert_refused_at, refused, valid_config, validate_values

Mutation = Callable[[dict[str, Any]], None]
REVISION = VALID_MODEL["revision"]
SNAPSHOT = f"hub/models--HuggingFaceTB--SmolLM2-1.7B-Instruct/snapshots/{REVISION}"


def group(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg["workers"][0]


def resources(cfg: dict[str, Any], **values: Any) -> Any:
    group(cfg).setdefault("resources", {}).update(values)


def redis(cfg: dict[str, Any], **values: Any) -> Any:
    cfg["redis"] = {"enabled": True, "maxmemoryPolicy": "allkeys-lru", **values}


def offload(cfg: dict[str, Any], **lmcache: Any) -> Any:
    redis(cfg, kvCacheOffload=True, lmcache=lmcache)


def cpu_group(cfg: dict[str, Any], **values: Any) -> Any:
    group(cfg).update(accelerator="cpu", image="public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0", **values)


# (id, mutation, expected key path, fragment of the rule)
CASES: list[tuple[str, Mutation, str, str]] = [
    # Reservations above their limits.
    (
        "memory-reservation-default-above-limit",
        lambda c: resources(c, memoryMb=8192),
        "inference-stack:workers[0].resources.memoryReservationMb",
        "the reservation is above the hard limit",
    ),
    (
        "memory-reservation-above-limit",
        lambda c: resources(c, memoryMb=4096, memoryReservationMb=4097),
        "inference-stack:workers[0].resources.memoryReservationMb",
        "`memoryMb: 4096`, which Docker refuses",
    ),
    (
        "cpu-reservation-default-above-cpus",
        lambda c: resources(c, cpus=2),
        "inference-stack:workers[0].resources.cpuReservation",
        "capped at `cpus: 2`",
    ),
    (
        "cpu-reservation-above-cpus",
        lambda c: resources(c, cpus=1.5, cpuReservation=2),
        "inference-stack:workers[0].resources.cpuReservation",
        "so the reservation can never be met",
    ),
    # Redis's container around its maxmemory.
    (
        "redis-maxmemory-above-memory",
        lambda c: redis(c, maxmemoryMb=4096),
        "inference-stack:redis.memoryMb",
        "`maxmemoryMb: 4096` of data, and the forked AOF rewrite",
    ),
    (
        "redis-maxmemory-too-close-aof",
        lambda c: redis(c, maxmemoryMb=1100, memoryMb=1536),
        "inference-stack:redis.memoryMb",
        "a limit of 1536 MiB gets it killed",
    ),
    (
        "redis-maxmemory-too-close-none",
        lambda c: redis(c, persistence="none", maxmemoryMb=1500, memoryMb=1536),
        "inference-stack:redis.memoryMb",
        "counts neither allocator fragmentation",
    ),
    # Containers below their own tmpfs, shm and caches in RAM.
    (
        "gateway-memory-below-tmp",
        lambda c: c.update(gateway={"memoryMb": 256}),
        "inference-stack:gateway.memoryMb",
        f"the gateway's {GATEWAY_TMP_MIB} MiB /tmp is a tmpfs",
    ),
    (
        "gateway-memory-just-below",
        lambda c: c.update(gateway={"memoryMb": 383}),
        "inference-stack:gateway.memoryMb",
        "a full /tmp leaves nginx 127 MiB",
    ),
    (
        "gateway-body-above-tmp",
        lambda c: c.update(gateway={"clientMaxBodySize": "512m"}),
        "inference-stack:gateway.clientMaxBodySize",
        "larger than the gateway's 256 MiB /tmp",
    ),
    (
        "gateway-body-unlimited",
        lambda c: c.update(gateway={"clientMaxBodySize": "0"}),
        "inference-stack:gateway.clientMaxBodySize",
        "`0` lifts the limit",
    ),
    (
        "worker-memory-below-shm",
        lambda c: group(c).update(shmSizeMb=4096) or resources(c, memoryMb=4096, memoryReservationMb=2048),
        "inference-stack:workers[0].resources.memoryMb",
        "4096 MiB for `shmSizeMb` (/dev/shm)",
    ),
    (
        "cpu-worker-kv-cache-above-memory",
        lambda c: cpu_group(c, cpuKvCacheSpaceGib=8) or resources(c, memoryMb=8192, memoryReservationMb=4096),
        "inference-stack:workers[0].resources.memoryMb",
        "8192 MiB for `cpuKvCacheSpaceGib` (the KV cache)",
    ),
    (
        "lmcache-tier-above-memory",
        lambda c: offload(c, maxLocalCpuSizeGb=40),
        "inference-stack:workers[0].resources.memoryMb",
        "40960 MiB for `redis.lmcache.maxLocalCpuSizeGb`",
    ),
    (
        "lmcache-tier-per-rank",
        lambda c: offload(c, maxLocalCpuSizeGb=15) or group(c)["model"].update(tensorParallelSize=2),
        "inference-stack:workers[0].resources.memoryMb",
        "30720 MiB for `redis.lmcache.maxLocalCpuSizeGb`",
    ),
    # Booleans, strings and fractions where a count belongs.
    (
        "true-as-replica-count",
        lambda c: group(c).update(replicasPerHost=True),
        "inference-stack:workers[0].replicasPerHost",
        "a whole number belongs here, not a boolean",
    ),
    (
        "false-as-gpu-count",
        lambda c: c["hosts"][0]["gpus"].update(count=False),
        "inference-stack:hosts[0].gpus.count",
        "`false` is not read as 1 or 0",
    ),
    (
        "true-as-cpus",
        lambda c: resources(c, cpus=True),
        "inference-stack:workers[0].resources.cpus",
        "a number belongs here, not a boolean",
    ),
    (
        "true-as-utilization",
        lambda c: group(c).update(gpuMemoryUtilization=True),
        "inference-stack:workers[0].gpuMemoryUtilization",
        "a number belongs here, not a boolean",
    ),
    (
        "string-as-port",
        lambda c: c.update(gateway={"port": "8080"}),
        "inference-stack:gateway.port",
        "a whole number belongs here, not a string",
    ),
    (
        "string-as-float",
        lambda c: c.update(observability={"slo": {"kvCacheUsageMax": "0.8"}}),
        "inference-stack:observability.slo.kvCacheUsageMax",
        "a number belongs here, not a string",
    ),
    (
        "fraction-as-count",
        lambda c: group(c)["model"].update(maxModelLen=4096.5),
        "inference-stack:workers[0].model.maxModelLen",
        "not a fraction",
    ),
    (
        "true-in-gpu-assignments",
        lambda c: group(c).update(gpuAssignments=[[True]]),
        "inference-stack:workers[0].gpuAssignments[0][0]",
        "valid integer",
    ),
    # A GPU count that disagrees with the listed ids.
    (
        "gpu-count-below-ids",
        lambda c: c["hosts"][0].update(gpus={"count": 2, "ids": ["0", "1", "2"]}),
        "inference-stack:hosts[0].gpus.ids",
        "`count` is 2 but `ids` lists 3 device(s)",
    ),
    (
        "gpu-count-above-ids",
        lambda c: c["hosts"][0].update(gpus={"count": 4, "ids": ["0"]}),
        "inference-stack:hosts[0].gpus.ids",
        "`count` is 4 but `ids` lists 1 device(s)",
    ),
    # SLO thresholds out of order.
    (
        "slo-p95-above-default-p99",
        lambda c: c.update(observability={"slo": {"ttftP95Seconds": 5}}),
        "inference-stack:observability.slo.ttftP99Seconds",
        "below the P95 one (5 s)",
    ),
    (
        "slo-p99-below-p95",
        lambda c: c.update(observability={"slo": {"ttftP95Seconds": 2, "ttftP99Seconds": 1.5}}),
        "inference-stack:observability.slo.ttftP99Seconds",
        "the P95 alert could only fire after the P99 one",
    ),
    # A number past anything real is a typo (MiB read as bytes, an extra zero).
    (
        "worker-memory-in-bytes",
        lambda c: resources(c, memoryMb=34_359_738_368),
        "inference-stack:workers[0].resources.memoryMb",
        "less than or equal to 16777216",
    ),
    (
        "gpu-memory-in-bytes",
        lambda c: c["hosts"][0]["gpus"].update(memoryMib=85_899_345_920),
        "inference-stack:hosts[0].gpus.memoryMib",
        "less than or equal to 1048576",
    ),
    (
        "redis-memory-extra-zeros",
        lambda c: c.update(redis={"enabled": True, "maxmemoryPolicy": "allkeys-lru", "memoryMb": 10**12}),
        "inference-stack:redis.memoryMb",
        "less than or equal to 16777216",
    ),
    (
        "ttft-slo-in-milliseconds",
        lambda c: c.update(observability={"slo": {"ttftP95Seconds": 800, "ttftP99Seconds": 2000}}),
        "inference-stack:observability.slo.ttftP95Seconds",
        "less than or equal to 600",
    ),
]


@pytest.mark.parametrize(("mutate", "path", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_contradicting_numbers_are_refused(mutate: Mutation, path: str, rule: str) -> None:
    cfg = valid_config()
    mutate(cfg)
    assert_refused_at(cfg, path, rule)


# Each is exactly at the edge of a rule above, or a number written the way YAML and JSON write it.
PASSING: list[tuple[str, Mutation]] = [
    (
        "reservations-equal-limits",
        lambda c: resources(c, cpus=4, cpuReservation=4, memoryMb=8192, memoryReservationMb=8192),
    ),
    (
        "ints-where-floats-belong",
        lambda c: (
            resources(c, cpus=2, cpuReservation=1)
            or c.update(observability={"slo": {"ttftP95Seconds": 1, "ttftP99Seconds": 1}})
        ),
    ),
    ("redis-default-sizes", lambda c: redis(c)),
    ("redis-aof-at-one-and-a-half", lambda c: redis(c, maxmemoryMb=4096, memoryMb=6144)),
    ("redis-none-at-its-floor", lambda c: redis(c, persistence="none", maxmemoryMb=1228, memoryMb=1535)),
    ("redis-off-numbers-unchecked", lambda c: c.update(redis={"maxmemoryMb": 4096})),
    ("gateway-at-its-floor", lambda c: c.update(gateway={"memoryMb": 384, "clientMaxBodySize": "256m"})),
    ("gateway-body-in-k", lambda c: c.update(gateway={"clientMaxBodySize": "262144k"})),
    ("gpu-ids-match-count", lambda c: c["hosts"][0].update(gpus={"count": 2, "ids": ["1", "0"]})),
    (
        "worker-memory-exactly-enough",
        lambda c: group(c).update(shmSizeMb=4096) or resources(c, memoryMb=5120, memoryReservationMb=2048),
    ),
    (
        "cpu-worker-exactly-enough",
        lambda c: cpu_group(c, cpuKvCacheSpaceGib=2) or resources(c, memoryMb=4096, memoryReservationMb=2048),
    ),
    ("lmcache-tier-fits", lambda c: offload(c, maxLocalCpuSizeGb=29)),
]


@pytest.mark.parametrize("mutate", [p[1] for p in PASSING], ids=[p[0] for p in PASSING])
def test_the_edge_still_passes(mutate: Mutation) -> None:
    cfg = valid_config()
    mutate(cfg)
    validate_values(cfg)


def test_a_boolean_never_becomes_a_count() -> None:
    """Lax pydantic read `replicasPerHost: true` as one replica; now it is an error with the value."""
    cfg = valid_config()
    group(cfg).update(replicasPerHost=True)
    (issue,) = refused(cfg).issues
    assert issue.value is True and "write the number itself" in issue.fix


def test_a_string_number_says_how_to_set_it() -> None:
    cfg = valid_config()
    group(cfg).update(gpuMemoryUtilization="0.85")
    (issue,) = refused(cfg).issues
    assert "--type float" in issue.fix


def test_the_shipped_stacks_still_validate() -> None:
    import yaml

    from tests.helpers import as_pulumi_config

    root = Path(__file__).resolve().parents[2]
    for stack in ("dev", "prod", "ci"):
        doc = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text())["config"]
        values = {k.split(":", 1)[1]: v for k, v in doc.items() if not (isinstance(v, dict) and "secure" in v)}
        raw = {k.split(":", 1)[1]: v for k, v in as_pulumi_config(values).items()}
        validate(stack, raw, set())


def test_the_worker_shm_rule_reads_the_size_the_worker_gets() -> None:
    for extra in ({}, {"shmSizeMb": 512}, {"accelerator": "cpu"}):
        cfg = valid_config()
        group(cfg).update(extra)
        group(cfg)["model"]["tensorParallelSize"] = 1 if extra else 2
        parsed = StackConfig.model_validate(cfg)
        assert shm_mib(parsed.workers[0]) == spec.shm_size_mb(parsed.workers[0])


# --- Model limits: maxModelLen against the model's cached config.json ---------------------------


def cached_model(
    root: Path, config: dict[str, Any], tokenizer: dict[str, Any] | None = None, revision: str = REVISION
) -> None:
    """A Hugging Face cache as the worker's HF_HOME holds it: hub/models--org--name/snapshots/<rev>/."""
    snapshot = root / SNAPSHOT.replace(REVISION, revision)
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        (snapshot / "tokenizer_config.json").write_text(json.dumps(tokenizer))


def local_cache(tmp_path: Path, max_model_len: int, **host: Any) -> dict[str, Any]:
    cfg = valid_config()
    cfg["hosts"][0].update(modelCachePath=str(tmp_path), **host)
    group(cfg)["model"]["maxModelLen"] = max_model_len
    return cfg


SMOLLM2 = {
    "model_type": "llama",
    "max_position_embeddings": 8192,
    "rope_parameters": {"rope_theta": 130000, "rope_type": "default"},
}
LEN = "inference-stack:workers[0].model.maxModelLen"

# (id, config.json, tokenizer_config.json, maxModelLen, the limit the rule names, its source)
MODEL_CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, int, int, str]] = [
    ("beyond-max-position-embeddings", SMOLLM2, None, 16384, 8192, "max_position_embeddings=8192"),
    (
        "legacy-rope-scaling-linear",
        {"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 2.0}},
        None,
        16384,
        8192,
        "max_position_embeddings=4096 x rope factor 2",
    ),
    (
        "yarn-uses-the-original-length",
        {
            "max_position_embeddings": 32768,
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
        },
        None,
        262144,
        131072,
        "original_max_position_embeddings=32768 x rope factor 4",
    ),
    (
        "llama3-is-not-scaled-again",
        {
            "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
        },
        None,
        262144,
        131072,
        "max_position_embeddings=131072",
    ),
    (
        "tokenizer-caps-the-length",
        SMOLLM2,
        {"model_max_length": 2048},
        4096,
        2048,
        "tokenizer_config.json model_max_length=2048",
    ),
    ("smallest-key-wins", {"max_position_embeddings": 8192, "n_positions": 1024}, None, 2048, 1024, "n_positions=1024"),
    (
        "multimodal-text-config",
        {"model_type": "llava", "text_config": {"max_position_embeddings": 4096}},
        None,
        8192,
        4096,
        "max_position_embeddings=4096",
    ),
    (
        "per-layer-rope-parameters",
        {
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "full_attention": {"rope_type": "dynamic", "factor": 2.0},
                "sliding_attention": {"rope_type": "default"},
            },
        },
        None,
        16384,
        8192,
        "max_position_embeddings=4096 x rope factor 2",
    ),
]


@pytest.mark.parametrize(
    ("config", "tokenizer", "asked", "limit", "source"), [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES]
)
def test_max_model_len_beyond_the_models_own_is_refused(
    tmp_path: Path, config: dict[str, Any], tokenizer: dict[str, Any] | None, asked: int, limit: int, source: str
) -> None:
    cached_model(tmp_path, config, tokenizer)
    error = refused(local_cache(tmp_path, asked))
    (issue,) = [i for i in error.issues if i.path == LEN]
    assert issue.value == asked
    assert f"supports {limit} tokens ({source}" in issue.rule and "vLLM refuses" in issue.rule
    assert issue.fix == f"set `maxModelLen` to at most {limit}"


def test_a_canary_revision_is_checked_against_its_own_config(tmp_path: Path) -> None:
    canary = "c" * 40
    cached_model(tmp_path, SMOLLM2)
    cached_model(tmp_path, {"max_position_embeddings": 2048}, revision=canary)
    cfg = local_cache(tmp_path, 4096)
    group(cfg).update(gpuAssignments=[[0], [1]], canary={"weightPercent": 10, "revision": canary})
    (issue,) = [i for i in refused(cfg).issues if i.path == LEN]
    assert "supports 2048 tokens" in issue.rule and "cccccccccccc" in issue.rule


MODEL_PASSING: list[tuple[str, dict[str, Any], dict[str, Any] | None, int]] = [
    ("exactly-the-limit", SMOLLM2, None, 8192),
    (
        "scaled-limit-exactly",
        {"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 2.0}},
        None,
        8192,
    ),
    # vLLM lets a config's own `model_max_length` override the derived length.
    ("model-max-length-overrides", {"max_position_embeddings": 4096, "model_max_length": 16384}, None, 16384),
    (
        "gemma3-is-already-scaled",
        {
            "model_type": "gemma3_text",
            "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        },
        None,
        131072,
    ),
    # vLLM takes any length when the config names none; a RoPE block of unknown shape is skipped.
    ("no-length-keys", {"hidden_size": 2048}, None, 65536),
    ("rope-shape-unknown", {"max_position_embeddings": 4096, "rope_scaling": {"factor": 4.0}}, None, 16384),
    ("tokenizer-sentinel", SMOLLM2, {"model_max_length": 1000000000000000019884624838656}, 8192),
]


@pytest.mark.parametrize(
    ("config", "tokenizer", "asked"), [c[1:] for c in MODEL_PASSING], ids=[c[0] for c in MODEL_PASSING]
)
def test_a_length_within_the_model_passes(
    tmp_path: Path, config: dict[str, Any], tokenizer: dict[str, Any] | None, asked: int
) -> None:
    cached_model(tmp_path, config, tokenizer)
    validate_values(local_cache(tmp_path, asked))


def test_an_uncached_model_is_not_checked(tmp_path: Path) -> None:
    validate_values(local_cache(tmp_path, 1_048_576))


def test_a_remote_hosts_cache_is_not_read(tmp_path: Path) -> None:
    """An SSH host's cache is on that host: the path here is some other directory."""
    cached_model(tmp_path, SMOLLM2)
    cfg = local_cache(tmp_path, 16384, ssh={"user": "deploy", "address": "gpu-a.internal"})
    group(cfg)["model"]["weights"] = "prefetched"
    validate_values(cfg)
    assert read_cached(StackConfig.model_validate(cfg)) == {}


def test_the_rule_is_pure_given_what_was_read(tmp_path: Path) -> None:
    """The loader reads once (`read_cached`) and hands it to `check`; `check` then reads nothing."""
    cfg = StackConfig.model_validate(local_cache(tmp_path, 16384))
    files = {(VALID_MODEL["id"], REVISION): CachedModel(dict(SMOLLM2))}
    _, issues = check(cfg, files)
    assert [i.path for i in issues] == [LEN]
    assert check(cfg, {})[1] == []


def test_the_limit_matches_vllms_for_the_ci_model() -> None:
    """The ci stack's model as scripts/test-model.sh writes it (transformers 5 `rope_parameters`)."""
    limit = context_limit(CachedModel(dict(SMOLLM2), {"model_max_length": 1000000000000000019884624838656}))
    assert limit is not None and limit.tokens == 8192
