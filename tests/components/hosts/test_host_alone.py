"""GpuHost built alone from a HostConfig: which provisioning steps an SSH host gets, in which
order, and that everything on the host waits for the last of them. No stack file, no workers."""

from __future__ import annotations

import itertools
import shlex

from components.hosts.host import GpuHost, GpuHostArgs
from stacks.config import HostConfig, ProvisioningConfig, SshConfig
from tools.synth import Synth, run

SSH_HOST = HostConfig(name="gpu-x", ssh=SshConfig(user="deploy", address="10.0.0.9"), private_address="10.0.0.9")
LOCAL_HOST = HostConfig(name="local")


def build(host: HostConfig, **extra: object) -> Synth:
    def program() -> None:
        GpuHost(
            host.name,
            GpuHostArgs(
                host=host,
                provisioning=ProvisioningConfig(),
                network_name=f"{host.name}-net",
                internal_network=False,
                **extra,  # type: ignore[arg-type]
            ),
        )

    return run("test", {}, [], program)


def steps(synth: Synth) -> list[str]:
    return [r["name"] for r in synth.resources if r["type"].startswith("command:") and r["parent"]]


def test_an_ssh_host_with_gpus_is_provisioned_then_verified_then_prepared() -> None:
    synth = build(SSH_HOST, verify_gpus=True, images=["vllm/vllm-openai:v0.32.0"], published_ports=[8000])
    assert sorted(steps(synth)) == sorted(
        f"gpu-x-{s}" for s in ("toolkit", "runtime", "verify", "storage", "firewall", "images")
    )
    chain = ["toolkit", "runtime", "verify", "storage", "firewall", "images"]
    for before, after in itertools.pairwise(chain):
        assert synth.depends_on(f"gpu-x-{after}", f"gpu-x-{before}"), (after, before)
    network = synth.named("gpu-x-workers")
    assert synth.depends_on("gpu-x-workers", "gpu-x-images")
    assert network["inputs"]["name"] == "gpu-x-net"


def test_the_local_host_changes_no_system_package() -> None:
    synth = build(LOCAL_HOST, verify_gpus=False, images=["nginx:1.28.0-alpine"])
    assert steps(synth) == ["local-images"]
    (pull,) = synth.of_type("command:local:Command")
    words = shlex.split(pull["inputs"]["create"])
    assert words[-1] == "nginx:1.28.0-alpine" and "sudo" not in words


def test_the_model_cache_is_a_bind_volume_kept_on_destroy() -> None:
    synth = build(LOCAL_HOST, verify_gpus=False)
    cache = synth.named("local-model-cache")
    assert cache["inputs"]["driverOpts"] == {"type": "none", "o": "bind", "device": "/data/model-cache"}
    assert "local-model-cache" in synth.retained
