"""What a component needs of the host it runs on, so it can be built on any host that offers
it: a `GpuHost` in the platform, a small stub in a component's own test."""

from __future__ import annotations

from typing import Protocol

import pulumi
import pulumi_command as command
import pulumi_docker as docker


class Host(Protocol):
    provider: docker.Provider
    """The host's Docker provider."""
    network_name: pulumi.Output[str]
    """The host's container network, where the gateway reaches its workers by name."""
    ready: list[pulumi.Resource]
    """What everything on this host must wait for."""

    def options(self, parent: pulumi.Resource) -> pulumi.ResourceOptions:
        """For anything deployed on this host."""
        ...

    def data_volume(self, name: str, docker_name: str, parent: pulumi.Resource) -> docker.Volume:
        """A named volume for data that must outlive its container."""
        ...

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
        """Runs `argv` on this host whenever a trigger changes."""
        ...
