"""GpuHost built alone from a HostConfig: which provisioning steps an SSH host gets, in which
order, how each runs, and that everything on the host waits for the last of them. No stack
file, no workers; prod's gpu-a is built from its own `hosts` and `workers` entries."""

from __future__ import annotations

import itertools
import shlex
from typing import Any

import yaml

from components.hosts.host import GpuHost, GpuHostArgs
from stacks.config import HostConfig, ProvisioningConfig, SshConfig, WorkerGroup
from tools.synth import ROOT, Synth, run

SSH_HOST = HostConfig(name="gpu-x", ssh=SshConfig(user="deploy", address="10.0.0.9"), private_address="10.0.0.9")
LOCAL_HOST = HostConfig(name="local")
PROD = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]
PROD_GPU_A = HostConfig.model_validate(PROD["inference-stack:hosts"][0])
PROD_GROUP = WorkerGroup.model_validate(PROD["inference-stack:workers"][0])


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


def prod_gpu_a() -> Synth:
    """gpu-a as prod's program builds it: its group's image and weights, the OTLP port gpu-b's
    workers send spans to (stacks/network.py `firewall_ports`), the gateway on its own address."""
    return build(
        PROD_GPU_A,
        verify_gpus=True,
        images=[PROD_GROUP.image],
        prefetch=[PROD_GROUP.model],
        published_ports=[4317],
        gateway_address=PROD_GPU_A.private_address,
    )


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


def remote_steps(synth: Synth, host: str) -> list[dict[str, Any]]:
    return [r for r in synth.resources if r["type"] == "command:remote:Command" and r["parent"] == host]


def words(step: dict[str, Any]) -> list[str]:
    return shlex.split(step["inputs"]["create"])


def test_steps_run_their_scripts_with_sudo_and_hash_triggers() -> None:
    synth = prod_gpu_a()
    for step in remote_steps(synth, "gpu-a"):
        w = words(step)
        assert w[:4] == ["sudo", "-n", "bash", "-c"] or w[:3] == ["sudo", "-n", "/opt/inference-stack/venv/bin/python"]
        assert len(step["inputs"]["triggers"][0]) == 64
        # Where it runs is in the render; prod sets no key (the SSH agent's is used).
        assert step["inputs"]["connection"] == {
            "host": "gpu-a.internal",
            "port": 22,
            "user": "deploy",
            "dialErrorLimit": 10,
            "perDialTimeout": 15,
        }
    toolkit = synth.named("gpu-a-toolkit")
    assert words(toolkit)[-2:] == ["toolkit.sh", "1.17.8-1"]
    verify = synth.named("gpu-a-verify")
    assert words(verify)[-1] == "nvidia/cuda:12.9.1-base-ubuntu24.04"


def test_weights_step_keeps_the_token_on_stdin() -> None:
    weights = prod_gpu_a().named("gpu-a-weights-mistral-7b-instruct")
    assert words(weights)[-4:] == [
        "solidrust/Mistral-7B-Instruct-v0.3-AWQ",
        "95b1295ddd1a8673117cdc7bd2a4da2a457bb3f7",
        "/nvme/model-cache",
        "/opt/inference-stack/venv",
    ]
    assert weights["inputs"]["stdin"] == "[secret]"
    assert weights["inputs"]["logging"] == "none"
