"""Every manifest of a `target: kubernetes` stack, by the concern that owns it, from the validated
config alone. Pure: `composition.cluster` hands these to pulumi-kubernetes as they are, and
`make render` writes them as YAML. Secrets are not here: their values exist only as Pulumi
secrets, so the composition builds those objects itself (`SECRETS` names them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.gateway.nginx import Pool, Route
from components.kubernetes import data, edge, manifests, monitoring, network, workers
from components.workers import spec
from stacks.cluster import KubernetesConfig
from stacks.cluster_rules import asks, pool_of
from stacks.config import StackConfig
from stacks.placement import canary_pool

WORKER_SECRET = "worker-secrets"
SECRETS = {
    WORKER_SECRET: "vllm-api-key, hf-token (download and pre-fetch), lmcache.yaml (KV offload)",
    edge.KEYS_SECRET: "clients.map, worker-auth.conf (nginx's key files)",
    data.REDIS_SECRET: "acl (the Redis default user's password hash)",
    data.WEAVIATE_SECRET: "weaviate.env (API keys, S3 backup credentials)",
}
"""The Secrets the composition creates, by name, with the files each holds."""


@dataclass
class Fleet:
    """The manifests, by the component that deploys them (`composition.cluster`)."""

    namespace: dict[str, Any]
    workers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """By group: its Deployments (or LeaderWorkerSets), Service, disruption budget, ScaledObject."""
    model_cache: list[dict[str, Any]] = field(default_factory=list)
    edge: list[dict[str, Any]] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)
    monitoring: list[dict[str, Any]] = field(default_factory=list)
    network: list[dict[str, Any]] = field(default_factory=list)

    def all(self) -> list[dict[str, Any]]:
        groups = [m for ms in self.workers.values() for m in ms]
        return [self.namespace, *self.model_cache, *groups, *self.edge, *self.data, *self.monitoring, *self.network]


def routes(cfg: StackConfig) -> list[Route]:
    """One route per served model, as on Docker hosts (`composition.platform.routes`): the
    model's first group names its stable pool, which the others join, and its canary pool."""
    found = []
    for model in dict.fromkeys(g.model.served_name for g in cfg.workers):
        groups = [g.name for g in cfg.workers if g.model.served_name == model]
        found.append(Route(model, Pool(groups[0], [], joined=tuple(groups[1:])), Pool(canary_pool(groups[0]), [])))
    return found


def stable_pool(cfg: StackConfig, group: str) -> str:
    model = next(g.model.served_name for g in cfg.workers if g.name == group)
    return next(g.name for g in cfg.workers if g.model.served_name == model)


def canary_weights(cfg: StackConfig) -> dict[str, int]:
    return {g.model.served_name: g.canary.weight_percent for g in cfg.workers if g.canary is not None}


def _group(cfg: StackConfig, cluster: KubernetesConfig, stack: str, g: int, hf_token: bool) -> list[dict[str, Any]]:
    group = cfg.workers[g]
    ns = cluster.namespace
    pool = pool_of(cluster, group)
    assert pool is not None, "validated: every group's node pool exists"
    offload = cfg.redis.enabled and cfg.redis.kv_cache_offload
    tracing = (
        spec.tracing_args(monitoring.otlp_endpoint(ns), cfg.observability.tracing.collect_detailed_traces)
        if cfg.observability.tracing.enabled
        else []
    )
    scale_out = cfg.gateway.balance == "cache_aware"
    build = workers.leader_worker_set if asks(group).nodes_per_replica > 1 else workers.deployment
    releases = workers.releases(group, stable_pool(cfg, group.name))
    serving = workers.Serving(ns, stack, pool, WORKER_SECRET, offload, scale_out, tuple(tracing), hf_token)
    found = [build(release, serving) for release in releases]
    selector = workers.pod_labels(stack, releases[0])
    low, high = asks(group).replica_bounds()
    found.append(manifests.disruption_budget(group.name, ns, selector, low, group.rollout.max_unavailable))
    found.append(workers.service(group, ns, stack))
    auto = asks(group).autoscale
    # Validated: only a Deployment's group autoscales (stacks/cluster_rules.py).
    if auto is not None:
        found.append(
            manifests.scaled_object(
                group.name,
                ns,
                stack,
                cluster.prometheus_url,
                group.model.served_name,
                (low, high),
                auto.waiting_per_replica,
            )
        )
    return found


def _prefetch(cfg: StackConfig, cluster: KubernetesConfig, stack: str) -> list[dict[str, Any]]:
    """One Job per model revision a release pre-fetches (a canary's revision too)."""
    wanted: dict[tuple[str, str], tuple[Any, str]] = {}
    for group in cfg.workers:
        for release in workers.releases(group, group.name):
            model = release.group.model
            if model.weights == "prefetch":
                wanted.setdefault((model.id, model.revision), (model, release.group.image))
    return [workers.prefetch_job(m, image, cluster.namespace, stack, WORKER_SECRET) for m, image in wanted.values()]


def _edge(cfg: StackConfig, cluster: KubernetesConfig, stack: str) -> list[dict[str, Any]]:
    ns = cluster.namespace
    found = edge.router_account(ns, stack)
    served = routes(cfg)
    for route in served:
        port = next(g.port for g in cfg.workers if g.name == route.stable.group)
        for pool in (route.stable, route.canary):
            if pool is not None:
                found.append(edge.router_deployment(cfg.gateway, cluster, pool.group, port, stack))
                found.append(edge.router_service(pool.group, ns, stack))
    config = edge.gateway_config_map(cfg.gateway, served, cluster, canary_weights(cfg), stack)
    gateway = edge.gateway_deployment(cfg.gateway, cfg.observability, cluster, config, stack)
    return [*found, config, gateway, edge.gateway_service(cfg.gateway, cluster, stack)]


def fleet(cfg: StackConfig, stack: str, weaviate_users: list[str] | None = None, hf_token: bool = False) -> Fleet:
    cluster = cfg.kubernetes
    if cluster is None or cfg.target != "kubernetes":
        raise ValueError("fleet() is the Kubernetes target's; this stack's target is docker")
    ns = cluster.namespace
    out = Fleet(manifests.namespace(ns, stack))
    out.model_cache = [
        workers.cache_claim(cluster, ns, stack),
        workers.scripts_config_map(ns, stack),
        *_prefetch(cfg, cluster, stack),
    ]
    for g, group in enumerate(cfg.workers):
        out.workers[group.name] = _group(cfg, cluster, stack, g, hf_token)
    out.edge = _edge(cfg, cluster, stack)
    if cfg.redis.enabled:
        out.data += data.redis_objects(cfg.redis, cluster, stack)
    if cfg.weaviate.enabled:
        out.data += data.weaviate_objects(cfg.weaviate, cluster, weaviate_users or ["admin"], stack)
    obs = cfg.observability
    if obs.enabled:
        out.monitoring = [
            manifests.prometheus_rule("inference-rules", ns, stack, obs.slo),
            *monitoring.service_monitors(ns, stack),
            *([monitoring.dashboards(ns, stack)] if obs.grafana else []),
        ]
    if obs.tracing.enabled:
        out.monitoring += monitoring.jaeger(obs.tracing, ns, stack)
    out.network = network.network_policies(cluster, stack, cfg.redis.enabled, cfg.weaviate.enabled, obs.tracing.enabled)
    return out
