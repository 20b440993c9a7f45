"""Composes the platform from a validated stack: hosts first, then the worker pools on them."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from components.hosts.host import GpuHost, GpuHostArgs, s3_credentials
from components.workers.pool import VllmWorkerPool, VllmWorkerPoolArgs
from stacks.config import ModelConfig
from stacks.loader import LoadedStack, load


def build_hosts(stack: LoadedStack) -> dict[str, GpuHost]:
    cfg = stack.config
    multi_host = len(cfg.hosts) > 1
    gateway = next(h for h in cfg.hosts if h.name == cfg.gateway_host())
    secrets = stack.secrets
    creds = None
    if "s3AccessKeyId" in secrets and "s3SecretAccessKey" in secrets:
        creds = s3_credentials(secrets["s3AccessKeyId"], secrets["s3SecretAccessKey"])
    hosts: dict[str, GpuHost] = {}
    for host in cfg.hosts:
        here = [p for p in stack.placements if p.host.name == host.name]
        groups = list({p.group.name: p.group for p in here}.values())
        prefetch: dict[str, ModelConfig] = {
            g.model.served_name: g.model for g in groups if g.model.weights == "prefetch"
        }
        hosts[host.name] = GpuHost(
            host.name,
            GpuHostArgs(
                host=host,
                provisioning=cfg.provisioning,
                network_name=f"{stack.name}-workers",
                # No route out once nothing needs one: weights are local and nothing publishes.
                internal_network=not multi_host and all(g.model.offline() for g in groups),
                verify_gpus=any(g.accelerator == "nvidia" for g in groups),
                images=[g.image for g in groups],
                prefetch=list(prefetch.values()),
                published_ports=[p.published_port for p in here if p.published_port is not None],
                gateway_address=gateway.private_address,
                ssh_private_key=secrets.get("sshPrivateKey"),
                hf_token=secrets.get("hfToken"),
                s3_credentials=creds,
            ),
        )
    return hosts


def build(stack: LoadedStack) -> dict[str, VllmWorkerPool]:
    hosts = build_hosts(stack)
    api_key = stack.secrets.get("vllmApiKey")
    if api_key is None:
        # Workers only ever talk to the gateway, so nobody needs to know this key up front;
        # generating it beats leaving the API open. RandomPassword results are secret in state.
        api_key = random.RandomPassword("vllm-api-key", length=48, special=False).result

    pools = {}
    for group in stack.config.workers:
        pools[group.name] = VllmWorkerPool(
            group.name,
            VllmWorkerPoolArgs(
                group=group,
                placements=[p for p in stack.placements if p.group.name == group.name],
                hosts=hosts,
                api_key=api_key,
                hf_token=stack.secrets.get("hfToken") if group.model.weights == "download" else None,
                stack=stack.name,
            ),
        )
    for name, host in hosts.items():
        if host.inventory is not None:
            pulumi.export(f"gpus-{name}", host.inventory.apply(lambda gpus: [g.as_output() for g in gpus or []]))
    pulumi.export("workerUrls", {name: pool.urls for name, pool in pools.items()})
    pulumi.export("workerContainers", {name: pool.container_names for name, pool in pools.items()})
    return pools


def main() -> None:
    build(load())
