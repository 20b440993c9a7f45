"""A worker group on a cluster: its Deployment (a LeaderWorkerSet when a replica spans nodes),
the canary's Deployment beside it, its Service, the model cache claim and the pre-fetch Job the
workers wait for. Pure: plain objects from the stack model, reusing the Docker target's vLLM
arguments, environment, entrypoint and accuracy probe (`components/workers/spec.py`).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import Any

from components.hosts.host import S3_SYNC, script, snapshot_dir
from components.kubernetes.manifests import JOB_LABEL, labels, spread_over_nodes
from components.observability.prometheus import VLLM_JOB
from components.workers import spec
from stacks.cluster import KubernetesConfig, NodePool
from stacks.cluster_rules import asks, gpus_per_pod
from stacks.config import ModelConfig, WorkerGroup
from stacks.placement import canary_pool

CACHE_CLAIM = "model-cache"
SCRIPTS = "worker-scripts"
POOL_LABEL = "inference-stack/pool"
ROLE_LABEL = "inference-stack/role"
MODEL_LABEL = "inference-stack/model"
# The pre-fetch Job's image has huggingface_hub's `hf` in /usr/local/bin (the vLLM images do).
JOB_TOOLS = "/usr/local"
CACHE_MOUNT = "/cache"
STARTUP_PERIOD_SECONDS = 10
MARKER = ".inference-stack-complete"
S3_CREDENTIALS = "s3-credentials"
# vLLM's images run as root and write to their root filesystem: no read-only root here.
NO_PRIVILEGES = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@dataclass(frozen=True)
class Release:
    """One Deployment of a group: its stable release, or its canary."""

    group: WorkerGroup
    """The group as this release runs it (`WorkerGroup.released()` for the canary)."""
    name: str
    pool: str
    """The gateway pool its pods join: the router of that pool selects them by `POOL_LABEL`."""
    replicas: int
    canary: bool = False


@dataclass(frozen=True)
class Serving:
    """Where and how every release of a group serves: its namespace, node pool, Secret and the
    stack-wide vLLM options."""

    namespace: str
    stack: str
    pool: NodePool
    secret: str
    kv_offload: bool = False
    scale_out: bool = False
    tracing: tuple[str, ...] = ()
    hf_token: bool = False
    """Whether the Secret holds `hf-token` (the stack sets `hfToken`)."""


def releases(group: WorkerGroup, stable_pool: str) -> list[Release]:
    """The group's stable Deployment and, with a canary, the canary's (its own pool, split by nginx)."""
    low, _ = asks(group).replica_bounds()
    found = [Release(group, group.name, stable_pool, low)]
    if group.canary is not None:
        found.append(
            Release(group.released(), f"{group.name}-canary", canary_pool(stable_pool), group.canary.workers, True)
        )
    return found


def pod_labels(stack: str, release: Release) -> dict[str, str]:
    return {
        **labels(stack, "worker", release.group.name),
        POOL_LABEL: release.pool,
        ROLE_LABEL: "canary" if release.canary else "stable",
        MODEL_LABEL: release.group.model.served_name,
    }


def _quantity_mib(mib: int) -> str:
    return f"{mib}Mi"


def resources(group: WorkerGroup, gpus: int) -> dict[str, Any]:
    """Requests from the Docker target's reservations, limits from its limits; GPUs as a limit
    (an extended resource's request defaults to it)."""
    r = group.resources
    limits: dict[str, str] = {"cpu": f"{r.cpus:g}", "memory": _quantity_mib(r.memory_mb)}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    requests = {"cpu": f"{r.cpu_reservation:g}", "memory": _quantity_mib(r.memory_reservation_mb)}
    return {"requests": requests, "limits": limits}


def probes(group: WorkerGroup) -> dict[str, Any]:
    """startupProbe: `/health` for twice the measured cold start (the Docker start period), so a
    loading model is never killed; readiness: the accuracy probe Docker's healthcheck runs (a
    real completion every `probeEveryMinutes`); liveness: `/health`, which vLLM fails when its
    engine dies."""
    h = group.health
    health = {"path": "/health", "port": "http"}
    return {
        "startupProbe": {
            "httpGet": health,
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": h.timeout_seconds,
            "failureThreshold": math.ceil(group.start_period() / STARTUP_PERIOD_SECONDS),
        },
        "readinessProbe": {
            "exec": {"command": spec.healthcheck_test(group)[1:]},
            "periodSeconds": h.interval_seconds,
            "timeoutSeconds": h.timeout_seconds,
            "failureThreshold": h.retries,
        },
        "livenessProbe": {
            "httpGet": health,
            "periodSeconds": h.interval_seconds,
            "timeoutSeconds": h.timeout_seconds,
            "failureThreshold": h.retries,
        },
    }


def _env(group: WorkerGroup, kv_offload: bool) -> list[dict[str, str]]:
    pairs = (item.split("=", 1) for item in spec.worker_env(group, kv_offload))
    return [{"name": k, "value": v} for k, v in pairs]


def secret_items(group: WorkerGroup, kv_offload: bool, hf_token: bool) -> list[dict[str, str]]:
    """The files of the workers' Secret each pod mounts at /run/secrets, as entrypoint.sh reads
    them. Only files the Secret holds: a missing key fails the pod's volume, and the volume is not
    optional, since a worker without its API key would serve anyone."""
    names = ["vllm-api-key"]
    if group.model.weights == "download" and hf_token:
        names.append("hf-token")
    if kv_offload:
        names.append("lmcache.yaml")
    return [{"key": n, "path": n} for n in names]


def marker(model: ModelConfig) -> str:
    return f"{snapshot_dir(CACHE_MOUNT, model)}/{MARKER}"


def container(release: Release, kv_offload: bool, scale_out: bool, tracing: list[str]) -> dict[str, Any]:
    group = release.group
    return {
        "name": "vllm",
        "image": group.image,
        "command": ["/bin/sh", spec.ENTRYPOINT_PATH],
        "args": spec.vllm_args(group, kv_offload=kv_offload, tracing=tracing, scale_out=scale_out),
        "env": _env(group, kv_offload),
        "ports": [{"name": "http", "containerPort": group.port, "protocol": "TCP"}],
        "resources": resources(group, gpus_per_pod(group)),
        **probes(group),
        "volumeMounts": [
            {"name": "model-cache", "mountPath": spec.HF_HOME, "readOnly": group.model.offline()},
            {"name": "model-cache", "mountPath": spec.VLLM_CACHE_ROOT, "subPath": f"compile/{release.name}"},
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "secrets", "mountPath": spec.SECRETS_DIR, "readOnly": True},
            {"name": "scripts", "mountPath": spec.APP_DIR, "readOnly": True},
        ],
        "securityContext": NO_PRIVILEGES,
    }


def pod_spec(release: Release, on: Serving) -> dict[str, Any]:
    group = release.group
    wait: list[dict[str, Any]] = []
    if group.model.weights == "prefetch":
        # The pre-fetch Job writes the marker last: a worker never starts on half the weights.
        wait.append(
            {
                "name": "wait-for-weights",
                "image": group.image,
                "command": ["/bin/sh", "-c", f'until [ -f "{marker(group.model)}" ]; do sleep 5; done'],
                "volumeMounts": [{"name": "model-cache", "mountPath": CACHE_MOUNT, "readOnly": True}],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"cpu": "100m", "memory": "64Mi"},
                },
                "securityContext": NO_PRIVILEGES,
            }
        )
    return {
        "initContainers": wait,
        "containers": [container(release, on.kv_offload, on.scale_out, list(on.tracing))],
        "nodeSelector": dict(on.pool.node_selector),
        "tolerations": [t.model_dump(exclude_none=True) for t in on.pool.tolerations],
        # vLLM finishes in-flight requests on SIGTERM; the router stops sending first (readiness).
        "terminationGracePeriodSeconds": max(spec.GRACE_SECONDS, group.rollout.drain_timeout_seconds),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": CACHE_CLAIM}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": _quantity_mib(spec.shm_size_mb(group))}},
            {
                "name": "secrets",
                "secret": {"secretName": on.secret, "items": secret_items(group, on.kv_offload, on.hf_token)},
            },
            {"name": "scripts", "configMap": {"name": SCRIPTS, "defaultMode": 0o555}},
        ],
    }


def deployment(release: Release, on: Serving) -> dict[str, Any]:
    """A release as a Deployment: rolling updates at `rollout.maxUnavailable` with no surge (a
    surge pod would wait for a GPU nobody frees), spread over the pool's nodes."""
    group, selector = release.group, pod_labels(on.stack, release)
    template = {
        "metadata": {"labels": selector},
        "spec": {**pod_spec(release, on), "topologySpreadConstraints": [spread_over_nodes(selector)]},
    }
    autoscaled = asks(group).autoscale is not None and not release.canary
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": group.rollout.max_unavailable, "maxSurge": 0},
        },
        "progressDeadlineSeconds": spec.wait_timeout_seconds(group),
        "template": template,
    }
    if not autoscaled:
        # KEDA owns the count of an autoscaled group: a fixed `replicas` here would fight it.
        body["replicas"] = release.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": release.name, "namespace": on.namespace, "labels": selector},
        "spec": body,
    }


def leader_worker_set(release: Release, on: Serving) -> dict[str, Any]:
    """A release whose replica spans `nodesPerReplica` nodes, as a LeaderWorkerSet: the leader
    serves the API over a Ray cluster its workers join (vLLM's multi-node serving)."""
    group, selector = release.group, pod_labels(on.stack, release)
    size = asks(group).nodes_per_replica
    leader = pod_spec(release, on)
    leader_main = leader["containers"][0]
    leader_main["command"] = ["/bin/sh", "-c"]
    leader_main["args"] = [
        "ray start --head --port=6379 && exec "
        + shlex.join(
            [
                "/bin/sh",
                spec.ENTRYPOINT_PATH,
                # `tensorParallelSize` GPUs over the Ray cluster of `size` nodes, no pipeline stages.
                *spec.vllm_args(group, on.kv_offload, on.tracing, on.scale_out),
                "--distributed-executor-backend",
                "ray",
            ]
        )
    ]
    worker = pod_spec(release, on)
    worker_main = worker["containers"][0]
    worker_main["command"] = ["/bin/sh", "-c"]
    worker_main["args"] = ['exec ray start --address="$LWS_LEADER_ADDRESS:6379" --block']
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        worker_main.pop(probe)
    worker_main.pop("ports")
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": release.name, "namespace": on.namespace, "labels": selector},
        "spec": {
            "replicas": release.replicas,
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": group.rollout.max_unavailable, "maxSurge": 0},
            },
            "leaderWorkerTemplate": {
                "size": size,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {"metadata": {"labels": selector}, "spec": leader},
                # Not in the pool: the router must not send requests to a Ray worker, which serves none.
                "workerTemplate": {
                    "metadata": {"labels": {k: v for k, v in selector.items() if k != POOL_LABEL}},
                    "spec": worker,
                },
            },
        },
    }


def service(group: WorkerGroup, namespace: str, stack: str) -> dict[str, Any]:
    """The group's pods (stable and canary) by one name, for the ServiceMonitor; traffic goes
    through the routers, which find the pods themselves."""
    selector = labels(stack, "worker", group.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{group.name}-workers",
            "namespace": namespace,
            "labels": {**selector, JOB_LABEL: VLLM_JOB},
        },
        "spec": {
            "clusterIP": "None",
            "selector": selector,
            "ports": [{"name": "http", "port": group.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def cache_claim(cluster: KubernetesConfig, namespace: str, stack: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CACHE_CLAIM, "namespace": namespace, "labels": labels(stack, "model-cache")},
        "spec": {
            "accessModes": [cluster.model_cache_access],
            "storageClassName": cluster.storage_class,
            "resources": {"requests": {"storage": f"{cluster.model_cache_gib}Gi"}},
        },
    }


def scripts_config_map(namespace: str, stack: str) -> dict[str, Any]:
    """entrypoint.sh and the accuracy probe, the Docker target's files, for every worker."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": SCRIPTS, "namespace": namespace, "labels": labels(stack, "worker")},
        "data": {
            spec.ENTRYPOINT_PATH.rsplit("/", 1)[1]: spec.entrypoint_source(),
            spec.HEALTHCHECK_PATH.rsplit("/", 1)[1]: spec.healthcheck_source(),
            "prefetch-hf.sh": script("prefetch-hf.sh"),
            "s3_sync.py": S3_SYNC.read_text(),
        },
    }


def _fetch_command(model: ModelConfig) -> list[str]:
    """The Docker target's own pre-fetch step for the model's source, its secret on stdin from
    the Secret's file (or nothing, for a public model or the node's own credentials)."""
    source = model.weights_source()
    if source.startswith("s3://"):
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        argv = ["python3", f"{spec.APP_DIR}/s3_sync.py", "--bucket", bucket, "--prefix", prefix]
        argv += ["--dest", snapshot_dir(CACHE_MOUNT, model)]
        if model.s3_endpoint_url:
            argv += ["--endpoint-url", model.s3_endpoint_url]
        if model.s3_region:
            argv += ["--region", model.s3_region]
        secret = f"{spec.SECRETS_DIR}/{S3_CREDENTIALS}"
    else:
        repo, _, revision = source.removeprefix("hf://").partition("@")
        argv = ["bash", f"{spec.APP_DIR}/prefetch-hf.sh", repo, revision, CACHE_MOUNT, JOB_TOOLS]
        secret = f"{spec.SECRETS_DIR}/hf-token"
    run = shlex.join(argv)
    return ["/bin/sh", "-c", f"if [ -r {secret} ]; then exec {run} < {secret}; else exec {run} < /dev/null; fi"]


def prefetch_job(model: ModelConfig, image: str, namespace: str, stack: str, secret: str) -> dict[str, Any]:
    """One model revision into the cache claim, with the Docker target's own steps (`hf download`
    at the pinned revision, or the verified S3 sync, the marker last); the token or the S3
    credentials, when there are any, on stdin from the Secret's file, never in argv or env."""
    slug = re.sub(r"[^a-z0-9-]", "-", model.served_name.lower())
    name = f"prefetch-{slug}"[:54].rstrip("-") + f"-{model.revision[:8]}"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(stack, "prefetch")},
        "spec": {
            "backoffLimit": 4,
            "template": {
                "metadata": {"labels": labels(stack, "prefetch")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "prefetch",
                            "image": image,
                            "command": _fetch_command(model),
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"cpu": "2", "memory": "4Gi"},
                            },
                            "volumeMounts": [
                                {"name": "model-cache", "mountPath": CACHE_MOUNT},
                                {"name": "scripts", "mountPath": spec.APP_DIR, "readOnly": True},
                                {"name": "secrets", "mountPath": spec.SECRETS_DIR, "readOnly": True},
                            ],
                            "securityContext": {"allowPrivilegeEscalation": False},
                        }
                    ],
                    "volumes": [
                        {"name": "model-cache", "persistentVolumeClaim": {"claimName": CACHE_CLAIM}},
                        {"name": "scripts", "configMap": {"name": SCRIPTS, "defaultMode": 0o555}},
                        {
                            "name": "secrets",
                            "secret": {
                                "secretName": secret,
                                "optional": True,
                                "items": [{"key": k, "path": k} for k in ("hf-token", S3_CREDENTIALS)],
                            },
                        },
                    ],
                },
            },
        },
    }
