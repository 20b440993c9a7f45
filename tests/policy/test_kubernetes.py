"""The Kubernetes policies: the shipped k8s stack passes every one, and each fires on a fixture
that breaks exactly its control, with the exact message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from policy.kubernetes import KUBERNETES_POLICIES
from tests.policy.support import mutated, new_findings
from tools.policy_run import evaluate
from tools.synth import Synth

WORKER = "mistral-deployment-mistral"
GATEWAY = "edge-deployment-gateway"
JOB = "model-cache-job-prefetch-mistral-7b-instruct-95b1295d"


def pod(inputs: dict[str, Any]) -> dict[str, Any]:
    return inputs["spec"]["template"]["spec"]


def main(inputs: dict[str, Any]) -> dict[str, Any]:
    return pod(inputs)["containers"][0]


CASES: list[tuple[str, str, Callable[[dict[str, Any]], None], str, str]] = [
    ("privileged", WORKER, lambda i: main(i)["securityContext"].update(privileged=True),
     "k8s-not-privileged", "template: container `vllm` is privileged"),
    ("sys-admin", GATEWAY, lambda i: main(i)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
     "k8s-not-privileged", "template: container `nginx` adds ['SYS_ADMIN'], beyond Pod Security baseline"),
    ("host-path", WORKER, lambda i: pod(i)["volumes"].append({"name": "models", "hostPath": {"path": "/data"}}),
     "k8s-no-host-path", "template: volume `models` mounts the node's /data"),
    ("host-network", GATEWAY, lambda i: pod(i).update(hostNetwork=True),
     "k8s-no-host-namespaces", "template: `hostNetwork` shares the node's namespace"),
    ("host-port", WORKER, lambda i: main(i)["ports"][0].update(hostPort=8000),
     "k8s-no-host-namespaces", "template: container `vllm` binds host port 8000"),
    ("no-memory-limit", JOB, lambda i: main(i)["resources"]["limits"].pop("memory"),
     "k8s-limits", "template: container `prefetch` has no memory limit"),
    ("init-no-limits", WORKER, lambda i: pod(i)["initContainers"][0]["resources"].pop("limits"),
     "k8s-limits", "template: container `wait-for-weights` has no cpu or memory limit"),
    ("no-startup-probe", WORKER, lambda i: main(i).pop("startupProbe"),
     "k8s-probes", "template: container `vllm` has no startupProbe (a loading model must not fail liveness)"),
    ("no-readiness", GATEWAY, lambda i: main(i).pop("readinessProbe"),
     "k8s-probes", "template: container `nginx` has no readinessProbe"),
    ("latest", GATEWAY, lambda i: main(i).update(image="nginx:latest"),
     "k8s-pinned-images", "template: container `nginx` image `nginx:latest` is not pinned to a tag or digest"),
    ("untagged", WORKER, lambda i: main(i).update(image="vllm/vllm-openai"),
     "k8s-pinned-images", "template: container `vllm` image `vllm/vllm-openai` is not pinned to a tag or digest"),
    ("plain-secret", WORKER, lambda i: main(i)["env"].append({"name": "VLLM_API_KEY", "value": "sk-123"}),
     "k8s-no-secret-env", "template: `VLLM_API_KEY` of `vllm` looks like a secret in a plain env value"),
    ("secret-env", WORKER,
     lambda i: main(i)["env"].append({"name": "HF", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
     "k8s-no-secret-env", "template: `HF` of `vllm` comes from a Secret as an env var: mount it as a file"),
    ("no-tolerations", WORKER, lambda i: pod(i).update(tolerations=[]),
     "k8s-gpu-tolerations",
     "template: requests `nvidia.com/gpu` but tolerates no `nvidia.com/gpu` taint, "
     "so it never lands on a tainted GPU node"),
]  # fmt: skip


def test_the_k8s_stack_passes_every_kubernetes_policy(k8s: Synth) -> None:
    names = {p.name for p in KUBERNETES_POLICIES}
    assert [f for f in evaluate(k8s, {}) if f.policy in names] == []


@pytest.mark.parametrize(("case", "resource", "change", "policy", "message"), CASES, ids=[c[0] for c in CASES])
def test_each_kubernetes_policy_fires_on_its_fixture(
    k8s: Synth, case: str, resource: str, change: Callable[[dict[str, Any]], None], policy: str, message: str
) -> None:
    broken = mutated(k8s, resource, change)
    found = [(f.policy, f.enforcement, f.resource, f.message) for f in new_findings(broken, k8s)]
    assert found == [(policy, "mandatory", resource, message)]


def test_every_kubernetes_policy_has_a_fixture() -> None:
    assert {c[3] for c in CASES} == {p.name for p in KUBERNETES_POLICIES}
