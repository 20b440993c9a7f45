"""Composes the platform from a validated stack: hosts first, then the worker pools on them."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from components.docker_host import DockerHost, DockerHostArgs
from components.workers.pool import VllmWorkerPool, VllmWorkerPoolArgs
from stacks.loader import LoadedStack, load


def build(stack: LoadedStack) -> dict[str, VllmWorkerPool]:
    cfg = stack.config
    multi_host = len(cfg.hosts) > 1
    hosts: dict[str, DockerHost] = {}
    for host in cfg.hosts:
        groups_here = [p.group for p in stack.placements if p.host.name == host.name]
        internal = not multi_host and all(g.model.weights == "prefetched" for g in groups_here)
        hosts[host.name] = DockerHost(
            host.name,
            DockerHostArgs(
                host=host,
                network_name=f"{stack.name}-workers",
                internal_network=internal,
            ),
        )

    api_key = stack.secrets.get("vllmApiKey")
    if api_key is None:
        # Workers only ever talk to the gateway, so nobody needs to know this key up front;
        # generating it beats leaving the API open. RandomPassword results are secret in state.
        api_key = random.RandomPassword("vllm-api-key", length=48, special=False).result

    pools = {}
    for group in cfg.workers:
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
    pulumi.export("workerUrls", {name: pool.urls for name, pool in pools.items()})
    pulumi.export("workerContainers", {name: pool.container_names for name, pool in pools.items()})
    return pools


def main() -> None:
    build(load())
