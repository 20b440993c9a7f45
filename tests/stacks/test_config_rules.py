"""Every config rule fails with its own message naming the key path, the value, the rule and the
fix, and nothing invalid gets through."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from stacks.errors import ConfigError, ConfigIssue
from stacks.validation import validate
from tests.helpers import assert_refused_at, valid_config

Mutation = Callable[[dict[str, Any]], None]
MISTRAL_SHAPE = {"parametersBillion": 7.25, "layers": 32, "kvHeads": 8, "headDim": 128}


def group(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg["workers"][0]


def second_host(cfg: dict[str, Any], **extra: Any) -> Any:
    cfg["hosts"].append({"name": "gpu-b", "gpus": {"count": 2}, **extra})


def two_hosts(cfg: dict[str, Any], **b: Any) -> Any:
    cfg["hosts"][0]["privateAddress"] = "10.0.0.11"
    second_host(cfg, **b)


# (id, mutation, secret keys, expected key path, fragment of the rule)
CASES: list[tuple[str, Mutation, set[str], str, str]] = [
    ("utilization-too-high", lambda c: group(c).update(gpuMemoryUtilization=0.95), set(),
     "inference-stack:workers[0].gpuMemoryUtilization", "must be in (0, 0.90]"),
    ("utilization-zero", lambda c: group(c).update(gpuMemoryUtilization=0), set(),
     "inference-stack:workers[0].gpuMemoryUtilization", "must be in (0, 0.90]"),
    ("start-period-short", lambda c: group(c).update(health={"startPeriodSeconds": 100}), set(),
     "inference-stack:workers[0].health.startPeriodSeconds", "at least 2x the measured cold start (60 s)"),
    ("image-latest", lambda c: group(c).update(image="vllm/vllm-openai:latest"), set(),
     "inference-stack:workers[0].image", "`latest` moves between pulls"),
    ("image-untagged", lambda c: group(c).update(image="vllm/vllm-openai"), set(),
     "inference-stack:workers[0].image", "the image has no tag"),
    ("image-empty", lambda c: group(c).update(image=""), set(),
     "inference-stack:workers[0].image", "the image has no tag"),
    ("image-registry-port-no-tag", lambda c: group(c).update(image="registry:5000/vllm"), set(),
     "inference-stack:workers[0].image", "the image has no tag"),
    ("replicas-zero", lambda c: group(c).update(replicasPerHost=0), set(),
     "inference-stack:workers[0].replicasPerHost", "greater than or equal to 1"),
    ("gpu-overlap-in-group", lambda c: group(c).update(gpuAssignments=[[0], [0]]), set(),
     "inference-stack:workers[0].gpuAssignments[1]", "GPU `0` on host `gpu-a` is already assigned"),
    ("gpu-overlap-across-groups",
     lambda c: c["workers"].append({**group(c), "name": "other", "gpuAssignments": [[1], [0]]})
     or group(c).update(gpuAssignments=[[0]]), set(),
     "inference-stack:workers[1].gpuAssignments[1]", "GPU `0` on host `gpu-a` is already assigned"),
    ("gpu-position-out-of-range", lambda c: group(c).update(gpuAssignments=[[5]]), set(),
     "inference-stack:workers[0].gpuAssignments[0]", "host `gpu-a` has 2 GPU(s)"),
    ("gpus-exceeded", lambda c: group(c).update(replicasPerHost=3), set(),
     "inference-stack:workers[0].replicasPerHost", "3 worker(s) x 1 GPU(s) do not fit in the 2 free GPU(s)"),
    ("tp-mismatch",
     lambda c: group(c)["model"].update(tensorParallelSize=2) or group(c).update(gpuAssignments=[[0]]), set(),
     "inference-stack:workers[0].gpuAssignments[0]", "each worker needs exactly 2 GPU(s)"),
    ("tp-exceeds-host", lambda c: group(c)["model"].update(tensorParallelSize=4), set(),
     "inference-stack:workers[0].replicasPerHost", "do not fit in the 2 free GPU(s)"),
    ("hf-token-plain", lambda c: c.update(hfToken="hf_abc"), set(),
     "inference-stack:hfToken", "secrets must be Pulumi secrets"),
    ("api-key-plain", lambda c: c.update(vllmApiKey="sk-123"), set(),
     "inference-stack:vllmApiKey", "secrets must be Pulumi secrets"),
    ("unknown-top-level-key", lambda c: c.update(wrokers=[]), set(),
     "inference-stack:wrokers", "unknown key"),
    ("unknown-group-key", lambda c: group(c).update(gpuMemoryUtilisation=0.8), set(),
     "inference-stack:workers[0].gpuMemoryUtilisation", "unknown key"),
    ("unknown-model-key", lambda c: group(c)["model"].update(maxModelLength=4096), set(),
     "inference-stack:workers[0].model.maxModelLength", "unknown key"),
    ("log-level-debug", lambda c: group(c).update(logLevel="DEBUG"), set(),
     "inference-stack:workers[0].logLevel", "DEBUG logging fills a disk"),
    ("extra-arg-typo", lambda c: group(c).update(extraArgs=["--enable-prefix-cache"]), set(),
     "inference-stack:workers[0].extraArgs", "`--enable-prefix-cache` is not a vLLM 0.32.0 flag on the allowlist"),
    ("extra-arg-managed", lambda c: group(c).update(extraArgs=["--gpu-memory-utilization=0.95"]), set(),
     "inference-stack:workers[0].extraArgs", "`--gpu-memory-utilization` is set by the stack"),
    ("extra-arg-denied", lambda c: group(c).update(extraArgs=["--trust-remote-code"]), set(),
     "inference-stack:workers[0].extraArgs", "`--trust-remote-code` is refused"),
    ("unknown-host", lambda c: group(c).update(hosts=["gpu-z"]), set(),
     "inference-stack:workers[0].hosts", "no host has this name"),
    ("multi-host-no-address", lambda c: second_host(c), set(),
     "inference-stack:hosts[0].privateAddress", "a multi-host stack needs each host's private address"),
    ("public-address", lambda c: two_hosts(c, privateAddress="8.8.8.8"), set(),
     "inference-stack:hosts[1].privateAddress", "may only publish on a private address"),
    ("ssh-without-user", lambda c: c["hosts"][0].update(ssh={"address": "gpu-a.internal"}), set(),
     "inference-stack:hosts[0].ssh.user", "required key is missing"),
    ("gateway-host-unknown", lambda c: c.update(network={"gatewayHost": "gpu-z"}), set(),
     "inference-stack:network.gatewayHost", "no host has this name"),
    ("private-range-not-cidr", lambda c: c.update(network={"extraPrivateRanges": ["10.0.0.0/33"]}), set(),
     "inference-stack:network.extraPrivateRanges", "is not a network in CIDR form"),
    ("weights-source-http", lambda c: group(c)["model"].update(source="http://models.example/m"), set(),
     "inference-stack:workers[0].model.source", "a weights source is"),
    ("prefetch-on-local-host", lambda c: group(c)["model"].update(weights="prefetch"), set(),
     "inference-stack:workers[0].model.weights", "pre-fetching runs as root on SSH hosts only"),
    ("driver-too-old", lambda c: c["hosts"][0]["gpus"].update(driverVersion="535.54.03"), set(),
     "inference-stack:workers[0].image", "driver 535.54.03 is older than 575.51.03, the minimum for CUDA 12.9"),
    ("model-does-not-fit",
     lambda c: c["hosts"][0]["gpus"].update(memoryMib=24576)
     or group(c)["model"].update(maxModelLen=8192, maxNumSeqs=64, quantization="awq_marlin", shape=MISTRAL_SHAPE),
     set(), "inference-stack:workers[0].model.maxNumSeqs", "the model does not fit"),
    ("canary-changes-nothing", lambda c: group(c).update(canary={"weightPercent": 10}), set(),
     "inference-stack:workers[0].canary", "the canary runs exactly what the group runs"),
    ("canary-is-the-whole-group", lambda c: group(c).update(canary={"weightPercent": 10, "workers": 2,
     "revision": "b" * 40}), set(),
     "inference-stack:workers[0].canary.workers", "a canary needs stable workers beside it"),
    ("canary-flag-not-allowed", lambda c: group(c).update(canary={"weightPercent": 10,
     "extraArgs": ["--api-key", "x"]}), set(),
     "inference-stack:workers[0].canary.extraArgs", "`--api-key` is set by the stack"),
    ("canary-on-second-group",
     lambda c: c["workers"].append({**group(c), "name": "more", "gpuAssignments": [[1]],
                                    "canary": {"weightPercent": 10, "revision": "b" * 40}})
     or group(c).update(gpuAssignments=[[0]]), set(),
     "inference-stack:workers[1].canary", "splits `smollm2-1.7b` between the canary and the model's first group"),
    ("canary-pool-name-taken",
     lambda c: c["workers"].append({**group(c), "name": "chat-canary", "gpuAssignments": [[1]],
                                    "model": {**group(c)["model"], "servedName": "other"}})
     or group(c).update(gpuAssignments=[[0]], canary={"weightPercent": 10, "revision": "b" * 40}), set(),
     "inference-stack:workers[0].canary", "the canary's gateway pool is named `chat-canary`"),
    ("canary-weight-zero", lambda c: group(c).update(canary={"weightPercent": 0, "revision": "b" * 40}), set(),
     "inference-stack:workers[0].canary.weightPercent", "greater than or equal to 1"),
    ("gateway-latest-image", lambda c: c.update(gateway={"image": "nginx:latest"}), set(),
     "inference-stack:gateway.image", "`latest` moves between pulls"),
    ("gateway-listen-hostname", lambda c: c.update(gateway={"listenAddress": "localhost"}), set(),
     "inference-stack:gateway.listenAddress", "not an IP address"),
    ("client-keys-not-json", lambda c: c.update(gatewayApiKeys="team-a:sk-123"), {"gatewayApiKeys"},
     "inference-stack:gatewayApiKeys", "must be a JSON object"),
    ("client-key-too-short", lambda c: c.update(gatewayApiKeys='{"team-a": "short"}'), {"gatewayApiKeys"},
     "inference-stack:gatewayApiKeys", "must be 16-256 characters"),
    ("client-keys-plain", lambda c: c.update(gatewayApiKeys='{"team-a": "sk-aaaaaaaaaaaaaaaaaaaa"}'), set(),
     "inference-stack:gatewayApiKeys", "secrets must be Pulumi secrets"),
    ("backup-without-bucket", lambda c: c.update(weaviate={"enabled": True, "backup": {"enabled": True}}), set(),
     "inference-stack:weaviate.backup.bucket", "backups are on but name no bucket"),
    ("maxmemory-without-policy",
     lambda c: c.update(redis={"enabled": True, "maxmemoryMb": 2048, "memoryMb": 3072}), set(),
     "inference-stack:redis.maxmemoryPolicy", "needs a policy for what happens when it is reached"),
    ("offload-with-redis-off", lambda c: c.update(redis={"kvCacheOffload": True}), set(),
     "inference-stack:redis.kvCacheOffload", "Redis is off"),
    ("offload-with-noeviction",
     lambda c: c.update(redis={"enabled": True, "kvCacheOffload": True, "maxmemoryPolicy": "noeviction"}), set(),
     "inference-stack:redis.maxmemoryPolicy", "only an `allkeys-*` policy frees memory"),
    ("redis-latest", lambda c: c.update(redis={"image": "redis:latest"}), set(),
     "inference-stack:redis.image", "`latest` moves between pulls"),
    ("weaviate-keys-bad", lambda c: c.update(weaviateApiKeys='{"app": "short"}'), {"weaviateApiKeys"},
     "inference-stack:weaviateApiKeys", "must be 16-256 of"),
    ("backup-endpoint-with-scheme",
     lambda c: c.update(weaviate={"backup": {"endpoint": "https://minio:9000"}}), set(),
     "inference-stack:weaviate.backup.endpoint", "must match"),
    ("toolkit-version-unpinned", lambda c: c.update(provisioning={"toolkitVersion": "latest"}), set(),
     "inference-stack:provisioning.toolkitVersion", "must match"),
    ("revision-branch", lambda c: group(c)["model"].update(revision="main"), set(),
     "inference-stack:workers[0].model.revision", "the revision must be a full commit hash"),
    ("duplicate-host", lambda c: c["hosts"].append({"name": "gpu-a", "gpus": {"count": 1}}), set(),
     "inference-stack:hosts[1].name", "names must be unique"),
    ("cpu-with-gpus", lambda c: group(c).update(accelerator="cpu", gpuAssignments=[[0]]), set(),
     "inference-stack:workers[0].gpuAssignments", "a `cpu` group uses no GPUs"),
    ("nvidia-on-gpuless-host", lambda c: c["hosts"][0].update(gpus={"count": 0}), set(),
     "inference-stack:workers[0].accelerator", "host `gpu-a` declares no GPUs"),
    ("mig-tensor-parallel",
     lambda c: c["hosts"][0].update(gpus={"count": 2, "ids": [
         "MIG-4b5e1a1c-0000-4000-8000-000000000001", "MIG-4b5e1a1c-0000-4000-8000-000000000002"]})
     or group(c)["model"].update(tensorParallelSize=2), set(),
     "inference-stack:workers[0].gpuAssignments[0]", "a MIG instance cannot join a tensor-parallel group"),
    ("quantization-unknown", lambda c: group(c)["model"].update(quantization="awq4"), set(),
     "inference-stack:workers[0].model.quantization", "Input should be"),
    ("cache-path-relative", lambda c: c["hosts"][0].update(modelCachePath="data/models"), set(),
     "inference-stack:hosts[0].modelCachePath", "must be absolute"),
    ("hosts-missing", lambda c: c.pop("hosts"), set(),
     "inference-stack:hosts", "required key is missing"),
    ("gpu-id-garbage", lambda c: c["hosts"][0].update(gpus={"count": 1, "ids": ["gpu0"]}), set(),
     "inference-stack:hosts[0].gpus.ids", "`gpu0` is not a GPU index, GPU UUID or MIG device UUID"),
    ("port-clash", lambda c: two_hosts(c, privateAddress="10.0.0.12")
     or group(c).update(replicasPerHost=1)
     or c["workers"].append({**group(c), "name": "other", "replicasPerHost": 1}), set(),
     "inference-stack:workers[1].port", "host port 8000 on host `gpu-b` is already taken"),
]


def run(cfg: dict[str, Any], secret: set[str]) -> None:
    validate("test", {k: json.dumps(v) if not isinstance(v, str) else v for k, v in cfg.items()}, secret)


def test_valid_config_passes() -> None:
    run(valid_config(), set())


@pytest.mark.parametrize(("mutate", "secret", "path", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config_is_refused(mutate: Mutation, secret: set[str], path: str, rule: str) -> None:
    cfg = valid_config()
    mutate(cfg)
    assert_refused_at(cfg, path, rule, secret)


UTILIZATION = "inference-stack:workers[0].gpuMemoryUtilization"
UTILIZATION_RULE = ("must be in (0, 0.90]: above 0.90 vLLM runs out of memory under load, because the CUDA context "
                    "and fragmentation need the headroom")
UTILIZATION_FIX = "use 0.85 to 0.90, e.g. `gpuMemoryUtilization: 0.9`"


@pytest.mark.parametrize("value", [0.90, 0.9, 0.85, 0.01])
def test_utilization_up_to_exactly_0_90_passes(value: float) -> None:
    cfg = valid_config()
    group(cfg).update(gpuMemoryUtilization=value)
    run(cfg, set())


@pytest.mark.parametrize("value", [0.91, 0.9000001, 0.95, 1.0, 0, -0.5])
def test_utilization_above_0_90_or_not_positive_fails_with_exactly_its_issue(value: float) -> None:
    cfg = valid_config()
    group(cfg).update(gpuMemoryUtilization=value)
    with pytest.raises(ConfigError) as caught:
        run(cfg, set())
    assert caught.value.issues == [ConfigIssue(UTILIZATION, value, UTILIZATION_RULE, UTILIZATION_FIX)]


def test_matrix_has_25_distinct_messages() -> None:
    assert len({(c[3], c[4]) for c in CASES}) >= 25


def test_did_you_mean_names_the_right_key() -> None:
    cfg = valid_config()
    group(cfg)["gpuMemoryUtilisation"] = 0.8
    cfg["wrokers"] = []
    with pytest.raises(ConfigError) as caught:
        run(cfg, set())
    text = str(caught.value)
    assert "did you mean `gpuMemoryUtilization`?" in text
    assert "did you mean `workers`?" in text


def test_extra_arg_typo_suggests_flag() -> None:
    cfg = valid_config()
    group(cfg)["extraArgs"] = ["--enable-prefix-cache"]
    with pytest.raises(ConfigError, match="did you mean `--enable-prefix-caching`"):
        run(cfg, set())


def test_cgnat_and_overlay_addresses_are_private() -> None:
    cfg = valid_config()
    two_hosts(cfg, privateAddress="100.64.3.7")
    run(cfg, set())
    cfg["hosts"][1]["privateAddress"] = "203.0.113.9"
    cfg["network"] = {"extraPrivateRanges": ["203.0.113.0/24"]}
    run(cfg, set())


def test_secrets_accepted_when_secret() -> None:
    cfg = valid_config()
    cfg.update(hfToken="hf_" + "a" * 34, vllmApiKey="sk-" + "b" * 29)
    run(cfg, {"hfToken", "vllmApiKey"})


def test_plain_secret_value_is_not_echoed() -> None:
    cfg = valid_config()
    cfg["hfToken"] = "hf_supersecretvalue"
    with pytest.raises(ConfigError) as caught:
        run(cfg, set())
    assert "hf_supersecretvalue" not in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    cfg = valid_config()
    group(cfg).update(gpuMemoryUtilization=0.99, image="x:latest")
    with pytest.raises(ConfigError) as caught:
        run(cfg, set())
    assert len(caught.value.issues) == 2


def test_the_error_reads_exactly_as_documented() -> None:
    """What a user sees: a header with the count, then each key path = its value, the rule and the fix,
    for each kind of issue (enum, rule, unknown key with no close match, pattern)."""
    cfg = valid_config()
    group(cfg).update(gpuMemoryUtilization=0.99)
    group(cfg)["model"].update(dtype="fp4")
    cfg.update(weaviate={"backup": {"endpoint": "https://minio:9000"}}, gateway={"rateLimit": {"zzzqqq": 1}})
    with pytest.raises(ConfigError) as caught:
        run(cfg, set())
    dtypes = "'auto', 'half', 'float16', 'bfloat16', 'float' or 'float32'"
    assert str(caught.value) == "\n".join([
        "invalid config for stack 'test' (4 problems):",
        '  inference-stack:workers[0].model.dtype = "fp4"',
        f"    rule: Input should be {dtypes}",
        f"    fix:  use one of {dtypes}",
        "  inference-stack:workers[0].gpuMemoryUtilization = 0.99",
        f"    rule: {UTILIZATION_RULE}",
        f"    fix:  {UTILIZATION_FIX}",
        "  inference-stack:gateway.rateLimit.zzzqqq = 1",
        "    rule: unknown key",
        "    fix:  remove it; valid keys here are: burst, requestsPerSecond",
        '  inference-stack:weaviate.backup.endpoint = "https://minio:9000"',
        r"    rule: must match ^[A-Za-z0-9.-]+(:\d{1,5})?$",
        "    fix:  see the README's config reference for the format",
    ])


def test_a_missing_key_reads_not_set() -> None:
    cfg = valid_config()
    cfg.pop("hosts")
    with pytest.raises(ConfigError) as caught:
        run(cfg, set())
    assert str(caught.value) == "\n".join([
        "invalid config for stack 'test' (1 problem):",
        "  inference-stack:hosts = (not set)",
        "    rule: required key is missing",
        "    fix:  add it (see the README's config reference)",
    ])
