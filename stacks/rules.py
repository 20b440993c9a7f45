"""Cross-field rules: what no single field's type can refuse, checked over the whole fleet.

`check` also seats the workers (`stacks/placement.py`), because GPU overlap and placement are one
computation: the placement these rules approve is exactly the one the components deploy. Pure:
what the loader read of the model caches comes in as `files`.
"""

from __future__ import annotations

import math

from stacks import cluster_rules
from stacks.config import HostConfig, StackConfig, WorkerGroup
from stacks.errors import ConfigIssue, did_you_mean, key_path
from stacks.model_files import ModelFiles, model_len_issues
from stacks.placement import Placement, Seats, canary_pool, with_cached_shape, with_canaries
from stacks.port_rules import port_rules
from stacks.preflight import MEMORY_FIX, cuda_of, driver_problem, memory_fit
from stacks.vllm_flags import check_extra_args


def check(cfg: StackConfig, files: ModelFiles) -> tuple[list[Placement], list[ConfigIssue]]:
    """Where each worker runs, and every cross-field problem. `files` is what the loader read of
    the local model caches (`model_files.read_cached`)."""
    issues = _unique(cfg) + cluster_rules.target_issues(cfg) + model_len_issues(cfg, files)
    if cfg.target == "kubernetes":
        return [], issues + _cluster_rules(cfg)
    if not cfg.hosts:
        return [], issues
    issues += _network_rules(cfg)
    hosts = {h.name: h for h in cfg.hosts}
    seats = Seats(cfg)
    placements: list[Placement] = []
    for g, group in enumerate(cfg.workers):
        issues += _group_rules(g, group) + _worker_memory_rules(cfg, g, group) + _balance_rules(cfg, g, group)
        for host_name in group.hosts or [h.name for h in cfg.hosts]:
            host = hosts.get(host_name)
            if host is None:
                issues.append(_unknown_host(g, host_name, list(hosts)))
                continue
            found, problems = seats.place(g, group, host)
            issues += problems + _declared_preflight(g, group, host, files)
            placements += found
    counts = {g.name: sum(1 for p in placements if p.group.name == g.name) for g in cfg.workers}
    issues += port_rules(cfg, placements) + _rollout_rules(cfg, counts)
    canary_issues = _canary_rules(cfg, counts)
    if canary_issues:
        return placements, issues + canary_issues
    return with_canaries(cfg, placements), issues


def _cluster_rules(cfg: StackConfig) -> list[ConfigIssue]:
    """The Kubernetes target's: the same group, memory and balance rules, with node capacity in
    place of GPU seats. Its workers are Deployments, so there are no placements to hand on."""
    issues = _data_rules(cfg)
    for g, group in enumerate(cfg.workers):
        issues += _group_rules(g, group) + _worker_memory_rules(cfg, g, group) + _balance_rules(cfg, g, group)
    if cfg.kubernetes is None:
        return issues
    # The disruption budget's rule (cluster_rules) is the rollout rule here: it holds at 1 replica too.
    counts = cluster_rules.stable_replicas(cfg)
    issues += cluster_rules.capacity_issues(cfg, cfg.kubernetes) + cluster_rules.gateway_issues(cfg, cfg.kubernetes)
    return issues + _canary_rules(cfg, counts)


def _unknown_host(g: int, name: str, hosts: list[str]) -> ConfigIssue:
    return ConfigIssue(
        key_path(("workers", g, "hosts")),
        name,
        "no host has this name",
        did_you_mean(name, hosts).replace("Rename the key", "Use that name"),
    )


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


def _balance_rules(cfg: StackConfig, g: int, group: WorkerGroup) -> list[ConfigIssue]:
    """`balance: session` and `cache_aware` send a conversation back to the worker that holds its
    history, which pays only when that worker keeps it: vLLM 0.32 caches prefixes unless told not
    to (its `--enable-prefix-caching` defaults to the model's support, `EngineArgs` in arg_utils.py).
    The router also asks every worker to tokenize each prompt, which the program turns on
    (`--enable-scale-out`, components/workers/spec.py)."""
    balance = cfg.gateway.balance
    if balance not in ("session", "cache_aware"):
        return []
    off = "--no-enable-prefix-caching"
    releases = [("extraArgs", group.extra_args)]
    if group.canary is not None and group.canary.extra_args is not None:
        releases.append(("canary.extraArgs", group.canary.extra_args))
    return [
        ConfigIssue(
            key_path(("workers", g, *where.split("."))),
            off,
            f"`gateway.balance: {balance}` keeps each conversation on one worker so that its prefix cache "
            f"serves the history again; `{off}` turns that cache off, so every turn recomputes it anyway",
            f"drop `{off}`, or use `balance: least_conn`",
        )
        for where, args in releases
        if off in args
    ]


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


def _rollout_rules(cfg: StackConfig, counts: dict[str, int]) -> list[ConfigIssue]:
    issues = []
    for g, group in enumerate(cfg.workers):
        count = counts[group.name]
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


def _canary_rules(cfg: StackConfig, counts: dict[str, int]) -> list[ConfigIssue]:
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
        count = counts[group.name]
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
