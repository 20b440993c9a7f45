"""One Docker host: its provider, the workers' network and the model-cache volume."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from stacks.config import HostConfig


@dataclass(frozen=True)
class DockerHostArgs:
    host: HostConfig
    network_name: str
    """Docker name of the workers' network on this host."""
    internal_network: bool
    """True when nothing on the network needs egress or a published port."""


class DockerHost(pulumi.ComponentResource):
    """A Docker engine (local or over SSH) prepared for vLLM workers.

    Deploys a Docker provider for the engine, a bridge network for the workers and a volume that
    binds the host's fast-storage model cache (driver `local`, `type=none,o=bind`), so weights
    live on NVMe and survive every container replacement. The network is `internal` (no route
    out) whenever the weights are pre-fetched and no worker publishes a port: a compromised
    worker then cannot phone home.
    """

    provider: docker.Provider
    network_name: pulumi.Output[str]
    model_cache_volume: pulumi.Output[str]

    def __init__(self, name: str, args: DockerHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference-stack:hosts:DockerHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        host = args.host
        self.provider = docker.Provider(
            f"{name}-docker",
            host=None if host.docker == "local" else host.docker,
            opts=child,
        )
        on_host = pulumi.ResourceOptions(parent=self, provider=self.provider)
        network = docker.Network(
            f"{name}-workers",
            name=args.network_name,
            driver="bridge",
            internal=args.internal_network,
            labels=[docker.NetworkLabelArgs(label="inference-stack.host", value=host.name)],
            opts=on_host,
        )
        cache = docker.Volume(
            f"{name}-model-cache",
            driver="local",
            driver_opts={"type": "none", "o": "bind", "device": host.model_cache_path},
            labels=[docker.VolumeLabelArgs(label="inference-stack.host", value=host.name)],
            # Deleting the volume record never deletes a bind-mounted directory, but keep the
            # record too: replacing it would detach every worker from its weights.
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, retain_on_delete=True),
        )
        self.network_name = network.name
        self.model_cache_volume = cache.name
        self.register_outputs({"networkName": self.network_name, "modelCacheVolume": self.model_cache_volume})
