"""The Kubernetes target's part of the stack schema (`target: kubernetes`): the cluster, its GPU
node pools and what each worker group asks of them. Pure, like the rest of the schema; the rules
that tie it to the workers (node capacity, disruption budgets) are in `stacks.cluster_rules`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from stacks.grammars import PinnedImage
from stacks.schema import MAX_GPU_MEMORY_MIB, MAX_MEMORY_MB, Name, Schema, rule_error

# RFC 1123: a namespace is a DNS label, a storage class name a DNS subdomain (the API server's
# own checks, k8s.io/apimachinery/pkg/util/validation IsDNS1123Label / IsDNS1123Subdomain).
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# A label or taint key: an optional DNS-subdomain prefix and a name (IsQualifiedName).
QUALIFIED_NAME = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
GPU_RESOURCE = "nvidia.com/gpu"


def _qualified(key: str) -> str:
    prefix, _, _name = key.rpartition("/")
    if not QUALIFIED_NAME.fullmatch(key) or len(prefix) > 253:
        raise rule_error(
            f"`{key}` is not a Kubernetes label key (an optional DNS-subdomain prefix, `/`, and a name of "
            "at most 63 letters, digits, `-`, `_` or `.`)",
            "copy the key from `kubectl get nodes --show-labels`, e.g. `nvidia.com/gpu.product`",
        )
    return key


class Toleration(Schema):
    """A taint the group's pods tolerate (`kubectl describe node` lists a node's taints)."""

    key: str
    """The taint's key, e.g. `nvidia.com/gpu`."""
    operator: Literal["Exists", "Equal"] = "Exists"
    """`Exists` tolerates the key with any value; `Equal` only with `value`."""
    value: str | None = Field(default=None, pattern=LABEL_VALUE.pattern)
    """The taint's value, for `Equal`."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"
    """The taint's effect; unset tolerates every effect."""

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        return _qualified(key)


class NodePool(Schema):
    """A set of identical GPU nodes, as the cluster's node labels pick them out."""

    name: Name
    """The pool's name in this stack, which `workers[].cluster.nodePool` refers to."""
    nodes: int = Field(ge=1, le=10_000)
    """How many nodes the pool has (at most, with a cluster autoscaler): the capacity every group
    on it must fit, at its maximum replica count."""
    gpus_per_node: int = Field(ge=0, le=64)
    """`nvidia.com/gpu` allocatable on one node (`kubectl describe node`); 0 for CPU nodes."""
    gpu_memory_mib: int | None = Field(default=None, ge=1024, le=MAX_GPU_MEMORY_MIB)
    """Memory of one GPU in MiB, for the memory-fit check the Docker target runs on `gpus.memoryMib`."""
    cpus: float = Field(gt=0, le=4096)
    """Allocatable CPUs of one node."""
    memory_mb: int = Field(ge=1024, le=MAX_MEMORY_MB)
    """Allocatable memory of one node, in MiB."""
    node_selector: dict[str, str] = {}
    """Node labels the pool's nodes carry, e.g. `{nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}`
    (GPU Feature Discovery's label). Pods of groups on the pool select them."""
    tolerations: list[Toleration] = [Toleration(key=GPU_RESOURCE)]
    """Taints the pool's nodes carry. The default is the taint GPU node pools are usually given,
    so that only GPU pods land there."""

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            _qualified(key)
            if not LABEL_VALUE.fullmatch(value):
                raise rule_error(
                    f"`{value}` (for `{key}`) is not a label value: at most 63 letters, digits, `-`, `_` or `.`, "
                    "starting and ending with a letter or digit",
                    "copy the value from `kubectl get nodes --show-labels`",
                )
        return labels


class GpuOperator(Schema):
    """The NVIDIA GPU Operator, from its Helm chart (https://helm.ngc.nvidia.com/nvidia)."""

    enabled: bool = True
    """Install the operator. Off when the cluster already runs it (or another device plugin)."""
    version: str = Field(default="v26.7.0", pattern=r"^v\d+\.\d+\.\d+$")
    """The chart version, pinned: the operator's newest release (NVIDIA/gpu-operator tag v26.7.0,
    10ee5b3; its deployments/gpu-operator/values.yaml has `driver.enabled` and `toolkit.enabled`)."""
    namespace: str = Field(default="gpu-operator", pattern=DNS_LABEL.pattern)
    """The operator's namespace, labelled Pod Security `privileged`: its driver and toolkit
    DaemonSets need the host."""
    driver: bool = True
    """Let the operator install the driver (`driver.enabled`). Off for nodes that have one."""
    toolkit: bool = True
    """Let the operator install the Container Toolkit (`toolkit.enabled`). Off for nodes that have it."""


class ClusterService(Schema):
    """Replicas and placement of a platform Deployment (the gateway, the routers)."""

    replicas: int = Field(default=2, ge=1, le=64)
    """Pods. Two by default, so a node drain or a crash never takes the service down."""


class KubernetesConfig(Schema):
    """Where and how a `target: kubernetes` stack deploys."""

    namespace: str = Field(default="inference", max_length=63, json_schema_extra={"allowed": "an RFC 1123 label"})
    """The namespace everything goes in, created with Pod Security labels."""
    kubeconfig: Literal["ambient", "secret"] = "ambient"
    """`ambient`: the kubeconfig pulumi-kubernetes finds itself ($KUBECONFIG, ~/.kube/config, or
    in-cluster). `secret`: the `kubeconfig` secret (`pulumi config set --secret kubeconfig
    "$(cat cluster.yaml)"`), so CI needs no file on disk."""
    context: str | None = Field(default=None, min_length=1, max_length=253)
    """The kubeconfig context to use; its current context when unset."""
    storage_class: str = Field(max_length=253, json_schema_extra={"allowed": "an RFC 1123 subdomain"})
    """The StorageClass of the model cache and the data services' volumes (`kubectl get
    storageclass`): fast local or NVMe-backed storage, since every cold start reads the weights."""
    model_cache_gib: int = Field(default=500, ge=1, le=1_000_000)
    """Size of the model cache volume, in GiB."""
    model_cache_access: Literal["ReadWriteMany", "ReadWriteOnce"] = "ReadWriteMany"
    """`ReadWriteMany` lets workers on every node mount the one cache the pre-fetch Job fills;
    `ReadWriteOnce` keeps every worker on the node that mounted it first."""
    node_pools: list[NodePool] = Field(min_length=1)
    """The cluster's node pools the workers may use."""
    gpu_operator: GpuOperator = GpuOperator()
    """The NVIDIA GPU Operator."""
    gateway: ClusterService = ClusterService()
    """The nginx gateway's Deployment."""
    router: ClusterService = ClusterService()
    """Each pool's router Deployment."""
    router_image: PinnedImage
    """The router image, pinned: `components/gateway/router/` built and pushed to your registry
    (`docker build -t <registry>/inference-stack/vllm-router:0.1.17 components/gateway/router`).
    On Docker hosts Pulumi builds it on the gateway host; a cluster pulls it."""
    gateway_service_type: Literal["ClusterIP", "LoadBalancer"] = "ClusterIP"
    """The gateway Service's type: `ClusterIP` behind your ingress controller, or `LoadBalancer`
    for a cloud load balancer (its NetworkPolicy admits `ingressFrom` either way)."""
    ingress_from: list[str] = Field(default=["0.0.0.0/0"], min_length=1)
    """CIDRs allowed to reach the gateway from outside the namespace (its NetworkPolicy)."""
    prometheus_namespace: str = Field(default="monitoring", pattern=DNS_LABEL.pattern)
    """Where the Prometheus Operator's Prometheus runs: its pods alone may scrape the workers."""
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090", pattern=r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/?$"
    )
    """Prometheus as KEDA queries it for the queue depth."""

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not DNS_LABEL.fullmatch(value):
            raise rule_error(
                f"`{value}` is not a namespace name: lower-case letters, digits and `-`, starting and ending "
                "with a letter or digit (RFC 1123 label)",
                "e.g. `namespace: inference`",
            )
        return value

    @field_validator("storage_class")
    @classmethod
    def _storage_class(cls, value: str) -> str:
        if not DNS_SUBDOMAIN.fullmatch(value):
            raise rule_error(
                f"`{value}` is not a StorageClass name: the API server takes lower-case letters, digits, `-` and "
                "`.` (RFC 1123 subdomain), so no claim could ever bind to it",
                "copy the NAME column of `kubectl get storageclass`, e.g. `storageClass: local-nvme`",
            )
        return value

    @field_validator("ingress_from")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value)
            except ValueError:
                raise rule_error(
                    f"`{value}` is not a CIDR (with its host bits zero)", "e.g. `10.0.0.0/8` or `203.0.113.7/32`"
                ) from None
        return values

    def pool(self, name: str) -> NodePool | None:
        return next((p for p in self.node_pools if p.name == name), None)


class Autoscale(Schema):
    """KEDA scaling of a group on vLLM's queue depth (`vllm:num_requests_waiting`)."""

    min_replicas: int = Field(ge=1, le=1000)
    """Fewest pods. At least `rollout.maxUnavailable + 1`, so the disruption budget holds."""
    max_replicas: int = Field(ge=1, le=1000)
    """Most pods: what the node pool must have room for."""
    waiting_per_replica: int = Field(default=4, ge=1, le=10_000)
    """Requests waiting per pod above which KEDA adds one."""

    @field_validator("max_replicas")
    @classmethod
    def _bounds(cls, high: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and high < low:
            raise rule_error(
                f"the maximum ({high}) is below the minimum ({low})", f"set `maxReplicas` to {low} or more"
            )
        return high


class WorkerCluster(Schema):
    """What one worker group asks of the cluster (`target: kubernetes` only)."""

    node_pool: Name | None = None
    """The node pool its pods run on; the first pool when unset."""
    replicas: int = Field(default=2, ge=1, le=1000)
    """Pods (each a `tensorParallelSize`-GPU vLLM server), when `autoscale` is unset."""
    nodes_per_replica: int = Field(default=1, ge=1, le=64)
    """Nodes one replica spans. Above 1 the group is a LeaderWorkerSet: a leader and
    `nodesPerReplica - 1` workers sharing the model over Ray, `tensorParallelSize / nodesPerReplica`
    GPUs each."""
    autoscale: Autoscale | None = None
    """Scale on queue depth with KEDA between these bounds, instead of a fixed `replicas`."""

    def replica_bounds(self) -> tuple[int, int]:
        a = self.autoscale
        return (a.min_replicas, a.max_replicas) if a is not None else (self.replicas, self.replicas)
