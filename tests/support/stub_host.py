"""The smallest real host, so a component's test builds that component alone: this machine's
engine, no GPUs, and nothing to provision, verify, pre-fetch or pull, so a `GpuHost` registers
only its Docker provider, its network and its cache volume."""

from __future__ import annotations

from components.hosts.host import GpuHost, GpuHostArgs
from stacks.config import HostConfig, ProvisioningConfig


def stub_config(name: str = "stub", private_address: str | None = None) -> HostConfig:
    """The stub host's config, for what else needs it (a worker's placement)."""
    return HostConfig(name=name, private_address=private_address)


def stub_host(name: str = "stub", private_address: str | None = None) -> GpuHost:
    return GpuHost(
        name,
        GpuHostArgs(
            host=stub_config(name, private_address),
            provisioning=ProvisioningConfig(),
            network_name=f"{name}-workers",
            internal_network=False,
            verify_gpus=False,
        ),
    )
