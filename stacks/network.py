"""The fleet's network layout, computed once from the stack: container names, the fixed ports,
every host port the stack publishes, each host's firewall ports and the URLs by which one
container reaches another. The validation rules (port clashes) and the components both read it,
so what is checked is what is deployed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stacks.config import HostConfig, StackConfig

if TYPE_CHECKING:
    from stacks.placement import Placement

REDIS_PORT = 6379
OTLP_GRPC_PORT = 4317
"""OTLP over gRPC, vLLM's default protocol for `--otlp-traces-endpoint`."""
DCGM_PORT = 9400
"""dcgm-exporter's default listen port."""
PROMETHEUS_PORT = 9090
"""Prometheus's listen port inside its container."""
JAEGER_UI_PORT = 16686
"""Jaeger's query API and UI inside its container."""
WEAVIATE_PORT = 8080
"""Weaviate's REST port inside its container."""


def workers_network(stack: str) -> str:
    """Each host's Docker network for its workers and the services beside them."""
    return f"{stack}-workers"


def gateway_container(stack: str) -> str:
    """The gateway's container, and its edge network: the one name clients' traffic enters by."""
    return f"{stack}-gateway"


def gateway_status_container(stack: str) -> str:
    """mtail, turning the gateway's per-request syslog lines into per-status metrics."""
    return f"{stack}-gateway-mtail"


def router_container(stack: str, pool: str) -> str:
    """The prefix-cache router in front of one pool's workers (`gateway.balance: cache_aware`)."""
    return f"{stack}-router-{pool}"


def redis_container(stack: str) -> str:
    return f"{stack}-redis"


def weaviate_container(stack: str) -> str:
    return f"{stack}-weaviate"


def jaeger_container(stack: str) -> str:
    return f"{stack}-jaeger"


def prometheus_container(stack: str) -> str:
    return f"{stack}-prometheus"


def grafana_container(stack: str) -> str:
    return f"{stack}-grafana"


def nginx_exporter_container(stack: str) -> str:
    return f"{stack}-nginx-exporter"


def dcgm_container(stack: str, host: str) -> str:
    return f"{stack}-dcgm-{host}"


def prometheus_url(stack: str) -> str:
    """Prometheus as Grafana reaches it, on the gateway's network."""
    return f"http://{prometheus_container(stack)}:{PROMETHEUS_PORT}"


def jaeger_query_url(stack: str) -> str:
    """Jaeger's query API as Grafana reaches it."""
    return f"http://{jaeger_container(stack)}:{JAEGER_UI_PORT}"


def weaviate_url(stack: str) -> str:
    """Weaviate on the platform network."""
    return f"http://{weaviate_container(stack)}:{WEAVIATE_PORT}"


def dcgm_target(stack: str, host: str, private_address: str | None) -> str:
    """`host:port` of a host's DCGM exporter as Prometheus reaches it: by name on the gateway
    host, at the host's private address elsewhere."""
    return f"{private_address or dcgm_container(stack, host)}:{DCGM_PORT}"


def _remote_workers(cfg: StackConfig, placements: Sequence[Placement]) -> bool:
    return any(p.host.name != cfg.gateway_host() for p in placements)


def redis_published(cfg: StackConfig, placements: Sequence[Placement]) -> bool:
    """Redis publishes (on the gateway host's private address) only for offloading workers elsewhere."""
    return cfg.redis.enabled and cfg.redis.kv_cache_offload and _remote_workers(cfg, placements)


def tracing_published(cfg: StackConfig, placements: Sequence[Placement]) -> bool:
    """Jaeger's OTLP port publishes (on the gateway host's private address) only for workers elsewhere."""
    return cfg.observability.tracing.enabled and _remote_workers(cfg, placements)


def dcgm_published(cfg: StackConfig, host: str, placements: Sequence[Placement]) -> bool:
    """A host other than the gateway host publishes its DCGM exporter for Prometheus there."""
    gpus_here = any(p.host.name == host and p.group.accelerator == "nvidia" for p in placements)
    return cfg.observability.enabled and gpus_here and host != cfg.gateway_host()


def firewall_ports(cfg: StackConfig, placements: Sequence[Placement]) -> dict[str, list[int]]:
    """Each host's ports open to the other hosts' private addresses: its workers' published
    ports, Redis and OTLP on the gateway host, the DCGM exporter on the others."""
    gateway = cfg.gateway_host()
    ports: dict[str, list[int]] = {}
    for host in cfg.hosts:
        here = [p.published_port for p in placements if p.host.name == host.name and p.published_port is not None]
        if host.name == gateway and redis_published(cfg, placements):
            here.append(REDIS_PORT)
        if host.name == gateway and tracing_published(cfg, placements):
            here.append(OTLP_GRPC_PORT)
        if dcgm_published(cfg, host.name, placements):
            here.append(DCGM_PORT)
        ports[host.name] = here
    return ports


def _gateway_private(cfg: StackConfig, host: str) -> str | None:
    """The gateway host's private address as `host` reaches it; None on the gateway host itself."""
    gateway = cfg.host(cfg.gateway_host())
    return None if host == gateway.name or gateway.private_address is None else str(gateway.private_address)


def redis_target(cfg: StackConfig, stack: str, host: str) -> str:
    """`host:port` of Redis as workers on `host` reach it: by name beside it, at the gateway
    host's private address elsewhere."""
    return f"{_gateway_private(cfg, host) or redis_container(stack)}:{REDIS_PORT}"


def redis_url(target: str, password: str) -> str:
    return f"redis://:{password}@{target}"


def otlp_endpoint(stack: str, remote_address: str | None) -> str:
    """Where a worker sends its spans (OTLP gRPC): Jaeger by name on the gateway host, the
    gateway host's private address from any other."""
    return f"http://{remote_address or jaeger_container(stack)}:{OTLP_GRPC_PORT}"


def host_otlp_endpoint(cfg: StackConfig, stack: str, host: str) -> str:
    return otlp_endpoint(stack, _gateway_private(cfg, host))


@dataclass(frozen=True)
class Published:
    """One host address and port a container (or sshd) listens on."""

    host: str
    address: str
    port: int
    service: str
    loc: tuple[str | int, ...]
    """The key that chose the port, or the address for a fixed port."""
    value: object
    fixed: bool = False
    """The port is not configurable (Redis, OTLP, DCGM, sshd's own)."""


def published(cfg: StackConfig, placements: Sequence[Placement]) -> list[Published]:
    """Every host port the stack publishes, fixed ones first so that a clash is reported on the
    key that can move."""
    gateway = next((h for h in cfg.hosts if h.name == cfg.gateway_host()), None)
    if gateway is None:
        return []  # `network.gatewayHost` names no host, refused on its own.
    return _fixed_ports(cfg, placements, gateway) + _chosen_ports(cfg, placements, gateway)


def _sshd_ports(cfg: StackConfig) -> list[Published]:
    found = []
    for i, host in enumerate(cfg.hosts):
        if host.ssh is not None:
            # sshd listens on every address unless its `ListenAddress` says otherwise.
            for anywhere in ("0.0.0.0", "::"):
                where = ("hosts", i, "ssh", "port")
                found.append(Published(host.name, anywhere, host.ssh.port, "sshd", where, host.ssh.port, fixed=True))
    return found


def _fixed_ports(cfg: StackConfig, placements: Sequence[Placement], gateway: HostConfig) -> list[Published]:
    found = _sshd_ports(cfg)
    private, at_gateway = gateway.private_address, ("hosts", cfg.hosts.index(gateway), "privateAddress")
    if private is not None and redis_published(cfg, placements):
        found.append(Published(gateway.name, private, REDIS_PORT, "Redis", at_gateway, private, fixed=True))
    if private is not None and tracing_published(cfg, placements):
        found.append(
            Published(gateway.name, private, OTLP_GRPC_PORT, "Jaeger's OTLP receiver", at_gateway, private, fixed=True)
        )
    for i, host in enumerate(cfg.hosts):
        if host.private_address and dcgm_published(cfg, host.name, placements):
            where = ("hosts", i, "privateAddress")
            address = host.private_address
            found.append(Published(host.name, address, DCGM_PORT, "the DCGM exporter", where, address, fixed=True))
    return found


def _chosen_ports(cfg: StackConfig, placements: Sequence[Placement], gateway: HostConfig) -> list[Published]:
    obs, gw, here = cfg.observability, cfg.gateway, gateway.name
    found = [Published(here, gw.listen_address, gw.port, "the gateway", ("gateway", "port"), gw.port)]
    if obs.enabled:
        where: tuple[str | int, ...] = ("observability", "prometheusPort")
        found.append(Published(here, obs.bind_address, obs.prometheus_port, "Prometheus", where, obs.prometheus_port))
        if obs.grafana:
            where = ("observability", "grafanaPort")
            found.append(Published(here, obs.bind_address, obs.grafana_port, "Grafana", where, obs.grafana_port))
    if obs.tracing.enabled:
        where = ("observability", "tracing", "uiPort")
        ui = obs.tracing.ui_port
        found.append(Published(here, obs.bind_address, ui, "the Jaeger UI", where, ui))
    groups = {w.name: i for i, w in enumerate(cfg.workers)}
    for p in placements:
        if p.published_port is not None and p.host.private_address is not None:
            where = ("workers", groups[p.group.name], "port")
            worker = f"worker `{p.name}`"
            found.append(Published(p.host.name, p.host.private_address, p.published_port, worker, where, p.group.port))
    return found
