"""The Kubernetes target's ComponentResources: each deploys one concern's manifests (`fleet.py`)
through pulumi-kubernetes, as typed resources where the SDK has the kind and as
`apiextensions.CustomResource` for the custom ones, plus the Secrets whose values are Pulumi
secrets and the GPU Operator's Helm release.

Manifests are handed over as they are rendered, camelCase and all: the SDK passes dictionary keys
it has no Python name for unchanged (pulumi/runtime/rpc.py `serialize_properties`), so what
`make render` writes is what the provider applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes.manifests import labels
from stacks.cluster import GpuOperator

# The kinds the fleet renders, by (apiVersion, kind), and the SDK class of each.
KINDS: dict[tuple[str, str], Any] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "PersistentVolumeClaim"): k8s.core.v1.PersistentVolumeClaim,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("batch/v1", "Job"): k8s.batch.v1.Job,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}
# The SDK's Python names of the top-level fields the fleet sets besides metadata and spec.
_FIELDS = {
    "data": "data",
    "rules": "rules",
    "roleRef": "role_ref",
    "subjects": "subjects",
    "automountServiceAccountToken": "automount_service_account_token",
}
GPU_OPERATOR_CHART = "gpu-operator"
GPU_OPERATOR_REPO = "https://helm.ngc.nvidia.com/nvidia"


def resource_name(component: str, manifest: Mapping[str, Any]) -> str:
    return f"{component}-{manifest['kind'].lower()}-{manifest['metadata']['name']}"


def apply(
    component: str, manifest: Mapping[str, Any], opts: pulumi.ResourceOptions, timeout_seconds: int | None = None
) -> pulumi.CustomResource:
    """One manifest as a resource named from its component, kind and name."""
    name = resource_name(component, manifest)
    if timeout_seconds is not None:
        # The provider waits for a Deployment's rollout or a Job's completion; a cold start or
        # a download takes longer than its 10-minute default.
        wait = f"{timeout_seconds}s"
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create=wait, update=wait))
        )
    cls = KINDS.get((manifest["apiVersion"], manifest["kind"]))
    if cls is None:
        return k8s.apiextensions.CustomResource(
            name,
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=manifest.get("spec"),
            opts=opts,
        )
    extra = {_FIELDS[k]: v for k, v in manifest.items() if k in _FIELDS}
    unknown = set(manifest) - {"apiVersion", "kind", "metadata", "spec", *_FIELDS}
    if unknown:
        raise ValueError(f"{name}: no SDK field for {sorted(unknown)}")
    if "spec" in manifest:
        extra["spec"] = manifest["spec"]
    return cls(name, metadata=manifest["metadata"], opts=opts, **extra)  # type: ignore[no-any-return]


def secret(
    component: str,
    name: str,
    namespace: str,
    stack: str,
    files: Mapping[str, pulumi.Input[str]],
    opts: pulumi.ResourceOptions,
) -> k8s.core.v1.Secret:
    """A Secret of files, every value a Pulumi secret (the provider keeps `stringData` secret in
    state too); pods mount it, so no value is ever an env var or an argument."""
    return k8s.core.v1.Secret(
        f"{component}-secret-{name}",
        metadata={"name": name, "namespace": namespace, "labels": labels(stack, component)},
        type="Opaque",
        string_data={key: pulumi.Output.secret(value) for key, value in files.items()},
        opts=opts,
    )


@dataclass(frozen=True)
class ManifestsArgs:
    manifests: Sequence[Mapping[str, Any]]
    provider: k8s.Provider
    namespace: str
    stack: str
    secrets: Mapping[str, Mapping[str, pulumi.Input[str]]] | None = None
    """Secrets this component owns, by name: file name to (secret) value."""
    depends_on: Sequence[pulumi.Resource] = ()
    timeout_seconds: int | None = None
    """How long the provider may wait for a workload to become ready."""


class Manifests(pulumi.ComponentResource):
    """A concern's manifests and Secrets. The Secrets come first, so no pod starts without its files."""

    TYPE = "inference-stack:kubernetes:Manifests"

    def __init__(self, name: str, args: ManifestsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        for manifest in args.manifests:
            if manifest["metadata"].get("namespace", args.namespace) != args.namespace:
                raise ValueError(f"{name}: {resource_name(name, manifest)} is outside namespace {args.namespace}")
        super().__init__(self.TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=list(args.depends_on))
        self.secrets = [
            secret(name, secret_name, args.namespace, args.stack, files, child)
            for secret_name, files in (args.secrets or {}).items()
        ]
        ordered = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=[*args.depends_on, *self.secrets])
        )
        self.resources = [apply(name, m, ordered, args.timeout_seconds) for m in args.manifests]
        self.register_outputs({"names": [resource_name(name, m) for m in args.manifests]})


class Namespace(Manifests):
    """The stack's namespace, under Pod Security `baseline` (`manifests.namespace`)."""

    TYPE = "inference-stack:kubernetes:Namespace"


class ModelCache(Manifests):
    """The model cache claim, the workers' scripts and Secret, and the pre-fetch Jobs that fill
    the cache before any worker starts (each worker's init container waits for its revision)."""

    TYPE = "inference-stack:kubernetes:ModelCache"


class WorkerGroup(Manifests):
    """One group's Deployments (stable and canary), Service, disruption budget and ScaledObject."""

    TYPE = "inference-stack:kubernetes:WorkerGroup"


class Edge(Manifests):
    """The gateway (nginx, its keys and exporter) and each pool's router, with their Services."""

    TYPE = "inference-stack:kubernetes:Edge"


class DataServices(Manifests):
    """Redis and Weaviate as StatefulSets on claims of the stack's storage class."""

    TYPE = "inference-stack:kubernetes:DataServices"


class Monitoring(Manifests):
    """PrometheusRule, ServiceMonitors, the dashboards ConfigMap and Jaeger."""

    TYPE = "inference-stack:kubernetes:Monitoring"


class NetworkPolicies(Manifests):
    """Default-deny ingress, then what each component needs."""

    TYPE = "inference-stack:kubernetes:NetworkPolicies"


def gpu_operator_namespace(cfg: GpuOperator, stack: str) -> dict[str, Any]:
    """The operator's own namespace, Pod Security `privileged`: its driver and toolkit DaemonSets
    mount the host (NVIDIA's getting-started page labels it the same way)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": cfg.namespace,
            "labels": {**labels(stack, "gpu-operator"), "pod-security.kubernetes.io/enforce": "privileged"},
        },
    }


def gpu_operator_values(cfg: GpuOperator) -> dict[str, Any]:
    return {"driver": {"enabled": cfg.driver}, "toolkit": {"enabled": cfg.toolkit}}


class GpuOperatorRelease(pulumi.ComponentResource):
    """The NVIDIA GPU Operator's Helm chart, pinned (`kubernetes.gpuOperator.version`), in its
    privileged namespace; driver and toolkit each switchable off for nodes that have them."""

    def __init__(
        self,
        name: str,
        cfg: GpuOperator,
        provider: k8s.Provider,
        stack: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("inference-stack:kubernetes:GpuOperator", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        ns = apply(name, gpu_operator_namespace(cfg, stack), child)
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=GPU_OPERATOR_CHART,
            chart=GPU_OPERATOR_CHART,
            version=cfg.version,
            repository_opts={"repo": GPU_OPERATOR_REPO},
            namespace=cfg.namespace,
            values=gpu_operator_values(cfg),
            # The operator's pods take minutes on a fresh node (driver build, validation).
            timeout=1200,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[ns])),
        )
        self.register_outputs({"status": self.release.status})
