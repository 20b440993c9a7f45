"""Values that reach a shell script, an argv, Docker or mount(2): dangerous host paths, and
strings outside the grammar of what receives them. Each is refused up front with its key path
and rule; the real values beside them still pass."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from stacks.config import HostConfig, StackConfig
from stacks.grammars import check_pinned_image, host_key_problem
from stacks.host_paths import BROAD_DIRS, SYSTEM_ROOTS, host_path_problem
from stacks.vllm_flags import check_extra_args
from tests.helpers import assert_refused_at, valid_config, validate_values

Mutation = Callable[[dict[str, Any]], None]
COMMIT = "a" * 40
HOST = "inference-stack:hosts[0]"
WORKER = "inference-stack:workers[0]"


def group(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg["workers"][0]


def model(cfg: dict[str, Any], **values: Any) -> Any:
    group(cfg)["model"].update(values)


def host(cfg: dict[str, Any], **values: Any) -> Any:
    cfg["hosts"][0].update(values)


def ssh(cfg: dict[str, Any], **values: Any) -> Any:
    host(cfg, ssh={"user": "ubuntu", "address": "gpu-a.internal", **values})


def extra(*args: str) -> Mutation:
    return lambda c: group(c).update(extraArgs=list(args))


def key_line(kind: str, embedded: str | None = None, material: bytes = b"\x00\x00\x00\x20" + bytes(32)) -> str:
    """An OpenSSH public key line whose blob names `embedded` (the line's own type by default)."""
    name = (embedded or kind).encode()
    blob = len(name).to_bytes(4, "big") + name + material
    return f"{kind} {base64.b64encode(blob).decode()} root@gpu-a"


# (id, mutation, expected key path, fragment of the rule)
HOST_PATHS: list[tuple[str, Mutation, str, str]] = [
    ("model-cache-at-root", lambda c: host(c, modelCachePath="/"), f"{HOST}.modelCachePath",
     "is the host's root directory"),
    ("model-cache-in-etc", lambda c: host(c, modelCachePath="/etc/models"), f"{HOST}.modelCachePath",
     "under `/etc`"),
    ("model-cache-in-var-run", lambda c: host(c, modelCachePath="/var/run/models"), f"{HOST}.modelCachePath",
     "under `/var/run`"),
    ("model-cache-in-proc", lambda c: host(c, modelCachePath="/proc/models"), f"{HOST}.modelCachePath",
     "under `/proc`"),
    ("model-cache-is-sys", lambda c: host(c, modelCachePath="/sys"), f"{HOST}.modelCachePath", "under `/sys`"),
    ("compile-cache-in-boot", lambda c: host(c, compileCachePath="/boot/cache"), f"{HOST}.compileCachePath",
     "under `/boot`"),
    ("compile-cache-in-usr", lambda c: host(c, compileCachePath="/usr/local/vllm"), f"{HOST}.compileCachePath",
     "under `/usr`"),
    ("model-cache-in-dev", lambda c: host(c, modelCachePath="/dev/shm/models"), f"{HOST}.modelCachePath",
     "under `/dev`"),
    ("model-cache-in-lib64", lambda c: host(c, modelCachePath="/lib64/models"), f"{HOST}.modelCachePath",
     "under `/lib64`"),
    ("model-cache-in-sbin", lambda c: host(c, modelCachePath="/sbin/models"), f"{HOST}.modelCachePath",
     "under `/sbin`"),
    ("model-cache-in-run", lambda c: host(c, modelCachePath="/run/models"), f"{HOST}.modelCachePath",
     "under `/run`"),
    ("model-cache-in-root-home", lambda c: host(c, modelCachePath="/root/models"), f"{HOST}.modelCachePath",
     "under `/root`"),
    ("model-cache-in-docker-data", lambda c: host(c, modelCachePath="/var/lib/docker/volumes/m"),
     f"{HOST}.modelCachePath", "under `/var/lib/docker`"),
    ("compile-cache-in-containerd", lambda c: host(c, compileCachePath="/var/lib/containerd/c"),
     f"{HOST}.compileCachePath", "under `/var/lib/containerd`"),
    ("model-cache-is-home", lambda c: host(c, modelCachePath="/home"), f"{HOST}.modelCachePath",
     "is `/home` itself"),
    ("compile-cache-is-tmp", lambda c: host(c, compileCachePath="/tmp"), f"{HOST}.compileCachePath",
     "is `/tmp` itself"),
    ("model-cache-is-var-with-slash", lambda c: host(c, modelCachePath="/var/"), f"{HOST}.modelCachePath",
     "is `/var` itself"),
    ("model-cache-with-dotdot", lambda c: host(c, modelCachePath="/data/../etc/models"), f"{HOST}.modelCachePath",
     "has a `.` or `..` component"),
    ("model-cache-with-dot", lambda c: host(c, modelCachePath="/data/./models"), f"{HOST}.modelCachePath",
     "has a `.` or `..` component"),
    ("model-cache-double-slash", lambda c: host(c, modelCachePath="/data//models"), f"{HOST}.modelCachePath",
     "has an empty component"),
    ("model-cache-with-space", lambda c: host(c, modelCachePath="/data/model cache"), f"{HOST}.modelCachePath",
     "no whitespace or shell metacharacters"),
    ("model-cache-with-semicolon", lambda c: host(c, modelCachePath="/data/m;reboot"), f"{HOST}.modelCachePath",
     "no whitespace or shell metacharacters"),
    ("compile-cache-with-dollar", lambda c: host(c, compileCachePath="/data/$HOME"), f"{HOST}.compileCachePath",
     "no whitespace or shell metacharacters"),
    ("model-cache-with-colon", lambda c: host(c, modelCachePath="/data/a:b"), f"{HOST}.modelCachePath",
     "no whitespace or shell metacharacters"),
    ("caches-the-same", lambda c: host(c, modelCachePath="/data/cache", compileCachePath="/data/cache/"),
     f"{HOST}.compileCachePath", "are the same directory or one holds the other"),
    ("compile-cache-in-model-cache",
     lambda c: host(c, modelCachePath="/data/cache", compileCachePath="/data/cache/compile"),
     f"{HOST}.compileCachePath", "are the same directory or one holds the other"),
    ("model-cache-in-compile-cache",
     lambda c: host(c, modelCachePath="/data/compile/models", compileCachePath="/data/compile"),
     f"{HOST}.compileCachePath", "are the same directory or one holds the other"),
    ("tools-venv-in-etc", lambda c: c.update(provisioning={"toolsVenv": "/etc/venv"}),
     "inference-stack:provisioning.toolsVenv", "under `/etc`"),
    ("tools-venv-relative", lambda c: c.update(provisioning={"toolsVenv": "venv"}),
     "inference-stack:provisioning.toolsVenv", "must be absolute"),
    ("tools-venv-is-opt", lambda c: c.update(provisioning={"toolsVenv": "/opt"}),
     "inference-stack:provisioning.toolsVenv", "is `/opt` itself"),
    ("tools-venv-in-model-cache", lambda c: c.update(provisioning={"toolsVenv": "/data/model-cache/venv"}),
     "inference-stack:provisioning", "`toolsVenv` (/data/model-cache/venv) and hosts[0].modelCachePath"),
]  # fmt: skip

VERSIONS_AND_ADDRESSES: list[tuple[str, Mutation, str, str]] = [
    ("hub-version-range", lambda c: c.update(provisioning={"huggingfaceHubVersion": ">=1.0"}),
     "inference-stack:provisioning.huggingfaceHubVersion", "not a release version"),
    ("hub-version-without-hf-cli", lambda c: c.update(provisioning={"huggingfaceHubVersion": "0.30.2"}),
     "inference-stack:provisioning.huggingfaceHubVersion", "ships from 0.34 on"),
    ("boto3-version-with-command", lambda c: c.update(provisioning={"boto3Version": "1.44.8;reboot"}),
     "inference-stack:provisioning.boto3Version", "not a release version"),
    ("boto3-version-url", lambda c: c.update(provisioning={"boto3Version": "https://evil.example/boto3.whl"}),
     "inference-stack:provisioning.boto3Version", "not a release version"),
    ("toolkit-version-with-command", lambda c: c.update(provisioning={"toolkitVersion": "1.17.8-1 x"}),
     "inference-stack:provisioning.toolkitVersion", "must match"),
    ("driver-version-with-command", lambda c: c["hosts"][0]["gpus"].update(driverVersion="575.51.03;id"),
     f"{HOST}.gpus.driverVersion", "must match"),
    ("cuda-version-with-command", lambda c: group(c).update(cudaVersion="12.9 && id"),
     f"{WORKER}.cudaVersion", "must match"),
    ("s3-region-with-space", lambda c: model(c, s3Region="us east 1"), f"{WORKER}.model.s3Region",
     "not an AWS region"),
    ("s3-region-uppercase-on-aws", lambda c: model(c, s3Region="EU-WEST-1"), f"{WORKER}.model.s3Region",
     "not an AWS region"),
    ("s3-region-leading-dash-on-minio",
     lambda c: model(c, s3EndpointUrl="https://minio.internal:9000", s3Region="-garage"),
     f"{WORKER}.model.s3Region", "one DNS label"),
    ("backup-region-with-slash", lambda c: c.update(weaviate={"backup": {"region": "eu-west-1/x"}}),
     "inference-stack:weaviate.backup.region", "not an AWS region"),
    ("backup-path-dotdot", lambda c: c.update(weaviate={"backup": {"path": "weaviate/../other"}}),
     "inference-stack:weaviate.backup.path", "no empty, `.` or `..` parts"),
    ("backup-path-absolute", lambda c: c.update(weaviate={"backup": {"path": "/weaviate"}}),
     "inference-stack:weaviate.backup.path", "no empty, `.` or `..` parts"),
    ("backup-endpoint-leading-dash", lambda c: c.update(weaviate={"backup": {"endpoint": "-minio:9000"}}),
     "inference-stack:weaviate.backup.endpoint", "not `host[:port]`"),
    ("backup-endpoint-port-out-of-range", lambda c: c.update(weaviate={"backup": {"endpoint": "minio:99999"}}),
     "inference-stack:weaviate.backup.endpoint", "not `host[:port]`"),
    ("s3-endpoint-with-user", lambda c: model(c, s3EndpointUrl="https://admin@minio.internal:9000"),
     f"{WORKER}.model.s3EndpointUrl", "with no credentials, query"),
    ("s3-endpoint-with-space", lambda c: model(c, s3EndpointUrl="https://minio .internal:9000"),
     f"{WORKER}.model.s3EndpointUrl", "not an endpoint URL boto3 accepts"),
    ("s3-endpoint-with-query", lambda c: model(c, s3EndpointUrl="https://minio.internal/?x=$(id)"),
     f"{WORKER}.model.s3EndpointUrl", "not an endpoint URL boto3 accepts"),
    ("s3-endpoint-ftp", lambda c: model(c, s3EndpointUrl="ftp://minio.internal"),
     f"{WORKER}.model.s3EndpointUrl", "not an endpoint URL boto3 accepts"),
    ("s3-prefix-with-space", lambda c: model(c, source="s3://models/mistral 7b"), f"{WORKER}.model.source",
     "a weights source is"),
    ("s3-prefix-with-dotdot", lambda c: model(c, source="s3://models/a/../b"), f"{WORKER}.model.source",
     "a weights source is"),
    ("s3-prefix-with-backtick", lambda c: model(c, source="s3://models/`id`"), f"{WORKER}.model.source",
     "a weights source is"),
    ("hf-source-unicode", lambda c: model(c, source=f"hf://örg/name@{COMMIT}"), f"{WORKER}.model.source",
     "a weights source is"),
    ("ssh-address-option", lambda c: ssh(c, address="-oProxyCommand=id"), f"{HOST}.ssh.address",
     "not a host name or IP address"),
    ("ssh-address-with-space", lambda c: ssh(c, address="gpu a"), f"{HOST}.ssh.address",
     "not a host name or IP address"),
    ("ssh-address-label-too-long", lambda c: ssh(c, address="a" * 64 + ".internal"), f"{HOST}.ssh.address",
     "not a host name or IP address"),
    ("ssh-user-uppercase", lambda c: ssh(c, user="Ubuntu"), f"{HOST}.ssh.user", "not a Linux user name"),
    ("ssh-user-option", lambda c: ssh(c, user="-oProxyCommand"), f"{HOST}.ssh.user", "not a Linux user name"),
    ("host-key-dsa", lambda c: ssh(c, hostKey=key_line("ssh-dss")), f"{HOST}.ssh.hostKey",
     "`ssh-dss` is not a host key type"),
    ("host-key-wrong-type", lambda c: ssh(c, hostKey=key_line("ssh-rsa", "ssh-ed25519")), f"{HOST}.ssh.hostKey",
     "the key's own type is not `ssh-rsa`"),
    ("host-key-not-base64", lambda c: ssh(c, hostKey="ssh-ed25519 AAAA$$$$"), f"{HOST}.ssh.hostKey",
     "the key is not base64"),
    ("host-key-with-host-name", lambda c: ssh(c, hostKey="gpu-a " + key_line("ssh-ed25519")),
     f"{HOST}.ssh.hostKey", "`gpu-a` is not a host key type"),
    ("host-key-type-only", lambda c: ssh(c, hostKey="ssh-ed25519"), f"{HOST}.ssh.hostKey",
     "expected `<type> <base64 key>`"),
    ("host-key-cut-short", lambda c: ssh(c, hostKey=key_line("ssh-ed25519", material=b"")),
     f"{HOST}.ssh.hostKey", "no key material"),
]  # fmt: skip

IMAGES_AND_NAMES: list[tuple[str, Mutation, str, str]] = [
    ("image-space-in-tag", lambda c: group(c).update(image="vllm/vllm-openai:v0.32 .0"), f"{WORKER}.image",
     "it contains whitespace"),
    ("image-uppercase-repo", lambda c: group(c).update(image="vllm/VLLM-openai:v0.32.0"), f"{WORKER}.image",
     "a repository name must be lowercase"),
    ("image-uppercase-hub-org", lambda c: c.update(redis={"image": "Redis/redis:7.4.9"}),
     "inference-stack:redis.image", "a repository name must be lowercase"),
    ("image-short-digest", lambda c: group(c).update(image="vllm/vllm-openai@sha256:abc123"), f"{WORKER}.image",
     "its digest is not `sha256:` and 64 lowercase hex digits"),
    ("image-md5-digest", lambda c: group(c).update(image="vllm/vllm-openai@md5:" + "a" * 32), f"{WORKER}.image",
     "its digest is not `sha256:`"),
    ("image-leading-dash", lambda c: c.update(gateway={"image": "-nginx:1.28.0"}), "inference-stack:gateway.image",
     "does not follow Docker's"),
    ("image-tag-with-semicolon", lambda c: c.update(gateway={"image": "nginx:1.28;reboot"}),
     "inference-stack:gateway.image", "does not follow Docker's"),
    ("image-tag-too-long", lambda c: c.update(observability={"grafanaImage": "grafana/grafana:" + "1" * 129}),
     "inference-stack:observability.grafanaImage", "does not follow Docker's"),
    ("canary-image-with-space", lambda c: group(c).update(canary={"weightPercent": 10, "image": "vllm/x :1"}),
     f"{WORKER}.canary.image", "it contains whitespace"),
    ("model-id-leading-dash", lambda c: model(c, id="-org/name"), f"{WORKER}.model.id",
     "not a Hugging Face repository id"),
    ("model-id-unicode", lambda c: model(c, id="örg/name"), f"{WORKER}.model.id",
     "not a Hugging Face repository id"),
    ("model-id-double-dash", lambda c: model(c, id="org/na--me"), f"{WORKER}.model.id", "`--` and `..`"),
    ("model-id-double-dot", lambda c: model(c, id="org/na..me"), f"{WORKER}.model.id", "`--` and `..`"),
    ("model-id-without-org", lambda c: model(c, id="name"), f"{WORKER}.model.id", "expected `org/name`"),
    ("model-id-git", lambda c: model(c, id="org/name.git"), f"{WORKER}.model.id", "ends in `.git`"),
    ("model-id-name-too-long", lambda c: model(c, id="org/" + "n" * 97), f"{WORKER}.model.id",
     "longer than 96 characters"),
    ("served-name-leading-dash", lambda c: model(c, servedName="-chat"), f"{WORKER}.model.servedName",
     "must match"),
    ("served-name-with-slash", lambda c: model(c, servedName="chat/../v1"), f"{WORKER}.model.servedName",
     "must match"),
]  # fmt: skip

EXTRA_ARGS: list[tuple[str, Mutation, str, str]] = [
    ("extra-int-with-space", extra("--seed", "1 2"), f"{WORKER}.extraArgs", "`--seed` takes an integer"),
    ("extra-positional-after-switch", extra("--enforce-eager", "yes"), f"{WORKER}.extraArgs",
     "`yes` is not a flag and no flag before it takes a value"),
    ("extra-leading-positional", extra("meta-llama/Llama-3-8B"), f"{WORKER}.extraArgs",
     "would read it as a second model"),
    ("extra-switch-with-value", extra("--enable-prefix-caching=true"), f"{WORKER}.extraArgs",
     "is a switch and takes no value"),
    ("extra-missing-value", extra("--max-num-batched-tokens"), f"{WORKER}.extraArgs", "needs a value"),
    ("extra-value-is-a-flag", extra("--max-num-batched-tokens", "--enforce-eager"), f"{WORKER}.extraArgs",
     "`--max-num-batched-tokens` needs a value"),
    ("extra-human-int-binary-decimal", extra("--kv-cache-memory-bytes=2.5G"), f"{WORKER}.extraArgs",
     "`--kv-cache-memory-bytes` takes an integer like"),
    ("extra-bad-choice", extra("--kv-cache-dtype", "fp9"), f"{WORKER}.extraArgs",
     "`--kv-cache-dtype` takes one of auto,"),
    ("extra-lora-rank-off-list", extra("--max-lora-rank", "24"), f"{WORKER}.extraArgs",
     "`--max-lora-rank` takes one of 1, 8"),
    ("extra-json-not-json", extra("--compilation-config", "{mode: 3}"), f"{WORKER}.extraArgs",
     "`--compilation-config` takes a JSON object"),
    ("extra-json-not-object", extra("--speculative-config=[1]"), f"{WORKER}.extraArgs",
     "`--speculative-config` takes a JSON object"),
    ("extra-name-with-shell", extra("--reasoning-parser", "qwen3;id"), f"{WORKER}.extraArgs",
     "`--reasoning-parser` takes a plain name"),
    ("extra-float-negative", extra("--cpu-offload-gb", "-4"), f"{WORKER}.extraArgs",
     "`--cpu-offload-gb` needs a value"),
    ("extra-count-zero", extra("--max-loras", "0"), f"{WORKER}.extraArgs", "`--max-loras` takes a positive integer"),
    ("extra-tokenizer-revision-branch", extra("--tokenizer-revision", "main"), f"{WORKER}.extraArgs",
     "`--tokenizer-revision` takes a 40-hex commit"),
    ("extra-tokenizer-leading-dash", extra("--tokenizer=-x"), f"{WORKER}.extraArgs",
     "`--tokenizer` takes a Hugging Face repo id"),
    ("extra-template-with-newline", extra("--chat-template", "{{ x }}\n{{ y }}"), f"{WORKER}.extraArgs",
     "`--chat-template` takes a template file path"),
    ("extra-lora-module-with-space", extra("--lora-modules", "a=/x y"), f"{WORKER}.extraArgs",
     "`--lora-modules` takes `name=path`"),
    ("extra-flag-twice", extra("--seed", "1", "--seed", "2"), f"{WORKER}.extraArgs",
     "`--seed` is given twice"),
    ("canary-extra-positional",
     lambda c: group(c).update(canary={"weightPercent": 10, "extraArgs": ["--enforce-eager", "stray"]}),
     f"{WORKER}.canary.extraArgs", "`stray` is not a flag"),
]  # fmt: skip

CASES = HOST_PATHS + VERSIONS_AND_ADDRESSES + IMAGES_AND_NAMES + EXTRA_ARGS


@pytest.mark.parametrize(("mutate", "path", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_value_is_refused(mutate: Mutation, path: str, rule: str) -> None:
    cfg = valid_config()
    mutate(cfg)
    assert_refused_at(cfg, path, rule)


def test_the_matrix_is_as_large_as_promised() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(HOST_PATHS) >= 25 and len(CASES) >= 35


VALID_IMAGES = [
    "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04",
    "localhost:5000/x:1",
    "vllm/vllm-openai:v0.32.0",
    "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0",
    "cr.weaviate.io/semitechnologies/weaviate:1.39.15",
    "registry.example:5000/team/sub/vllm:v0.32.0_rc1",
    "[fd00::1]:5000/vllm:v1",
    "MyRegistry.example/vllm:v1",
    "a__b/c---d:T",
    "redis@sha256:" + "0123456789abcdef" * 4,
    "redis:7.4.9@sha256:" + "f" * 64,
]


@pytest.mark.parametrize("image", VALID_IMAGES)
def test_real_image_references_pass(image: str) -> None:
    assert check_pinned_image(image) == image
    cfg = valid_config()
    group(cfg).update(image=image)
    validate_values(cfg)


@pytest.mark.parametrize(
    "values",
    [
        {"modelCachePath": "/var/lib/inference-stack/model-cache", "compileCachePath": "/var/lib/inference-stack/cc"},
        {"modelCachePath": "/nvme/model-cache", "compileCachePath": "/nvme/vllm-compile-cache"},
        {"modelCachePath": "/srv/models/", "compileCachePath": "/srv/models-compile"},
        {"modelCachePath": "/mnt/nvme0/hf_cache", "compileCachePath": "/mnt/nvme0/vllm+cache"},
    ],
)
def test_dedicated_cache_directories_pass(values: dict[str, str]) -> None:
    cfg = valid_config()
    host(cfg, **values)
    validate_values(cfg)


def test_a_trailing_slash_is_dropped() -> None:
    assert HostConfig.model_validate({"name": "ab", "modelCachePath": "/srv/models/"}).model_cache_path == "/srv/models"


@pytest.mark.parametrize("root", SYSTEM_ROOTS)
def test_every_system_root_and_all_below_it_is_refused(root: str) -> None:
    assert host_path_problem(root) is not None
    assert host_path_problem(root + "/inference-stack") is not None


@pytest.mark.parametrize("broad", BROAD_DIRS)
def test_a_broad_directory_is_refused_but_a_directory_in_it_passes(broad: str) -> None:
    assert host_path_problem(broad) is not None
    assert host_path_problem(broad + "/inference-stack-models") is None


@pytest.mark.parametrize(
    "values",
    [
        {"huggingfaceHubVersion": "0.34.0", "boto3Version": "1.44.8"},
        {"huggingfaceHubVersion": "1.2.0rc1", "boto3Version": "1.35.0.post1"},
        {"toolsVenv": "/srv/inference-stack/venv"},
    ],
)
def test_real_provisioning_values_pass(values: dict[str, str]) -> None:
    cfg = valid_config()
    cfg["provisioning"] = values
    validate_values(cfg)


@pytest.mark.parametrize(
    "values",
    [
        {"s3Region": "eu-central-1"},
        {"s3Region": "us-gov-west-1"},
        {"s3Region": "cn-north-1"},
        {"s3Region": "ap-southeast-5"},
        {"s3EndpointUrl": "https://minio.internal:9000", "s3Region": "garage"},
        {"s3EndpointUrl": "http://10.0.0.5:9000/s3", "s3Region": "us-east-1"},
        {"s3EndpointUrl": "https://[fd00::5]:9000"},
        {"source": "s3://model-registry/mistral/v0.3/"},
        {"source": "s3://model-registry"},
        {"source": f"hf://Qwen/Qwen2.5-0.5B-Instruct@{COMMIT}"},
        {"id": "org_1/model.v2-instruct"},
        {"id": "mistralai/Mistral-7B-Instruct-v0.3"},
    ],
)
def test_real_model_values_pass(values: dict[str, str]) -> None:
    cfg = valid_config()
    model(cfg, **values)
    validate_values(cfg)


@pytest.mark.parametrize(
    "values",
    [
        {"address": "10.0.0.11"},
        {"address": "fd00::11", "port": 2222},
        {"address": "gpu-a.internal.example.com"},
        {"address": "gpu-a"},
        {"user": "_deploy", "hostKey": key_line("ssh-ed25519")},
        {"hostKey": key_line("ecdsa-sha2-nistp256")},
        {"hostKey": key_line("ssh-rsa").rsplit(" ", 1)[0]},
    ],
)
def test_real_ssh_values_pass(values: dict[str, Any]) -> None:
    cfg = valid_config()
    ssh(cfg, **values)
    validate_values(cfg)


def test_a_real_ed25519_host_key_line_passes() -> None:
    # The shape `ssh-keyscan -t ed25519` prints (after the host name): a 51-byte blob.
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    assert host_key_problem(line) is None


def test_an_ipv6_ssh_host_is_bracketed_in_the_docker_url() -> None:
    cfg = valid_config()
    ssh(cfg, address="fd00::11", port=2222)
    parsed = StackConfig.model_validate(cfg)
    assert parsed.hosts[0].docker_url() == "ssh://ubuntu@[fd00::11]:2222"


@pytest.mark.parametrize(
    "args",
    [
        ["--enable-prefix-caching", "--no-enable-chunked-prefill", "--enforce-eager", "--disable-log-stats"],
        ["--max-num-batched-tokens", "8192", "--seed=1"],
        ["--seed", "-1", "--max-logprobs", "-1"],
        ["--max-num-batched-tokens=8k", "--kv-cache-memory-bytes", "2G", "--cpu-offload-gb", "2.5"],
        ["--kv-cache-dtype", "fp8_e4m3", "--tokenizer-mode=mistral", "--tool-call-parser", "granite-20b-fc"],
        ["--compilation-config", '{"mode": 3, "cudagraph_capture_sizes": [1, 2, 4]}'],
        ['--speculative-config={"method": "ngram", "num_speculative_tokens": 3}'],
        ["--tokenizer", "mistralai/Mistral-7B-Instruct-v0.3", "--tokenizer-revision", COMMIT],
        ["--chat-template", "/root/.cache/huggingface/template.jinja"],
        ["--chat-template", "{% for m in messages %}{{ m['content'] }}{% endfor %}"],
        ["--enable-lora", "--lora-modules", "sql=org/sql-lora", "chat=/root/.cache/lora", "--max-lora-rank", "64"],
        ["--generation-config", "vllm", "--override-generation-config", '{"temperature": 0.5}'],
        ["--limit-mm-per-prompt", '{"image": 2}', "--response-role", "assistant", "--reasoning-parser", "qwen3"],
    ],
)
def test_real_extra_args_pass(args: list[str]) -> None:
    assert check_extra_args(args) == []
    cfg = valid_config()
    group(cfg).update(extraArgs=args)
    validate_values(cfg)
