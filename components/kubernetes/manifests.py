"""The Kubernetes target's shared manifests and labels: pure functions from the stack model to
plain objects, which `make render` writes as YAML and pulumi-kubernetes takes as they are
(`fleet.py` gathers every concern's).

Every object is checked against the official OpenAPI schemas of the oldest and the newest
Kubernetes release the project supports (PyPI `kubernetes-validate`, strict: no unknown field),
in tests/components/kubernetes/.
"""

from __future__ import annotations

from typing import Any

from components.observability.prometheus import rule_groups
from stacks.config import SloConfig

SUPPORTED_VERSIONS = ("1.32.0", "1.37.0")
"""Oldest and newest Kubernetes release the manifests are validated against."""
PART_OF = "inference-stack"
JOB_LABEL = "inference-stack/job"
"""The Service label a ServiceMonitor's `jobLabel` reads: the Docker target's job names."""


def labels(stack: str, component: str, group: str | None = None) -> dict[str, str]:
    """The recommended `app.kubernetes.io` labels, plus the worker group where there is one."""
    found = {
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/instance": stack,
        "app.kubernetes.io/component": component,
    }
    if group is not None:
        found["inference-stack/group"] = group
    return found


def locked_down(user: int | None = None) -> dict[str, Any]:
    """A container's securityContext: read-only root, no privilege escalation, no capability,
    and a fixed non-root user when the image's own is one."""
    context: dict[str, Any] = {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    if user is not None:
        context.update(runAsNonRoot=True, runAsUser=user)
    return context


def spread_over_nodes(selector: dict[str, str]) -> dict[str, Any]:
    """A topology spread of the selected pods over nodes, as even as the scheduler can keep it."""
    return {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": selector},
    }


def halved_requests(cpus: float, memory_mb: int) -> dict[str, Any]:
    """Limits of `cpus` and `memory_mb`, requesting half of each: what the Docker target reserves
    for a service that idles most of the time and bursts with the traffic it passes on."""
    return {
        "requests": {"cpu": f"{cpus / 2:g}", "memory": f"{memory_mb // 2}Mi"},
        "limits": {"cpu": f"{cpus:g}", "memory": f"{memory_mb}Mi"},
    }


def namespace(name: str, stack: str) -> dict[str, Any]:
    """The stack's namespace, under Pod Security admission: `baseline` enforced (no privileged
    pod, host namespace or hostPath), `restricted` warned and audited. Not `restricted` enforced:
    the vLLM images run as root, which `restricted` refuses."""
    security = {
        f"pod-security.kubernetes.io/{mode}": level
        for mode, level in (("enforce", "baseline"), ("warn", "restricted"), ("audit", "restricted"))
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {**labels(stack, "namespace"), **security}},
    }


def disruption_budget(
    name: str, namespace_name: str, selector: dict[str, str], replicas: int, max_unavailable: int
) -> dict[str, Any]:
    """A PodDisruptionBudget that lets a drain take at most `max_unavailable` of `replicas` pods at
    once (the group's `rollout.maxUnavailable`), so a node drain never takes a whole group."""
    # The stack rules refuse these first, as config errors (stacks/cluster_rules.py `_budget_issues`).
    if max_unavailable < 1 or max_unavailable >= replicas:
        effect = "blocks every drain" if max_unavailable < 1 else "lets a drain take the whole group"
        raise ValueError(
            f"{name}: a disruption budget of {max_unavailable} unavailable of {replicas} replicas {effect}; "
            f"run more replicas than {max_unavailable}, or lower `rollout.maxUnavailable`"
        )
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace_name, "labels": selector},
        "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": selector}},
    }


def prometheus_rule(name: str, namespace_name: str, stack: str, slo: SloConfig) -> dict[str, Any]:
    """The recording and alerting rules of the Docker target's rules file, the same groups, as
    a PrometheusRule for the Prometheus Operator."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace_name, "labels": labels(stack, "monitoring")},
        "spec": {"groups": rule_groups(slo)},
    }


def scaled_object(
    name: str, namespace_name: str, stack: str, prometheus_url: str, model: str, replicas: tuple[int, int], waiting: int
) -> dict[str, Any]:
    """A KEDA ScaledObject for one group's Deployment `name`: from `replicas[0]` to `replicas[1]`
    pods on vLLM's queue depth, `waiting` requests waiting per pod (the article's signal for this
    class of workload: GPU utilisation stays high while requests queue)."""
    low, high = replicas
    if not 0 <= low <= high or high < 1:
        raise ValueError(
            f"{name}: replicas {low}..{high}: the minimum must be 0 or more and at most the maximum (1 or more)"
        )
    query = f'sum(vllm:num_requests_waiting{{model_name="{model}", namespace="{namespace_name}"}})'
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace_name, "labels": labels(stack, "autoscaling", name)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": low,
            "maxReplicaCount": high,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {"serverAddress": prometheus_url, "query": query, "threshold": str(waiting)},
                }
            ],
        },
    }
