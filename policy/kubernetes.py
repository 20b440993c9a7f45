"""The Kubernetes target's policies: the same controls as the Docker ones (CIS Docker 5.x, the
article's checklist), on the pod templates of every workload the program declares. Each reads
the resource's inputs as pulumi-kubernetes receives them (the manifests' own camelCase).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from policy.checklist import ARTICLE, JUSTIFIABLE
from policy.hardening import pinned

WORKLOADS = {
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:DaemonSet",
    "kubernetes:batch/v1:Job",
    "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet",
}
GPU = "nvidia.com/gpu"
# Pod Security `baseline` lets a container add these and no others (Kubernetes docs, "Pod
# Security Standards", Capabilities).
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
SECRET_NAME = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET|CREDENTIAL)", re.IGNORECASE)
PINNED = re.compile(r"^[^:@\s]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")

PodCheck = Callable[[str, Mapping[str, Any], Callable[[str], None]], None]


def pod_specs(resource_type: str, props: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each pod template of a workload, by where it sits."""
    spec = props.get("spec") or {}
    if resource_type.endswith(":LeaderWorkerSet"):
        template = spec.get("leaderWorkerTemplate") or {}
        for role in ("leaderTemplate", "workerTemplate"):
            if role in template:
                yield role, (template[role] or {}).get("spec") or {}
        return
    yield "template", (spec.get("template") or {}).get("spec") or {}


def containers(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []


def pod_policy(name: str, description: str, check: PodCheck) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in WORKLOADS:
            args.not_applicable("not a Kubernetes workload")
            return
        for where, pod in pod_specs(args.resource_type, args.props):
            check(where, pod, lambda message: report_violation(message, None))

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        framework=ARTICLE,
        config_schema=JUSTIFIABLE,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def _privileged(where: str, pod: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for c in containers(pod):
        context = c.get("securityContext") or {}
        if context.get("privileged"):
            report(f"{where}: container `{c.get('name')}` is privileged")
        added = set((context.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            report(f"{where}: container `{c.get('name')}` adds {sorted(added)}, beyond Pod Security baseline")


def _host_path(where: str, pod: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            report(f"{where}: volume `{volume.get('name')}` mounts the node's {volume['hostPath'].get('path')}")


def _host_namespaces(where: str, pod: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            report(f"{where}: `{key}` shares the node's namespace")
    for c in containers(pod):
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                report(f"{where}: container `{c.get('name')}` binds host port {port['hostPort']}")


def _limits(where: str, pod: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for c in containers(pod):
        limits = (c.get("resources") or {}).get("limits") or {}
        missing = [k for k in ("cpu", "memory") if k not in limits]
        if missing:
            report(f"{where}: container `{c.get('name')}` has no {' or '.join(missing)} limit")


def _probes(where: str, pod: Mapping[str, Any], report: Callable[[str], None]) -> None:
    if pod.get("restartPolicy") in ("OnFailure", "Never"):
        return  # a Job's pod runs to completion: nothing routes to it
    if where == "workerTemplate":
        return  # a LeaderWorkerSet's workers serve nothing; the leader's probes cover the group
    for c in pod.get("containers") or []:
        missing = [p for p in ("readinessProbe", "livenessProbe") if p not in c]
        gpu = GPU in ((c.get("resources") or {}).get("limits") or {})
        if gpu and "startupProbe" not in c:
            missing.append("startupProbe (a loading model must not fail liveness)")
        if missing:
            report(f"{where}: container `{c.get('name')}` has no {', '.join(missing)}")


def _pinned(where: str, pod: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for c in containers(pod):
        image = str(c.get("image") or "")
        # The Docker rule's test, on a reference the kubelet could pull (no stray characters).
        if not (PINNED.fullmatch(image) and pinned(image)):
            report(f"{where}: container `{c.get('name')}` image `{image}` is not pinned to a tag or digest")


def _secret_env(where: str, pod: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for c in containers(pod):
        for env in c.get("env") or []:
            name = str(env.get("name"))
            if "secretKeyRef" in (env.get("valueFrom") or {}):
                report(f"{where}: `{name}` of `{c.get('name')}` comes from a Secret as an env var: mount it as a file")
            elif "value" in env and SECRET_NAME.search(name) and not name.endswith(("_FILE", "_PATH")):
                report(f"{where}: `{name}` of `{c.get('name')}` looks like a secret in a plain env value")
        if c.get("envFrom"):
            report(f"{where}: `{c.get('name')}` takes envFrom: secrets belong in mounted files")


def _gpu_tolerations(where: str, pod: Mapping[str, Any], report: Callable[[str], None]) -> None:
    wants = any(GPU in ((c.get("resources") or {}).get("limits") or {}) for c in containers(pod))
    if not wants:
        return
    tolerated = any(
        t.get("key") == GPU or (t.get("key") in (None, "") and t.get("operator") == "Exists")
        for t in pod.get("tolerations") or []
    )
    if not tolerated:
        report(f"{where}: requests `{GPU}` but tolerates no `{GPU}` taint, so it never lands on a tainted GPU node")


KUBERNETES_POLICIES = [
    pod_policy(
        "k8s-not-privileged", "No privileged container; capabilities within Pod Security baseline.", _privileged
    ),
    pod_policy("k8s-no-host-path", "No hostPath volume: weights and caches live on claims.", _host_path),
    pod_policy("k8s-no-host-namespaces", "No host network, PID or IPC namespace, no host port.", _host_namespaces),
    pod_policy("k8s-limits", "Every container has CPU and memory limits.", _limits),
    pod_policy(
        "k8s-probes", "Serving containers have readiness and liveness probes; GPU ones a startupProbe.", _probes
    ),
    pod_policy("k8s-pinned-images", "Every image is pinned to a tag (not latest) or a digest.", _pinned),
    pod_policy("k8s-no-secret-env", "Secrets reach containers as mounted files, never env values.", _secret_env),
    pod_policy("k8s-gpu-tolerations", "GPU pods tolerate the GPU nodes' taint.", _gpu_tolerations),
]
