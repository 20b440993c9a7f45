"""Container hardening from the CIS Docker Benchmark 1.6.0 (and KICS), as CrossGuard policies."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyComplianceFramework,
    PolicyResource,
    ReportViolation,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from policy.checklist import CONTAINER, JUSTIFIABLE, container_policy, is_worker, labels
from stacks.host_paths import sensitive_root

MAX_RESTARTS = 5
# What an image that starts as root and then runs as its own user may add back after dropping ALL.
# Anything else (SYS_ADMIN, NET_ADMIN, SYS_PTRACE, NET_RAW...) widens what a compromise can do on a GPU host.
STARTUP_CAPABILITIES = {"CHOWN", "SETGID", "SETUID", "NET_BIND_SERVICE"}
# Images that write to their root filesystem for reasons this project cannot yet remove, and why.
WRITABLE_ROOTFS = {
    "nvcr.io/nvidia/k8s/dcgm-exporter": "which paths DCGM's embedded host engine writes is not documented "
    "(the upstream chart leaves readOnlyRootFilesystem off), and no GPU here can prove a tmpfs set",
}
UPLOADS_REASON = (
    "it takes uploaded files, which the Docker provider extracts at /, and Docker refuses that on a read-only root"
)
# The host paths no container may reach (/, the OS's and the engine's own directories, the
# broad shared ones themselves) are stacks/host_paths.py's, shared with the config rule.
DOCKER_SOCKET = "docker.sock"
VOLUME = "docker:index/volume:Volume"
# `local` volume types whose `device` names a remote share, not a host path.
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "glusterfs", "ceph", "9p"}


def cis(control: str) -> PolicyComplianceFramework:
    return PolicyComplianceFramework(name="CIS Docker Benchmark", version="1.6.0", reference=control)


def _not_privileged(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    if props.get("privileged"):
        report("privileged: drop it; GPUs come through deviceRequests (driver nvidia, explicit ids)")
    if props.get("devices"):
        report("`devices` maps host devices in: request GPUs through deviceRequests instead")


def _host_namespaces(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    # pulumi-docker 5.2.0's Container namespace inputs (sdk/python/pulumi_docker/container.py:
    # network_mode, pid_mode, ipc_mode, userns_mode, cgroupns_mode); it has none for UTS, so no
    # container of this program can share the host's UTS namespace (CIS 5.20 holds by construction).
    for key in ("networkMode", "pidMode", "ipcMode", "usernsMode", "cgroupnsMode"):
        if str(props.get(key) or "") == "host":
            report(f"{key}: host shares the host's namespace with the container: remove it")


def _ports_bound(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for port in props.get("ports") or []:
        ip = str(port.get("ip") or "")
        if ip in ("", "0.0.0.0", "::"):
            report(f"port {port.get('external')} publishes on every interface: bind it to a specific address")


def _sensitive(source: str) -> str | None:
    """Why a container must not reach host path `source`, or None."""
    if DOCKER_SOCKET in source:
        return f"{source}: the Docker socket is root on the host; never mount it"
    if sensitive_root(source) is not None:
        return f"{source} is a sensitive host path: mount a dedicated directory instead"
    return None


def _sensitive_device(name: str, device: str) -> str | None:
    if DOCKER_SOCKET in device:
        return f"volume {name} binds {device}: the Docker socket is root on the host; never mount it"
    if sensitive_root(device) is not None:
        return f"volume {name} binds {device}, a sensitive host path: bind a dedicated directory instead"
    return None


def _host_mounts(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    sources = [str(m.get("source") or "") for m in props.get("mounts") or [] if m.get("type") == "bind"]
    sources += [str(v.get("hostPath") or "") for v in props.get("volumes") or [] if v.get("hostPath")]
    for source in sources:
        problem = _sensitive(source)
        if problem is not None:
            report(problem)


def _volume_device(volume: PolicyResource) -> str | None:
    """The host path a `local` volume mounts (`driverOpts.device`, as components/hosts/host.py
    binds the model cache), or None. An NFS or CIFS device (`:/export`, `//server/share`) is not
    a host path; a block device (`/dev/sdb1`) is one, under /dev."""
    props = volume.props
    if str(props.get("driver") or "local") != "local":
        return None
    opts = props.get("driverOpts") or {}
    if str(opts.get("type") or "").lower() in NETWORK_FILESYSTEMS:
        return None
    device = str(opts.get("device") or "")
    return device if device.startswith("/") else None


def _known(item: Mapping[str, Any], key: str) -> str:
    """`item[key]`, or "" while a preview cannot know it (the engine names a volume at create;
    the mounts' property dependencies still tie it to the container)."""
    try:
        return str(item.get(key) or "")
    except UnknownValueError:
        return ""


def _docker_name(volume: PolicyResource) -> str | None:
    """The volume's Docker name; its resource name when the program sets none (the engine
    names it at create); None while a preview cannot know it."""
    try:
        return str(volume.props.get("name") or volume.name)
    except UnknownValueError:
        return None


def _mounted_volumes(container: PolicyResource, volumes: list[PolicyResource]) -> list[tuple[str, PolicyResource]]:
    """(its resource name, the Volume) for each named volume the container mounts, found by name or by
    the dependency of the container's `mounts` or `volumes` on it."""
    props = container.props
    names = {_known(m, "source") for m in props.get("mounts") or [] if m.get("type") == "volume"}
    names |= {_known(v, "volumeName") for v in props.get("volumes") or []}
    depended = {r.urn for key in ("mounts", "volumes") for r in container.property_dependencies.get(key) or []}
    found = []
    for volume in volumes:
        name = _docker_name(volume)
        if (name and name in names) or volume.urn in depended:
            found.append((volume.name, volume))
    return found


def _no_sensitive_mounts(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    volumes = [r for r in args.resources if r.resource_type == VOLUME]
    for container in (r for r in args.resources if r.resource_type == CONTAINER):

        def report(message: str, urn: str = container.urn) -> None:
            report_violation(message, urn)

        try:
            _host_mounts(container.props, report)
            for name, volume in _mounted_volumes(container, volumes):
                device = _volume_device(volume)
                problem = _sensitive_device(name, device) if device is not None else None
                if problem is not None:
                    report_violation(problem, container.urn)
        except UnknownValueError:
            # During a preview a computed value cannot be judged yet; the other containers still are.
            continue


def pinned(image: str) -> bool:
    """A digest, or an explicit tag that is not `latest`."""
    if image.startswith("sha256:") or "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    return ":" in name and not name.endswith(":latest")


def _pinned(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    image = str(props.get("image") or "")
    if not pinned(image):
        report(f"image {image!r} is not pinned: use an explicit version tag or a digest")


def _no_new_privileges(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    options = [str(o) for o in props.get("securityOpts") or []]
    if not any(o.replace("=", ":") in ("no-new-privileges:true", "no-new-privileges") for o in options):
        report("securityOpts lacks no-new-privileges:true (setuid binaries could raise privileges)")
    for option in options:
        if option.replace("=", ":") in ("seccomp:unconfined", "apparmor:unconfined"):
            report(f"securityOpts {option}: keep Docker's default profile")


def _capabilities(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    caps = props.get("capabilities") or {}
    if "ALL" not in [str(c).upper() for c in caps.get("drops") or []]:
        report("capabilities are not dropped: set capabilities drops [ALL] and add back only what the image needs")
    for cap in caps.get("adds") or []:
        name = str(cap).upper().removeprefix("CAP_")
        if name not in STARTUP_CAPABILITIES:
            report(
                f"capability {name} is added: only {', '.join(sorted(STARTUP_CAPABILITIES))} (a root start that "
                "drops to its own user) are allowed back"
            )


def _writable_reason(props: Mapping[str, Any]) -> str | None:
    if props.get("uploads"):
        return UPLOADS_REASON
    repository = str(props.get("image") or "").split("@", 1)[0].rsplit(":", 1)[0]
    return WRITABLE_ROOTFS.get(repository)


def _read_only(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    if not props.get("readOnly") and _writable_reason(props) is None:
        report("the root filesystem is writable: set read_only, with a tmpfs for the paths the service writes")


def _writable_rootfs(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    reason = _writable_reason(props)
    if not props.get("readOnly") and reason is not None:
        report(f"the root filesystem stays writable: {reason}")


def _bounded_restarts(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    retries = props.get("maxRetryCount")
    if props.get("restart") != "on-failure" or not retries or int(retries) > MAX_RESTARTS:
        report(
            f"restart {props.get('restart')!r} with maxRetryCount {retries}: use on-failure with at most "
            f"{MAX_RESTARTS} retries (workers[].maxRestarts), so a model that cannot load stops thrashing the GPU"
        )


HARDENING_POLICIES = [
    container_policy(
        "capabilities-dropped",
        "Every container drops all capabilities and adds back at most CHOWN, SETGID, SETUID and "
        "NET_BIND_SERVICE (for images that start as root and switch to their own user).",
        Severity.HIGH,
        _capabilities,
        framework=cis("5.3"),
    ),
    container_policy(
        "read-only-rootfs",
        "Containers run with a read-only root filesystem, except those listed by `writable-rootfs` "
        "(uploaded files; images whose writes are unknown).",
        Severity.MEDIUM,
        _read_only,
        framework=cis("5.12"),
    ),
    container_policy(
        "writable-rootfs",
        "Advisory: names every container that keeps a writable root filesystem, with the reason.",
        Severity.LOW,
        _writable_rootfs,
        framework=cis("5.12"),
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
    container_policy(
        "not-privileged",
        "No container is privileged or maps host devices; GPUs come only through device requests.",
        Severity.CRITICAL,
        _not_privileged,
        framework=cis("5.4"),
    ),
    container_policy(
        "no-host-namespaces",
        "No container shares the host's network, PID, IPC, user or cgroup namespace (or UTS: no input).",
        Severity.HIGH,
        _host_namespaces,
        framework=cis("5.9, 5.15, 5.16, 5.20, 5.30"),
    ),
    container_policy(
        "ports-bind-a-specific-address",
        "Every published port binds a specific host address, never every interface.",
        Severity.HIGH,
        _ports_bound,
        framework=cis("5.13"),
    ),
    container_policy(
        "image-tag-pinned",
        "Every image is pinned by a version tag or digest, never `latest` or untagged.",
        Severity.MEDIUM,
        _pinned,
        framework=PolicyComplianceFramework(name="KICS", version="2", reference="Image Version Using 'latest'"),
    ),
    container_policy(
        "workers-restart-on-failure-bounded",
        "vLLM workers restart on-failure at most 5 times. (The gateway, Redis and the monitoring "
        "services restart unless-stopped on purpose: they must come back after any number of crashes.)",
        Severity.MEDIUM,
        _bounded_restarts,
        workers_only=True,
        framework=cis("5.14"),
    ),
    container_policy(
        "no-new-privileges",
        "Containers run with no-new-privileges and never with seccomp or AppArmor unconfined.",
        Severity.HIGH,
        _no_new_privileges,
        framework=cis("5.21, 5.25"),
    ),
]


def _one_worker_per_gpu(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    owners: dict[tuple[str, str], str] = {}
    workers = [r for r in args.resources if r.resource_type == CONTAINER and is_worker(r.props)]
    if not workers:
        args.not_applicable("no vLLM workers")
        return
    for worker in workers:
        tags = labels(worker.props)
        host = tags.get("inference-stack.host", "")
        for request in worker.props.get("deviceRequests") or []:
            for gpu in request.get("deviceIds") or []:
                other = owners.setdefault((host, str(gpu)), str(worker.props.get("name")))
                if other != worker.props.get("name"):
                    report_violation(
                        f"GPU {gpu} on {host} is used by {other} and {worker.props.get('name')}", worker.urn
                    )


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _workers_publish_privately(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for r in args.resources:
        if r.resource_type != CONTAINER or not is_worker(r.props):
            continue
        for port in r.props.get("ports") or []:
            ip = str(port.get("ip") or "")
            address = _address(ip)
            private = address is not None and address.is_private and not address.is_unspecified
            if not private:
                report_violation(
                    f"worker {r.props.get('name')} publishes port {port.get('external')} on {ip or 'every interface'}:"
                    " a worker publishes only on its host's private address, for the gateway",
                    r.urn,
                )


def _only_gateway_public(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for r in args.resources:
        # Workers have their own, stricter rule: workers-publish-only-privately.
        if r.resource_type != CONTAINER or labels(r.props).get("inference-stack.role") in ("gateway", "worker"):
            continue
        for port in r.props.get("ports") or []:
            ip = str(port.get("ip") or "")
            address = _address(ip)
            if address is None or address.is_unspecified or not (address.is_loopback or address.is_private):
                report_violation(
                    f"{r.props.get('name')} publishes port {port.get('external')} on {ip or 'every interface'}: only "
                    "the gateway faces clients; bind it to 127.0.0.1 (reach it over an SSH tunnel) or to the host's "
                    "privateAddress",
                    r.urn,
                )


HARDENING_STACK_POLICIES = [
    StackValidationPolicy(
        name="no-sensitive-host-mounts",
        description="No container reaches /, the OS's or the engine's directories (/etc, /proc, /sys, /boot, "
        "/dev, /usr, /lib*, /bin, /sbin, /run, /var/run, /root, /var/lib/docker, /var/lib/containerd), a broad "
        "shared directory itself (/home, /var, /opt, /tmp...) or the Docker socket: not by a bind mount, a "
        "host-path volume, nor a `local` volume whose driverOpts.device binds the path.",
        validate=_no_sensitive_mounts,
        severity=Severity.CRITICAL,
        framework=cis("5.5, 5.31"),
        config_schema=JUSTIFIABLE,
    ),
    StackValidationPolicy(
        name="only-the-gateway-publishes-publicly",
        description="No container but the gateway publishes beyond loopback and the hosts' private addresses "
        "(workers, exporters and OTLP reach other hosts only over the private network).",
        validate=_only_gateway_public,
        severity=Severity.CRITICAL,
        framework=cis("5.7, 5.13"),
        config_schema=JUSTIFIABLE,
    ),
    StackValidationPolicy(
        name="one-worker-per-gpu",
        description="Each GPU of a host is reserved by at most one worker.",
        validate=_one_worker_per_gpu,
        severity=Severity.HIGH,
        framework=PolicyComplianceFramework(name="vLLM security guide", version="0.32", reference="GPU isolation"),
        config_schema=JUSTIFIABLE,
    ),
    StackValidationPolicy(
        name="workers-publish-only-privately",
        description="vLLM workers never publish a port except on a private address (multi-host stacks); "
        "never on 0.0.0.0 or a public address.",
        validate=_workers_publish_privately,
        severity=Severity.CRITICAL,
        framework=PolicyComplianceFramework(
            name="vLLM security guide", version="0.32", reference="do not expose the API server"
        ),
        config_schema=JUSTIFIABLE,
    ),
]
