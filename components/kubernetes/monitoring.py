"""Monitoring on a cluster, for the Prometheus Operator: ServiceMonitors for the workers, the
routers and the gateway's exporter (job names and labels as the Docker target's prometheus.yml
gives them, so the same rules and dashboards read them), the dashboards as a ConfigMap for
Grafana's dashboard sidecar, and Jaeger. The rules themselves are `manifests.prometheus_rule`.
"""

from __future__ import annotations

from typing import Any

from components.kubernetes.manifests import JOB_LABEL, labels, locked_down
from components.kubernetes.workers import MODEL_LABEL, POOL_LABEL, ROLE_LABEL
from components.observability import grafana
from stacks.config import TracingConfig

# The label Grafana's Helm chart's dashboard sidecar watches by default (`sidecar.dashboards.label`).
DASHBOARD_LABEL = "grafana_dashboard"
JAEGER = "jaeger"
OTLP_GRPC_PORT = 4317


def _pod_label(name: str) -> str:
    """Prometheus's name for a pod label in Kubernetes service discovery."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in name)


def worker_relabelings() -> list[dict[str, Any]]:
    """The Docker target's worker labels (`composition.platform.scrape_targets`) from the pod's."""
    wanted = {
        "model": MODEL_LABEL,
        "group": "inference-stack/group",
        "role": ROLE_LABEL,
        "pool": POOL_LABEL,
    }
    found: list[dict[str, Any]] = [
        {"sourceLabels": [_pod_label(label)], "targetLabel": target, "action": "replace"}
        for target, label in wanted.items()
    ]
    found.append({"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "host", "action": "replace"})
    found.append({"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "replica", "action": "replace"})
    return found


def service_monitor(
    name: str, namespace: str, stack: str, component: str, port: str, relabel: bool = False
) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"port": port, "path": "/metrics", "interval": "15s"}
    if relabel:
        endpoint["relabelings"] = worker_relabelings()
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(stack, "monitoring")},
        "spec": {
            "jobLabel": JOB_LABEL,
            "selector": {
                "matchLabels": {"app.kubernetes.io/instance": stack, "app.kubernetes.io/component": component}
            },
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [endpoint],
        },
    }


def service_monitors(namespace: str, stack: str) -> list[dict[str, Any]]:
    """The workers, the gateway's exporter and the routers (every pool has one on a cluster)."""
    return [
        service_monitor("workers", namespace, stack, "worker", "http", relabel=True),
        service_monitor("gateway", namespace, stack, "gateway", "metrics"),
        service_monitor("routers", namespace, stack, "router", "metrics"),
    ]


def dashboards(namespace: str, stack: str) -> dict[str, Any]:
    """The Docker target's dashboard, the same JSON, for Grafana's sidecar to load."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "inference-dashboards",
            "namespace": namespace,
            "labels": {**labels(stack, "monitoring"), DASHBOARD_LABEL: "1"},
        },
        "data": {"inference.json": grafana.render_dashboard()},
    }


def jaeger(cfg: TracingConfig, namespace: str, stack: str) -> list[dict[str, Any]]:
    """Jaeger all-in-one (in-memory traces, `maxTraces`), reached by the workers over OTLP gRPC."""
    selector = labels(stack, "tracing")
    container = {
        "name": "jaeger",
        "image": cfg.jaeger_image,
        "ports": [
            {"name": "otlp-grpc", "containerPort": OTLP_GRPC_PORT, "protocol": "TCP"},
            {"name": "ui", "containerPort": 16686, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": f"{cfg.memory_mb // 2}Mi"},
            "limits": {"cpu": "1", "memory": f"{cfg.memory_mb}Mi"},
        },
        "readinessProbe": {"httpGet": {"path": "/", "port": "ui"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/", "port": "ui"}, "periodSeconds": 30},
        "securityContext": locked_down(10001),
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": JAEGER, "namespace": namespace, "labels": selector},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": selector},
                    "spec": {
                        "containers": [container],
                        "automountServiceAccountToken": False,
                        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": JAEGER, "namespace": namespace, "labels": selector},
            "spec": {
                "selector": selector,
                "ports": [
                    {"name": "otlp-grpc", "port": OTLP_GRPC_PORT, "targetPort": "otlp-grpc", "protocol": "TCP"},
                    {"name": "ui", "port": 16686, "targetPort": "ui", "protocol": "TCP"},
                ],
            },
        },
    ]


def otlp_endpoint(namespace: str) -> str:
    return f"http://{JAEGER}.{namespace}.svc.cluster.local:{OTLP_GRPC_PORT}"
