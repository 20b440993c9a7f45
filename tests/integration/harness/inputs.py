"""The input mapper: a resource's Pulumi inputs as the Engine API request the real provider sends.
Every input must have a mapping: an unknown one raises `UnmappedInputError` naming it."""

from __future__ import annotations

import base64
import grp
import hashlib
import io
import json
import pwd
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.integration.harness.engine import GRACE_LABEL, REPO, RESOURCE_LABEL, TEST_LABEL, TEST_VALUE
from tests.integration.harness.errors import HarnessError, UnmappedInputError
from tests.integration.harness.kinds import CONTAINER, IMAGE, NETWORK, VOLUME

# The provider's defaults (terraform-provider-docker): waited for 60 s, grace 0 s.
DEFAULT_WAIT_TIMEOUT = 60


class Inputs:
    """Reads a resource's inputs and checks at the end that every key was consumed."""

    def __init__(self, where: str, inputs: dict[str, Any]) -> None:
        self.where = where
        self.inputs = dict(inputs)
        self.used: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.inputs.get(key, default)

    def sub(self, key: str, value: dict[str, Any]) -> Inputs:
        return Inputs(f"{self.where}.{key}", value)

    def done(self) -> None:
        unknown = sorted(set(self.inputs) - self.used)
        if unknown:
            raise UnmappedInputError(f"{self.where}: no mapping for input(s) {', '.join(unknown)}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def duration_ns(value: str) -> int:
    """A Go duration ("1m30s", "500ms") in nanoseconds, as the provider's time.ParseDuration."""
    if value in ("0", ""):
        return 0
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise HarnessError(f"not a Go duration: {value!r}")
    return int(sum(float(n) * _UNIT_NS[u] for n, u in parts))


def _labels(inputs: Inputs, key: str = "labels") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in inputs.get(key) or []:
        label = inputs.sub(key, item)
        out[str(label.get("label"))] = str(label.get("value"))
        label.done()
    return out


def _mode(value: str) -> int:
    return int(value, 8)


def _user_id(name: str | None, lookup: Callable[[str], int]) -> int:
    if name is None or name == "":
        return 0
    return int(name) if name.isdigit() else lookup(name)


@dataclass
class _ContainerPlan:
    name: str
    body: dict[str, Any]
    extra_networks: list[tuple[str, dict[str, Any]]]
    archives: list[tuple[str, bytes]]
    wait: bool
    wait_timeout: int
    notes: list[str]


def _upload_archives(inputs: Inputs, volume_roots: list[str] | None) -> list[tuple[str, bytes]]:
    """(extract-at directory, tar) per upload. The provider sends each file as a one-entry tar named by
    its absolute path and extracts it at `/` (terraform-provider-docker: CopyToContainer(id, "/", ...)),
    which Docker refuses for a read-only root filesystem even when the file lands in a volume. With
    `volume_roots` (the container's volume and mount targets), a file inside one is extracted at that
    root instead, which Docker accepts: the harness's opt-in workaround (see `apply(uploads=...)`)."""
    out = []
    for item in inputs.get("uploads") or []:
        up = inputs.sub("uploads", item)
        path = str(up.get("file"))
        content, encoded, source = up.get("content"), up.get("contentBase64"), up.get("source")
        up.get("sourceHash")  # only a change trigger for `source`; part of the inputs hash
        if sum(x is not None for x in (content, encoded, source)) != 1:
            raise HarnessError(f"{up.where} {path}: exactly one of content, contentBase64, source")
        if content is not None:
            data = str(content).encode()
        elif encoded is not None:
            data = base64.b64decode(str(encoded))
        else:
            data = (REPO / str(source)).read_bytes()
        root = "/"
        for candidate in sorted(volume_roots or [], key=len, reverse=True):
            if path.startswith(candidate.rstrip("/") + "/"):
                root = candidate
                break
        info = tarfile.TarInfo(path[len(root) :].lstrip("/") if root != "/" else path.lstrip("/"))
        info.size = len(data)
        permissions, executable = up.get("permissions"), up.get("executable")
        # The provider: permissions win over executable; otherwise 0644, or 0744 if executable.
        info.mode = _mode(str(permissions)) if permissions else (0o744 if executable else 0o644)
        info.uid = _user_id(up.get("owner"), lambda n: pwd.getpwnam(n).pw_uid)
        info.gid = _user_id(up.get("group"), lambda n: grp.getgrnam(n).gr_gid)
        info.mtime = 0  # deterministic archive
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.addfile(info, io.BytesIO(data))
        out.append((root, buffer.getvalue()))
        up.done()
    return out


def _healthcheck(inputs: Inputs, start_interval_supported: bool, notes: list[str]) -> dict[str, Any] | None:
    raw = inputs.get("healthcheck")
    if raw is None:
        return None
    hc = inputs.sub("healthcheck", raw)
    out: dict[str, Any] = {"Test": list(hc.get("tests"))}
    for key, api_key in (("interval", "Interval"), ("timeout", "Timeout"), ("startPeriod", "StartPeriod")):
        if hc.get(key) is not None:
            out[api_key] = duration_ns(str(hc.get(key)))
    if hc.get("retries") is not None:
        out["Retries"] = int(hc.get("retries"))
    if hc.get("startInterval") is not None:
        # StartInterval exists from API 1.44 (Docker 25); older engines ignore the field, as they
        # would when the provider sends it. Recorded, so the difference is visible in a report.
        out["StartInterval"] = duration_ns(str(hc.get("startInterval")))
        if not start_interval_supported:
            notes.append(f"{hc.where}.startInterval={hc.inputs['startInterval']}: ignored by this engine (API < 1.44)")
    hc.done()
    return out


def _ports(inputs: Inputs) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for item in inputs.get("ports") or []:
        port = inputs.sub("ports", item)
        key = f"{int(port.get('internal'))}/{port.get('protocol') or 'tcp'}"
        exposed[key] = {}
        external = port.get("external")
        bindings.setdefault(key, []).append(
            {"HostIp": str(port.get("ip") or "0.0.0.0"), "HostPort": "" if external is None else str(int(external))}
        )
        port.done()
    return exposed, bindings


def _mounts(inputs: Inputs) -> list[dict[str, Any]]:
    out = []
    for item in inputs.get("mounts") or []:
        mount = inputs.sub("mounts", item)
        spec: dict[str, Any] = {
            "Type": mount.get("type"),
            "Target": mount.get("target"),
            "ReadOnly": bool(mount.get("readOnly") or False),
        }
        if mount.get("source") is not None:
            spec["Source"] = mount.get("source")
        if mount.get("bindOptions") is not None:
            bind = mount.sub("bindOptions", mount.get("bindOptions"))
            spec["BindOptions"] = {"Propagation": bind.get("propagation")}
            bind.done()
        if mount.get("volumeOptions") is not None:
            vol = mount.sub("volumeOptions", mount.get("volumeOptions"))
            options: dict[str, Any] = {"NoCopy": bool(vol.get("noCopy") or False), "Labels": _labels(vol)}
            if vol.get("driverName") is not None:
                options["DriverConfig"] = {"Name": vol.get("driverName"), "Options": vol.get("driverOptions") or {}}
            vol.get("driverOptions")
            spec["VolumeOptions"] = options
            vol.done()
        if mount.get("tmpfsOptions") is not None:
            tmp = mount.sub("tmpfsOptions", mount.get("tmpfsOptions"))
            spec["TmpfsOptions"] = {
                k: v for k, v in (("SizeBytes", tmp.get("sizeBytes")), ("Mode", tmp.get("mode"))) if v is not None
            }
            tmp.done()
        mount.done()
        out.append(spec)
    return out


def _volumes(inputs: Inputs) -> tuple[dict[str, Any], list[str], list[str]]:
    """`volumes`: a containerPath alone is an anonymous volume; hostPath or volumeName a bind."""
    anonymous: dict[str, Any] = {}
    binds: list[str] = []
    volumes_from: list[str] = []
    for item in inputs.get("volumes") or []:
        vol = inputs.sub("volumes", item)
        path, host, named = vol.get("containerPath"), vol.get("hostPath"), vol.get("volumeName")
        ro, relabel, source = bool(vol.get("readOnly") or False), vol.get("selinuxRelabel"), vol.get("fromContainer")
        if source is not None:
            volumes_from.append(str(source) + (":ro" if ro else ""))
        elif host is None and named is None:
            anonymous[str(path)] = {}
        else:
            opts = [o for o in ("ro" if ro else "", relabel or "") if o]
            binds.append(f"{host or named}:{path}" + (":" + ",".join(opts) if opts else ""))
        vol.done()
    return anonymous, binds, volumes_from


def plan_container(
    res: dict[str, Any], image: str, *, start_interval_supported: bool, uploads: str = "provider"
) -> _ContainerPlan:
    """The Engine API create request for one container resource; raises on any unmapped input."""
    inputs = Inputs(f"{res['name']} ({CONTAINER})", res["inputs"])
    inputs.get("image")  # resolved by the caller
    notes: list[str] = []
    name = str(inputs.get("name"))
    labels = _labels(inputs)
    labels.update({TEST_LABEL: TEST_VALUE, RESOURCE_LABEL: res["name"]})
    grace = inputs.get("destroyGraceSeconds")
    if grace is not None:
        labels[GRACE_LABEL] = str(int(grace))  # used by teardown(graceful=True), like a destroy
    anonymous, binds, volumes_from = _volumes(inputs)
    exposed, bindings = _ports(inputs)
    config: dict[str, Any] = {
        "Image": image,
        "Labels": labels,
        "ExposedPorts": exposed,
        "Volumes": anonymous,
        "Env": list(inputs.get("envs") or []),
    }
    optional_config = {
        "Cmd": inputs.get("command"),
        "Entrypoint": inputs.get("entrypoints"),
        "Hostname": inputs.get("hostname"),
        "Domainname": inputs.get("domainname"),
        "User": inputs.get("user"),
        "WorkingDir": inputs.get("workingDir"),
        "StopSignal": inputs.get("stopSignal"),
        "StopTimeout": inputs.get("stopTimeout"),
        "Tty": inputs.get("tty"),
        "OpenStdin": inputs.get("stdinOpen"),
        "Healthcheck": _healthcheck(inputs, start_interval_supported, notes),
    }
    config.update({k: v for k, v in optional_config.items() if v is not None})
    host: dict[str, Any] = {
        "Binds": binds,
        "Mounts": _mounts(inputs),
        "PortBindings": bindings,
        "Tmpfs": dict(inputs.get("tmpfs") or {}),
        "ReadonlyRootfs": bool(inputs.get("readOnly") or False),
        "VolumesFrom": volumes_from,
    }
    restart = inputs.get("restart") or "no"
    policy: dict[str, Any] = {"Name": restart}
    if restart == "on-failure":
        policy["MaximumRetryCount"] = int(inputs.get("maxRetryCount") or 0)
    elif inputs.get("maxRetryCount"):
        raise HarnessError(f"{inputs.where}: maxRetryCount needs restart=on-failure (restart={restart})")
    host["RestartPolicy"] = policy
    if inputs.get("logDriver") is not None or inputs.get("logOpts") is not None:
        host["LogConfig"] = {
            "Type": inputs.get("logDriver") or "json-file",
            "Config": dict(inputs.get("logOpts") or {}),
        }
    mb = 1024 * 1024
    if inputs.get("memory") is not None:
        host["Memory"] = int(inputs.get("memory")) * mb
    if inputs.get("memorySwap") is not None:
        swap = int(inputs.get("memorySwap"))
        host["MemorySwap"] = swap if swap < 0 else swap * mb
    if inputs.get("memoryReservation") is not None:
        host["MemoryReservation"] = int(inputs.get("memoryReservation")) * mb
    if inputs.get("cpus") is not None:
        host["NanoCpus"] = round(float(inputs.get("cpus")) * 1e9)
    if inputs.get("cpuShares") is not None:
        host["CpuShares"] = int(inputs.get("cpuShares"))
    if inputs.get("cpuSet") is not None:
        host["CpusetCpus"] = inputs.get("cpuSet")
    if inputs.get("shmSize") is not None:
        host["ShmSize"] = int(inputs.get("shmSize")) * mb
    if inputs.get("capabilities") is not None:
        caps = inputs.sub("capabilities", inputs.get("capabilities"))
        host["CapAdd"] = list(caps.get("adds") or [])
        host["CapDrop"] = list(caps.get("drops") or [])
        caps.done()
    simple_host = {
        "SecurityOpt": inputs.get("securityOpts"),
        "Privileged": inputs.get("privileged"),
        "Init": inputs.get("init"),
        "GroupAdd": inputs.get("groupAdds"),
        "Sysctls": inputs.get("sysctls"),
        "Dns": inputs.get("dns"),
        "IpcMode": inputs.get("ipcMode"),
        "PidMode": inputs.get("pidMode"),
        "Runtime": inputs.get("runtime"),
    }
    host.update({k: v for k, v in simple_host.items() if v is not None})
    if inputs.get("ulimits"):
        host["Ulimits"] = []
        for item in inputs.get("ulimits"):
            ul = inputs.sub("ulimits", item)
            host["Ulimits"].append({"Name": ul.get("name"), "Soft": ul.get("soft"), "Hard": ul.get("hard")})
            ul.done()
    if inputs.get("hosts"):
        host["ExtraHosts"] = []
        for item in inputs.get("hosts"):
            entry = inputs.sub("hosts", item)
            host["ExtraHosts"].append(f"{entry.get('host')}:{entry.get('ip')}")
            entry.done()
    if inputs.get("deviceRequests") or inputs.get("gpus"):
        # GPU containers cannot run on the ci engine (no NVIDIA runtime); a ci stack asking for one is wrong.
        raise HarnessError(f"{inputs.where}: requests GPUs (deviceRequests/gpus); the ci engine has none")
    networks = []
    for item in inputs.get("networksAdvanced") or []:
        net = inputs.sub("networksAdvanced", item)
        endpoint: dict[str, Any] = {"Aliases": list(net.get("aliases") or [])}
        v4, v6 = net.get("ipv4Address"), net.get("ipv6Address")
        if v4 or v6:
            endpoint["IPAMConfig"] = {k: v for k, v in (("IPv4Address", v4), ("IPv6Address", v6)) if v}
        networks.append((str(net.get("name")), endpoint))
        net.done()
    # As the provider creates it: on `network_mode` (default bridge; funcs:392), then, with
    # networksAdvanced, disconnected from bridge and connected to each (funcs:463), before the start.
    host["NetworkMode"] = inputs.get("networkMode") or "bridge"
    body_networks: dict[str, Any] = {"EndpointsConfig": {}}
    wait_for = bool(inputs.get("wait") or False)
    wait_timeout = int(inputs.get("waitTimeout") or DEFAULT_WAIT_TIMEOUT)
    for key, expected in (("mustRun", True), ("start", True), ("attach", False), ("logs", False), ("rm", False)):
        value = inputs.get(key)
        if value is not None and value != expected:
            raise HarnessError(f"{inputs.where}: {key}={value} is not supported by the harness")
    roots = [*anonymous, *(m["Target"] for m in host["Mounts"]), *(b.split(":")[1] for b in binds)]
    archives = _upload_archives(inputs, roots if uploads == "into-volumes" else None)
    inputs.done()
    body = {**config, "HostConfig": host, "NetworkingConfig": body_networks}
    return _ContainerPlan(name, body, networks, archives, wait_for, wait_timeout, notes)


def network_body(res: dict[str, Any]) -> dict[str, Any]:
    inputs = Inputs(f"{res['name']} ({NETWORK})", res["inputs"])
    labels = _labels(inputs)
    labels.update({TEST_LABEL: TEST_VALUE, RESOURCE_LABEL: res["name"]})
    body: dict[str, Any] = {
        "Name": inputs.get("name") or res["name"],
        "Driver": inputs.get("driver") or "bridge",
        "Internal": bool(inputs.get("internal") or False),
        "Attachable": bool(inputs.get("attachable") or False),
        "EnableIPv6": bool(inputs.get("ipv6") or False),
        "Options": dict(inputs.get("options") or {}),
        "Labels": labels,
        "CheckDuplicate": True,
    }
    inputs.get("checkDuplicate")  # always on: the harness names every network
    ipam: dict[str, Any] = {"Driver": inputs.get("ipamDriver") or "default", "Config": []}
    for item in inputs.get("ipamConfigs") or []:
        cfg = inputs.sub("ipamConfigs", item)
        pairs = (("Subnet", cfg.get("subnet")), ("Gateway", cfg.get("gateway")), ("IPRange", cfg.get("ipRange")))
        ipam["Config"].append({k: v for k, v in pairs if v is not None})
        cfg.done()
    body["IPAM"] = ipam
    inputs.done()
    return body


def volume_body(res: dict[str, Any]) -> dict[str, Any]:
    inputs = Inputs(f"{res['name']} ({VOLUME})", res["inputs"])
    labels = _labels(inputs)
    labels.update({TEST_LABEL: TEST_VALUE, RESOURCE_LABEL: res["name"]})
    # Without a name the mock's state name is the resource name, and containers mount it by that.
    body = {
        "Name": inputs.get("name") or res["name"],
        "Driver": inputs.get("driver") or "local",
        "DriverOpts": dict(inputs.get("driverOpts") or {}),
        "Labels": labels,
    }
    inputs.done()
    return body


def image_build(res: dict[str, Any]) -> tuple[str, list[str]]:
    """(tag, docker build argv) for a local build; pushing is not possible without a registry."""
    inputs = Inputs(f"{res['name']} ({IMAGE})", res["inputs"])
    tag = str(inputs.get("imageName"))
    if inputs.get("skipPush") is not True:
        raise HarnessError(f"{inputs.where}: skipPush is not true; the harness cannot push to a registry")
    inputs.get("buildOnPreview")  # preview only
    build = inputs.sub("build", inputs.get("build") or {})
    context = REPO / str(build.get("context") or ".")
    argv = ["docker", "build", "--label", f"{TEST_LABEL}={TEST_VALUE}", "-t", tag]
    if build.get("dockerfile") is not None:
        argv += ["-f", str(context / str(build.get("dockerfile")))]
    for key, value in sorted((build.get("args") or {}).items()):
        argv += ["--build-arg", f"{key}={value}"]
    if build.get("target") is not None:
        argv += ["--target", str(build.get("target"))]
    if build.get("platform") is not None:
        argv += ["--platform", str(build.get("platform"))]
    build.get("builderVersion")  # the local engine's default builder either way
    build.done()
    inputs.done()
    return tag, [*argv, str(context)]


def mock_repo_digest(res: dict[str, Any]) -> str:
    """The stand-in repoDigest tools.synth's mock gives an Image (what a container's image reads)."""
    built = json.dumps(res["inputs"], sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(built.encode()).hexdigest()
