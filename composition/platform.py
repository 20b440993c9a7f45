"""Composes the platform from a validated stack: hosts first, then the worker pools on them."""

from __future__ import annotations

import functools

import pulumi
import pulumi_random as random

from components.data.redis import Redis, RedisArgs
from components.data.weaviate import Weaviate, WeaviateArgs
from components.gateway import first_request
from components.gateway.gateway import Gateway, GatewayArgs
from components.gateway.nginx import Pool, Route
from components.hosts.host import GpuHost, GpuHostArgs, s3_credentials
from components.observability.monitoring import Monitoring, MonitoringArgs
from components.observability.prometheus import Target
from components.observability.tracing import Tracing, TracingArgs
from components.workers import layout, rollout, spec
from components.workers.canary import GateTarget, local_url
from components.workers.pool import VllmWorkerPool, VllmWorkerPoolArgs
from composition import cluster
from composition.keys import generates_client_key, redis_password, weaviate_keys, worker_api_key
from composition.loader import LoadedStack, load
from stacks import network
from stacks.config import ModelConfig, StackConfig
from stacks.placement import Placement, canary_pool


def build_hosts(stack: LoadedStack) -> dict[str, GpuHost]:
    cfg = stack.config
    multi_host = len(cfg.hosts) > 1
    firewall = network.firewall_ports(cfg, stack.placements)
    secrets = stack.secrets
    creds = None
    if "s3AccessKeyId" in secrets and "s3SecretAccessKey" in secrets:
        creds = s3_credentials(secrets["s3AccessKeyId"], secrets["s3SecretAccessKey"])
    hosts: dict[str, GpuHost] = {}
    for host in cfg.hosts:
        here = [p for p in stack.placements if p.host.name == host.name]
        # A group with a canary runs two releases: both images and both revisions are fetched.
        groups = list({(p.group.name, p.group.image, p.group.model.revision): p.group for p in here}.values())
        prefetch: dict[tuple[str, str], ModelConfig] = {
            (g.model.served_name, g.model.revision): g.model for g in groups if g.model.weights == "prefetch"
        }
        hosts[host.name] = GpuHost(
            host.name,
            GpuHostArgs(
                host=host,
                provisioning=cfg.provisioning,
                network_name=network.workers_network(stack.name),
                # No route out once nothing needs one: weights are local and nothing publishes.
                internal_network=not multi_host and all(g.model.offline() for g in groups),
                verify_gpus=any(g.accelerator == "nvidia" for g in groups),
                images=[g.image for g in groups],
                prefetch=list(prefetch.values()),
                published_ports=firewall[host.name],
                gateway_address=cfg.host(cfg.gateway_host()).private_address,
                ssh_private_key=secrets.get("sshPrivateKey"),
                hf_token=secrets.get("hfToken"),
                s3_credentials=creds,
            ),
        )
    return hosts


def routes(cfg: StackConfig, placements: list[Placement], stack: str) -> list[Route]:
    """One route per served model, in group order. The model's first group names its stable pool,
    which every other group serving the model joins too; its canary pool is there whether or not
    a canary runs (empty, with no share), so a canary never changes nginx.conf."""
    result = []
    for model in dict.fromkeys(g.model.served_name for g in cfg.workers):
        groups = [g.name for g in cfg.workers if g.model.served_name == model]
        mine = [p for p in placements if p.group.name in groups]
        stable = Pool(
            groups[0],
            [p.address(stack) for p in mine if not p.canary],
            joined=tuple(groups[1:]),
            router=_router(cfg, stack, groups[0]),
        )
        canary_group = canary_pool(groups[0])
        canary = Pool(
            canary_group, [p.address(stack) for p in mine if p.canary], router=_router(cfg, stack, canary_group)
        )
        result.append(Route(model, stable, canary))
    return result


def _router(cfg: StackConfig, stack: str, pool: str) -> str | None:
    # The canary pool has its own router, so the canary's share stays the split's (nginx), and
    # exists whether or not a canary runs, as its pool does.
    return network.router_container(stack, pool) if routed(cfg) else None


def worker_tracing(stack: LoadedStack) -> dict[str, list[str]]:
    """Each host's vLLM tracing flags: Jaeger by name beside it, or across hosts at the gateway
    host's private address."""
    cfg = stack.config
    tracing = cfg.observability.tracing
    if not tracing.enabled:
        return {}
    return {
        host.name: spec.tracing_args(
            network.host_otlp_endpoint(cfg, stack.name, host.name), tracing.collect_detailed_traces
        )
        for host in cfg.hosts
    }


def build_redis(stack: LoadedStack, hosts: dict[str, GpuHost]) -> Redis | None:
    cfg = stack.config
    if not cfg.redis.enabled:
        return None
    password = redis_password(stack)
    gateway_host = cfg.gateway_host()
    address = cfg.host(gateway_host).private_address
    return Redis(
        "redis",
        RedisArgs(
            config=cfg.redis,
            host=hosts[gateway_host],
            password=password,
            stack=stack.name,
            publish_address=address if network.redis_published(cfg, stack.placements) else None,
        ),
    )


def redis_urls(stack: LoadedStack, redis: Redis) -> dict[str, pulumi.Output[str]]:
    """How each host's workers reach Redis: Redis's own URL beside it, the gateway host's private
    address elsewhere."""
    cfg = stack.config
    return {
        host.name: redis.url
        if host.name == cfg.gateway_host()
        else redis.url_at(network.redis_target(cfg, stack.name, host.name))
        for host in cfg.hosts
    }


def build_data_services(stack: LoadedStack, hosts: dict[str, GpuHost]) -> Weaviate | None:
    cfg = stack.config
    if not cfg.weaviate.enabled:
        return None
    secrets = stack.secrets
    api_keys, users = weaviate_keys(stack)
    return Weaviate(
        "weaviate",
        WeaviateArgs(
            config=cfg.weaviate,
            host=hosts[cfg.gateway_host()],
            api_keys=api_keys,
            users=users,
            stack=stack.name,
            backup_access_key_id=secrets.get("weaviateBackupAccessKeyId"),
            backup_secret_access_key=secrets.get("weaviateBackupSecretAccessKey"),
        ),
    )


def scrape_targets(cfg: StackConfig, placements: list[Placement], stack: str) -> list[Target]:
    """Every worker, as Prometheus on the gateway host reaches it, labelled for the dashboards."""
    targets = []
    for p in placements:
        labels = {
            "host": p.host.name,
            "gpus": ",".join(p.devices),
            "replica": str(p.index),
            "model": p.group.model.served_name,
            "group": p.group.name,
            "role": "canary" if p.canary else "stable",
        }
        targets.append(Target(p.address(stack), labels))
    return targets


def worker_fingerprints(stack: LoadedStack, tracing: dict[str, list[str]]) -> dict[str, str]:
    """Each worker's spec fingerprint (`spec.fingerprint`), by placement name: the label its
    container carries and what `worker_seats` compares the running one's against."""
    offload = stack.config.redis.enabled and stack.config.redis.kv_cache_offload
    scale_out = routed(stack.config)
    return {
        p.name: spec.fingerprint(p.group, offload, tracing.get(p.host.name, ()), scale_out) for p in stack.placements
    }


def routed(cfg: StackConfig) -> bool:
    """Whether the gateway puts the prefix-cache router in front of every pool."""
    return cfg.gateway.balance == "cache_aware"


def worker_seats(stack: LoadedStack, fingerprints: dict[str, str]) -> dict[str, layout.Seat]:
    """Where each GPU worker's container goes in this update (`layout.py`), for hosts with a spare
    GPU; on a full host every replacement is delete-before-replace and nothing needs reading."""
    cfg = stack.config
    seats: dict[str, layout.Seat] = {}
    for host in cfg.hosts:
        here = {p.name: p for p in stack.placements if p.host.name == host.name}
        if sum(len(p.devices) for p in here.values()) in (0, len(host.gpus.devices())):
            continue
        ordered = [
            here[step.worker]
            for g in cfg.workers
            for step in rollout.plan([p for p in stack.placements if p.group.name == g.name], g.rollout.max_unavailable)
            if step.worker in here
        ]
        running = layout.read(host, stack.name)
        seats.update(layout.seat(ordered, fingerprints, running, host.gpus.devices(), stack.name))
    return seats


def export_first_request(cfg: StackConfig, gateway: Gateway) -> None:
    """`firstRequest`: the commands for a first chat completion to the first served model, with
    the generated key (a secret output) or a placeholder for one of `gatewayApiKeys`."""
    url = first_request.reachable_url(cfg.gateway.listen_address, cfg.gateway.port)
    model = cfg.workers[0].model.served_name
    key = gateway.client_key
    if key is None:
        pulumi.export("firstRequest", first_request.render(url, model, None))
        return
    pulumi.export("gatewayClientKey", key)
    pulumi.export("firstRequest", pulumi.Output.secret(key.apply(functools.partial(first_request.render, url, model))))


def gate_target(cfg: StackConfig, key: pulumi.Output[str]) -> GateTarget:
    """The gateway and Prometheus as the canary gate, on the gateway host, reaches them."""
    obs = cfg.observability
    return GateTarget(
        gateway_url=local_url(cfg.gateway.listen_address, cfg.gateway.port),
        key=key,
        prometheus_url=local_url(obs.bind_address, obs.prometheus_port) if obs.enabled else None,
        ttft_p95_seconds=obs.slo.ttft_p95_seconds,
    )


def build_gateway(
    stack: LoadedStack, hosts: dict[str, GpuHost], api_key: pulumi.Output[str], gate_key: pulumi.Output[str]
) -> Gateway:
    cfg = stack.config
    return Gateway(
        "gateway",
        GatewayArgs(
            config=cfg.gateway,
            host=hosts[cfg.gateway_host()],
            routes=routes(cfg, stack.placements, stack.name),
            worker_key=api_key,
            client_keys=stack.secrets.get("gatewayApiKeys"),
            gate_key=gate_key,
            stack=stack.name,
            status_metrics=cfg.observability.enabled,
            generate_client_key=generates_client_key(stack),
        ),
    )


def build_pools(
    stack: LoadedStack,
    hosts: dict[str, GpuHost],
    api_key: pulumi.Output[str],
    gate_key: pulumi.Output[str],
    redis: Redis | None,
    gateway: Gateway,
) -> dict[str, VllmWorkerPool]:
    cfg = stack.config
    traced = worker_tracing(stack)
    fingerprints = worker_fingerprints(stack, traced)
    seats = worker_seats(stack, fingerprints)
    offload = redis is not None and cfg.redis.kv_cache_offload
    return {
        group.name: VllmWorkerPool(
            group.name,
            VllmWorkerPoolArgs(
                group=group,
                placements=[p for p in stack.placements if p.group.name == group.name],
                hosts=hosts,
                api_key=api_key,
                hf_token=stack.secrets.get("hfToken") if group.model.weights == "download" else None,
                stack=stack.name,
                lmcache=cfg.redis.lmcache if offload else None,
                redis_urls=redis_urls(stack, redis) if redis is not None else {},
                tracing=traced,
                scale_out=routed(cfg),
                membership=gateway.membership,
                gate=gate_target(cfg, gate_key) if group.canary is not None else None,
                seats=seats,
                fingerprints=fingerprints,
            ),
        )
        for group in cfg.workers
    }


def build_tracing(stack: LoadedStack, hosts: dict[str, GpuHost], gateway: Gateway) -> Tracing | None:
    cfg = stack.config
    if not cfg.observability.tracing.enabled:
        return None
    gateway_host = cfg.host(cfg.gateway_host())
    published = network.tracing_published(cfg, stack.placements)
    tracing = Tracing(
        "tracing",
        TracingArgs(
            config=cfg.observability.tracing,
            host=hosts[gateway_host.name],
            bind_address=cfg.observability.bind_address,
            private_address=str(gateway_host.private_address) if published else None,
            edge_network=gateway.edge_network,
            stack=stack.name,
        ),
    )
    pulumi.export("jaegerUrl", tracing.ui_url)
    return tracing


def build_monitoring(
    stack: LoadedStack, hosts: dict[str, GpuHost], gateway: Gateway, tracing: Tracing | None
) -> Monitoring | None:
    cfg = stack.config
    if not cfg.observability.enabled:
        return None
    grafana_password = stack.secrets.get("grafanaAdminPassword")
    if grafana_password is None and cfg.observability.grafana:
        grafana_password = random.RandomPassword("grafana-admin-password", length=32, special=False).result
        pulumi.export("grafanaAdminPassword", grafana_password)
    monitoring = Monitoring(
        "monitoring",
        MonitoringArgs(
            config=cfg.observability,
            host=hosts[cfg.gateway_host()],
            workers=scrape_targets(cfg, stack.placements, stack.name),
            gpu_hosts={
                name: (host, None if name == cfg.gateway_host() else cfg.host(name).private_address)
                for name, host in hosts.items()
                if host.inventory is not None
            },
            gateway_container=gateway.container_name,
            edge_network=gateway.edge_network,
            stack=stack.name,
            grafana_password=grafana_password,
            gateway_status_exporter=gateway.status_exporter,
            router_exporters=gateway.router_exporters,
            jaeger_url=tracing.query_url if tracing is not None else None,
        ),
    )
    pulumi.export("prometheusUrl", monitoring.url)
    if monitoring.grafana_url is not None:
        pulumi.export("grafanaUrl", monitoring.grafana_url)
    return monitoring


def build(stack: LoadedStack) -> dict[str, VllmWorkerPool]:
    """The platform in one pass: hosts, data, the gateway, the workers joining it, observability."""
    hosts = build_hosts(stack)
    api_key = worker_api_key(stack)
    build_data_services(stack, hosts)
    redis = build_redis(stack, hosts)
    # Always there, so the first canary does not change the gateway's key files (and replace it).
    gate_key = random.RandomPassword("canary-gate-key", length=48, special=False).result
    # The gateway first: workers join it one by one as they become healthy.
    gateway = build_gateway(stack, hosts, api_key, gate_key)
    pools = build_pools(stack, hosts, api_key, gate_key, redis, gateway)
    gateway.readmit([admit for pool in pools.values() for admit in pool.admits])
    pulumi.export("gatewayUrl", gateway.url)
    export_first_request(stack.config, gateway)
    build_monitoring(stack, hosts, gateway, build_tracing(stack, hosts, gateway))
    for name, host in hosts.items():
        if host.inventory is not None:
            pulumi.export(f"gpus-{name}", host.inventory.apply(lambda gpus: [g.as_output() for g in gpus or []]))
    pulumi.export("workerUrls", {name: pool.urls for name, pool in pools.items()})
    pulumi.export("workerContainers", {name: pool.container_names for name, pool in pools.items()})
    return pools


def main() -> None:
    stack = load()
    if stack.config.target == "kubernetes":
        cluster.build(stack)
    else:
        build(stack)
