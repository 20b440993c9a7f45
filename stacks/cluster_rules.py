"""The rules of a stack's target: which keys belong to which target (a stack deploys to one), and
for `target: kubernetes` what placement becomes there, node capacity checks. Pure.
"""

from __future__ import annotations

import math

from pydantic.alias_generators import to_snake

from stacks.cluster import KubernetesConfig, NodePool, WorkerCluster
from stacks.config import StackConfig, WorkerGroup
from stacks.errors import ConfigIssue, did_you_mean, key_path
from stacks.preflight import MEMORY_FIX, memory_fit

# The keys that only a Docker host fleet reads, by where they sit.
_DOCKER_TOP = ("hosts", "network", "provisioning")
_DOCKER_GROUP = ("hosts", "replicasPerHost", "gpuAssignments")
# vllm-router's `consistent_hash` policy hashes this header first (vllm-project/router,
# docs/load_balancing/README.md, "Hash Key Priority"); headers are case-insensitive.
ROUTER_SESSION_HEADER = "x-session-id"


def target_issues(cfg: StackConfig) -> list[ConfigIssue]:
    """A stack deploys to one target: a key the other target reads would be silently ignored."""
    if cfg.target == "docker":
        return _docker_issues(cfg)
    issues = []
    if cfg.kubernetes is None:
        issues.append(
            ConfigIssue(
                key_path(("kubernetes",)),
                None,
                "`target: kubernetes` deploys onto a cluster, and no cluster is described",
                'add `kubernetes:` with at least `storageClass` and `nodePools` (README, "Kubernetes")',
            )
        )
    for key in _DOCKER_TOP:
        # Against the default, not "was it given": `provisioning` is always filled in (validate_default).
        if getattr(cfg, to_snake(key)) != type(cfg).model_fields[to_snake(key)].default:
            issues.append(
                _mixed(key_path((key,)), key, "kubernetes", "remove it: nodes come from `kubernetes.nodePools`")
            )
    for g, group in enumerate(cfg.workers):
        for key in _DOCKER_GROUP:
            if getattr(group, to_snake(key)) is not None:
                issues.append(
                    _mixed(
                        key_path(("workers", g, key)),
                        key,
                        "kubernetes",
                        "remove it; say where and how many in `workers[].cluster` (`nodePool`, `replicas`)",
                    )
                )
    return issues


def _docker_issues(cfg: StackConfig) -> list[ConfigIssue]:
    issues = []
    if not cfg.hosts and "hosts" in cfg.model_fields_set:
        issues.append(
            ConfigIssue(
                key_path(("hosts",)),
                [],
                "`target: docker` (the default) runs the workers on Docker hosts, and none is listed",
                "list at least one host under `hosts`, or set `target: kubernetes` with a `kubernetes:` cluster",
            )
        )
    if cfg.kubernetes is not None:
        issues.append(
            _mixed(key_path(("kubernetes",)), "kubernetes", "docker", "remove it, or set `target: kubernetes`")
        )
    for g, group in enumerate(cfg.workers):
        if group.cluster is not None:
            issues.append(
                _mixed(
                    key_path(("workers", g, "cluster")), "cluster", "docker", "remove it, or set `target: kubernetes`"
                )
            )
    return issues


def _mixed(path: str, key: str, target: str, fix: str) -> ConfigIssue:
    reader = "Docker hosts" if target == "kubernetes" else "a Kubernetes cluster"
    return ConfigIssue(
        path,
        f"(set under target: {target})",
        f"`{key}` configures {reader}, and this stack's `target` is `{target}`: one stack deploys to one "
        "target, so the key would be ignored",
        fix,
    )


def asks(group: WorkerGroup) -> WorkerCluster:
    """What the group asks of the cluster, its defaults when it says nothing."""
    return group.cluster if group.cluster is not None else WorkerCluster()


def stable_replicas(cfg: StackConfig) -> dict[str, int]:
    """The fewest stable pods each group runs on the cluster (its canary's beside them)."""
    return {g.name: asks(g).replica_bounds()[0] for g in cfg.workers}


def pool_of(cluster: KubernetesConfig, group: WorkerGroup) -> NodePool | None:
    name = asks(group).node_pool
    return cluster.node_pools[0] if name is None else cluster.pool(name)


def gpus_per_pod(group: WorkerGroup) -> int:
    """`nvidia.com/gpu` of one pod: the worker's GPUs, split over the nodes a replica spans."""
    return group.gpus_per_worker() // asks(group).nodes_per_replica


def capacity_issues(cfg: StackConfig, cluster: KubernetesConfig) -> list[ConfigIssue]:
    """Placement on a cluster: every pod fits a node of its pool, and every pool holds its groups
    at their maximum replica counts (the scheduler would leave the rest Pending)."""
    issues: list[ConfigIssue] = []
    demand: dict[str, int] = {}
    for g, group in enumerate(cfg.workers):
        pool = pool_of(cluster, group)
        if pool is None:
            name = asks(group).node_pool
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "cluster", "nodePool")),
                    name,
                    "no node pool has this name",
                    did_you_mean(str(name), [p.name for p in cluster.node_pools]).replace(
                        "Rename the key", "Use that name"
                    ),
                )
            )
            continue
        issues += _pod_fits(g, group, pool, cluster)
        high = asks(group).replica_bounds()[1]
        canary = group.canary.workers if group.canary is not None else 0
        demand[pool.name] = demand.get(pool.name, 0) + (high + canary) * group.gpus_per_worker()
        issues += _budget_issues(g, group)
    for p, pool in enumerate(cluster.node_pools):
        have = pool.nodes * pool.gpus_per_node
        if demand.get(pool.name, 0) > have:
            issues.append(
                ConfigIssue(
                    key_path(("kubernetes", "nodePools", p, "nodes")),
                    pool.nodes,
                    f"the groups on pool `{pool.name}` need {demand[pool.name]} GPUs at their maximum replicas "
                    f"(canaries included), and its {pool.nodes} node(s) have {have}: the rest would stay Pending",
                    f"raise `nodes` to at least {math.ceil(demand[pool.name] / max(pool.gpus_per_node, 1))}, or lower "
                    "the groups' `replicas` / `autoscale.maxReplicas`",
                )
            )
    return issues


def _pod_fits(g: int, group: WorkerGroup, pool: NodePool, cluster: KubernetesConfig) -> list[ConfigIssue]:
    issues = []
    where = ("workers", g, "cluster")
    nodes = asks(group).nodes_per_replica
    gpus = group.gpus_per_worker()
    largest = max(p.gpus_per_node for p in cluster.node_pools)
    autoscale = asks(group).autoscale
    if nodes > 1 and autoscale is not None:
        issues.append(
            ConfigIssue(
                key_path((*where, "autoscale")),
                autoscale.model_dump(by_alias=True),
                "a replica spanning nodes is a LeaderWorkerSet, which the KEDA ScaledObject (a Deployment's "
                "scaler here) does not scale, so the bounds would be ignored",
                "use `replicas` for this group, or `nodesPerReplica: 1`",
            )
        )
    if gpus % nodes:
        issues.append(
            ConfigIssue(
                key_path((*where, "nodesPerReplica")),
                nodes,
                f"a replica's {gpus} GPUs (`tensorParallelSize`) must split evenly over the nodes it spans",
                f"use a `nodesPerReplica` that divides {gpus}",
            )
        )
    elif gpus // nodes > pool.gpus_per_node:
        per_node = f"{pool.gpus_per_node} GPU(s) per node" if pool.gpus_per_node else "no GPUs"
        issues.append(
            ConfigIssue(
                key_path(("workers", g, "model", "tensorParallelSize")),
                gpus,
                f"each pod requests {gpus // nodes} `nvidia.com/gpu`, and pool `{pool.name}` has {per_node} "
                f"(the largest pool has {largest}): no node could ever schedule it",
                f"set `cluster.nodesPerReplica: {math.ceil(gpus / max(pool.gpus_per_node, 1))}` to span nodes "
                "(a LeaderWorkerSet), or put the group on a pool with more GPUs per node",
            )
        )
    if group.resources.cpus > pool.cpus:
        issues.append(
            ConfigIssue(
                key_path(("workers", g, "resources", "cpus")),
                group.resources.cpus,
                f"pool `{pool.name}` nodes have {pool.cpus:g} allocatable CPUs: a pod limited above that "
                "never schedules",
                f"set it to at most {pool.cpus:g}",
            )
        )
    if group.resources.memory_mb > pool.memory_mb:
        issues.append(
            ConfigIssue(
                key_path(("workers", g, "resources", "memoryMb")),
                group.resources.memory_mb,
                f"pool `{pool.name}` nodes have {pool.memory_mb} MiB allocatable: a pod limited above that never "
                "schedules",
                f"set it to at most {pool.memory_mb}",
            )
        )
    if pool.gpu_memory_mib is not None and group.accelerator == "nvidia":
        fit = memory_fit(group, pool.gpu_memory_mib)
        if fit is not None and not fit.fits:
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "model", "maxNumSeqs")),
                    group.model.max_num_seqs,
                    f"on pool `{pool.name}` ({pool.gpu_memory_mib} MiB GPUs) the model does not fit: {fit.explain()}",
                    MEMORY_FIX,
                )
            )
    return issues


def _budget_issues(g: int, group: WorkerGroup) -> list[ConfigIssue]:
    """Each group has a PodDisruptionBudget of `rollout.maxUnavailable`: it must leave a pod up."""
    low = asks(group).replica_bounds()[0]
    budget = group.rollout.max_unavailable
    if low > budget:
        return []
    autoscaled = asks(group).autoscale is not None
    key = ("autoscale", "minReplicas") if autoscaled else ("replicas",)
    return [
        ConfigIssue(
            key_path(("workers", g, "cluster", *key)),
            low,
            f"the group's PodDisruptionBudget lets a drain or an update take `rollout.maxUnavailable` ({budget}) "
            f"pods at once, so {low} replica(s) could all go at once and the model would stop serving",
            f"run at least {budget + 1} replicas, or lower `rollout.maxUnavailable`",
        )
    ]


def gateway_issues(cfg: StackConfig, cluster: KubernetesConfig) -> list[ConfigIssue]:
    """What the gateway and the routers need to stay correct with several replicas each."""
    issues = []
    replicas = cluster.gateway.replicas
    limit = cfg.gateway.rate_limit
    if limit.requests_per_second < replicas:
        issues.append(
            ConfigIssue(
                key_path(("gateway", "rateLimit", "requestsPerSecond")),
                limit.requests_per_second,
                f'each of the {replicas} gateway replicas enforces its share of the limit (README, "Kubernetes"), '
                "and a share below 1 request/s cannot be expressed",
                f"raise it to at least {replicas}, or lower `kubernetes.gateway.replicas`",
            )
        )
    if cfg.gateway.balance == "session" and cfg.gateway.session_header.lower() != ROUTER_SESSION_HEADER:
        issues.append(
            ConfigIssue(
                key_path(("gateway", "sessionHeader")),
                cfg.gateway.session_header,
                "on a cluster the routers keep sessions (vllm-router's `consistent_hash`), and they hash "
                "the `X-Session-Id` header",
                "use `sessionHeader: X-Session-Id`",
            )
        )
    return issues
