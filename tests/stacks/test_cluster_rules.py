"""The Kubernetes target's config errors: each names the key path, the value, the rule and the
fix, and stops the run before anything is registered. The shipped k8s stack passes them all."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from stacks.errors import ConfigError
from stacks.validation import split_config, validate
from tools.synth import ROOT, read_stack_file


def shipped() -> dict[str, Any]:
    values, secret_keys = read_stack_file(ROOT / "Pulumi.k8s.yaml")
    ours, _, _ = split_config(values, secret_keys)
    return {k: v if k == "target" else json.loads(v) for k, v in ours.items()}


def run(cfg: dict[str, Any], secret_keys: set[str] | None = None) -> None:
    validate("k8s", {k: v if isinstance(v, str) else json.dumps(v) for k, v in cfg.items()}, secret_keys or set())


def group(cfg: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return cfg["workers"][i]


def docker_host() -> dict[str, Any]:
    return {"name": "gpu-a", "gpus": {"count": 1}}


CASES: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    ("hosts-on-kubernetes", lambda c: c.update(hosts=[docker_host()]),
     "inference-stack:hosts", "configures Docker hosts, and this stack's `target` is `kubernetes`"),
    ("group-hosts-on-kubernetes", lambda c: group(c).update(hosts=["gpu-a"]),
     "inference-stack:workers[0].hosts", "one stack deploys to one target"),
    ("gpu-assignments-on-kubernetes", lambda c: group(c).update(gpuAssignments=[[0]]),
     "inference-stack:workers[0].gpuAssignments", "configures Docker hosts"),
    ("cluster-on-docker", lambda c: c.update(target="docker", hosts=[docker_host()]),
     "inference-stack:kubernetes", "configures a Kubernetes cluster, and this stack's `target` is `docker`"),
    ("no-cluster", lambda c: c.pop("kubernetes"),
     "inference-stack:kubernetes", "no cluster is described"),
    ("gpus-above-node", lambda c: group(c)["model"].update(tensorParallelSize=16),
     "inference-stack:workers[0].model.tensorParallelSize", "requests 16 `nvidia.com/gpu`, and pool `h100` has 8"),
    ("uneven-span", lambda c: group(c)["model"].update(tensorParallelSize=4)
     or group(c)["cluster"].update(nodesPerReplica=3),
     "inference-stack:workers[0].cluster.nodesPerReplica", "must split evenly"),
    ("autoscale-spanning", lambda c: group(c)["model"].update(tensorParallelSize=16)
     or group(c)["cluster"].update(nodesPerReplica=2),
     "inference-stack:workers[0].cluster.autoscale", "does not scale, so the bounds would be ignored"),
    ("cpus-above-node", lambda c: group(c)["resources"].update(cpus=128),
     "inference-stack:workers[0].resources.cpus", "96 allocatable CPUs"),
    ("pool-too-small", lambda c: group(c)["cluster"]["autoscale"].update(maxReplicas=40),
     "inference-stack:kubernetes.nodePools[0].nodes", "need 44 GPUs at their maximum replicas"),
    ("unknown-pool", lambda c: group(c)["cluster"].update(nodePool="h200"),
     "inference-stack:workers[0].cluster.nodePool", "no node pool has this name"),
    ("storage-class-format", lambda c: c["kubernetes"].update(storageClass="Local_NVMe"),
     "inference-stack:kubernetes.storageClass", "is not a StorageClass name"),
    ("replicas-at-budget", lambda c: group(c, 1)["cluster"].update(replicas=1),
     "inference-stack:workers[1].cluster.replicas", "PodDisruptionBudget lets a drain"),
    ("autoscale-min-at-budget", lambda c: group(c)["cluster"]["autoscale"].update(minReplicas=1),
     "inference-stack:workers[0].cluster.autoscale.minReplicas", "1 replica(s) could all go at once"),
    ("autoscale-max-below-min", lambda c: group(c)["cluster"]["autoscale"].update(maxReplicas=1),
     "inference-stack:workers[0].cluster.autoscale.maxReplicas", "is below the minimum"),
    ("namespace-format", lambda c: c["kubernetes"].update(namespace="Inference"),
     "inference-stack:kubernetes.namespace", "is not a namespace name"),
    ("label-key", lambda c: c["kubernetes"]["nodePools"][0].update(nodeSelector={"bad key": "x"}),
     "inference-stack:kubernetes.nodePools[0].nodeSelector", "is not a Kubernetes label key"),
    ("rate-below-replicas", lambda c: c["gateway"]["rateLimit"].update(requestsPerSecond=2),
     "inference-stack:gateway.rateLimit.requestsPerSecond", "each of the 3 gateway replicas"),
    ("session-header", lambda c: c["gateway"].update(sessionHeader="X-Conversation"),
     "inference-stack:gateway.sessionHeader", "hash the `X-Session-Id` header"),
    ("kubeconfig-secret-missing", lambda c: c["kubernetes"].update(kubeconfig="secret"),
     "inference-stack:kubeconfig", "which is not set"),
    ("unpinned-router", lambda c: c["kubernetes"].update(routerImage="registry.example.com/router:latest"),
     "inference-stack:kubernetes.routerImage", "latest"),
    ("canary-without-stable", lambda c: group(c)["canary"].update(workers=2)
     or group(c)["cluster"]["autoscale"].update(minReplicas=2),
     "inference-stack:workers[0].canary.workers", "a canary needs stable workers beside it"),
]  # fmt: skip


def test_the_shipped_k8s_stack_is_valid() -> None:
    run(shipped())


@pytest.mark.parametrize(("case", "change", "path", "rule"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_cluster_config_is_refused(
    case: str, change: Callable[[dict[str, Any]], object], path: str, rule: str
) -> None:
    cfg = copy.deepcopy(shipped())
    change(cfg)
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    found = [i for i in caught.value.issues if i.path == path]
    assert found, str(caught.value)
    assert any(rule in i.rule for i in found), str(caught.value)
    assert all(i.fix for i in found)


def test_a_kubeconfig_secret_is_checked_and_never_shown() -> None:
    cfg = shipped()
    cfg["kubernetes"]["kubeconfig"] = "secret"
    cfg["kubeconfig"] = "not-a-kubeconfig-hunter2"
    with pytest.raises(ConfigError) as caught:
        run(cfg, {"kubeconfig"})
    assert "inference-stack:kubeconfig" in str(caught.value) and "clusters" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    cfg["kubeconfig"] = "apiVersion: v1\nkind: Config\nclusters: [{name: c}]\ncontexts: [{name: x}]\n"
    run(cfg, {"kubeconfig"})
