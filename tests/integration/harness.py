"""Apply a synthesized stack to the real Docker engine, the way the Pulumi Docker provider would.

`pulumi up` cannot run where the integration tests run (no Pulumi CLI, no state backend), so this
module takes the resources `stacks.synth.synth_stack(..., reveal=True)` captured and creates the
networks, volumes, images and containers itself, through the Engine API on the local socket
(no SDK dependency). Every input of every applied resource must have a mapping here: an unknown
input raises `UnmappedInputError` naming it, so a new program input can never be silently dropped and
leave the tests exercising something other than what production gets.

Everything created carries the label `inference-stack.test=integration`; `teardown()` removes the
labelled containers (with their anonymous volumes) and networks. Named volumes survive a teardown,
as they survive a `pulumi destroy` of the containers; `purge_volumes()` removes them.

`apply` is idempotent: every object carries the sha256 of its inputs in a label, and an object whose
hash is unchanged is kept (a second apply of the same synth changes nothing, like a no-op `up`).
"""

from __future__ import annotations

import base64
import grp
import hashlib
import http.client
import io
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.gateway import members

REPO = Path(__file__).resolve().parents[2]
TEST_LABEL = "inference-stack.test"
TEST_VALUE = "integration"
HASH_LABEL = "inference-stack.test.inputs-sha256"
RESOURCE_LABEL = "inference-stack.test.resource"
GRACE_LABEL = "inference-stack.test.destroy-grace-seconds"
SOCKET = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")

NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/image:Image"
CONTAINER = "docker:index/container:Container"
# Types that are not Docker objects. Each is skipped with the reason recorded in `Applied.skipped`.
SKIPPED_PREFIXES = {
    "random:": "value already revealed in the synth",
    "pulumi:providers:": "provider: the harness talks to the local engine itself",
    "inference-stack:": "component resource: no object of its own",
}
# The host commands the harness runs, both only against a container the harness created: the
# gateway reload (a signal) and the gateway-membership commands (members.sh in the gateway).
RELOAD = re.compile(r"^docker kill --signal HUP ([A-Za-z0-9][A-Za-z0-9_.-]*)$")
MEMBER = re.compile(
    r"^docker exec ([A-Za-z0-9][A-Za-z0-9_.-]*) sh " + re.escape(members.SCRIPT_PATH) + " (admit|split|promote) "
)
# The canary gate: a program on stdin, run on the gateway host (here: this machine).
GATE = "python3 -"
# What each command resource ran last, and its delete, across applies in this process: Pulumi's
# state for commands. A changed command runs again (an update); one the program no longer has
# runs its delete, as `pulumi up` does after the creates.
_COMMANDS: dict[str, tuple[str, str | None]] = {}
# The provider's defaults (terraform-provider-docker): waited for 60 s, grace 0 s.
DEFAULT_WAIT_TIMEOUT = 60
RUNNING_TIMEOUT = 15.0

# The vLLM image Pulumi.ci.yaml pins; tests/integration/images builds it as VLLM_IMAGE, another name.
PINNED_VLLM = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0"


class HarnessError(RuntimeError):
    """Something the real provider would also have failed on, or the harness cannot do."""

    applied: Applied | None = None
    """What `apply` had created when it failed, for a cleanup limited to it (`teardown(only=...)`)."""


class UnmappedInputError(HarnessError):
    """A resource input with no mapping to the Engine API."""


class UnknownResourceTypeError(HarnessError):
    """A resource type the harness neither applies nor knowingly skips."""


# --- Engine API ---------------------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class EngineError(HarnessError):
    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status


def api(
    method: str,
    path: str,
    body: Any = None,
    *,
    params: dict[str, str] | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
    ok: Iterable[int] = (200, 201, 204, 304),
    timeout: float = 120,
) -> Any:
    """One Engine API call; JSON in and out. Raises EngineError with the daemon's message."""
    url = path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn = _UnixConnection(SOCKET, timeout)
    try:
        headers = {"Content-Type": content_type} if data is not None else {}
        conn.request(method, url, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.status not in tuple(ok):
        try:
            message = json.loads(payload).get("message", payload.decode(errors="replace"))
        except ValueError:
            message = payload.decode(errors="replace")
        raise EngineError(method, path, response.status, message)
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


def _api_version() -> tuple[int, int]:
    version = api("GET", "/version")["ApiVersion"]
    major, minor = version.split(".")
    return int(major), int(minor)


def _get(path: str) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = api("GET", path)
    except EngineError as err:
        if err.status == 404:
            return None
        raise
    return result


def _labelled(kind: str) -> list[dict[str, Any]]:
    filters = json.dumps({"label": [f"{TEST_LABEL}={TEST_VALUE}"]})
    params = {"filters": filters, **({"all": "1"} if kind == "containers" else {})}
    result = api("GET", f"/{kind}" + ("/json" if kind == "containers" else ""), params=params)
    if kind == "volumes":
        return list(result.get("Volumes") or [])
    return list(result)


def _logs_tail(container: str, lines: int = 60) -> str:
    result = subprocess.run(
        ["docker", "logs", "--tail", str(lines), container], capture_output=True, text=True, check=False
    )
    return (result.stdout + result.stderr)[-8000:]


# --- input mapping ------------------------------------------------------------------------------


class _Inputs:
    """Reads a resource's inputs and checks at the end that every key was consumed."""

    def __init__(self, where: str, inputs: dict[str, Any]) -> None:
        self.where = where
        self.inputs = dict(inputs)
        self.used: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.inputs.get(key, default)

    def sub(self, key: str, value: dict[str, Any]) -> _Inputs:
        return _Inputs(f"{self.where}.{key}", value)

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


def _labels(inputs: _Inputs, key: str = "labels") -> dict[str, str]:
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


def _upload_archives(inputs: _Inputs, volume_roots: list[str] | None) -> list[tuple[str, bytes]]:
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


def _healthcheck(inputs: _Inputs, start_interval_supported: bool, notes: list[str]) -> dict[str, Any] | None:
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


def _ports(inputs: _Inputs) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
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


def _mounts(inputs: _Inputs) -> list[dict[str, Any]]:
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


def _volumes(inputs: _Inputs) -> tuple[dict[str, Any], list[str], list[str]]:
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
    res: dict[str, Any], image: str, *, start_interval_supported: bool, input_hash: str, uploads: str = "provider"
) -> _ContainerPlan:
    """The Engine API create request for one container resource; raises on any unmapped input."""
    inputs = _Inputs(f"{res['name']} ({CONTAINER})", res["inputs"])
    inputs.get("image")  # resolved by the caller
    notes: list[str] = []
    name = str(inputs.get("name"))
    labels = _labels(inputs)
    labels.update({TEST_LABEL: TEST_VALUE, HASH_LABEL: input_hash, RESOURCE_LABEL: res["name"]})
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
    network_mode = inputs.get("networkMode")
    if networks:
        # API 1.41 attaches one network at create; the rest are connected before the start.
        host["NetworkMode"] = networks[0][0]
        body_networks = {"EndpointsConfig": {networks[0][0]: networks[0][1]}}
    else:
        if network_mode is not None:
            host["NetworkMode"] = network_mode
        body_networks = {"EndpointsConfig": {}}
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
    return _ContainerPlan(name, body, networks[1:], archives, wait_for, wait_timeout, notes)


def _network_body(res: dict[str, Any], input_hash: str) -> dict[str, Any]:
    inputs = _Inputs(f"{res['name']} ({NETWORK})", res["inputs"])
    labels = _labels(inputs)
    labels.update({TEST_LABEL: TEST_VALUE, HASH_LABEL: input_hash, RESOURCE_LABEL: res["name"]})
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


def _volume_body(res: dict[str, Any], input_hash: str) -> dict[str, Any]:
    inputs = _Inputs(f"{res['name']} ({VOLUME})", res["inputs"])
    labels = _labels(inputs)
    labels.update({TEST_LABEL: TEST_VALUE, HASH_LABEL: input_hash, RESOURCE_LABEL: res["name"]})
    # Without a name the mock's state name is the resource name, and containers mount it by that.
    body = {
        "Name": inputs.get("name") or res["name"],
        "Driver": inputs.get("driver") or "local",
        "DriverOpts": dict(inputs.get("driverOpts") or {}),
        "Labels": labels,
    }
    inputs.done()
    return body


def _image_build(res: dict[str, Any]) -> tuple[str, list[str]]:
    """(tag, docker build argv) for a local build; pushing is not possible without a registry."""
    inputs = _Inputs(f"{res['name']} ({IMAGE})", res["inputs"])
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


def inputs_hash(res: dict[str, Any], extra: Any = None) -> str:
    canonical = json.dumps([res["type"], res["inputs"], extra], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def mock_repo_digest(res: dict[str, Any]) -> str:
    """The stand-in repoDigest stacks.synth's mock gives an Image (what a container's image reads)."""
    built = json.dumps(res["inputs"], sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(built.encode()).hexdigest()


# --- apply --------------------------------------------------------------------------------------


@dataclass
class Applied:
    containers: dict[str, str] = field(default_factory=dict)
    """Resource name -> container id."""
    names: dict[str, str] = field(default_factory=dict)
    """Resource name -> Docker container name."""
    networks: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    """Resource name -> Docker volume name."""
    images: dict[str, str] = field(default_factory=dict)
    """Image resource name -> built image id."""
    actions: dict[str, str] = field(default_factory=dict)
    """Resource name -> created / kept / replaced / ran / skipped."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Resource name -> why it was not applied."""
    notes: list[str] = field(default_factory=list)
    """Inputs the engine accepted but does not honour (e.g. healthcheck startInterval on API < 1.44)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Resource name -> seconds from create to running (or healthy, with wait)."""
    reports: dict[str, str] = field(default_factory=dict)
    """Canary gate resource name -> what the gate printed."""

    def inspect(self, resource: str) -> dict[str, Any]:
        return inspect(self.containers[resource])

    def url(self, resource: str, port: int, network: str | None = None) -> str:
        """http://host:port reaching `port` of a container: its published binding when there is one,
        else its address on `network` (default: its first network)."""
        info = self.inspect(resource)
        for binding in (info["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []:
            host_ip = binding["HostIp"] or "127.0.0.1"
            host_ip = "127.0.0.1" if host_ip == "0.0.0.0" else host_ip
            return f"http://{host_ip}:{binding['HostPort']}"
        nets = info["NetworkSettings"]["Networks"]
        chosen = nets[network] if network else next(iter(nets.values()))
        return f"http://{chosen['IPAddress']}:{port}"


def inspect(name_or_id: str) -> dict[str, Any]:
    """`docker inspect` of a container."""
    result: dict[str, Any] = api("GET", f"/containers/{urllib.parse.quote(name_or_id)}/json")
    return result


def _resolve_image(res: dict[str, Any], synth: Any, built: dict[str, str], digests: dict[str, str]) -> str:
    image = str(res["inputs"].get("image"))
    if image in digests:
        return built[digests[image]]
    image_deps = [d for d in synth.depends.get(res["name"], ()) if d in built]
    if image.startswith("sha256:") and _get(f"/images/{image}/json") is None and len(image_deps) == 1:
        # The mock's digest did not match the recomputed one; the container depends on one Image only.
        return built[image_deps[0]]
    if _get(f"/images/{urllib.parse.quote(image, safe='')}/json") is None:
        raise HarnessError(f"{res['name']}: image {image} is not on the engine (see tests/integration/images)")
    return image


def _order(resources: list[dict[str, Any]], depends: dict[str, set[str]]) -> dict[str, set[str]]:
    names = {r["name"] for r in resources}
    return {r["name"]: {d for d in depends.get(r["name"], ()) if d in names} for r in resources}


def _run_graph(graph: dict[str, set[str]], work: Callable[[str], None], max_workers: int = 8) -> None:
    """Runs work(name) for every node once all its dependencies are done, independent ones in
    parallel (as the Pulumi engine does). The first failure stops new work and is raised."""
    done: set[str] = set()
    running: dict[Future[None], str] = {}
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        while True:
            if error is None:
                started = set(running.values())
                for name, deps in graph.items():
                    if name not in done and name not in started and deps <= done:
                        running[pool.submit(work, name)] = name
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                exc = future.exception()
                if exc is not None and error is None:
                    error = exc
                done.add(name)
    if error is not None:
        raise error
    missing = set(graph) - done
    if missing:
        raise HarnessError(f"dependency cycle or missing dependency among {sorted(missing)}")


def _wait_container(name: str, want_healthy: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = inspect(name)["State"]
        health = (state.get("Health") or {}).get("Status")
        if want_healthy and health == "healthy":
            return
        if not want_healthy and state.get("Running"):
            return
        if state.get("Status") in ("exited", "dead") and not state.get("Restarting"):
            raise HarnessError(
                f"container {name} exited with {state.get('ExitCode')} ({state.get('Error') or 'no error'});"
                f" logs:\n{_logs_tail(name)}"
            )
        if time.monotonic() > deadline:
            log = (state.get("Health") or {}).get("Log") or []
            last = log[-1] if log else {}
            raise HarnessError(
                f"container {name} not {'healthy' if want_healthy else 'running'} after {timeout:.0f} s"
                f" (status {state.get('Status')}, health {health}); last health check: {json.dumps(last)[:2000]};"
                f" logs:\n{_logs_tail(name)}"
            )
        time.sleep(1)


def _up_to_date(kind: str, existing: dict[str, Any] | None, name: str, digest: str) -> bool | None:
    """None: nothing there. True: ours with these inputs. False: ours with other inputs. Another
    owner's object of that name is an error, never touched."""
    if existing is None:
        return None
    labels = existing.get("Labels") or {}
    if labels.get(TEST_LABEL) != TEST_VALUE:
        raise HarnessError(f"{kind} {name} exists and was not created by the harness")
    return labels.get(HASH_LABEL) == digest


def _ensure_network(res: dict[str, Any]) -> str:
    digest = inputs_hash(res)
    body = _network_body(res, digest)
    existing = _get(f"/networks/{urllib.parse.quote(body['Name'])}")
    current = _up_to_date("network", existing, body["Name"], digest)
    if existing is not None and current:
        return str(existing["Id"])
    if existing is not None:
        api("DELETE", f"/networks/{existing['Id']}")
    return str(api("POST", "/networks/create", body)["Id"])


def _ensure_volume(res: dict[str, Any]) -> str:
    digest = inputs_hash(res)
    body = _volume_body(res, digest)
    current = _up_to_date("volume", _get(f"/volumes/{urllib.parse.quote(body['Name'])}"), body["Name"], digest)
    if current:
        return str(body["Name"])
    if current is False:
        # Changed inputs replace the volume, as the provider does (ForceNew); fails while mounted.
        api("DELETE", f"/volumes/{urllib.parse.quote(body['Name'])}")
    api("POST", "/volumes/create", body)
    return str(body["Name"])


def _build_image(res: dict[str, Any]) -> str:
    tag, argv = _image_build(res)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise HarnessError(f"{res['name']}: {shlex.join(argv)} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    image = _get(f"/images/{urllib.parse.quote(tag, safe='')}/json")
    assert image is not None
    return str(image["Id"])


def _remove_container(id_or_name: str) -> None:
    try:
        api("DELETE", f"/containers/{id_or_name}", params={"force": "1", "v": "1"})
    except EngineError as err:
        if err.status != 404:
            raise


def _ensure_container(
    res: dict[str, Any],
    image: str,
    start_interval_supported: bool,
    uploads: str,
    applied: Applied,
    drain: str | None = None,
) -> None:
    """Create the container, keep it when unchanged, or replace it. `drain` is the delete command
    of the worker's gateway membership: Pulumi runs it before a delete-before-replace worker goes
    (a dependent that is replaced with it is deleted first), and so does the harness."""
    image_info = _get(f"/images/{urllib.parse.quote(image, safe='')}/json")
    image_id = image_info["Id"] if image_info else image
    digest = inputs_hash(res, [image_id, uploads])
    plan = plan_container(
        res, image, start_interval_supported=start_interval_supported, input_hash=digest, uploads=uploads
    )
    applied.notes.extend(plan.notes)
    existing = _get(f"/containers/{urllib.parse.quote(plan.name)}/json")
    action = "created"
    if existing is not None:
        labels = existing["Config"].get("Labels") or {}
        if labels.get(TEST_LABEL) != TEST_VALUE:
            raise HarnessError(f"container {plan.name} exists and was not created by the harness")
        if labels.get(HASH_LABEL) == digest and existing["State"].get("Running"):
            applied.containers[res["name"]] = existing["Id"]
            applied.names[res["name"]] = plan.name
            applied.actions[res["name"]] = "kept"
            return
        if drain is not None:
            _run_host_command(res["name"] + " drain", drain)
        _remove_container(existing["Id"])
        action = "replaced"
    started = time.monotonic()
    created = api("POST", "/containers/create", plan.body, params={"name": plan.name})
    cid = str(created["Id"])
    for network, endpoint in plan.extra_networks:
        api("POST", f"/networks/{urllib.parse.quote(network)}/connect", {"Container": cid, "EndpointConfig": endpoint})
    applied.containers[res["name"]] = cid
    for root, archive in plan.archives:
        # copyUIDGID keeps the tar's uid/gid (the `owner`/`group` inputs); without it Docker chowns to root.
        try:
            api(
                "PUT",
                f"/containers/{cid}/archive",
                params={"path": root},
                raw=archive,
                content_type="application/x-tar",
            )
        except EngineError as err:
            hint = ""
            if "read-only" in str(err) and root == "/":
                hint = (
                    " (the Docker provider extracts every upload at /, which Docker refuses for readOnly"
                    " containers; apply(..., uploads='into-volumes') extracts at the volume instead)"
                )
            raise HarnessError(f"{res['name']}: upload failed: {err}{hint}") from err
    api("POST", f"/containers/{cid}/start")
    applied.containers[res["name"]] = cid
    applied.names[res["name"]] = plan.name
    applied.actions[res["name"]] = action
    _wait_container(plan.name, plan.wait, plan.wait_timeout if plan.wait else RUNNING_TIMEOUT)
    applied.seconds[res["name"]] = round(time.monotonic() - started, 1)


def _check_type(res: dict[str, Any]) -> str | None:
    """None for a type the harness applies, else the reason it is skipped; raises for unknown types."""
    type_ = res["type"]
    if type_ in (NETWORK, VOLUME, IMAGE, CONTAINER):
        return None
    if type_ in ("command:local:Command", "command:remote:Command"):
        return "host provisioning step: not run against this machine"
    for prefix, reason in SKIPPED_PREFIXES.items():
        if type_.startswith(prefix):
            return reason
    raise UnknownResourceTypeError(f"{res['name']}: resource type {type_} has no mapping in the harness")


def apply(synth: Any, *, uploads: str = "provider", max_workers: int = 8) -> Applied:
    """Create (or keep, when unchanged) every Docker object of `synth`: networks, volumes, images,
    then containers and the gateway reload in dependency order, independent ones in parallel.
    Raises on the first failure, leaving what was created for `teardown()`.

    `uploads="provider"` extracts uploads at / like the Docker provider (refused for readOnly
    containers); `uploads="into-volumes"` extracts a file at the volume it lands in, which works."""
    if uploads not in ("provider", "into-volumes"):
        raise ValueError(f"uploads={uploads!r}: 'provider' or 'into-volumes'")
    resources: list[dict[str, Any]] = list(synth.resources)
    applied = Applied()
    for res in resources:
        reason = _check_type(res)
        if reason is not None and not (
            res["type"] == "command:local:Command" and (_host_command_target(res) or _is_gate(res))
        ):
            applied.skipped[res["name"]] = reason
            applied.actions[res["name"]] = "skipped"
    supported = _api_version() >= (1, 44)
    for res in resources:
        if res["type"] == CONTAINER:
            # Checked before anything is created: a mapping error must not leave half a stack.
            plan_container(res, "x", start_interval_supported=True, input_hash="", uploads=uploads)
        elif res["type"] == NETWORK:
            _network_body(res, "")
        elif res["type"] == VOLUME:
            _volume_body(res, "")
        elif res["type"] == IMAGE:
            _image_build(res)
    try:
        for res in resources:
            if res["type"] == NETWORK:
                applied.networks[res["name"]] = _ensure_network(res)
                applied.actions[res["name"]] = "ensured"
        for res in resources:
            if res["type"] == VOLUME:
                applied.volumes[res["name"]] = _ensure_volume(res)
                applied.actions[res["name"]] = "ensured"
        digests: dict[str, str] = {}
        for res in resources:
            if res["type"] == IMAGE:
                applied.images[res["name"]] = _build_image(res)
                digests[mock_repo_digest(res)] = res["name"]
                applied.actions[res["name"]] = "built"
        runnable = [
            r
            for r in resources
            if r["type"] == CONTAINER or (r["name"] not in applied.skipped and r["type"].startswith("command:"))
        ]
        # Names are unique per type only (the `redis` container sits in the `redis` component).
        by_name = {r["name"]: r for r in runnable}
        drains = _drains(runnable, by_name)
        graph = _order(runnable, synth.depends)

        def work(name: str) -> None:
            res = by_name[name]
            if res["type"] == CONTAINER:
                image = _resolve_image(res, synth, applied.images, digests)
                _ensure_container(res, image, supported, uploads, applied, drains.get(name))
            elif _reload_target(res):
                _run_reload(res, graph[name], applied)
            elif _is_gate(res):
                _run_gate(res, graph[name], applied)
            else:
                _run_member(res, graph[name], applied)

        _run_graph(graph, work, max_workers)
        for name in [n for n in _COMMANDS if n not in by_name]:
            _, delete = _COMMANDS.pop(name)
            if delete:
                _run_host_command(f"{name} delete", delete)
            applied.actions[name] = "deleted"
    except HarnessError as err:
        err.applied = applied
        raise
    return applied


def _reload_target(res: dict[str, Any]) -> str | None:
    match = RELOAD.match(str(res["inputs"].get("create", "")))
    return match.group(1) if match else None


def _drains(runnable: list[dict[str, Any]], by_name: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Worker container resource -> the delete command (the drain) of its gateway membership,
    the member command its container id triggers: the one that command last ran with (as Pulumi
    deletes with the inputs in its state), else the program's."""
    found = {}
    for res in runnable:
        if members.parse_admit(str(res["inputs"].get("create", ""))) is None:
            continue
        for trigger in res["inputs"].get("triggers", []):
            target = by_name.get(str(trigger).removesuffix("-id"))
            labels = {item["label"]: item["value"] for item in (target or {}).get("inputs", {}).get("labels", [])}
            if target is not None and labels.get("inference-stack.role") == "worker":
                recorded = _COMMANDS[res["name"]][1] if res["name"] in _COMMANDS else None
                found[target["name"]] = recorded or str(res["inputs"]["delete"])
    return found


def _member_target(res: dict[str, Any]) -> str | None:
    """The gateway a member command (or the gateway's readmit, a `sh -c` of several) runs in."""
    create = str(res["inputs"].get("create", ""))
    match = MEMBER.match(create)
    if match:
        return match.group(1)
    words = shlex.split(create)
    if words[:2] == ["sh", "-c"] and len(words) == 3:
        found = {m.group(1) if (m := MEMBER.match(part.strip())) else None for part in words[2].split(" && ")}
        if len(found) == 1 and None not in found:
            return found.pop()
    return None


def _host_command_target(res: dict[str, Any]) -> str | None:
    return _reload_target(res) or _member_target(res)


def _run_member(res: dict[str, Any], deps: set[str], applied: Applied) -> None:
    """A worker's gateway-membership command: admits the worker (members.sh in the gateway
    container) when the worker or the gateway was (re)created, as Pulumi re-runs a Command whose
    triggers changed. Its `delete` (the drain) is what Pulumi runs before the worker goes."""
    inputs = _Inputs(f"{res['name']} ({res['type']})", res["inputs"])
    create = str(inputs.get("create"))
    inputs.get("delete")
    inputs.get("triggers")
    inputs.done()
    target = _member_target(res)
    if target not in applied.names.values():
        raise HarnessError(f"{res['name']}: runs in {target}, which the harness did not create")
    if _unchanged(res, deps, applied):
        applied.actions[res["name"]] = "kept"
        return
    _run_host_command(res["name"], create)
    _ran(res)
    applied.actions[res["name"]] = "ran"


def _unchanged(res: dict[str, Any], deps: set[str], applied: Applied) -> bool:
    """Pulumi leaves a command alone when its inputs are as in its state and nothing it depends
    on was (re)created."""
    same = _COMMANDS.get(res["name"], ("",))[0] == _fingerprint(res)
    return same and all(applied.actions.get(d) == "kept" for d in deps)


def _fingerprint(res: dict[str, Any]) -> str:
    return json.dumps([res["inputs"].get("create"), res["inputs"].get("stdin")])


def _ran(res: dict[str, Any]) -> None:
    delete = res["inputs"].get("delete")
    _COMMANDS[res["name"]] = (_fingerprint(res), None if delete is None else str(delete))


def _is_gate(res: dict[str, Any]) -> bool:
    return res["type"] == "command:local:Command" and res["inputs"].get("create") == GATE


class GateFailedError(HarnessError):
    """The canary gate failed; `report` is what it printed."""

    def __init__(self, message: str, report: str) -> None:
        super().__init__(message)
        self.report = report


def _run_gate(res: dict[str, Any], deps: set[str], applied: Applied) -> None:
    """The canary gate: its program and parameters on stdin, as the command provider passes them."""
    inputs = _Inputs(f"{res['name']} ({res['type']})", res["inputs"])
    inputs.get("create")
    stdin = str(inputs.get("stdin"))
    inputs.get("triggers")
    inputs.done()
    if _unchanged(res, deps, applied):
        applied.actions[res["name"]] = "kept"
        return
    started = time.monotonic()
    ran = subprocess.run(["python3", "-"], input=stdin, capture_output=True, text=True, timeout=900)
    applied.seconds[res["name"]] = round(time.monotonic() - started, 1)
    report = (ran.stdout + ran.stderr).strip()
    applied.reports[res["name"]] = report
    if ran.returncode != 0:
        raise GateFailedError(f"{res['name']}: the canary gate failed:\n{report}", report)
    _ran(res)
    applied.actions[res["name"]] = "ran"


def _run_host_command(what: str, command: str) -> str:
    ran = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=600)
    if ran.returncode != 0:
        raise HarnessError(f"{what}: {command!r} exited {ran.returncode}: {ran.stderr.strip()}")
    return ran.stdout


def _run_reload(res: dict[str, Any], deps: set[str], applied: Applied) -> None:
    """The gateway reload: runs when a container it is triggered by was (re)created, as Pulumi
    re-runs a Command whose triggers (the container ids) changed."""
    inputs = _Inputs(f"{res['name']} ({res['type']})", res["inputs"])
    target = _reload_target(res)
    inputs.get("create")
    inputs.get("triggers")
    inputs.done()
    if target not in applied.names.values():
        raise HarnessError(f"{res['name']}: signals {target}, which the harness did not create")
    if all(applied.actions.get(d) == "kept" for d in deps):
        applied.actions[res["name"]] = "kept"
        return
    api("POST", f"/containers/{urllib.parse.quote(str(target))}/kill", params={"signal": "HUP"})
    applied.actions[res["name"]] = "ran"


# --- teardown -----------------------------------------------------------------------------------


def teardown(graceful: bool = False, only: Applied | None = None) -> list[str]:
    """Remove every labelled container (with its anonymous volumes) and network; named volumes stay,
    as after a `pulumi destroy` of the containers. `graceful` stops each container first with its
    destroyGraceSeconds, as the provider's delete does. `only` limits the removal to what one
    `apply` created (tests that share the engine with a running stack). Returns the names removed."""
    _COMMANDS.clear()
    removed = []
    for container in _labelled("containers"):
        if only is not None and container["Id"] not in only.containers.values():
            continue
        if graceful and container.get("State") == "running":
            grace = (container.get("Labels") or {}).get(GRACE_LABEL, "0")
            api("POST", f"/containers/{container['Id']}/stop", params={"t": grace}, timeout=int(grace) + 60)
        _remove_container(container["Id"])
        removed.append(container["Names"][0].lstrip("/"))
    for network in _labelled("networks"):
        if only is not None and network["Id"] not in only.networks.values():
            continue
        api("DELETE", f"/networks/{network['Id']}", ok=(204, 404))
        removed.append(network["Name"])
    return removed


def purge_volumes() -> list[str]:
    """Remove the labelled named volumes (end of a CI session: data would otherwise pile up)."""
    removed = []
    for volume in _labelled("volumes"):
        api("DELETE", f"/volumes/{urllib.parse.quote(volume['Name'])}", ok=(204, 404))
        removed.append(volume["Name"])
    return removed


# --- images and model cache ---------------------------------------------------------------------


def ensure_stack_images(synth: Any = None) -> dict[str, float]:
    """Build the images the ci stack pins (tests/integration/images) and tag the vLLM build with the
    name the stack pins (every worker image of `synth`, else PINNED_VLLM), which the images module
    does not use. Returns the images module's build seconds per tag."""
    from tests.integration.images import VLLM_IMAGE, ensure_images

    timings = ensure_images()
    workers = {str(r["inputs"]["image"]) for r in _workers(synth)} if synth is not None else {PINNED_VLLM}
    source = _get(f"/images/{urllib.parse.quote(VLLM_IMAGE, safe='')}/json")
    assert source is not None
    for name in sorted(workers):
        target = _get(f"/images/{urllib.parse.quote(name, safe='')}/json")
        if target is None or target["Id"] != source["Id"]:
            repo, tag = name.rsplit(":", 1)
            api("POST", f"/images/{urllib.parse.quote(VLLM_IMAGE, safe='')}/tag", params={"repo": repo, "tag": tag})
    return timings


def _workers(synth: Any) -> list[dict[str, Any]]:
    """The vLLM worker containers: the ones given a model `--revision` on their command line."""
    return [r for r in synth.of_type(CONTAINER) if "--revision" in (r["inputs"].get("command") or [])]


def _worker_model(synth: Any) -> list[tuple[str, str, str]]:
    """(volume resource, model id, revision) for every container that mounts an HF cache and is
    given `--revision` on its command line."""
    out = []
    volumes = {(r["inputs"].get("name") or r["name"]): r["name"] for r in synth.of_type(VOLUME)}
    for res in _workers(synth):
        command = res["inputs"]["command"]
        home = next(e.split("=", 1)[1] for e in res["inputs"].get("envs", []) if e.startswith("HF_HOME="))
        for mount in res["inputs"].get("mounts") or []:
            if mount.get("target") == home and mount.get("source") in volumes:
                out.append((volumes[mount["source"]], command[0], command[command.index("--revision") + 1]))
    return sorted(set(out))


def seed_model_cache(synth: Any, model_dir: Path | None = None, releases: dict[str, Path] | None = None) -> list[Path]:
    """Copy the test model (scripts/test-model.sh) into the host directory the workers' model-cache
    volume binds, in Hugging Face's hub layout under the model id and revision of the workers'
    command line; `releases` maps a revision to another model directory to serve under it (a wrong
    release, say). Creates the host directory: for a local host nothing in the program does (the
    storage step runs only over ssh). Returns the snapshot directories written."""
    default = model_dir or REPO / ".cache/test-model/smollm2-135m"
    for source in (default, *(releases or {}).values()):
        if not (source / "config.json").is_file():
            raise HarnessError(f"{source} has no model; run scripts/test-model.sh")
    written = []
    for volume_name, model_id, revision in _worker_model(synth):
        source = (releases or {}).get(revision, default)
        volume = next(r for r in synth.of_type(VOLUME) if r["name"] == volume_name)
        opts = volume["inputs"].get("driverOpts") or {}
        if opts.get("o") != "bind" or not opts.get("device"):
            raise HarnessError(f"{volume_name}: not a bind of a host directory ({opts}); cannot seed it")
        root = Path(opts["device"]) / "hub" / ("models--" + model_id.replace("/", "--"))
        snapshot = root / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        for file in source.iterdir():
            if file.is_file():
                target = snapshot / file.name
                if not target.exists() or target.stat().st_size != file.stat().st_size:
                    shutil.copy2(file, target)
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(revision)
        written.append(snapshot)
    if not written:
        raise HarnessError("no worker container mounts a model cache with --revision on its command line")
    return written
