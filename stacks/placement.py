"""Cross-field rules, and where each worker runs.

Placing workers and checking GPU overlap are one computation, so they live together: the
placement that the rules approve is exactly the one the components deploy.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from pydantic import ValidationError

from stacks.config import HostConfig, StackConfig, WorkerGroup
from stacks.errors import ConfigIssue, did_you_mean, key_path
from stacks.model_files import ModelFiles, model_len_issues, read_cached, read_snapshot, snapshot_dir
from stacks.network import Published, published
from stacks.preflight import MEMORY_FIX, cuda_of, driver_problem, memory_fit, shape_from_config_json
from stacks.vllm_flags import check_extra_args


@dataclass(frozen=True)
class Placement:
    """One worker container: which group, which host, which GPUs."""

    group: WorkerGroup
    host: HostConfig
    index: int
    """Position of this worker among its group's workers on the host."""
    devices: tuple[str, ...]
    """Device ids for the NVIDIA device request; empty for `cpu` workers."""
    published_port: int | None
    """Host port on the host's private address (multi-host stacks only)."""
    canary: bool = False
    """Runs the group's canary release (`group` is then the released group) and joins the
    canary pool until the release is promoted."""

    @property
    def pool(self) -> str:
        """The gateway pool the worker joins: its group's, or the group's canary pool."""
        return canary_pool(self.group.name) if self.canary else self.group.name

    @property
    def name(self) -> str:
        return f"{self.group.name}-{self.host.name}-{self.index}"

    def container_name(self, stack: str) -> str:
        return f"{stack}-{self.name}"

    def address(self, stack: str) -> str:
        """`host:port` as the gateway host reaches this worker: the published port on the private
        address when it publishes one (it runs on another host), else its container name."""
        if self.published_port is not None:
            return f"{self.host.private_address}:{self.published_port}"
        return f"{self.container_name(stack)}:{self.group.port}"


def canary_pool(group: str) -> str:
    return f"{group}-canary"


def place(cfg: StackConfig, files: ModelFiles | None = None) -> tuple[list[Placement], list[ConfigIssue]]:
    """Where each worker runs, and every cross-field problem. `files` is what the loader read of
    the local model caches (`model_files.read_cached`); None reads them here."""
    files = read_cached(cfg) if files is None else files
    issues: list[ConfigIssue] = []
    issues += _unique(cfg)
    hosts = {h.name: h for h in cfg.hosts}
    multi_host = len(cfg.hosts) > 1
    issues += _network_rules(cfg)
    issues += model_len_issues(cfg, files)
    used: dict[str, dict[str, str]] = {h.name: {} for h in cfg.hosts}
    placements: list[Placement] = []
    for g, group in enumerate(cfg.workers):
        issues += _group_rules(g, group) + _worker_memory_rules(cfg, g, group)
        for host_name in group.hosts or [h.name for h in cfg.hosts]:
            host = hosts.get(host_name)
            if host is None:
                issues.append(
                    ConfigIssue(
                        key_path(("workers", g, "hosts")),
                        host_name,
                        "no host has this name",
                        did_you_mean(host_name, list(hosts)).replace("Rename the key", "Use that name"),
                    )
                )
                continue
            found, problems = _place_on_host(g, group, host, used[host.name])
            issues += problems + _declared_preflight(g, group, host, files)
            for placement in found:
                if multi_host and host.name != cfg.gateway_host():
                    port = group.port + placement.index
                    placement = Placement(group, host, placement.index, placement.devices, port)
                placements.append(placement)
    issues += _port_range_issues(cfg, placements) + port_issues(cfg, placements)
    issues += _rollout_rules(cfg, placements)
    canary_issues = _canary_rules(cfg, placements)
    if canary_issues:
        return placements, issues + canary_issues
    return _with_canaries(cfg, placements), issues


def _with_canaries(cfg: StackConfig, placements: list[Placement]) -> list[Placement]:
    """The last `canary.workers` workers of a group with a canary run its release, and at 100 %
    every worker does; the canary workers keep their names, so nothing is replaced when the
    release is folded into the group."""
    result = list(placements)
    for group in cfg.workers:
        if group.canary is None:
            continue
        released = group.released()
        mine = [i for i, p in enumerate(result) if p.group.name == group.name]
        canaries = set(mine[-group.canary.workers :])
        promoted = group.canary.weight_percent == 100
        for i in mine:
            p = result[i]
            if i in canaries or promoted:
                result[i] = Placement(released, p.host, p.index, p.devices, p.published_port, i in canaries)
    return result


def _rollout_rules(cfg: StackConfig, placements: list[Placement]) -> list[ConfigIssue]:
    issues = []
    for g, group in enumerate(cfg.workers):
        count = sum(1 for p in placements if p.group.name == group.name)
        if count > 1 and group.rollout.max_unavailable >= count:
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "rollout", "maxUnavailable")),
                    group.rollout.max_unavailable,
                    f"the group has {count} workers, so a rolling update would take all of them out of the "
                    "gateway at once",
                    f"set it to at most {count - 1}",
                )
            )
    return issues


def _network_rules(cfg: StackConfig) -> list[ConfigIssue]:
    issues = _data_rules(cfg)
    names = [h.name for h in cfg.hosts]
    if cfg.network.gateway_host is not None and cfg.network.gateway_host not in names:
        issues.append(
            ConfigIssue(
                key_path(("network", "gatewayHost")),
                cfg.network.gateway_host,
                "no host has this name",
                did_you_mean(cfg.network.gateway_host, names).replace("Rename the key", "Use that name"),
            )
        )
    for i, host in enumerate(cfg.hosts):
        where = key_path(("hosts", i, "privateAddress"))
        if host.private_address is None:
            if len(cfg.hosts) > 1:
                issues.append(
                    ConfigIssue(
                        where,
                        None,
                        "a multi-host stack needs each host's private address: workers on hosts without the "
                        "gateway publish their port there, and only there",
                        "set `privateAddress` to the host's address on the private network or VPN",
                    )
                )
        elif not cfg.network.is_private(host.private_address):
            issues.append(
                ConfigIssue(
                    where,
                    host.private_address,
                    "workers may only publish on a private address (RFC 1918, CGNAT 100.64.0.0/10, IPv6 ULA, "
                    "or `network.extraPrivateRanges`), never a public one",
                    "use the host's address on the private network or VPN between the hosts, or list your "
                    "overlay's CIDR in `network.extraPrivateRanges`",
                )
            )
    return issues


def _declared_preflight(g: int, group: WorkerGroup, host: HostConfig, files: ModelFiles) -> list[ConfigIssue]:
    """The preflight on what the stack declares about a host, so a first `preview` fails too.
    After verification, the worker pool repeats it on the measured inventory."""
    issues = []
    if group.model.weights == "prefetch" and host.ssh is None:
        issues.append(
            ConfigIssue(
                key_path(("workers", g, "model", "weights")),
                "prefetch",
                f"host `{host.name}` is this machine (no `ssh`): pre-fetching runs as root on SSH hosts only",
                "use `download` (the worker fetches the weights) or `prefetched` (you filled the cache)",
            )
        )
    if group.accelerator != "nvidia":
        return issues
    cuda = cuda_of(group)
    driver = host.gpus.driver_version
    if cuda is not None and driver is not None:
        problem = driver_problem(driver, cuda)
        if problem:
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "image")),
                    group.image,
                    f"host `{host.name}`: {problem} that this image needs",
                    "upgrade the host's NVIDIA driver (then update `hosts[].gpus.driverVersion`), or pin an "
                    "image built for an older CUDA (`workers[].cudaVersion` for your own images)",
                )
            )
    if host.gpus.memory_mib is not None:
        fit = memory_fit(with_cached_shape(group, host, files), host.gpus.memory_mib)
        if fit is not None and not fit.fits:
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "model", "maxNumSeqs")),
                    group.model.max_num_seqs,
                    f"on host `{host.name}` ({host.gpus.memory_mib} MiB GPUs) the model does not fit: {fit.explain()}",
                    MEMORY_FIX,
                )
            )
    return issues


def with_cached_shape(group: WorkerGroup, host: HostConfig, files: ModelFiles | None = None) -> WorkerGroup:
    """The group with its model shape read from `config.json` in this machine's model cache, when
    the stack declares none and the cache (a local host's) already holds the revision. `files`
    is what was read of the caches; None reads this host's."""
    model = group.model
    if model.shape is not None or host.ssh is not None:
        return group
    if files is None:
        cached = read_snapshot(snapshot_dir(host, model.id, model.revision))
    else:
        cached = files.get((model.id, model.revision))
    if cached is None:
        return group
    try:
        shape = shape_from_config_json(cached.config)
    except (ValueError, ValidationError, AssertionError):
        return group
    return group.model_copy(update={"model": model.model_copy(update={"shape": shape})})


def _data_rules(cfg: StackConfig) -> list[ConfigIssue]:
    issues = []
    redis, backup = cfg.redis, cfg.weaviate.backup
    if redis.kv_cache_offload and not redis.enabled:
        issues.append(
            ConfigIssue(
                key_path(("redis", "kvCacheOffload")),
                True,
                "KV-cache offload stores the cache in Redis, and Redis is off",
                "set `redis.enabled: true` (with a `maxmemoryPolicy`), or turn `kvCacheOffload` off",
            )
        )
    if redis.enabled and redis.maxmemory_policy is None:
        issues.append(
            ConfigIssue(
                key_path(("redis", "maxmemoryPolicy")),
                None,
                f"`maxmemory` ({redis.maxmemory_mb} MiB) needs a policy for what happens when it is reached",
                "`allkeys-lru` for a pure cache (the KV-cache offload), `noeviction` when keys must not disappear",
            )
        )
    if redis.kv_cache_offload and redis.maxmemory_policy not in (None, "allkeys-lru", "allkeys-lfu", "allkeys-random"):
        issues.append(
            ConfigIssue(
                key_path(("redis", "maxmemoryPolicy")),
                redis.maxmemory_policy,
                "LMCache writes KV chunks without a TTL, so only an `allkeys-*` policy frees memory; with this one "
                "every worker's writes fail once Redis is full",
                "use `allkeys-lru`",
            )
        )
    if cfg.weaviate.enabled and backup.enabled and backup.bucket is None:
        issues.append(
            ConfigIssue(
                key_path(("weaviate", "backup", "bucket")),
                None,
                "backups are on but name no bucket",
                "set `weaviate.backup.bucket`, or turn `weaviate.backup.enabled` off",
            )
        )
    return issues


def _canary_rules(cfg: StackConfig, placements: list[Placement]) -> list[ConfigIssue]:
    issues = []
    for g, group in enumerate(cfg.workers):
        canary = group.canary
        if canary is None:
            continue
        where = ("workers", g, "canary")
        released = group.released()
        if (released.image, released.model.revision, released.extra_args) == (
            group.image,
            group.model.revision,
            group.extra_args,
        ):
            issues.append(
                ConfigIssue(
                    key_path(where),
                    canary.model_dump(by_alias=True, exclude_defaults=True),
                    "the canary runs exactly what the group runs, so there is nothing to compare",
                    "set the canary's `image`, `revision` or `extraArgs` to the release under test",
                )
            )
        for problem in check_extra_args(canary.extra_args or []):
            issues.append(ConfigIssue(key_path((*where, "extraArgs")), problem.arg, problem.rule, problem.fix))
        count = sum(1 for p in placements if p.group.name == group.name)
        if canary.workers >= count:
            issues.append(
                ConfigIssue(
                    key_path((*where, "workers")),
                    canary.workers,
                    f"the group has {count} workers; a canary needs stable workers beside it to compare with "
                    "and to keep serving if it fails",
                    f"set it to at most {count - 1}" if count > 1 else "give the group at least two workers",
                )
            )
        if any(w.name == canary_pool(group.name) for w in cfg.workers):
            issues.append(
                ConfigIssue(
                    key_path(where),
                    group.name,
                    f"the canary's gateway pool is named `{canary_pool(group.name)}`, and so is a worker group",
                    "rename that group",
                )
            )
        first = next(w for w in cfg.workers if w.model.served_name == group.model.served_name)
        if first.name != group.name:
            issues.append(
                ConfigIssue(
                    key_path(where),
                    group.name,
                    f"the gateway splits `{group.model.served_name}` between the canary and the model's first "
                    f"group, `{first.name}`",
                    f"put the canary on `{first.name}`",
                )
            )
    return issues


def _unique(cfg: StackConfig) -> list[ConfigIssue]:
    issues = []
    for key, names in (("hosts", [h.name for h in cfg.hosts]), ("workers", [w.name for w in cfg.workers])):
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                issues.append(
                    ConfigIssue(
                        key_path((key, i, "name")),
                        name,
                        "names must be unique: resources are named from them",
                        "rename one of them",
                    )
                )
            seen.add(name)
    return issues


def _group_rules(g: int, group: WorkerGroup) -> list[ConfigIssue]:
    issues = []
    cold = group.model.cold_start_seconds
    if group.start_period() < 2 * cold:
        issues.append(
            ConfigIssue(
                key_path(("workers", g, "health", "startPeriodSeconds")),
                group.health.start_period_seconds,
                f"the health start period must be at least 2x the measured cold start ({cold} s), or "
                "Docker counts a still-loading model as unhealthy",
                f"set it to {2 * cold} or more, or remove it to get 2x the cold start",
            )
        )
    for problem in check_extra_args(group.extra_args):
        issues.append(ConfigIssue(key_path(("workers", g, "extraArgs")), problem.arg, problem.rule, problem.fix))
    if group.accelerator == "cpu":
        if group.gpu_assignments is not None:
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "gpuAssignments")),
                    group.gpu_assignments,
                    "a `cpu` group uses no GPUs",
                    "remove `gpuAssignments`, or set `accelerator: nvidia`",
                )
            )
        if group.model.tensor_parallel_size != 1:
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "model", "tensorParallelSize")),
                    group.model.tensor_parallel_size,
                    "a `cpu` worker runs on one CPU engine",
                    "set `tensorParallelSize: 1`",
                )
            )
    return issues


def _place_on_host(
    g: int, group: WorkerGroup, host: HostConfig, used: dict[str, str]
) -> tuple[list[Placement], list[ConfigIssue]]:
    where = ("workers", g)
    if group.accelerator == "cpu":
        count = group.replicas_per_host or 1
        return [Placement(group, host, i, (), None) for i in range(count)], []

    devices = host.gpus.devices()
    tp = group.model.tensor_parallel_size
    if not devices:
        return [], [
            ConfigIssue(
                key_path((*where, "accelerator")),
                "nvidia",
                f"host `{host.name}` declares no GPUs",
                f"declare the host's GPUs under `hosts[].gpus`, or set `accelerator: cpu` for group `{group.name}`",
            )
        ]
    issues: list[ConfigIssue] = []
    if group.gpu_assignments is not None:
        assignments = group.gpu_assignments
        if group.replicas_per_host is not None and group.replicas_per_host != len(assignments):
            issues.append(
                ConfigIssue(
                    key_path((*where, "replicasPerHost")),
                    group.replicas_per_host,
                    f"`gpuAssignments` lists {len(assignments)} workers",
                    "remove `replicasPerHost` or make them agree",
                )
            )
        for w, positions in enumerate(assignments):
            if len(positions) != tp:
                issues.append(
                    ConfigIssue(
                        key_path((*where, "gpuAssignments", w)),
                        positions,
                        f"tensor-parallel size is {tp}, so each worker needs exactly {tp} GPU(s)",
                        f"give worker {w} {tp} GPU(s), or set `model.tensorParallelSize: {len(positions)}`",
                    )
                )
            bad = [p for p in positions if not 0 <= p < len(devices)]
            if bad:
                issues.append(
                    ConfigIssue(
                        key_path((*where, "gpuAssignments", w)),
                        positions,
                        f"host `{host.name}` has {len(devices)} GPU(s), positions 0..{len(devices) - 1}",
                        "use positions the host has, or declare more GPUs on the host",
                    )
                )
        if issues:
            return [], issues
    else:
        free = [i for i, d in enumerate(devices) if d not in used]
        wanted = group.replicas_per_host if group.replicas_per_host is not None else len(free) // tp
        if wanted == 0 or wanted * tp > len(free):
            return [], [
                ConfigIssue(
                    key_path((*where, "replicasPerHost")),
                    group.replicas_per_host,
                    f"{max(wanted, 1)} worker(s) x {tp} GPU(s) do not fit in the {len(free)} free GPU(s) of "
                    f"host `{host.name}` ({len(devices)} in all, the rest taken by earlier groups)",
                    "lower `replicasPerHost` or `model.tensorParallelSize`, or declare more GPUs on the host",
                )
            ]
        assignments = [free[i * tp : (i + 1) * tp] for i in range(wanted)]

    placements = []
    for w, positions in enumerate(assignments):
        ids = tuple(devices[p] for p in positions)
        name = f"{group.name}-{host.name}-{w}"
        for device in ids:
            if device in used:
                issues.append(
                    ConfigIssue(
                        key_path((*where, "gpuAssignments", w)),
                        positions,
                        f"GPU `{device}` on host `{host.name}` is already assigned to worker `{used[device]}`",
                        "give each worker its own GPUs; two vLLM engines on one GPU both OOM",
                    )
                )
            used[device] = name
        if len(ids) > 1 and any(d.startswith("MIG-") for d in ids):
            issues.append(
                ConfigIssue(
                    key_path((*where, "gpuAssignments", w)),
                    positions,
                    "a MIG instance cannot join a tensor-parallel group (no NCCL peer access between instances)",
                    "run one worker per MIG instance with `tensorParallelSize: 1`",
                )
            )
        placements.append(Placement(group, host, w, ids, None))
    return placements, issues


def _overlap(a: str, b: str) -> bool:
    """The same address, or one of them the unspecified address of the other's family (0.0.0.0
    takes the port on every IPv4 address of the host, `::` on every IPv6 one)."""
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    return x == y or (x.version == y.version and (x.is_unspecified or y.is_unspecified))


def port_issues(cfg: StackConfig, placements: list[Placement]) -> list[ConfigIssue]:
    """Two services on one host address and port: the second container fails to start with
    "address already in use", after everything before it was deployed."""
    issues: list[ConfigIssue] = []
    seen: list[Published] = []
    for item in published(cfg, placements):
        first = next(
            (s for s in seen if (s.host, s.port) == (item.host, item.port) and _overlap(s.address, item.address)), None
        )
        seen.append(item)
        if first is None:
            continue
        where = "on every address" if ipaddress.ip_address(first.address).is_unspecified else f"on {first.address}"
        issues.append(
            ConfigIssue(
                key_path(item.loc),
                item.value,
                f"host port {item.port} on host `{item.host}` is already taken by {first.service} ({where}, "
                f"`{key_path(first.loc).split(':', 1)[1]}`): {item.service} could not start there",
                _port_fix(item, first),
            )
        )
    return issues


def _port_fix(item: Published, first: Published) -> str:
    def key(p: Published) -> str:
        return f"`{key_path(p.loc).split(':', 1)[1]}`"

    if item.fixed:
        return f"{item.service}'s port is fixed: move {first.service} ({key(first)}) to another port"
    if item.loc[0] == "workers":
        return f"move the group's range ({key(item)}), e.g. 8000 and 8100 for two groups on a host"
    if first.fixed:
        return f"set {key(item)} to another port: {first.service}'s is fixed"
    return f"set {key(item)} or {key(first)} to another port, or publish them on different addresses"


def _port_range_issues(cfg: StackConfig, placements: list[Placement]) -> list[ConfigIssue]:
    """Worker `index` publishes `port + index`, which must still be a port."""
    issues = []
    for g, group in enumerate(cfg.workers):
        top = max((p.published_port or 0 for p in placements if p.group.name == group.name), default=0)
        if top > 65535:
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "port")),
                    group.port,
                    f"the group's workers publish `port` + their index, up to {top}, beyond the last port (65535)",
                    f"set `port` to at most {group.port - (top - 65535)}",
                )
            )
    return issues


# What a vLLM engine holds in RAM before any cache: Python, torch, the tokenizer, CUDA graphs'
# host buffers. A floor, not a size: `resources.memoryMb` should come from P99 observed use.
ENGINE_BASE_MIB = 1024


def shm_mib(group: WorkerGroup) -> int:
    """/dev/shm as the worker gets it (`components/workers/spec.py` `shm_size_mb`)."""
    return group.shm_size_mb if group.shm_size_mb is not None else max(1024, 2048 * group.gpus_per_worker())


def worker_ram(cfg: StackConfig, group: WorkerGroup) -> dict[str, int]:
    """What a worker keeps in its container's RAM, in MiB, by the key that sizes it. /dev/shm is a
    tmpfs and LMCache's tier is pinned memory: both count against the memory limit."""
    parts = {"`shmSizeMb` (/dev/shm)": shm_mib(group)}
    if group.accelerator == "cpu":
        # VLLM_CPU_KVCACHE_SPACE is allocated in RAM at start, in GiB.
        parts["`cpuKvCacheSpaceGib` (the KV cache)"] = group.cpu_kv_cache_space_gib * 1024
    redis = cfg.redis
    if redis.enabled and redis.kv_cache_offload and redis.lmcache.local_cpu:
        # LMCache allocates `max_local_cpu_size * 1024**3` bytes per engine process up front
        # (lmcache/v1/cache_engine.py `_Create_memory_allocator`): one per tensor-parallel rank.
        tier = math.ceil(redis.lmcache.max_local_cpu_size_gb * 1024) * group.model.tensor_parallel_size
        parts["`redis.lmcache.maxLocalCpuSizeGb` (LMCache's CPU tier, per rank)"] = tier
    parts["the engine itself"] = ENGINE_BASE_MIB
    return parts


def _worker_memory_rules(cfg: StackConfig, g: int, group: WorkerGroup) -> list[ConfigIssue]:
    parts = worker_ram(cfg, group)
    need, limit = sum(parts.values()), group.resources.memory_mb
    if limit >= need:
        return []
    listed = " + ".join(f"{mib} MiB for {key}" for key, mib in parts.items())
    return [
        ConfigIssue(
            key_path(("workers", g, "resources", "memoryMb")),
            limit,
            f"the worker's memory limit cannot hold what it keeps in RAM: {listed} = {need} MiB; past the "
            "limit the kernel kills the engine",
            f"set `resources.memoryMb` to at least {need}, or shrink "
            + ", ".join(k.split(" ")[0] for k in parts if k.startswith("`")),
        )
    ]
