"""Prometheus and its exporters: every worker, every GPU and the gateway, with SLO alert rules."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from components.gateway import nginx
from components.hardening import EXPORTER_LOG, SIDECAR_LOG, STATE_LOG, Health, in_place, settings
from components.hosts.host import GpuHost
from components.observability import grafana
from components.observability.prometheus import RULES_PATH, Target, render_prometheus_yml, render_rules
from stacks import network
from stacks.config import ObservabilityConfig
from stacks.network import DCGM_PORT, PROMETHEUS_PORT

CONFIG_PATH = "/etc/prometheus/prometheus.yml"
DATA_PATH = "/prometheus"
NGINX_EXPORTER_PORT = 9113


@dataclass(frozen=True)
class MonitoringArgs:
    config: ObservabilityConfig
    host: GpuHost
    """The gateway host, where Prometheus runs."""
    workers: list[Target]
    gpu_hosts: dict[str, tuple[GpuHost, str | None]]
    """GPU hosts by name: the host, and its private address when it is not the gateway host."""
    gateway_container: pulumi.Output[str]
    edge_network: pulumi.Output[str]
    stack: str
    grafana_password: pulumi.Output[str] | None
    """Grafana's admin password (secret); None only when Grafana is off."""
    gateway_status_exporter: str | None = None
    """`host:port` of the gateway's per-status metrics (its mtail), or None when it has none."""
    router_exporters: list[str] = field(default_factory=list)
    """`host:port` of each prefix-cache router's metrics (`balance: cache_aware`)."""
    jaeger_url: str | None = None
    """Jaeger's query API, for Grafana's Jaeger datasource; None when tracing is off."""


class Monitoring(pulumi.ComponentResource):
    """Prometheus scraping every vLLM worker (labelled with host, GPUs, replica, model and group),
    a pinned NVIDIA DCGM exporter on every GPU host, the gateway through the nginx exporter, and
    itself. Retention by time and size on a named volume; the rules (TTFT P95/P99, inter-token
    latency, queue depth, KV cache, worker down, GPU memory, error ratio) use vLLM 0.32's metric
    names. The UI publishes on `bindAddress` (loopback by default: reach it over an SSH tunnel);
    DCGM exporters on other hosts publish only on their private address."""

    url: pulumi.Output[str]
    grafana_url: pulumi.Output[str] | None
    """None when `observability.grafana` is off."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference-stack:observability:Monitoring", name, None, opts)
        cfg = args.config
        if cfg.grafana and args.grafana_password is None:
            raise ValueError("Grafana needs an admin password")
        gpu_targets = self._dcgm_exporters(name, args)
        nginx_exporter = self._nginx_exporter(name, args)
        self._prometheus(name, args, gpu_targets, nginx_exporter)
        self.url = pulumi.Output.from_input(f"http://{cfg.bind_address}:{cfg.prometheus_port}")
        self.grafana_url = None
        if cfg.grafana:
            self._grafana(name, args)
            self.grafana_url = pulumi.Output.from_input(f"http://{cfg.bind_address}:{cfg.grafana_port}")
        self.register_outputs({"url": self.url, "grafanaUrl": self.grafana_url})

    def _dcgm_exporters(self, name: str, args: MonitoringArgs) -> list[Target]:
        """One DCGM exporter per GPU host, on its workers' network; published on the host's
        private address when Prometheus is elsewhere."""
        cfg = args.config
        gpu_targets = []
        for host_name, (gpu_host, private_address) in sorted(args.gpu_hosts.items()):
            exporter = network.dcgm_container(args.stack, host_name)
            ports = None
            if private_address is not None:
                ports = [docker.ContainerPortArgs(internal=DCGM_PORT, external=DCGM_PORT, ip=private_address)]
            docker.Container(
                f"{name}-dcgm-{host_name}",
                name=exporter,
                image=cfg.dcgm_exporter_image,
                # No SYS_ADMIN among `settings`' capabilities: dcgm-exporter needs it only for the DCP
                # profiling counters (DCGM_FI_PROF_*), which the platform does not use; the
                # DCGM_FI_DEV_* gauges work as root without any capability (its Dockerfile,
                # "Security Note: Default USER").
                # DCGM reads every GPU's counters, so it gets them all.
                device_requests=[docker.ContainerDeviceRequestArgs(driver="nvidia", count=-1, capabilities=["gpu"])],
                networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=gpu_host.network_name)],
                ports=ports,
                **settings(cpus=1, memory_mb=512, logs=SIDECAR_LOG),
                opts=in_place(
                    pulumi.ResourceOptions(parent=self, provider=gpu_host.provider, depends_on=gpu_host.ready)
                ),
            )
            address = network.dcgm_target(args.stack, host_name, private_address)
            gpu_targets.append(Target(address, {"host": host_name}))

        return gpu_targets

    def _nginx_exporter(self, name: str, args: MonitoringArgs) -> str:
        """nginx's stub_status as metrics, on the edge network; returns its scrape address."""
        cfg = args.config
        on_host = args.host.options(self)
        nginx_exporter = network.nginx_exporter_container(args.stack)
        docker.Container(
            f"{name}-nginx-exporter",
            name=nginx_exporter,
            image=cfg.nginx_exporter_image,
            command=args.gateway_container.apply(
                lambda gw: [f"--nginx.scrape-uri=http://{gw}:{nginx.STATUS_PORT}/stub_status"]
            ),
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.edge_network)],
            **settings(cpus=0.25, memory_mb=64, logs=EXPORTER_LOG),
            read_only=True,
            opts=in_place(on_host),
        )
        return f"{nginx_exporter}:{NGINX_EXPORTER_PORT}"

    def _prometheus(self, name: str, args: MonitoringArgs, gpu_targets: list[Target], nginx_exporter: str) -> None:
        cfg, host = args.config, args.host
        on_host = host.options(self)
        volume = host.data_volume(f"{name}-data", f"{args.stack}-prometheus-data", self)
        config = render_prometheus_yml(
            args.workers,
            gpu_targets,
            nginx_exporter,
            cfg.scrape_interval,
            status_exporter=args.gateway_status_exporter,
            routers=args.router_exporters,
        )
        prometheus_files = [
            docker.ContainerUploadArgs(file=CONFIG_PATH, content=config, permissions="0444"),
            docker.ContainerUploadArgs(file=RULES_PATH, content=render_rules(cfg.slo), permissions="0444"),
        ]
        docker.Container(
            f"{name}-prometheus",
            name=network.prometheus_container(args.stack),
            image=cfg.prometheus_image,
            command=[
                f"--config.file={CONFIG_PATH}",
                f"--storage.tsdb.path={DATA_PATH}",
                f"--storage.tsdb.retention.time={cfg.retention_time}",
                f"--storage.tsdb.retention.size={cfg.retention_size}",
                f"--web.listen-address=:{PROMETHEUS_PORT}",
            ],
            uploads=prometheus_files,
            mounts=[docker.ContainerMountArgs(type="volume", source=volume.name, target=DATA_PATH)],
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=host.network_name),
                docker.ContainerNetworksAdvancedArgs(name=args.edge_network),
            ],
            ports=[
                docker.ContainerPortArgs(internal=PROMETHEUS_PORT, external=cfg.prometheus_port, ip=cfg.bind_address)
            ],
            # Not read-only: pulumi-docker copies `uploads` in at "/", which Docker refuses on a read-only
            # root filesystem (tests/components/test_uploads.py).
            **settings(
                cpus=1,
                memory_mb=2048,
                logs=STATE_LOG,
                health=Health(
                    ["CMD", "wget", "-q", "--spider", f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready"], 15, 5, 4, 30
                ),
                # SIGTERM writes the TSDB head out; killed at once, the next start replays the WAL.
                grace_seconds=60,
            ),
            opts=in_place(on_host),
        )

    def _grafana(self, name: str, args: MonitoringArgs) -> None:
        cfg, host = args.config, args.host
        on_host = host.options(self)
        grafana_volume = host.data_volume(f"{name}-grafana-data", f"{args.stack}-grafana-data", self)
        files = [
            docker.ContainerUploadArgs(
                file=f"{grafana.PROVISIONING_DIR}/datasources/datasources.yaml",
                content=grafana.render_datasources(network.prometheus_url(args.stack), args.jaeger_url),
                permissions="0444",
            ),
            docker.ContainerUploadArgs(
                file=f"{grafana.PROVISIONING_DIR}/dashboards/inference-stack.yaml",
                content=grafana.render_dashboard_provider(),
                permissions="0444",
            ),
            docker.ContainerUploadArgs(
                file=f"{grafana.DASHBOARDS_DIR}/inference.json",
                content=grafana.render_dashboard(),
                permissions="0444",
            ),
            docker.ContainerUploadArgs(
                file="/run/secrets/grafana-admin-password",
                content=pulumi.Output.secret(args.grafana_password),
                # Grafana's image runs as uid 472.
                owner="472",
                permissions="0400",
            ),
        ]
        docker.Container(
            f"{name}-grafana",
            name=network.grafana_container(args.stack),
            image=cfg.grafana_image,
            envs=[f"{k}={v}" for k, v in sorted(grafana.grafana_env().items())],
            uploads=files,
            mounts=[docker.ContainerMountArgs(type="volume", source=grafana_volume.name, target="/var/lib/grafana")],
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.edge_network)],
            ports=[docker.ContainerPortArgs(internal=3000, external=cfg.grafana_port, ip=cfg.bind_address)],
            # Its SQLite database is on the data volume: a clean stop closes it.
            **settings(cpus=1, memory_mb=512, logs=SIDECAR_LOG, grace_seconds=30),
            opts=in_place(on_host),
        )
