"""Composes a `target: kubernetes` stack: the provider, the GPU Operator, then each concern's
manifests (`components/kubernetes/fleet.py`) with the Secrets only Pulumi holds the values of.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.data import redis, weaviate
from components.gateway import nginx
from components.gateway.gateway import with_own_keys
from components.hosts.host import s3_credentials
from components.kubernetes import data, edge, fleet, workers
from components.kubernetes import resources as kr
from components.workers import spec
from composition.keys import generates_client_key, redis_password, weaviate_keys, worker_api_key
from composition.loader import LoadedStack
from stacks.cluster import KubernetesConfig
from stacks.network import REDIS_PORT, redis_url


def provider(stack: LoadedStack, cluster: KubernetesConfig) -> k8s.Provider:
    """The cluster: the `kubeconfig` secret or the ambient kubeconfig, and its context. Every
    resource names its namespace, so the provider's default namespace is never used."""
    kubeconfig = stack.secrets.get("kubeconfig") if cluster.kubeconfig == "secret" else None
    return k8s.Provider("cluster", kubeconfig=kubeconfig, context=cluster.context, namespace=cluster.namespace)


def _worker_files(
    stack: LoadedStack, api_key: pulumi.Output[str], redis_password: pulumi.Output[str] | None
) -> dict[str, pulumi.Input[str]]:
    cfg = stack.config
    files: dict[str, pulumi.Input[str]] = {"vllm-api-key": api_key}
    if "hfToken" in stack.secrets:
        files["hf-token"] = stack.secrets["hfToken"]
    if "s3AccessKeyId" in stack.secrets and "s3SecretAccessKey" in stack.secrets:
        files[workers.S3_CREDENTIALS] = s3_credentials(
            stack.secrets["s3AccessKeyId"], stack.secrets["s3SecretAccessKey"]
        )
    if redis_password is not None and cfg.redis.kv_cache_offload:
        url = redis_password.apply(lambda p: redis_url(f"{data.REDIS}:{REDIS_PORT}", p))
        files["lmcache.yaml"] = url.apply(lambda u: spec.lmcache_yaml(cfg.redis.lmcache, u))
    return files


def _gateway_files(
    stack: LoadedStack, api_key: pulumi.Output[str], generated: pulumi.Output[str] | None
) -> dict[str, pulumi.Input[str]]:
    clients = pulumi.Output.all(stack.secrets.get("gatewayApiKeys", "{}"), generated or "").apply(
        lambda v: nginx.render_clients_map(with_own_keys(v[0], "", v[1]))
    )
    return {"clients.map": clients, "worker-auth.conf": api_key.apply(nginx.render_worker_auth)}


def _weaviate_files(stack: LoadedStack) -> tuple[dict[str, pulumi.Input[str]], list[str]]:
    keys, users = weaviate_keys(stack)
    access = stack.secrets.get("weaviateBackupAccessKeyId")
    secret_key = stack.secrets.get("weaviateBackupSecretAccessKey")
    env = pulumi.Output.all(keys, access, secret_key).apply(
        lambda v: weaviate.render_secrets_env(json.loads(v[0]), users, v[1], v[2])
    )
    return {"weaviate.env": env}, users


def build(stack: LoadedStack) -> fleet.Fleet:
    cfg = stack.config
    cluster = cfg.kubernetes
    assert cluster is not None, "validated: a kubernetes stack describes its cluster"
    ns = cluster.namespace
    cluster_provider = provider(stack, cluster)
    weaviate_files, users = _weaviate_files(stack) if cfg.weaviate.enabled else ({}, [])
    objects = fleet.fleet(cfg, stack.name, users, hf_token="hfToken" in stack.secrets)

    def part(
        cls: type[kr.Manifests],
        name: str,
        manifests: list[dict[str, Any]],
        depends_on: Sequence[pulumi.Resource] = (),
        secrets: Mapping[str, Mapping[str, pulumi.Input[str]]] | None = None,
        timeout_seconds: int | None = None,
    ) -> kr.Manifests:
        args = kr.ManifestsArgs(manifests, cluster_provider, ns, stack.name, secrets, depends_on, timeout_seconds)
        return cls(name, args)

    operator = []
    if cluster.gpu_operator.enabled:
        operator.append(kr.GpuOperatorRelease("gpu-operator", cluster.gpu_operator, cluster_provider, stack.name))
    namespace = part(kr.Namespace, "namespace", manifests=[objects.namespace])
    api_key = worker_api_key(stack)
    password = redis_password(stack) if cfg.redis.enabled else None
    cache = part(
        kr.ModelCache,
        "model-cache",
        manifests=objects.model_cache,
        secrets={fleet.WORKER_SECRET: _worker_files(stack, api_key, password)},
        depends_on=[namespace],
        timeout_seconds=3 * 3600,
    )
    after = [namespace, *operator]
    if cfg.redis.enabled or cfg.weaviate.enabled:
        data_secrets: dict[str, dict[str, pulumi.Input[str]]] = {}
        if password is not None:
            data_secrets[data.REDIS_SECRET] = {"acl": password.apply(redis.render_acl)}
        if cfg.weaviate.enabled:
            data_secrets[data.WEAVIATE_SECRET] = weaviate_files
        part(kr.DataServices, "data", manifests=objects.data, secrets=data_secrets, depends_on=[namespace])
    groups = [
        part(
            kr.WorkerGroup,
            group.name,
            manifests=objects.workers[group.name],
            depends_on=[*after, cache],
            timeout_seconds=spec.wait_timeout_seconds(group),
        )
        for group in cfg.workers
    ]
    generated: pulumi.Output[str] | None = None
    if generates_client_key(stack):
        key: pulumi.Output[str] = random.RandomPassword("gateway-client-key", length=40, special=False).result
        generated = pulumi.Output.secret(key)
        pulumi.export("gatewayClientKey", generated)
    part(
        kr.Edge,
        "edge",
        manifests=objects.edge,
        secrets={edge.KEYS_SECRET: _gateway_files(stack, api_key, generated)},
        depends_on=[namespace],
    )
    if objects.monitoring:
        part(kr.Monitoring, "monitoring", manifests=objects.monitoring, depends_on=[namespace, *groups])
    part(kr.NetworkPolicies, "network-policies", manifests=objects.network, depends_on=[namespace])
    pulumi.export("namespace", ns)
    pulumi.export("gatewayService", f"{edge.GATEWAY}.{ns}.svc.cluster.local:{cfg.gateway.port}")
    return objects
