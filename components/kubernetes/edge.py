"""The gateway and the routers on a cluster. nginx keeps what it does on Docker hosts (keys, the
model allowlist, per-client rate limits, request ids, the canary split) with the nginx.conf the
same renderer writes; each pool's upstream is that pool's router Service, and the routers find
their pool's ready pods through the Kubernetes API (vllm-router `--service-discovery`), so a pod
joins when its readiness (the accuracy probe) passes and leaves when it fails or terminates.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from components.gateway import nginx, routing
from components.gateway.gateway import gateway_grace_seconds
from components.gateway.nginx import Pool, Route
from components.kubernetes.manifests import JOB_LABEL, halved_requests, labels, locked_down, spread_over_nodes
from components.kubernetes.workers import POOL_LABEL
from components.observability.prometheus import GATEWAY_JOB, ROUTER_JOB
from stacks.cluster import KubernetesConfig
from stacks.config import GatewayConfig, ObservabilityConfig

GATEWAY = "gateway"
ROUTER_ACCOUNT = "router"
KEYS_SECRET = "gateway-keys"
EXPORTER_PORT = 9113
GRACEFUL_STOP = 'sleep 5; nginx -s quit; while kill -0 "$(cat /tmp/nginx.pid)" 2>/dev/null; do sleep 1; done'
# Where nginx.conf includes the split files from, under the keys' directory the pod mounts.
WEIGHTS = nginx.WEIGHTS_DIR.removeprefix(nginx.SECRETS_DIR + "/")
# The gateway's `balance` as the router's policy (vllm-router `--policy`): the router, not nginx,
# picks the pod on a cluster. It has no least-connections policy; `power_of_two` is its
# load-aware one (the less loaded of two random workers).
POLICIES = {
    "least_conn": "power_of_two",
    "round_robin": "round_robin",
    "random_two": "power_of_two",
    "session": "consistent_hash",
    "cache_aware": "cache_aware",
}


def router_name(pool: str) -> str:
    return f"router-{pool}"


def router_host(pool: str, namespace: str) -> str:
    """The pool's router Service as nginx resolves it when it loads its config (a ClusterIP,
    stable for the Service's life)."""
    return f"{router_name(pool)}.{namespace}.svc.cluster.local"


def per_replica(gw: GatewayConfig, replicas: int) -> GatewayConfig:
    """The gateway config each of `replicas` nginx pods enforces: the rate limit divided between
    them (rounded up), since each counts only the requests the Service sends it; and the router
    as every pool's one upstream server."""
    rate = gw.rate_limit
    divided = rate.model_copy(
        update={
            "requests_per_second": math.ceil(rate.requests_per_second / replicas),
            "burst": math.ceil(rate.burst / replicas),
        }
    )
    return gw.model_copy(update={"rate_limit": divided, "balance": "cache_aware"})


def cluster_routes(routes: list[Route], namespace: str) -> list[Route]:
    """The Docker target's routes with each pool's router Service as its server."""

    def routed(pool: Pool | None) -> Pool | None:
        if pool is None:
            return None
        return Pool(pool.group, [], joined=pool.joined, router=router_host(pool.group, namespace))

    return [
        Route(r.model, routed(r.stable) or r.stable, routed(r.canary), [p for p in map(routed, r.extra) if p])
        for r in routes
    ]


def split_files(routes: list[Route], weights: dict[str, int]) -> dict[str, str]:
    """The canary split's files (`members.sh split`'s format): the first N of 100 buckets of the
    request id go to the canary pool, N from `canary.weightPercent`, fixed by the deploy."""
    files = {}
    for r in routes:
        share = weights.get(r.model, 0)
        if r.canary is None or share == 0:
            continue
        lines = "".join(f"{i} {nginx.ident(r.canary.group)};\n" for i in range(share))
        files[f"{WEIGHTS}/{nginx.ident(r.model)}/{nginx.ident(r.canary.group)}.conf"] = lines
    return files


def gateway_config_map(
    gw: GatewayConfig, routes: list[Route], cluster: KubernetesConfig, weights: dict[str, int], stack: str
) -> dict[str, Any]:
    conf = nginx.render_nginx_conf(per_replica(gw, cluster.gateway.replicas), cluster_routes(routes, cluster.namespace))
    data = {"nginx.conf": conf}
    # ConfigMap keys cannot hold `/`: the split files go in flat and the projected volume puts them back.
    data.update({path.replace("/", "__"): text for path, text in split_files(routes, weights).items()})
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": GATEWAY, "namespace": cluster.namespace, "labels": labels(stack, GATEWAY)},
        "data": data,
    }


def gateway_deployment(
    gw: GatewayConfig, obs: ObservabilityConfig, cluster: KubernetesConfig, config: dict[str, Any], stack: str
) -> dict[str, Any]:
    """nginx and its Prometheus exporter, `kubernetes.gateway.replicas` pods spread over nodes.
    The pod template carries a hash of nginx.conf, so a changed config rolls the pods."""
    selector = labels(stack, GATEWAY)
    digest = hashlib.sha256(json.dumps(config["data"], sort_keys=True).encode()).hexdigest()[:16]
    split_items = [{"key": k, "path": k.replace("__", "/")} for k in sorted(config["data"]) if k != "nginx.conf"]
    grace = gateway_grace_seconds(gw)
    nginx_container = {
        "name": "nginx",
        "image": gw.image,
        "ports": [
            {"name": "http", "containerPort": nginx.LISTEN_PORT, "protocol": "TCP"},
            {"name": "status", "containerPort": nginx.STATUS_PORT, "protocol": "TCP"},
        ],
        "resources": halved_requests(gw.cpus, gw.memory_mb),
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3},
        # The kubelet's SIGTERM after preStop is nginx's fast stop, which cuts streams: preStop
        # asks for the graceful one (SIGQUIT, as the Docker target's stop signal) and waits for
        # the master to exit, within the grace period. The first sleep lets the Service drop the pod.
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", GRACEFUL_STOP]}}},
        "volumeMounts": [
            {"name": "config", "mountPath": nginx.CONFIG_PATH, "subPath": "nginx.conf", "readOnly": True},
            {"name": "keys", "mountPath": nginx.SECRETS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            # The master, root, sets up its temp dirs for the worker user, as on Docker hosts.
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "SETGID", "SETUID"]},
        },
    }
    exporter = {
        "name": "exporter",
        "image": obs.nginx_exporter_image,
        "args": [f"--nginx.scrape-uri=http://127.0.0.1:{nginx.STATUS_PORT}/stub_status"],
        "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 15},
        "livenessProbe": {
            "httpGet": {"path": "/metrics", "port": "metrics"},
            "periodSeconds": 30,
            "failureThreshold": 3,
        },
        "securityContext": locked_down(65534),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": GATEWAY, "namespace": cluster.namespace, "labels": selector},
        "spec": {
            "replicas": cluster.gateway.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": selector, "annotations": {"inference-stack/config": digest}},
                "spec": {
                    "containers": [nginx_container, *([exporter] if obs.enabled else [])],
                    "terminationGracePeriodSeconds": grace,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "topologySpreadConstraints": [spread_over_nodes(selector)],
                    "volumes": [
                        {
                            "name": "config",
                            "configMap": {"name": GATEWAY, "items": [{"key": "nginx.conf", "path": "nginx.conf"}]},
                        },
                        {
                            "name": "keys",
                            "projected": {
                                "sources": [
                                    {
                                        "secret": {
                                            "name": KEYS_SECRET,
                                            "items": [
                                                {"key": "clients.map", "path": "clients.map"},
                                                {"key": "worker-auth.conf", "path": "worker-auth.conf"},
                                            ],
                                        }
                                    },
                                    *([{"configMap": {"name": GATEWAY, "items": split_items}}] if split_items else []),
                                ]
                            },
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    ],
                },
            },
        },
    }


def gateway_service(gw: GatewayConfig, cluster: KubernetesConfig, stack: str) -> dict[str, Any]:
    """The one way into the stack (its NetworkPolicy lets `ingressFrom` in)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": GATEWAY,
            "namespace": cluster.namespace,
            "labels": {**labels(stack, GATEWAY), JOB_LABEL: GATEWAY_JOB},
        },
        "spec": {
            "type": cluster.gateway_service_type,
            "selector": labels(stack, GATEWAY),
            "ports": [
                {"name": "http", "port": gw.port, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": EXPORTER_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def router_account(namespace: str, stack: str) -> list[dict[str, Any]]:
    """What service discovery needs: to read the namespace's pods, and nothing else."""
    meta = {"name": ROUTER_ACCOUNT, "namespace": namespace, "labels": labels(stack, "router")}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROUTER_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": ROUTER_ACCOUNT, "namespace": namespace}],
        },
    ]


def router_args(gw: GatewayConfig, pool: str, namespace: str, worker_port: int) -> list[str]:
    """The Docker target's router flags, the gateway's balance as the policy, and the pool's
    pods by label in place of `--worker-urls`."""
    args = routing.command(gw.router)
    args[args.index("--policy") + 1] = POLICIES[gw.balance]
    return [
        *args,
        "--service-discovery",
        "--selector",
        f"{POOL_LABEL}={pool}",
        "--service-discovery-port",
        str(worker_port),
        "--service-discovery-namespace",
        namespace,
    ]


def router_deployment(
    gw: GatewayConfig, cluster: KubernetesConfig, pool: str, worker_port: int, stack: str
) -> dict[str, Any]:
    r = gw.router
    selector = labels(stack, "router", pool)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": router_name(pool), "namespace": cluster.namespace, "labels": selector},
        "spec": {
            "replicas": cluster.router.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "serviceAccountName": ROUTER_ACCOUNT,
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    # Streams pass through the router: it gets as long as nginx (as on Docker hosts).
                    "terminationGracePeriodSeconds": gateway_grace_seconds(gw),
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "topologySpreadConstraints": [spread_over_nodes(selector)],
                    "containers": [
                        {
                            "name": "router",
                            "image": cluster.router_image,
                            "command": router_args(gw, pool, cluster.namespace, worker_port),
                            "ports": [
                                {"name": "http", "containerPort": routing.PORT, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": routing.METRICS_PORT, "protocol": "TCP"},
                            ],
                            "resources": halved_requests(r.cpus, r.memory_mb),
                            # /liveness, not /readiness: a pool with no ready pod yet is still a working router.
                            "readinessProbe": {"httpGet": {"path": "/liveness", "port": "http"}, "periodSeconds": 5},
                            "livenessProbe": {
                                "httpGet": {"path": "/liveness", "port": "http"},
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "securityContext": locked_down(65534),
                        }
                    ],
                },
            },
        },
    }


def router_service(pool: str, namespace: str, stack: str) -> dict[str, Any]:
    selector = labels(stack, "router", pool)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": router_name(pool), "namespace": namespace, "labels": {**selector, JOB_LABEL: ROUTER_JOB}},
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "http", "port": routing.PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": routing.METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }
