"""Redis and Weaviate on a cluster: StatefulSets whose data lives on a claim of the stack's
storage class (`volumeClaimTemplates`), with the Docker target's redis.conf, ACL, Weaviate
environment and start script. Weaviate's backups go to S3 through its `backup-s3` module, as on
Docker hosts; Redis keeps its AOF on the claim, which outlives every pod.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Any

from components.data import redis, weaviate
from components.kubernetes.manifests import labels, locked_down
from stacks.cluster import KubernetesConfig
from stacks.config import RedisConfig, WeaviateConfig
from stacks.network import REDIS_PORT, WEAVIATE_PORT

REDIS = "redis"
WEAVIATE = "weaviate"
REDIS_SECRET = "redis-acl"
WEAVIATE_SECRET = "weaviate-env"


def _claim(size_gib: int, cluster: KubernetesConfig) -> dict[str, Any]:
    return {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": cluster.storage_class,
            "resources": {"requests": {"storage": f"{size_gib}Gi"}},
        },
    }


def _stateful_set(
    name: str, cluster: KubernetesConfig, stack: str, pod: dict[str, Any], size_gib: int
) -> dict[str, Any]:
    selector = labels(stack, name)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": selector},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": selector},
            # Deleting the stack keeps the data: a claim is removed only by hand.
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {"metadata": {"labels": selector}, "spec": pod},
            "volumeClaimTemplates": [_claim(size_gib, cluster)],
        },
    }


def _service(name: str, port: int, cluster: KubernetesConfig, stack: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": labels(stack, name)},
        "spec": {
            "selector": labels(stack, name),
            "ports": [{"name": name, "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def redis_objects(cfg: RedisConfig, cluster: KubernetesConfig, stack: str) -> list[dict[str, Any]]:
    conf_dir = str(PurePosixPath(redis.CONF_PATH).parent)
    pod = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": redis.GRACE_SECONDS,
        "securityContext": {
            "seccompProfile": {"type": "RuntimeDefault"},
            "runAsNonRoot": True,
            "runAsUser": int(redis.REDIS_UID),
            "runAsGroup": int(redis.REDIS_UID),
            "fsGroup": int(redis.REDIS_UID),
        },
        "containers": [
            {
                "name": REDIS,
                "image": cfg.image,
                "command": ["redis-server", redis.CONF_PATH],
                "ports": [{"name": REDIS, "containerPort": REDIS_PORT, "protocol": "TCP"}],
                "resources": {
                    "requests": {"cpu": f"{cfg.cpus / 2:g}", "memory": f"{cfg.memory_mb}Mi"},
                    "limits": {"cpu": f"{cfg.cpus:g}", "memory": f"{cfg.memory_mb}Mi"},
                },
                # A TCP check: `redis-cli ping` would need the password in argv or env.
                "readinessProbe": {"tcpSocket": {"port": REDIS}, "periodSeconds": 10},
                "livenessProbe": {"tcpSocket": {"port": REDIS}, "periodSeconds": 20, "failureThreshold": 3},
                "volumeMounts": [
                    {"name": "data", "mountPath": redis.DATA_DIR},
                    {"name": "conf", "mountPath": conf_dir, "readOnly": True},
                    {"name": "acl", "mountPath": str(PurePosixPath(redis.ACL_PATH).parent), "readOnly": True},
                ],
                "securityContext": locked_down(),
            }
        ],
        "volumes": [
            {"name": "conf", "configMap": {"name": REDIS}},
            {
                "name": "acl",
                "secret": {
                    "secretName": REDIS_SECRET,
                    "items": [{"key": "acl", "path": PurePosixPath(redis.ACL_PATH).name}],
                },
            },
        ],
    }
    conf = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": REDIS, "namespace": cluster.namespace, "labels": labels(stack, REDIS)},
        "data": {PurePosixPath(redis.CONF_PATH).name: redis.render_redis_conf(cfg)},
    }
    # Room for the AOF and its rewrite beside it: three times maxmemory, in whole GiB.
    size = max(1, math.ceil(cfg.maxmemory_mb * 3 / 1024))
    return [conf, _stateful_set(REDIS, cluster, stack, pod, size), _service(REDIS, REDIS_PORT, cluster, stack)]


def weaviate_objects(
    cfg: WeaviateConfig, cluster: KubernetesConfig, users: list[str], stack: str
) -> list[dict[str, Any]]:
    env = weaviate.weaviate_env(cfg, users)
    pod = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 1000},
        "containers": [
            {
                "name": WEAVIATE,
                "image": cfg.image,
                "command": ["/bin/sh", weaviate.START_PATH],
                "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                "ports": [{"name": "http", "containerPort": WEAVIATE_PORT, "protocol": "TCP"}],
                "resources": {
                    "requests": {"cpu": f"{cfg.cpus / 2:g}", "memory": f"{cfg.memory_mb}Mi"},
                    "limits": {"cpu": f"{cfg.cpus:g}", "memory": f"{cfg.memory_mb}Mi"},
                },
                "readinessProbe": {"httpGet": {"path": "/v1/.well-known/ready", "port": "http"}, "periodSeconds": 10},
                "livenessProbe": {"httpGet": {"path": "/v1/.well-known/live", "port": "http"}, "periodSeconds": 30},
                "volumeMounts": [
                    {"name": "data", "mountPath": env.get("PERSISTENCE_DATA_PATH", "/var/lib/weaviate")},
                    {"name": "start", "mountPath": str(PurePosixPath(weaviate.START_PATH).parent), "readOnly": True},
                    {
                        "name": "secrets",
                        "mountPath": str(PurePosixPath(weaviate.SECRETS_PATH).parent),
                        "readOnly": True,
                    },
                ],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
        "volumes": [
            {"name": "start", "configMap": {"name": WEAVIATE, "defaultMode": 0o555}},
            {"name": "secrets", "secret": {"secretName": WEAVIATE_SECRET}},
        ],
    }
    start = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": WEAVIATE, "namespace": cluster.namespace, "labels": labels(stack, WEAVIATE)},
        "data": {PurePosixPath(weaviate.START_PATH).name: weaviate.START_SCRIPT.read_text()},
    }
    return [start, _stateful_set(WEAVIATE, cluster, stack, pod, 100), _service(WEAVIATE, WEAVIATE_PORT, cluster, stack)]
