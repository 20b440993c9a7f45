"""A small stand-in for `GpuHost`, so a component's test builds that component alone: a Docker
provider and a network, and commands run locally, with no provisioning steps around them."""

from __future__ import annotations

import shlex

import pulumi
import pulumi_command as command
import pulumi_docker as docker


class StubHost(pulumi.ComponentResource):
    """Offers what `components.hosts.base.Host` asks of a host."""

    provider: docker.Provider
    network_name: pulumi.Output[str]
    ready: list[pulumi.Resource]

    def __init__(self, name: str = "stub") -> None:
        super().__init__("inference-stack:tests:StubHost", name, None, None)
        self.provider = docker.Provider(f"{name}-docker", opts=pulumi.ResourceOptions(parent=self))
        network = docker.Network(f"{name}-workers", name=f"{name}-workers", driver="bridge", opts=self.options(self))
        self.network_name = network.name
        self.ready = []
        self.register_outputs({})

    def options(self, parent: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, provider=self.provider)

    def data_volume(self, name: str, docker_name: str, parent: pulumi.Resource) -> docker.Volume:
        return docker.Volume(name, name=docker_name, opts=self.options(parent))

    def run_command(
        self,
        name: str,
        argv: list[str],
        triggers: list[pulumi.Input[str]],
        parent: pulumi.Resource,
        depends_on: list[pulumi.Resource],
        delete: list[str] | None = None,
        stdin: pulumi.Input[str] | None = None,
        aliases: list[pulumi.Alias] | None = None,
    ) -> command.remote.Command | command.local.Command:
        return command.local.Command(
            name,
            create=shlex.join(argv),
            delete=shlex.join(delete) if delete else None,
            triggers=triggers,
            stdin=stdin,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on, aliases=aliases),
        )
