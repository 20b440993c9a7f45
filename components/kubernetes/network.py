"""NetworkPolicies: ingress to the namespace is denied but for what each component needs. Only
the gateway takes traffic from outside the namespace; the routers take it from the gateway, the
workers from the routers, and Prometheus (in its own namespace) scrapes what it monitors.
"""

from __future__ import annotations

from typing import Any

from stacks.cluster import KubernetesConfig


def _component(stack: str, name: str) -> dict[str, Any]:
    return {"matchLabels": {"app.kubernetes.io/instance": stack, "app.kubernetes.io/component": name}}


def _policy(
    name: str, namespace: str, stack: str, selector: dict[str, Any], sources: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/instance": stack}},
        "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": sources},
    }


def network_policies(
    cluster: KubernetesConfig, stack: str, redis: bool, weaviate: bool, tracing: bool
) -> list[dict[str, Any]]:
    ns = cluster.namespace
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.prometheus_namespace}}}

    def inside(component: str) -> dict[str, Any]:
        return {"podSelector": _component(stack, component)}

    policies = [
        # Everything not allowed below: a pod added later is closed until it gets its own policy.
        _policy("default-deny", ns, stack, {}, []),
        _policy(
            "gateway",
            ns,
            stack,
            _component(stack, "gateway"),
            [
                {"from": [{"ipBlock": {"cidr": c}} for c in cluster.ingress_from] + [{"namespaceSelector": {}}]},
            ],
        ),
        _policy("routers", ns, stack, _component(stack, "router"), [{"from": [inside("gateway"), prometheus]}]),
        _policy("workers", ns, stack, _component(stack, "worker"), [{"from": [inside("router"), prometheus]}]),
    ]
    # The data services serve the namespace's own applications too, as on the Docker network.
    anyone_inside: dict[str, Any] = {"podSelector": {}}
    if redis:
        policies.append(_policy("redis", ns, stack, _component(stack, "redis"), [{"from": [anyone_inside]}]))
    if weaviate:
        policies.append(_policy("weaviate", ns, stack, _component(stack, "weaviate"), [{"from": [anyone_inside]}]))
    if tracing:
        policies.append(
            _policy(
                "tracing", ns, stack, _component(stack, "tracing"), [{"from": [inside("worker"), inside("gateway")]}]
            )
        )
    return policies
