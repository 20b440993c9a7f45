"""The stack config schema: what `Pulumi.<stack>.yaml` may say, with every default explained.

Keys are camelCase in YAML (Pulumi's convention) and snake_case in Python. Every model forbids
unknown keys, so a typo fails before anything is deployed instead of silently taking a default.
Rules that span several fields (GPU overlap, start period vs cold start) live in `stacks.rules`,
so each can name the exact key path it is about.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from stacks.cluster import KubernetesConfig, WorkerCluster
from stacks.grammars import (
    HOST_PATH_ALLOWED,
    REGION_ALLOWED,
    S3_PART,
    S3_SOURCE,
    PinnedImage,
    check_host_path,
    check_region,
    endpoint_url_ok,
    hf_repo_problem,
    host_key_problem,
    host_port_ok,
    is_hostname,
    is_ip_address,
)
from stacks.host_paths import under
from stacks.schema import MAX_GPU_MEMORY_MIB, MAX_MEMORY_MB, Name, Schema, rule_error


class GpuInventory(Schema):
    """The GPUs a host has, as the NVIDIA driver names them."""

    count: int = Field(ge=0, le=64)
    """How many GPUs (or MIG instances) workers may use on this host. 0 for a CPU-only host."""
    ids: list[str] | None = None
    """Optional device identifiers, in order: indexes (`"0"`), GPU UUIDs (`GPU-…`) or MIG device
    UUIDs (`MIG-…`). Give UUIDs on hosts where index order can change across reboots. When unset,
    the devices are `"0"` … `count-1`."""

    @field_validator("ids")
    @classmethod
    def _ids_look_like_devices(cls, ids: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if ids is None:
            return ids
        for device in ids:
            if not re.fullmatch(r"\d+|GPU-[0-9a-fA-F-]{36}|MIG-[0-9a-fA-F-]{36}|MIG-GPU-[\w/-]+", device):
                raise rule_error(
                    f"`{device}` is not a GPU index, GPU UUID or MIG device UUID",
                    "copy the ids from `nvidia-smi -L` on the host (e.g. `GPU-685c499b-…` or `MIG-…`)",
                )
        if len(set(ids)) != len(ids):
            raise rule_error("a device is listed twice", "list each device once")
        count = info.data.get("count")
        if count is not None and count != len(ids):
            raise rule_error(
                f"`count` is {count} but `ids` lists {len(ids)} device(s): workers would be placed on the ids, "
                "and the count would say otherwise",
                f"set `count: {len(ids)}`, or list exactly {count} id(s)",
            )
        return ids

    driver_version: str | None = Field(default=None, pattern=r"^\d+\.\d+(\.\d+)?$")
    """The NVIDIA driver version the host runs (`nvidia-smi --query-gpu=driver_version`). Lets
    `pulumi preview` check it against the image's CUDA before the host has been verified; after
    verification the measured version is used."""
    memory_mib: int | None = Field(default=None, ge=1024, le=MAX_GPU_MEMORY_MIB)
    """Memory of one GPU in MiB (`nvidia-smi --query-gpu=memory.total`), for the memory-fit
    preflight before the host has been verified."""

    def devices(self) -> list[str]:
        return list(self.ids) if self.ids is not None else [str(i) for i in range(self.count)]


class SshConfig(Schema):
    """SSH access to a host. The key comes from the `sshPrivateKey` secret when set, otherwise
    from the SSH agent (`SSH_AUTH_SOCK`)."""

    user: str = Field(json_schema_extra={"allowed": "`[a-z_][a-z0-9_-]{0,31}`"})
    """Login user (lowercase letters, digits, `_`, `-`; starts with a letter or `_`); needs
    passwordless sudo for the provisioning steps."""
    address: str = Field(json_schema_extra={"allowed": "an IP address or an RFC 1123 host name"})
    """Host name or IP address that SSH (and Docker over SSH) connects to."""
    port: int = Field(default=22, ge=1, le=65535)
    """SSH port."""
    host_key: str | None = Field(
        default=None, json_schema_extra={"allowed": "`<ssh-ed25519|ecdsa-sha2-nistp*|ssh-rsa|sk-…> <base64> [comment]`"}
    )
    """The host's public key (`ssh-ed25519 AAAA…`, a line of `ssh-keyscan <host>` without the
    host name), to pin it instead of trusting on first use."""

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        # shadow-utils' default NAME_REGEX (useradd(8)) and its 32-character limit. The name goes
        # into the Docker provider's `ssh://user@host` URL and the Command provider's login.
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value):
            raise rule_error(
                "not a Linux user name: lowercase letters, digits, `_` and `-`, starting with a letter or "
                "`_`, at most 32 characters (it goes into `ssh://user@host` and the SSH login)",
                "use the account's login name, e.g. `ubuntu` or `deploy`",
            )
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not (is_ip_address(value) or is_hostname(value)):
            raise rule_error(
                "not a host name or IP address: ssh and `ssh://user@host:port` receive it, where a "
                "leading `-` reads as an option and anything else breaks the URL",
                "use the host's DNS name (letters, digits, `-`, dot-separated) or its IP address",
            )
        return value

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str | None) -> str | None:
        if value is None:
            return value
        problem = host_key_problem(value)
        if problem is not None:
            raise rule_error(
                f"not an OpenSSH public key line: {problem}; the Command provider checks the host against it",
                "paste the key from `ssh-keyscan -t ed25519 <host>` without the leading host name, "
                "e.g. `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA…`",
            )
        return value

    def url_host(self) -> str:
        """The address as a URL's host: an IPv6 address goes in brackets."""
        return f"[{self.address}]" if ":" in self.address else self.address


# What receives each host path, for its rule.
CACHE_RECEIVERS = {
    "model_cache_path": "storage.sh creates and chowns it as root, and Docker binds it into every worker "
    "(read-write while weights download)",
    "compile_cache_path": "storage.sh creates and chowns it as root, and every worker binds its own "
    "subdirectory read-write",
}


class HostConfig(Schema):
    """A Docker host that runs workers."""

    name: Name
    """Short host name, used in resource and container names (lowercase, digits, dashes)."""
    ssh: SshConfig | None = None
    """How to reach the host over SSH. Unset: this machine, its local Docker engine and no SSH."""
    provision: bool | None = None
    """Install and configure the NVIDIA Container Toolkit and Docker's log rotation on the host.
    Defaults to true for SSH hosts and false for the local machine (`make up` never changes the
    developer's system packages). Verification, storage, weights and image pre-pulls always run."""
    gpus: GpuInventory = GpuInventory(count=0)
    """The GPUs on this host."""
    model_cache_path: str = Field(default="/data/model-cache", json_schema_extra={"allowed": HOST_PATH_ALLOWED})
    """Absolute path on the host's fastest local storage (NVMe) that holds the Hugging Face cache.
    Bound into workers as a Docker volume; weights are never copied into images."""
    compile_cache_path: str = Field(
        default="/data/vllm-compile-cache",
        json_schema_extra={"allowed": f"{HOST_PATH_ALLOWED}; apart from `modelCachePath`"},
    )
    """Absolute path on fast local storage for vLLM's torch.compile and CUDA-graph cache, one
    subdirectory per worker, so a replaced container skips compilation already done."""
    allow_network_storage: bool = False
    """Allow the caches on network storage (NFS, CIFS, FUSE). Off: loading 15 GB of weights over
    NFS turns a one-minute cold start into ten."""
    cache_owner: str = Field(default="0:0", pattern=r"^\d+:\d+$")
    """`uid:gid` that owns the cache directories: the user the vLLM image runs as (root)."""
    private_address: str | None = None
    """The host's private-network IPv4 address. Required in multi-host stacks: workers publish
    their API port on this address only (never on 0.0.0.0) so a gateway on another host can
    reach them."""

    @field_validator("model_cache_path", "compile_cache_path")
    @classmethod
    def _cache_path(cls, value: str, info: ValidationInfo) -> str:
        fix = "use a dedicated directory on fast local storage, e.g. `/data/model-cache`"
        value = check_host_path(value, CACHE_RECEIVERS[info.field_name or ""], fix)
        other = info.data.get("model_cache_path") if info.field_name == "compile_cache_path" else None
        if other is not None and (under(value, other) or under(other, value)):
            raise rule_error(
                f"the compile cache and the model cache (`{other}`) are the same directory or one holds the "
                "other: workers mount the model cache whole and their compile caches read-write, so each "
                "would see and change the other's files",
                "give them sibling directories, e.g. `/data/model-cache` and `/data/vllm-compile-cache`",
            )
        return value

    @field_validator("private_address")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise rule_error("not an IP address", "use the host's private address, e.g. `10.0.0.11`") from None
        return value

    def docker_url(self) -> str | None:
        """The Docker provider's `host`: None for the local engine."""
        return None if self.ssh is None else f"ssh://{self.ssh.user}@{self.ssh.url_host()}:{self.ssh.port}"

    def provisioned(self) -> bool:
        return self.provision if self.provision is not None else self.ssh is not None


# The methods vLLM 0.32 accepts that suit serving (GGUF moved to a CUDA-only plugin in 0.32).
Quantization = Literal[
    "none",
    "awq",
    "awq_marlin",
    "gptq",
    "gptq_marlin",
    "fp8",
    "compressed-tensors",
    "modelopt",
    "modelopt_fp4",
    "mxfp4",
    "experts_int8",
    "moe_wna16",
    "quark",
    "torchao",
]


class ModelShape(Schema):
    """The model's size, from its `config.json` (and its card, for the parameter count)."""

    parameters_billion: float = Field(gt=0, le=2000)
    """Parameter count in billions, e.g. 7.25 for Mistral-7B."""
    layers: int = Field(ge=1, le=1000)
    """`num_hidden_layers`."""
    kv_heads: int = Field(ge=1, le=1024)
    """`num_key_value_heads` (the KV heads, not the attention heads: GQA models have fewer)."""
    head_dim: int = Field(ge=1, le=4096)
    """`head_dim`, or `hidden_size / num_attention_heads`."""


class ModelConfig(Schema):
    """The model a worker group serves."""

    id: str = Field(
        json_schema_extra={"allowed": "`org/name` of `[A-Za-z0-9_.-]`, no part starting or ending in `.`/`-`"}
    )
    """Hugging Face repository id `org/name`, e.g. `mistralai/Mistral-7B-Instruct-v0.3` (ASCII
    letters, digits, `.`, `_`, `-`; no `--` or `..`)."""
    revision: str
    """The repository commit to serve (40 hex characters). Pinned so that a re-pull of the weights
    can never change what the model answers."""
    served_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    """The name clients put in the OpenAI `model` field (letters, digits, `.`, `_`, `-`)."""
    quantization: Quantization = "none"
    """vLLM `--quantization` method, or `none` to load the weights as they are."""
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    """vLLM `--dtype`."""
    max_model_len: int = Field(default=4096, ge=128, le=1_048_576)
    """vLLM `--max-model-len`: the longest prompt plus completion, in tokens. At most the model's own
    context, as vLLM derives it from `config.json` (`max_position_embeddings` and the like, times the
    RoPE scaling factor): checked before deploying when this machine's cache (a host without `ssh`)
    holds the revision, and otherwise only by vLLM when the worker starts."""
    max_num_seqs: int = Field(default=64, ge=1, le=4096)
    """vLLM `--max-num-seqs`: sequences batched at once per worker."""
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    """vLLM `--tensor-parallel-size`. Must equal the GPUs per worker."""
    cold_start_seconds: int = Field(ge=1, le=3600)
    """Measured seconds from container start to a healthy `/health` on the target hardware. The
    health start period is derived from it (2x by default)."""
    weights: Literal["prefetch", "prefetched", "download"] = "prefetch"
    """`prefetch`: each host downloads this revision from `source` into its cache before any
    worker starts. `prefetched`: the operator already filled the cache. In both, workers run with
    `HF_HUB_OFFLINE=1` and mount the cache read-only. `download`: workers fetch the weights on
    first start (needs egress, and the cache is mounted read-write)."""
    source: str | None = Field(
        default=None, json_schema_extra={"allowed": "`hf://org/name@<40 hex>` or `s3://bucket[/prefix]`"}
    )
    """Where `prefetch` downloads from: `hf://org/name@revision` (the default, from `id` and
    `revision`) or `s3://bucket/prefix`, a model registry holding the files and a `manifest.json`
    of sha256 checksums."""
    s3_endpoint_url: str | None = Field(default=None, json_schema_extra={"allowed": "`http(s)://host[:port][/path]`"})
    """S3-compatible endpoint (MinIO and the like) for an `s3://` source, `http(s)://host[:port][/path]`
    without credentials; AWS when unset."""
    s3_region: str | None = Field(default=None, json_schema_extra={"allowed": REGION_ALLOWED})
    """Region of the `s3://` source's bucket: an AWS region such as `eu-west-1`, or with
    `s3EndpointUrl` whatever name that service uses (one DNS label)."""
    shape: ModelShape | None = None
    """Size numbers for the memory-fit preflight. Without them, the check is skipped with a warning."""

    @field_validator("id")
    @classmethod
    def _repo_id(cls, value: str) -> str:
        problem = hf_repo_problem(value)
        if problem is not None:
            raise rule_error(
                f"not a Hugging Face repository id: {problem}; it is `vllm serve`'s first argument and "
                "`hf download`'s, where a leading `-` would read as an option",
                "copy `org/name` from the model page, e.g. `mistralai/Mistral-7B-Instruct-v0.3`",
            )
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is None:
            return value
        hf = re.fullmatch(r"hf://([^@]+)@[0-9a-f]{40}", value)
        if (hf and hf_repo_problem(hf.group(1)) is None) or re.fullmatch(S3_SOURCE, value):
            return value
        raise rule_error(
            "a weights source is `hf://org/name@<40-hex commit>` or `s3://bucket/prefix`, the prefix made "
            "of letters, digits, `.`, `_`, `-` between single slashes (prefetch-hf.sh and s3_sync.py receive "
            "its parts as arguments)",
            "fix the URL, or remove `source` to download the pinned `id`@`revision` from Hugging Face",
        )

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None or endpoint_url_ok(value):
            return value
        raise rule_error(
            "not an endpoint URL boto3 accepts: `http(s)://host[:port][/path]`, with no credentials, query, "
            "whitespace or shell metacharacters (s3_sync.py receives it as `--endpoint-url`)",
            "write it like `https://minio.internal:9000`",
        )

    @field_validator("s3_region")
    @classmethod
    def _region(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_region(value, custom_endpoint=info.data.get("s3_endpoint_url") is not None)

    def weights_source(self) -> str:
        return self.source or f"hf://{self.id}@{self.revision}"

    def offline(self) -> bool:
        return self.weights != "download"

    @field_validator("revision")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{40}", value):
            raise rule_error(
                "the revision must be a full commit hash: a branch or tag can move, and then the same "
                "config serves different weights",
                "use the 40-character commit from the model page's 'Files and versions' history",
            )
        return value


class Resources(Schema):
    """CPU and RAM for one worker container. Size from P99 observed usage plus 20 %."""

    cpus: float = Field(default=8.0, gt=0, le=512)
    """CPU limit (Docker `--cpus`)."""
    memory_mb: int = Field(default=32768, ge=512, le=MAX_MEMORY_MB)
    """Hard memory limit in MiB. vLLM's host RAM use is mostly the tokenizer, CUDA graphs capture
    buffers and pinned memory: 32 GiB covers a 7B model with room to spare."""
    cpu_reservation: float = Field(default=4.0, gt=0, le=512, validate_default=True)
    """CPUs the worker is entitled to under contention, at most `cpus`. Standalone Docker has no CPU
    reservation, so this becomes a relative `cpu_shares` weight (1024 per CPU)."""
    memory_reservation_mb: int = Field(default=16384, ge=256, le=MAX_MEMORY_MB, validate_default=True)
    """Soft memory reservation in MiB (Docker `--memory-reservation`), at most `memoryMb`."""

    @field_validator("cpu_reservation")
    @classmethod
    def _cpus_reserved_within_limit(cls, value: float, info: ValidationInfo) -> float:
        limit = info.data.get("cpus")
        if limit is not None and value > limit:
            raise rule_error(
                f"a worker entitled to {value:g} CPUs under contention is capped at `cpus: {limit:g}`, "
                "so the reservation can never be met",
                f"set `cpuReservation` to at most {limit:g}, or raise `cpus`",
            )
        return value

    @field_validator("memory_reservation_mb")
    @classmethod
    def _memory_reserved_within_limit(cls, value: int, info: ValidationInfo) -> int:
        # Docker refuses the container at create: "Minimum memory limit can not be less than memory
        # reservation limit" (moby daemon/daemon_unix.go, verifyPlatformContainerResources).
        limit = info.data.get("memory_mb")
        if limit is not None and value > limit:
            raise rule_error(
                f"the reservation is above the hard limit `memoryMb: {limit}`, which Docker refuses when it "
                "creates the container",
                f"set `memoryReservationMb` to at most {limit} (half of it is usual), or raise `memoryMb`",
            )
        return value


class Health(Schema):
    """Healthcheck timing. The check is two-tier: `/health` every interval, and a real chat
    completion ("What is 2 + 2? Answer in digits.") on the first healthy check and then every
    `probeEveryMinutes`."""

    interval_seconds: int = Field(default=30, ge=5, le=600)
    """Seconds between checks."""
    timeout_seconds: int = Field(default=20, ge=2, le=300)
    """Seconds one check may take; covers the model probe, not just `/health`."""
    retries: int = Field(default=3, ge=1, le=20)
    """Consecutive failures before the container is unhealthy."""
    start_period_seconds: int | None = Field(default=None, ge=1, le=7200)
    """Seconds during which failures do not count. Defaults to 2x the model's cold start, which is
    also the minimum: Docker's default of 0 marks a loading model unhealthy."""
    probe_every_minutes: int = Field(default=10, ge=1, le=1440)
    """How often (at most) the accuracy probe re-runs after the first success."""


class LogRotation(Schema):
    """json-file log rotation, so a chatty worker cannot fill the host's disk."""

    max_size: str = Field(default="100m", pattern=r"^\d+[kmg]$")
    """Size of one log file before rotation (Docker `max-size`)."""
    max_file: int = Field(default=5, ge=1, le=100)
    """Rotated files kept (Docker `max-file`)."""


class Rollout(Schema):
    """How a change to a group's image, model revision or flags replaces its workers
    (`components/workers/rollout.py`, and the README's "Rolling updates")."""

    max_unavailable: int = Field(default=1, ge=1, le=64)
    """Workers of the group replaced at once; the next ones wait until these are healthy and back
    in the gateway. Serving capacity stays at or above (workers - maxUnavailable) / workers. A
    first deploy also creates the workers this many at a time."""
    drain_timeout_seconds: int = Field(default=120, ge=0, le=3600)
    """How long a worker that leaves the gateway may take to finish its running requests before
    it is stopped anyway (vLLM then gets the container's 60 s stop grace)."""


class CanaryProbe(Schema):
    """One accuracy probe of the canary gate: a prompt and a fragment its answer must contain."""

    prompt: str = Field(min_length=1, max_length=4000)
    """The user message, sent at temperature 0."""
    expect: str = Field(min_length=1, max_length=200)
    """Text the answer must contain (case-insensitive), e.g. `Paris`."""


class CanaryGate(Schema):
    """What the canary must pass before its weight rises (`components/workers/files/canary_gate.py`).
    The gate always asks the health probe's "What is 2 + 2? Answer in digits." and requires a 4,
    like the workers' healthcheck."""

    probes: list[CanaryProbe] = []
    """More prompt/expected-fragment pairs, each sent to the canary workers through the gateway."""
    requests: int = Field(default=10, ge=1, le=1000)
    """Requests the gate sends to the canary (the probes in turn), so its TTFT has samples even
    before it takes traffic."""
    ttft_p95_seconds: float | None = Field(default=None, gt=0, le=600)
    """Absolute ceiling of the canary's TTFT P95 over `windowMinutes`; the stack's
    `observability.slo.ttftP95Seconds` when unset."""
    ttft_vs_stable_max: float = Field(default=1.5, ge=1, le=100)
    """The canary's TTFT P95 may be at most this many times the stable workers' (when they have
    samples in the window)."""
    window_minutes: int = Field(default=10, ge=1, le=1440)
    """The window both P95s are computed over."""
    timeout_seconds: int = Field(default=300, ge=30, le=3600)
    """Bound on the whole gate: probes, then waiting for Prometheus to scrape them."""


class CanaryRelease(Schema):
    """A new image, model revision or set of flags, run by the group's last `workers` workers
    beside the rest, with `weightPercent` of the model's traffic. Walk it 10 -> 50 -> 100; before
    every rise a gate (accuracy probes and TTFT from Prometheus) must pass. At 100 the rest of the
    group rolls onto the release; then fold it into the group's own fields and remove this block,
    which replaces nothing. Removing it earlier rolls the canary workers back. README, "Canaries"."""

    image: PinnedImage | None = None
    """The canary's image, when it differs from the group's."""
    revision: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    """The canary's model revision (40-hex commit), when it differs from the group's."""
    extra_args: list[str] | None = None
    """The canary's `extraArgs` (replacing the group's), when they differ."""
    weight_percent: int = Field(ge=1, le=100)
    """Share of the model's requests the canary workers get (split on the request id). 100
    promotes the release to the whole group."""
    workers: int = Field(default=1, ge=1, le=64)
    """How many of the group's workers (the last ones, in placement order) run the canary."""
    gate: CanaryGate = CanaryGate()
    """The promotion gate."""


class WorkerGroup(Schema):
    """A pool of identical vLLM workers serving one model."""

    name: Name
    """Group name, used in resource and container names."""
    model: ModelConfig
    """The model this group serves."""
    accelerator: Literal["nvidia", "cpu"] = "nvidia"
    """`nvidia`: each worker reserves its GPUs through Docker device requests. `cpu`: vLLM's CPU
    build with no device requests, for machines without a GPU and for tests."""
    image: PinnedImage
    """The vLLM image, pinned (no `latest`). The CUDA image for `nvidia`, the CPU build for `cpu`."""
    hosts: list[Name] | None = None
    """Hosts this group runs on; all hosts when unset."""
    replicas_per_host: int | None = Field(default=None, ge=1, le=64)
    """Workers on each host. For `nvidia`, unset means one worker per group of
    `tensorParallelSize` GPUs left free on the host; for `cpu`, unset means 1."""
    gpu_assignments: list[list[int]] | None = None
    """Explicit GPUs per worker, as positions in the host's GPU list, e.g. `[[0, 1], [2, 3]]`.
    When unset, GPUs are handed out in order, after those of earlier groups on the same host."""
    gpu_memory_utilization: float = 0.90
    """vLLM `--gpu-memory-utilization`, in (0, 0.90]. Above 0.90 vLLM OOMs under load: the rest
    of the VRAM absorbs the CUDA context and fragmentation."""
    cpu_kv_cache_space_gib: int = Field(default=4, ge=1, le=1024)
    """`cpu` only: KV-cache size in GiB (`VLLM_CPU_KVCACHE_SPACE`)."""
    resources: Resources = Resources()
    """CPU and RAM limits and reservations per worker."""
    shm_size_mb: int | None = Field(default=None, ge=256, le=262144)
    """/dev/shm size in MiB. Defaults to 2 GiB per GPU (at least 1 GiB): PyTorch and NCCL move
    tensor-parallel traffic through it, and Docker's 64 MiB default fails vLLM at start."""
    port: int = Field(default=8000, ge=1024, le=65535)
    """Port vLLM listens on inside the container. In multi-host stacks workers publish on
    `port + worker index` on the host's private address."""
    cuda_version: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    """CUDA version the image is built for, e.g. `12.9`. Known for the official vLLM tags
    (`stacks/preflight.py`); set it for your own images so the driver check can run."""
    log_level: Literal["INFO", "WARNING", "ERROR"] = "INFO"
    """vLLM log level (`VLLM_LOGGING_LEVEL`). DEBUG is refused: under load it fills a disk in hours."""
    extra_args: list[str] = []
    """More vLLM flags, e.g. `["--enable-prefix-caching"]`. Each flag must be on the allowlist in
    `stacks/vllm_flags.py` (checked against vLLM 0.32's `--help`)."""
    health: Health = Health()
    """Healthcheck timing."""
    max_restarts: int = Field(default=5, ge=0, le=100)
    """Restart policy `on-failure` with this many retries, so a crash-looping worker stops
    instead of thrashing the GPU forever."""
    logs: LogRotation = LogRotation()
    """Log rotation."""
    rollout: Rollout = Rollout()
    """Rolling-update pacing."""
    canary: CanaryRelease | None = None
    """A canary release of this group, promoted by a gate (README, "Canaries")."""
    cluster: WorkerCluster | None = None
    """`target: kubernetes` only: the node pool, replicas and autoscaling of the group's Deployment."""

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _utilization(cls, value: float) -> float:
        if not 0 < value <= 0.90:
            raise rule_error(
                "must be in (0, 0.90]: above 0.90 vLLM runs out of memory under load, because the "
                "CUDA context and fragmentation need the headroom",
                "use 0.85 to 0.90, e.g. `gpuMemoryUtilization: 0.9`",
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _not_debug(cls, value: object) -> object:
        if isinstance(value, str) and value.upper() == "DEBUG":
            raise rule_error(
                "DEBUG logging fills a disk in hours under load",
                "use INFO (or WARNING); debug one worker by hand, not through the stack config",
            )
        return value

    def start_period(self) -> int:
        explicit = self.health.start_period_seconds
        return explicit if explicit is not None else 2 * self.model.cold_start_seconds

    def released(self) -> WorkerGroup:
        """The group as its canary release runs it (itself without a canary)."""
        c = self.canary
        if c is None:
            return self
        model = self.model
        if c.revision is not None:
            # An `hf://` source names its revision: the canary's replaces it. An `s3://` one does not.
            source = None if (self.model.source or "").startswith("hf://") else self.model.source
            model = model.model_copy(update={"revision": c.revision, "source": source})
        update: dict[str, object] = {"model": model, "canary": None}
        if c.image is not None:
            update["image"] = c.image
        if c.extra_args is not None:
            update["extra_args"] = c.extra_args
        return self.model_copy(update=update)

    def gpus_per_worker(self) -> int:
        return 0 if self.accelerator == "cpu" else self.model.tensor_parallel_size


class NetworkConfig(Schema):
    """Traffic between hosts. Docker networks end at the host, so workers on other hosts than
    the gateway's publish their port on their host's private address, and nowhere else."""

    gateway_host: Name | None = None
    """The host that runs the gateway; the first host when unset. Its workers are reached over
    the container network and publish nothing."""
    extra_private_ranges: list[str] = []
    """CIDRs besides RFC 1918, CGNAT (100.64.0.0/10) and IPv6 ULA (fc00::/7) that count as
    private, e.g. a WireGuard overlay on other addressing."""

    @field_validator("extra_private_ranges")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                raise rule_error(f"`{cidr}` is not a network in CIDR form", "write it like `10.99.0.0/16`") from None
            if network.prefixlen < 8:
                raise rule_error(f"`{cidr}` is far too wide to be a private overlay", "list the overlay's own range")
        return value

    def is_private(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if any(ip in ipaddress.ip_network(c) for c in self.extra_private_ranges):
            return True
        if ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast:
            return False
        builtin = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]
        return any(ip in ipaddress.ip_network(c) for c in builtin)


# PEP 440's release segment with an optional pre- or post-release: what `pip install pkg==X`
# pins exactly (no ranges, local versions or URLs).
PEP440_RELEASE = r"\d+(?:\.\d+){1,3}(?:(?:a|b|rc)\d+)?(?:\.post\d+)?"
HF_CLI_SINCE = (0, 34)


class ProvisioningConfig(Schema):
    """Pinned tooling that the host steps install and use."""

    toolkit_version: str = Field(default="1.17.8-1", pattern=r"^\d+\.\d+\.\d+-\d+$")
    """NVIDIA Container Toolkit package version (all four of its apt packages are pinned to it)."""
    verify_image: PinnedImage = "nvidia/cuda:12.9.1-base-ubuntu24.04"
    """The CUDA base image that proves a container sees the GPUs (`docker run --gpus all`)."""
    tools_venv: str = Field(default="/opt/inference-stack/venv", json_schema_extra={"allowed": HOST_PATH_ALLOWED})
    """Where the host keeps the Python venv for weight downloads (a dedicated absolute directory,
    outside the caches)."""
    huggingface_hub_version: str = Field(default="1.1.5", json_schema_extra={"allowed": "PEP 440 release, >= 0.34"})
    """`huggingface_hub` release in that venv (its `hf download` fetches `hf://` weights), 0.34 or
    later, as PEP 440 `N.N[.N]` with an optional `aN`/`bN`/`rcN`."""
    boto3_version: str = Field(default="1.44.8", json_schema_extra={"allowed": "PEP 440 release"})
    """`boto3` release in that venv (the `s3://` model-registry sync), as PEP 440 `N.N[.N]`."""

    @field_validator("tools_venv")
    @classmethod
    def _venv(cls, value: str) -> str:
        receiver = "tools.sh builds a venv there as root, and the weight steps run its python as root"
        return check_host_path(value, receiver, "use a dedicated directory, e.g. `/opt/inference-stack/venv`")

    @field_validator("huggingface_hub_version", "boto3_version")
    @classmethod
    def _release(cls, value: str, info: ValidationInfo) -> str:
        package = "huggingface_hub" if info.field_name == "huggingface_hub_version" else "boto3"
        if not re.fullmatch(PEP440_RELEASE, value):
            raise rule_error(
                f"not a release version: tools.sh runs `pip install {package}==<version>`, so it must be a "
                "PEP 440 release like `1.2.3` (optionally `rc1`, `.post1`), not a range or a URL",
                f"pin the {package} release from PyPI, e.g. `{'1.1.5' if package == 'huggingface_hub' else '1.44.8'}`",
            )
        release = tuple(int(n) for n in re.findall(r"\d+", value)[:2])
        if package == "huggingface_hub" and release < HF_CLI_SINCE:
            raise rule_error(
                "prefetch-hf.sh runs `hf download`, which huggingface_hub ships from 0.34 on",
                "use huggingface_hub 0.34 or later, e.g. `1.1.5`",
            )
        return value


class RateLimit(Schema):
    """Requests per client key; over the limit gets 429 with `Retry-After`."""

    requests_per_second: int = Field(default=10, ge=1, le=100000)
    """Sustained rate per client key."""
    burst: int = Field(default=20, ge=0, le=100000)
    """Requests above the rate that are still served at once (nginx `limit_req burst`, `nodelay`)."""


# The gateway's /tmp tmpfs (components/gateway/gateway.py), and what nginx itself needs beside it.
GATEWAY_TMP_MIB = 256
NGINX_BASE_MIB = 128


class RouterConfig(Schema):
    """The vLLM project's router (`vllm-router` 0.1.17, policy `cache_aware`) between the gateway
    and one pool's workers: it keeps a prefix tree of what it sent each worker and sends a request
    to the worker whose tree matches most of its prompt, unless the load is too uneven. Defaults
    are the router's own (`vllm-router --help`), except the health checks, every 10 s instead of
    60 s so that a dead worker stops getting requests within seconds."""

    cache_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    """Least share of a prompt the best worker's tree must match for the request to follow the
    cache; below it the request is a miss, placed by the router's own choice (`--cache-threshold`)."""
    balance_abs_threshold: int = Field(default=64, ge=0, le=100000)
    """Balance by load instead of cache when the busiest worker has this many more requests than
    the idlest... (`--balance-abs-threshold`)."""
    balance_rel_threshold: float = Field(default=1.5, ge=1.0, le=100.0)
    """...and this many times as many (`--balance-rel-threshold`)."""
    eviction_interval_seconds: int = Field(default=120, ge=1, le=86400)
    """How often each worker's tree is cut back to `maxTreeSize` (`--eviction-interval-secs`)."""
    max_tree_size: int = Field(default=33554432, ge=4096, le=1073741824)
    """Characters of prompt kept per worker in the tree (`--max-tree-size`); the router's memory
    grows with this times the workers."""
    health_check_interval_seconds: int = Field(default=10, ge=1, le=3600)
    """How often the router checks each worker's `/health` (`--health-check-interval-secs`)."""
    cpus: float = Field(default=1.0, gt=0, le=64)
    """CPU limit of each router container (one per pool: a model's stable pool and its canary's)."""
    memory_mb: int = Field(default=512, ge=128, le=MAX_MEMORY_MB)
    """Memory limit of each router container in MiB; the prefix trees take up to about
    `maxTreeSize` bytes per worker."""


# Headers with a meaning already: the client key, the request id and trace context the gateway
# sets or forwards, and HTTP's own framing.
RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "x-request-id",
        "x-client-name",
        "traceparent",
        "tracestate",
        "x-forwarded-for",
        "openai-organization",
        "openai-project",
    }
)


class GatewayConfig(Schema):
    """The nginx gateway, the platform's only published port."""

    image: PinnedImage = "nginx:1.28.0-alpine"
    """nginx image, pinned. Alpine, for busybox `wget` in the healthcheck."""
    listen_address: str = "127.0.0.1"
    """Host address the gateway publishes on. Loopback by default: exposing the API is a decision,
    so `0.0.0.0` must be written out."""
    port: int = Field(default=8080, ge=1, le=65535)
    """Host port the gateway publishes."""
    balance: Literal["least_conn", "round_robin", "random_two", "session", "cache_aware"] = "session"
    """Upstream balancing. The default, `session`, won benchmarks/routing.py for multi-turn chat
    (docs/performance.md) and is `least_conn` for every request without the header, so it costs
    clients that send none nothing. `least_conn` suits generations whose length varies 100x. `session`
    hashes `sessionHeader` (nginx `hash ... consistent`), so every turn of a conversation reaches
    the worker that already holds its history in its prefix cache, and a worker that joins or
    leaves moves only its own share of sessions; a request without the header goes `least_conn`.
    `cache_aware` puts the vLLM project's router (`router`) between nginx and each pool: it sends
    a request to the worker whose cache holds most of its prompt, with no client header, unless the
    load is too uneven."""
    session_header: str = Field(default="X-Session-Id", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    """With `balance: session`, the request header that names a conversation (letters, digits and
    `-`; not one the gateway or the OpenAI API already gives a meaning, such as Authorization)."""
    router: RouterConfig = RouterConfig()
    """With `balance: cache_aware`, the router's knobs."""
    keepalive: int = Field(default=32, ge=0, le=1024)
    """Idle keepalive connections per nginx worker to each upstream group."""
    read_timeout_seconds: int = Field(default=600, ge=10, le=86400)
    """Longest silence from a worker mid-response; covers long non-streamed generations."""
    client_max_body_size: str = Field(default="16m", pattern=r"^\d+[km]?$")
    """Largest request body (prompts with long context); at most the gateway's 256 MiB /tmp, where
    bodies over 1 MiB spill."""
    max_fails: int = Field(default=2, ge=1, le=100)
    """Failed attempts within `failTimeoutSeconds` before a worker is skipped for that long."""
    fail_timeout_seconds: int = Field(default=10, ge=1, le=3600)
    """Window and penalty of passive failover."""
    next_upstream_tries: int = Field(default=3, ge=1, le=20)
    """Attempts per request across workers, on connection errors and 502/503 before any byte is sent."""
    rate_limit: RateLimit = RateLimit()
    """Per-client-key rate limit."""
    cpus: float = Field(default=1.0, gt=0, le=64)
    """CPU limit of the gateway container."""
    memory_mb: int = Field(default=1024, gt=0, le=MAX_MEMORY_MB)
    """Memory limit of the gateway container in MiB; includes its 256 MiB /tmp for large bodies
    (a tmpfs: its pages count against this limit), so at least 384."""
    generate_client_key: bool | None = None
    """Generate one client key (client `generated`, a secret in state) that the gateway accepts,
    for a stack's first requests: `pulumi stack output firstRequest --show-secrets` prints the
    commands that use it. Unset: only when the stack sets no `gatewayApiKeys` (dev). `false` (prod):
    clients get keys from `gatewayApiKeys` alone."""

    @field_validator("listen_address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise rule_error("not an IP address", "use the host address to publish on, e.g. `10.20.0.11`") from None
        return value

    @field_validator("session_header")
    @classmethod
    def _own_header(cls, value: str) -> str:
        if value.lower() in RESERVED_HEADERS:
            raise rule_error(
                f"`{value}` already means something to the gateway or the workers: hashing it would "
                "pin unrelated requests (every request of one client key, say) to one worker",
                "name a header of its own, e.g. `X-Session-Id`",
            )
        return value

    @field_validator("memory_mb")
    @classmethod
    def _memory_holds_tmp(cls, value: int) -> int:
        least = GATEWAY_TMP_MIB + NGINX_BASE_MIB
        if value < least:
            raise rule_error(
                f"the gateway's {GATEWAY_TMP_MIB} MiB /tmp is a tmpfs, whose pages count against this limit: "
                f"a full /tmp leaves nginx {max(value - GATEWAY_TMP_MIB, 0)} MiB, and it needs {NGINX_BASE_MIB}",
                f"set `memoryMb` to at least {least}",
            )
        return value

    @field_validator("client_max_body_size")
    @classmethod
    def _body_fits_tmp(cls, value: str) -> str:
        # nginx: "Setting size to 0 disables checking of client request body size"
        # (ngx_http_core_module, client_max_body_size); `k` and `m` are 1024-based.
        size = int(value.rstrip("km")) * {"k": 1024, "m": 1024 * 1024}.get(value[-1], 1)
        if size == 0 or size > GATEWAY_TMP_MIB * 1024 * 1024:
            raise rule_error(
                f"{'`0` lifts the limit, so a' if size == 0 else 'a'} request body can be larger than the gateway's "
                f"{GATEWAY_TMP_MIB} MiB /tmp, where nginx buffers bodies over 1 MiB: the request fails mid-upload",
                f"use at most `{GATEWAY_TMP_MIB}m`",
            )
        return value


class SloConfig(Schema):
    """Alert thresholds: TTFT is the users' primary SLO, tracked at P95 and P99, not on average."""

    ttft_p95_seconds: float = Field(default=1.0, gt=0, le=600)
    """TTFT P95 above this, for `forMinutes`, pages."""
    ttft_p99_seconds: float = Field(default=3.0, gt=0, le=600, validate_default=True)
    """TTFT P99 above this, for `forMinutes`, pages. At least `ttftP95Seconds`."""

    itl_p99_seconds: float = Field(default=0.15, gt=0, le=60)
    """Inter-token latency P99 above this opens a ticket."""
    queue_waiting_max: int = Field(default=10, ge=0, le=100_000)
    """Waiting requests per worker (`vllm:num_requests_waiting`) above this ..."""
    queue_for_minutes: int = Field(default=5, ge=1, le=1440)
    """... for this many minutes page: the fleet is short of capacity."""
    kv_cache_usage_max: float = Field(default=0.9, gt=0, le=1)
    """KV-cache usage above this means preemptions are near."""
    gpu_memory_max: float = Field(default=0.95, gt=0, le=1)
    """GPU memory used above this share opens a ticket."""
    error_ratio_max: float = Field(default=0.01, gt=0, le=1)
    """Share of requests ending in error or abort above this pages."""
    for_minutes: int = Field(default=10, ge=1, le=1440)
    """How long a threshold must hold before alerting."""
    worker_down_minutes: int = Field(default=2, ge=1, le=1440)
    """How long a worker's scrape may fail before it pages (short: capacity is gone)."""

    @field_validator("ttft_p99_seconds")
    @classmethod
    def _p99_not_below_p95(cls, value: float, info: ValidationInfo) -> float:
        p95 = info.data.get("ttft_p95_seconds")
        if p95 is not None and value < p95:
            raise rule_error(
                f"the P99 threshold is below the P95 one ({p95:g} s): a P95 never exceeds the P99, so the "
                "P95 alert could only fire after the P99 one",
                f"set `ttftP99Seconds` to at least {p95:g}, or lower `ttftP95Seconds`",
            )
        return value


DetailedTraces = Literal["all", "model", "worker"]


class TracingConfig(Schema):
    """Jaeger all-in-one, receiving the workers' OpenTelemetry traces (one span per request, with
    queue, prefill, decode and TTFT times) so a slow request can be taken apart."""

    enabled: bool = False
    """Deploy Jaeger on the gateway host and point every worker's `--otlp-traces-endpoint` at it."""
    jaeger_image: PinnedImage = "jaegertracing/jaeger:2.20.0"
    """Jaeger v2 (the all-in-one binary; v1 is end of life). Configured by a generated YAML file."""
    storage: Literal["memory", "badger"] = "memory"
    """`memory` loses every trace on a restart: fine for dev. `badger` keeps them on a named volume."""
    max_traces: int = Field(default=100_000, ge=1000, le=10_000_000)
    """With `memory`: traces kept before the oldest are dropped (bounds Jaeger's RAM)."""
    retention_hours: int = Field(default=168, ge=1, le=8760)
    """With `badger`: how long spans are kept on disk."""
    ui_port: int = Field(default=16686, ge=1, le=65535)
    """Host port of the Jaeger UI, on `observability.bindAddress`."""
    memory_mb: int = Field(default=1024, ge=128, le=MAX_MEMORY_MB)
    """Memory limit of the Jaeger container."""
    collect_detailed_traces: list[DetailedTraces] = []
    """vLLM's `--collect-detailed-traces` modules. Each adds timing work on the request path,
    so the default is none."""


class ObservabilityConfig(Schema):
    """Prometheus scraping every worker, the GPU exporters and the gateway, with SLO alert rules;
    Grafana; Jaeger when tracing is on."""

    enabled: bool = True
    """Deploy Prometheus, Grafana and the exporters."""
    bind_address: str = "127.0.0.1"
    """Host address Prometheus, Grafana and Jaeger publish their UIs on: loopback, reached over an SSH tunnel
    (`ssh -L 9090:127.0.0.1:9090 <gateway host>`), unless the stack says otherwise."""
    prometheus_image: PinnedImage = "prom/prometheus:v2.55.1"
    """Prometheus image (2.x: the same rule and config language the tests check with promtool 2.42)."""
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    """Host port of the Prometheus UI."""
    retention_time: str = Field(default="15d", pattern=r"^\d+[hdwy]$")
    """How long samples are kept (`--storage.tsdb.retention.time`)."""
    retention_size: str = Field(default="20GB", pattern=r"^\d+(MB|GB|TB)$")
    """Disk the samples may take (`--storage.tsdb.retention.size`); whichever limit comes first wins."""
    scrape_interval: str = Field(default="15s", pattern=r"^\d+[sm]$")
    """How often every target is scraped."""
    grafana: bool = True
    """Deploy Grafana beside Prometheus (off only where its image cannot run, as in the `ci` stack)."""
    grafana_image: PinnedImage = "grafana/grafana:12.1.1"
    """Grafana image, with the datasource and dashboards provisioned from files."""
    grafana_port: int = Field(default=3000, ge=1, le=65535)
    """Host port of Grafana, on `bindAddress`."""
    dcgm_exporter_image: PinnedImage = "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04"
    """NVIDIA DCGM exporter, one per GPU host (utilization, memory, temperature, power)."""
    nginx_exporter_image: PinnedImage = "nginx/nginx-prometheus-exporter:1.4.2"
    """Exporter for the gateway's stub_status."""
    slo: SloConfig = SloConfig()
    """Alert thresholds."""
    tracing: TracingConfig = TracingConfig()
    """Distributed tracing (Jaeger)."""

    @field_validator("bind_address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise rule_error("not an IP address", "use e.g. `127.0.0.1` and an SSH tunnel") from None
        return value


EvictionPolicy = Literal[
    "noeviction", "allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-lfu", "allkeys-random", "volatile-ttl"
]


class LmCacheConfig(Schema):
    """vLLM's KV-cache offload to Redis through LMCache (`LMCacheConnectorV1`). The worker image
    must contain `lmcache==0.5.6` (the first release that matches vLLM 0.32's KV layout)."""

    chunk_size: int = Field(default=256, ge=16, le=4096)
    """Tokens per KV chunk LMCache stores (`chunk_size`)."""
    local_cpu: bool = True
    """Keep a CPU-RAM tier in each worker before Redis (`local_cpu`)."""
    max_local_cpu_size_gb: float = Field(default=5.0, gt=0, le=1024)
    """Size of that CPU tier in GB (`max_local_cpu_size`)."""


class RedisConfig(Schema):
    """Redis: the workers' shared KV-cache store, and a cache for applications on the platform."""

    enabled: bool = False
    """Deploy Redis."""
    image: PinnedImage = "redis:7.4.9"
    """Redis image, pinned."""
    persistence: Literal["aof", "none"] = "aof"
    """`aof`: append-only file with `appendfsync everysec` on a named volume; a crash loses at most
    the last second of writes. `none`: memory only, for a pure cache; a restart loses everything."""
    maxmemory_mb: int = Field(default=1024, ge=16, le=MAX_MEMORY_MB)
    """Memory Redis may use for data (`maxmemory`)."""
    maxmemory_policy: EvictionPolicy | None = None
    """What happens at `maxmemory`: `allkeys-lru` when Redis is a pure cache (KV-cache offload
    writes keys without a TTL, so nothing else frees memory); `noeviction` when its data must not
    silently disappear (writes then fail instead). Required: there is no safe default."""
    kv_cache_offload: bool = False
    """Workers offload their KV cache to this Redis through LMCache."""
    lmcache: LmCacheConfig = LmCacheConfig()
    """LMCache settings for the offload."""
    cpus: float = Field(default=1.0, gt=0, le=64)
    """CPU limit."""
    memory_mb: int = Field(default=1536, ge=64, le=MAX_MEMORY_MB, validate_default=True)
    """Container memory limit in MiB; above `maxmemoryMb` for client buffers and the copy-on-write
    pages of the forked AOF rewrite: at least 1.5x `maxmemoryMb` with `aof`, 1.25x (and 64 MiB
    more) with `none`. Redis's docs put a very write-heavy instance's rewrite at up to 2x."""

    @field_validator("memory_mb")
    @classmethod
    def _room_above_maxmemory(cls, value: int, info: ValidationInfo) -> int:
        maxmemory, persistence = info.data.get("maxmemory_mb"), info.data.get("persistence")
        if not info.data.get("enabled") or maxmemory is None or persistence is None:
            return value
        least = redis_memory_floor(maxmemory, persistence)
        if value < least:
            why = (
                "the forked AOF rewrite duplicates every page written while it runs"
                if persistence == "aof"
                else "`maxmemory` counts neither allocator fragmentation nor all of the client buffers"
            )
            raise rule_error(
                f"Redis may hold `maxmemoryMb: {maxmemory}` of data, and {why}: a limit of {value} MiB gets it "
                "killed by the kernel instead of evicting or refusing writes",
                f"set `memoryMb` to at least {least}, or lower `maxmemoryMb` to "
                f"{redis_maxmemory_ceiling(value, persistence)}",
            )
        return value


def redis_memory_floor(maxmemory_mb: int, persistence: str) -> int:
    """The least container memory for a Redis with this `maxmemory`: the schema's default ratio
    (1536 for 1024) with AOF; without a fork, a quarter more (at least 64 MiB) for fragmentation
    and the buffers `maxmemory` does not count."""
    if persistence == "aof":
        return -(-maxmemory_mb * 3 // 2)
    return maxmemory_mb + max(64, -(-maxmemory_mb // 4))


def redis_maxmemory_ceiling(memory_mb: int, persistence: str) -> int:
    """The largest `maxmemory` a container of this size holds: the floor, solved for maxmemory."""
    if persistence == "aof":
        return memory_mb * 2 // 3
    above_256 = memory_mb * 4 // 5
    return above_256 if above_256 > 256 else max(min(256, memory_mb - 64), 0)


class WeaviateBackup(Schema):
    """Backups through Weaviate's backup-s3 module; S3 or anything S3-compatible (MinIO)."""

    enabled: bool = False
    """Load the backup-s3 module and check its backups."""
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    """Bucket the backups go to (`BACKUP_S3_BUCKET`). Required when backups are on."""
    path: str = Field(default="weaviate", pattern=r"^[A-Za-z0-9._/-]*$")
    """Prefix inside the bucket (`BACKUP_S3_PATH`): letters, digits, `.`, `_`, `-` between single
    slashes, no `.` or `..` parts."""
    endpoint: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]+(:\d{1,5})?$")
    """`host[:port]` of an S3-compatible endpoint, no scheme (`BACKUP_S3_ENDPOINT`); AWS when unset."""
    use_ssl: bool = True
    """`BACKUP_S3_USE_SSL`; false only for a plain-HTTP endpoint on a private network."""
    region: str | None = Field(default=None, json_schema_extra={"allowed": REGION_ALLOWED})
    """`AWS_REGION` of the bucket: an AWS region such as `eu-west-1`, or with `endpoint` whatever
    name that service uses (one DNS label)."""
    max_age_hours: int = Field(default=26, ge=1, le=24 * 90)
    """`make backup-check` fails when the newest successful backup is older than this."""

    @field_validator("path")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.fullmatch(rf"{S3_PART}(?:/{S3_PART})*", value):
            raise rule_error(
                "the backup prefix must be relative, with no empty, `.` or `..` parts: Weaviate joins it "
                "into every backup's object keys, and `make backup-check` lists under it",
                "write it like `weaviate/prod`",
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None or host_port_ok(value):
            return value
        raise rule_error(
            "not `host[:port]`: Weaviate's backup-s3 module (`BACKUP_S3_ENDPOINT`) and boto3 in "
            "`make backup-check` take a DNS name or IPv4 address and a port in 1-65535",
            "write it like `minio.internal:9000`, without a scheme",
        )

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_region(value, custom_endpoint=info.data.get("endpoint") is not None)


class WeaviateConfig(Schema):
    """Weaviate, the vector database, with API-key auth and anonymous access off."""

    enabled: bool = False
    """Deploy Weaviate."""
    image: PinnedImage = "cr.weaviate.io/semitechnologies/weaviate:1.39.15"
    """Weaviate image, pinned."""
    backup: WeaviateBackup = WeaviateBackup()
    """S3 backups."""
    cpus: float = Field(default=2.0, gt=0, le=64)
    """CPU limit."""
    memory_mb: int = Field(default=4096, ge=256, le=MAX_MEMORY_MB)
    """Memory limit in MiB (`GOMEMLIMIT` is set a little below it)."""


class StackConfig(Schema):
    """Everything a stack deploys. Each top-level field is one `inference-stack:<key>` entry."""

    target: Literal["docker", "kubernetes"] = "docker"
    """`docker`: the `hosts`, over SSH (or this machine). `kubernetes`: the cluster in
    `kubernetes`, with the same workers, gateway, data services and monitoring."""
    hosts: list[HostConfig] = []
    """The Docker hosts (`target: docker`, which needs at least one)."""
    kubernetes: KubernetesConfig | None = None
    """The cluster (`target: kubernetes` only)."""
    workers: list[WorkerGroup] = Field(min_length=1)
    """The vLLM worker groups."""
    network: NetworkConfig = NetworkConfig()
    """Traffic between hosts."""
    provisioning: ProvisioningConfig = Field(default=ProvisioningConfig(), validate_default=True)
    """Versions of what the host steps install."""
    gateway: GatewayConfig = GatewayConfig()
    """The nginx gateway in front of the workers."""
    redis: RedisConfig = RedisConfig()
    """Redis (off by default)."""
    weaviate: WeaviateConfig = WeaviateConfig()
    """Weaviate (off by default)."""
    observability: ObservabilityConfig = ObservabilityConfig()
    """Prometheus, exporters and alert rules."""

    @field_validator("provisioning")
    @classmethod
    def _venv_outside_caches(cls, value: ProvisioningConfig, info: ValidationInfo) -> ProvisioningConfig:
        # The venv's python runs as root on the host; inside a cache, a worker (which mounts the
        # model cache, read-write while it downloads) could replace it.
        for h, host in enumerate(info.data.get("hosts") or []):
            caches = (("modelCachePath", host.model_cache_path), ("compileCachePath", host.compile_cache_path))
            for key, cache in caches:
                if under(value.tools_venv, cache) or under(cache, value.tools_venv):
                    raise rule_error(
                        f"`toolsVenv` ({value.tools_venv}) and hosts[{h}].{key} ({cache}) overlap: workers mount "
                        "the caches, and the venv's python runs as root on the host",
                        "keep the venv outside both caches, e.g. `/opt/inference-stack/venv`",
                    )
        return value

    def gateway_host(self) -> str:
        return self.network.gateway_host or self.hosts[0].name

    def host(self, name: str) -> HostConfig:
        return next(h for h in self.hosts if h.name == name)


# Top-level config keys that hold secrets. Each must be set with `pulumi config set --secret`.
SECRET_KEYS: dict[str, str] = {
    "hfToken": "Hugging Face token, for gated or private models.",
    "sshPrivateKey": "SSH private key for the hosts' `ssh.user` (otherwise the SSH agent is used).",
    "s3AccessKeyId": "Access key id for an `s3://` weights source (otherwise the host's default AWS credentials).",
    "s3SecretAccessKey": "Secret access key for an `s3://` weights source.",
    "gatewayApiKeys": "Client API keys for the gateway, as a JSON object of client name to key, e.g. "
    '`{"team-a": "sk-…"}`. Without it (and with `gateway.generateClientKey` false) the gateway refuses every request.',
    "redisPassword": "Password of Redis's default user. Generated (and kept secret in state) when unset.",
    "weaviateApiKeys": 'Weaviate API keys as a JSON object of user to key, e.g. `{"app": "…"}`. When unset, one '
    "`admin` key is generated (stack output `weaviateAdminKey`); anonymous access is always off.",
    "weaviateBackupAccessKeyId": "S3 access key id for Weaviate's backups.",
    "weaviateBackupSecretAccessKey": "S3 secret access key for Weaviate's backups.",
    "grafanaAdminPassword": "Grafana's admin password. Generated (stack output `grafanaAdminPassword`, secret) "
    "when unset.",
    "kubeconfig": "The cluster's kubeconfig (YAML), for `kubernetes.kubeconfig: secret`.",
    "vllmApiKey": "The key workers require on their OpenAI API. Generated (and kept secret in state) when unset.",
}
