"""Apply a synthesized stack to the real Docker engine the way `pulumi up` and the real providers would.

`pulumi up` cannot run where the integration tests run (no Pulumi CLI, no state backend), so this
module takes the resources `tools.synth.synth_stack(..., reveal=True)` captured and plays the engine:

- **State.** After each create it stores what the provider's Read makes of the object (a container's
  `docker inspect` through `stacks.provider_rules.container_state`), in a `State` per stack.
- **Plan.** A later `apply` diffs the new inputs against that state with the providers' rules
  (`tests/integration/plan.py`), prints the plan as `pulumi preview --diff` lists it, and keeps it
  in `Applied.plan`.
- **Carry out.** Containers are replaced delete-first (dependents the replacement replaces, such as a
  worker's gateway membership, deleted before them), other resources create-first; an in-place update
  is one ContainerUpdate on the same container id; a state-only change touches nothing. Commands
  follow pulumi-command: `/bin/sh -c`, an update re-runs `create` when there is no `update`,
  `triggers` replace, the old command's stored `delete` runs at the end, `depends_on` re-runs nothing.

Every input of every applied resource must have a mapping here: an unknown input raises
`UnmappedInputError` naming it, so a new program input can never be silently dropped.
Everything created carries the label `inference-stack.test=integration`; `teardown()` removes the
labelled containers (with their anonymous volumes) and networks. Named volumes survive a teardown,
as they survive a `pulumi destroy` of the containers; `purge_volumes()` removes them.
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
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.gateway import members
from stacks import provider_rules
from tests.integration import plan as plan_mod

REPO = Path(__file__).resolve().parents[2]
TEST_LABEL = "inference-stack.test"
TEST_VALUE = "integration"
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


def api_version() -> tuple[int, int]:
    version = api("GET", "/version")["ApiVersion"]
    major, minor = version.split(".")
    return int(major), int(minor)


def get_or_none(path: str) -> dict[str, Any] | None:
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
    res: dict[str, Any], image: str, *, start_interval_supported: bool, uploads: str = "provider"
) -> _ContainerPlan:
    """The Engine API create request for one container resource; raises on any unmapped input."""
    inputs = _Inputs(f"{res['name']} ({CONTAINER})", res["inputs"])
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


def _network_body(res: dict[str, Any]) -> dict[str, Any]:
    inputs = _Inputs(f"{res['name']} ({NETWORK})", res["inputs"])
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


def _volume_body(res: dict[str, Any]) -> dict[str, Any]:
    inputs = _Inputs(f"{res['name']} ({VOLUME})", res["inputs"])
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


def mock_repo_digest(res: dict[str, Any]) -> str:
    """The stand-in repoDigest tools.synth's mock gives an Image (what a container's image reads)."""
    built = json.dumps(res["inputs"], sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(built.encode()).hexdigest()


# --- state and plan -----------------------------------------------------------------------------

# The harness's own labels: not program inputs, so not part of the provider's read-back either.
HARNESS_LABELS = (TEST_LABEL, RESOURCE_LABEL, GRACE_LABEL)
# What a container-update step sends: the fields the provider's Update passes to ContainerUpdate
# (resource_docker_container_funcs.go:1031-1060 at the pin in `stacks.provider_rules`); NanoCpus is
# not among them, `cpus` replaces.
UPDATE_FIELDS = ("Memory", "MemorySwap", "MemoryReservation", "CpuShares", "CpusetCpus", "RestartPolicy")


@dataclass
class Entry:
    """One resource in the state: its inputs as the provider stored them, and its id."""

    type: str
    inputs: dict[str, Any]
    id: str
    stdout: str = ""
    stderr: str = ""


@dataclass
class State:
    """Pulumi's state for one stack. A later `apply` diffs the program against it, not against
    what the program sent last time."""

    entries: dict[str, Entry] = field(default_factory=dict)


STATE = State()
"""The default stack's state; a test that applies a stack of its own passes its own `State`."""


def _applied_kinds(res: dict[str, Any]) -> bool:
    return res["type"] in (NETWORK, VOLUME, IMAGE, CONTAINER) or (
        res["type"] == "command:local:Command" and bool(_host_command_target(res) or _is_gate(res))
    )


def _resolved(
    res: dict[str, Any], ids: dict[str, str | None], images: dict[str, str], digests: dict[str, str]
) -> dict[str, Any]:
    """The inputs the provider receives: an Image's mock digest as the built image's id, and a
    trigger that is another resource's id as that id (`plan.UNKNOWN` while it is still to be made)."""
    inputs = dict(res["inputs"])
    if res["type"] == CONTAINER and str(inputs.get("image")) in digests:
        inputs["image"] = images[digests[str(inputs["image"])]]
    if "triggers" in inputs:
        triggers = []
        for value in inputs["triggers"] or []:
            ref = str(value).removesuffix("-id")
            if str(value).endswith("-id") and ref in ids:
                triggers.append(ids[ref] or plan_mod.UNKNOWN)
            else:
                triggers.append(value)
        inputs["triggers"] = triggers
    return inputs


def _trigger_refs(res: dict[str, Any]) -> set[str]:
    return {str(t).removesuffix("-id") for t in res["inputs"].get("triggers") or [] if str(t).endswith("-id")}


def build_plan(
    resources: list[dict[str, Any]], state: State, images: dict[str, str], digests: dict[str, str]
) -> plan_mod.Plan:
    """Steps for every applied resource, and a delete for every one in state the program lost.
    Containers first: a command triggered by a container's id is replaced when the container is."""
    plan = plan_mod.Plan()
    ids: dict[str, str | None] = {}
    ordered = sorted(resources, key=lambda r: r["type"].startswith("command:"))
    for res in ordered:
        entry = state.entries.get(res["name"])
        new = _resolved(res, ids, images, digests)
        step = plan_mod.step_for(res["name"], res["type"], new, None if entry is None else entry.inputs)
        plan.steps[res["name"]] = step
        ids[res["name"]] = entry.id if entry is not None and step.op not in ("create", "replace") else None
    names = {r["name"] for r in resources}
    for name, entry in state.entries.items():
        if name not in names:
            plan.steps[name] = plan_mod.Step(name, entry.type, "delete")
    by_name = {r["name"]: r for r in resources}
    for res in resources:
        step = plan.steps[res["name"]]
        if res["type"].startswith("command:") and step.op == "replace":
            replaced = sorted(r for r in _trigger_refs(res) if r in by_name and plan.steps[r].op == "replace")
            if replaced and all(by_name[r]["type"] == CONTAINER for r in replaced):
                step.deleted_before = replaced
                step.reason = f"deleted before {', '.join(replaced)}, which is replaced delete-first"
    return plan


def written(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The state after an update: Update does not end in Read, so it stores the new inputs as
    written; an Optional+Computed input left out keeps its stored value (`stacks/provider_rules.py`)."""
    computed = provider_rules.COMPUTED[CONTAINER]
    return {**{k: v for k, v in old.items() if k in computed and k not in new}, **new}


def _read(info: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The provider's Read of a `docker inspect`, without the harness's own labels."""
    labels = {k: v for k, v in (info["Config"].get("Labels") or {}).items() if k not in HARNESS_LABELS}
    return provider_rules.container_state({**info, "Config": {**info["Config"], "Labels": labels}}, inputs)


def readback(cid: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """What the provider stores after a create: its Read of the real `docker inspect`."""
    return _read(inspect(cid), inputs)


def predicted_state(res: dict[str, Any], **daemon: Any) -> dict[str, Any]:
    """What the provider would store for a container resource, from its inputs alone: the create
    request mapped as for the engine, the daemon's additions (`plan.engine_inspect`, with
    `daemon` its variants), then Read. The check for stacks no engine here can run."""
    inputs = res["inputs"]
    # The ci engine has no GPUs, so the mapping refuses device requests; the daemon reports them
    # as sent, which is what the provider's Read flattens.
    cpu_only = {k: v for k, v in inputs.items() if k != "deviceRequests"}
    body = plan_container({**res, "inputs": cpu_only}, str(inputs["image"]), start_interval_supported=True).body
    if inputs.get("deviceRequests"):
        body["HostConfig"]["DeviceRequests"] = [
            {
                "Driver": d.get("driver", ""),
                "Count": d.get("count", 0),
                "DeviceIDs": d.get("deviceIds"),
                "Capabilities": [d.get("capabilities") or []],
            }
            for d in inputs["deviceRequests"]
        ]
    return _read(plan_mod.engine_inspect(str(inputs["name"]), body, **daemon), inputs)


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
    """Resource name -> created / kept / updated / recorded / replaced / deleted / ran / skipped."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Resource name -> why it was not applied."""
    notes: list[str] = field(default_factory=list)
    """Inputs the engine accepted but does not honour (e.g. healthcheck startInterval on API < 1.44)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Resource name -> seconds from create to running (or healthy, with wait)."""
    reports: dict[str, str] = field(default_factory=dict)
    """Canary gate resource name -> what the gate printed."""
    plan: plan_mod.Plan = field(default_factory=plan_mod.Plan)
    """What this apply planned before it changed anything."""
    commands_run: list[str] = field(default_factory=list)
    """Every command run, in order: `name create|update|delete`."""

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


def _own(kind: str, existing: dict[str, Any] | None, name: str) -> None:
    """An object of this name that the harness did not create is never touched."""
    if existing is not None and (existing.get("Labels") or {}).get(TEST_LABEL) != TEST_VALUE:
        raise HarnessError(f"{kind} {name} exists and was not created by the harness")


def _create_network(res: dict[str, Any], state: State) -> str:
    body = _network_body(res)
    existing = get_or_none(f"/networks/{urllib.parse.quote(body['Name'])}")
    _own("network", existing, body["Name"])
    if existing is not None:
        if res["name"] in state.entries:
            # Replaced create-first, as the engine does any resource but a container: the old one
            # still holds the fixed name, so the real `up` fails the same way.
            raise HarnessError(f"{res['name']}: network {body['Name']} is replaced create-first and its name is taken")
        api("DELETE", f"/networks/{existing['Id']}")  # left by an earlier process, in no state
    return str(api("POST", "/networks/create", body)["Id"])


def _create_volume(res: dict[str, Any], state: State) -> str:
    body = _volume_body(res)
    existing = get_or_none(f"/volumes/{urllib.parse.quote(body['Name'])}")
    _own("volume", existing, body["Name"])
    if existing is not None and res["name"] in state.entries:
        raise HarnessError(f"{res['name']}: volume {body['Name']} is replaced create-first and its name is taken")
    if existing is None:
        api("POST", "/volumes/create", body)
    # A named volume of an earlier process is adopted with its data, as a volume survives a destroy.
    return str(body["Name"])


def _build_image(res: dict[str, Any]) -> str:
    tag, argv = _image_build(res)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise HarnessError(f"{res['name']}: {shlex.join(argv)} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    image = get_or_none(f"/images/{urllib.parse.quote(tag, safe='')}/json")
    assert image is not None
    return str(image["Id"])


def _remove_container(id_or_name: str) -> None:
    try:
        api("DELETE", f"/containers/{id_or_name}", params={"force": "1", "v": "1"})
    except EngineError as err:
        if err.status != 404:
            raise


def delete_container(cid: str, grace: int) -> None:
    """The provider's delete: a stop with `destroy_grace_seconds` (0 when unset: the stop signal
    and at once SIGKILL), then the removal with its anonymous volumes."""
    try:
        api("POST", f"/containers/{cid}/stop", params={"t": str(grace)}, timeout=grace + 60, ok=(204, 304))
    except EngineError as err:
        if err.status != 404:
            raise
    _remove_container(cid)


def _create_container(
    res: dict[str, Any], inputs: dict[str, Any], supported: bool, uploads: str, applied: Applied, state: State
) -> None:
    image = str(inputs["image"])
    if get_or_none(f"/images/{urllib.parse.quote(image, safe='')}/json") is None:
        raise HarnessError(f"{res['name']}: image {image} is not on the engine (see tests/integration/images)")
    plan = plan_container({**res, "inputs": inputs}, image, start_interval_supported=supported, uploads=uploads)
    applied.notes.extend(plan.notes)
    existing = get_or_none(f"/containers/{urllib.parse.quote(plan.name)}/json")
    if existing is not None:
        _own("container", existing["Config"], plan.name)
        _remove_container(existing["Id"])  # left by an earlier process, in no state
    started = time.monotonic()
    created = api("POST", "/containers/create", plan.body, params={"name": plan.name})
    cid = str(created["Id"])
    if plan.extra_networks:
        api("POST", "/networks/bridge/disconnect", {"Container": cid, "Force": False}, ok=(200, 204))
    for network, endpoint in plan.extra_networks:
        api("POST", f"/networks/{urllib.parse.quote(network)}/connect", {"Container": cid, "EndpointConfig": endpoint})
    applied.containers[res["name"]] = cid
    applied.names[res["name"]] = plan.name
    # Stored as soon as it exists, as the provider does: a failed wait leaves it in state, tainted.
    state.entries[res["name"]] = Entry(CONTAINER, inputs, cid)
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
    _wait_container(plan.name, plan.wait, plan.wait_timeout if plan.wait else RUNNING_TIMEOUT)
    applied.seconds[res["name"]] = round(time.monotonic() - started, 1)
    state.entries[res["name"]] = Entry(CONTAINER, readback(cid, inputs), cid)


def _container_step(res: dict[str, Any], step: plan_mod.Step, ctx: _Context, inputs: dict[str, Any]) -> None:
    name, state, applied = res["name"], ctx.state, ctx.applied
    entry = state.entries.get(name)
    if step.op in ("same", "record", "update"):
        assert entry is not None
        applied.containers[name], applied.names[name] = entry.id, str(inputs.get("name"))
        if step.op == "update":
            # The provider's Update: one ContainerUpdate with the resources and restart policy.
            host = plan_container({**res, "inputs": inputs}, "x", start_interval_supported=True)
            body = {k: host.body["HostConfig"][k] for k in UPDATE_FIELDS if k in host.body["HostConfig"]}
            api("POST", f"/containers/{entry.id}/update", body)
        if step.op != "same":
            state.entries[name] = Entry(CONTAINER, written(entry.inputs, inputs), entry.id)
        applied.actions[name] = {"same": "kept", "record": "recorded", "update": "updated"}[step.op]
        return
    if step.op == "replace":
        assert entry is not None
        # Delete-before-replace: the dependents the replacement replaces go first (a worker's
        # gateway membership: its delete drains the worker), then the container itself.
        for other in ctx.plan.steps.values():
            if name in other.deleted_before:
                ctx.delete_command(other.name)
        delete_container(entry.id, int(entry.inputs.get("destroyGraceSeconds") or 0))
        del state.entries[name]
    _create_container(res, inputs, ctx.supported, ctx.uploads, applied, state)
    applied.actions[name] = "replaced" if step.op == "replace" else "created"


@dataclass
class _Context:
    state: State
    applied: Applied
    plan: plan_mod.Plan
    supported: bool
    uploads: str
    at_end: list[Callable[[], None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(
        self, name: str, phase: str, command: str, stdin: str | None = None, previous: Entry | None = None
    ) -> subprocess.CompletedProcess[str]:
        """pulumi-command's local run: `/bin/sh -c <command>` with the provider's environment, and
        the previous outputs in PULUMI_COMMAND_STDOUT/STDERR (addPreviousOutputInEnv, on by default)."""
        env = dict(os.environ)
        if previous is not None:
            env.update({"PULUMI_COMMAND_STDOUT": previous.stdout, "PULUMI_COMMAND_STDERR": previous.stderr})
        with self.lock:
            self.applied.commands_run.append(f"{name} {phase}")
        return subprocess.run(
            ["/bin/sh", "-c", command], input=stdin, env=env, capture_output=True, text=True, timeout=900
        )

    def delete_command(self, name: str) -> None:
        """Runs a command's `delete` as stored in state, and drops it from the state."""
        entry = self.state.entries.pop(name, None)
        if entry is not None:
            self.run_delete(name, entry)

    def run_delete(self, name: str, entry: Entry) -> None:
        """pulumi-command's delete: the `delete` in the command's stored state, if it has one."""
        delete = entry.inputs.get("delete")
        if delete:
            ran = self.run(name, "delete", str(delete), previous=entry)
            if ran.returncode != 0:
                raise HarnessError(f"{name} delete: {delete!r} exited {ran.returncode}: {ran.stderr.strip()}")


def _command_step(res: dict[str, Any], step: plan_mod.Step, ctx: _Context, inputs: dict[str, Any]) -> None:
    name, applied = res["name"], ctx.applied
    target = _host_command_target(res)
    if target is not None and target not in applied.names.values():
        raise HarnessError(f"{name}: runs in {target}, which the harness did not create")
    previous = ctx.state.entries.get(name)
    if step.op == "same":
        applied.actions[name] = "kept"
        return
    if step.op == "replace" and previous is not None:
        # Create-before-replace: the new one runs now, the old one's stored delete at the end.
        ctx.state.entries.pop(name)
        old = previous
        ctx.at_end.append(lambda: ctx.run_delete(name, old))
    command = str(inputs.get("create"))
    phase = "create"
    if step.op == "update":
        update = inputs.get("update")
        command, phase = (str(update), "update") if update else (command, "create")
    started = time.monotonic()
    ran = ctx.run(name, phase, command, stdin=inputs.get("stdin"), previous=previous if step.op == "update" else None)
    if _is_gate(res):
        applied.seconds[name] = round(time.monotonic() - started, 1)
        report = (ran.stdout + ran.stderr).strip()
        applied.reports[name] = report
        if ran.returncode != 0:
            raise GateFailedError(f"{name}: the canary gate failed:\n{report}", report)
    elif ran.returncode != 0:
        raise HarnessError(f"{name}: {command!r} exited {ran.returncode}: {ran.stderr.strip()}")
    ctx.state.entries[name] = Entry(res["type"], inputs, uuid.uuid4().hex, ran.stdout, ran.stderr)
    applied.actions[name] = "ran"


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


def apply(
    synth: Any, *, uploads: str = "provider", max_workers: int = 8, state: State | None = None, quiet: bool = False
) -> Applied:
    """`pulumi up` of `synth` against `state` (default: `STATE`): plan every resource against the
    stored state by the providers' rules (`tests/integration/plan.py`), print the plan, then carry
    it out as the engine does: networks, volumes and images first, then containers and commands
    in dependency order (independent ones in parallel), deletes last. Raises on the first failure,
    leaving what was created in state and on the engine for `teardown()`.

    `uploads="provider"` extracts uploads at / like the Docker provider (refused for readOnly
    containers); `uploads="into-volumes"` extracts a file at the volume it lands in, which works."""
    if uploads not in ("provider", "into-volumes"):
        raise ValueError(f"uploads={uploads!r}: 'provider' or 'into-volumes'")
    state = STATE if state is None else state
    applied = Applied()
    resources: list[dict[str, Any]] = []
    for res in synth.resources:
        reason = _check_type(res)
        if reason is not None and not _applied_kinds(res):
            applied.skipped[res["name"]] = reason
            applied.actions[res["name"]] = "skipped"
        else:
            resources.append(res)
    supported = api_version() >= (1, 44)
    for res in resources:
        # Checked before anything is created: a mapping error must not leave half a stack.
        if res["type"] == CONTAINER:
            plan_container(res, "x", start_interval_supported=True, uploads=uploads)
        elif res["type"] == NETWORK:
            _network_body(res)
        elif res["type"] == VOLUME:
            _volume_body(res)
        elif res["type"] == IMAGE:
            _image_build(res)
        else:
            _check_command(res)
    try:
        digests: dict[str, str] = {}
        for res in resources:
            if res["type"] == IMAGE:
                # `docker build` from its cache; the id is what a container's image input reads.
                applied.images[res["name"]] = _build_image(res)
                digests[mock_repo_digest(res)] = res["name"]
        plan = build_plan(resources, state, applied.images, digests)
        applied.plan = plan
        if not quiet:
            print(plan.render())
        ctx = _Context(state, applied, plan, supported, uploads)
        for kind in (NETWORK, VOLUME, IMAGE):
            for res in resources:
                if res["type"] != kind:
                    continue
                _simple_step(res, plan.steps[res["name"]], ctx)
        by_name = {r["name"]: r for r in resources if r["type"] == CONTAINER or r["type"].startswith("command:")}
        graph = _order(list(by_name.values()), synth.depends)
        ids: dict[str, str | None] = {}

        def work(name: str) -> None:
            res = by_name[name]
            with ctx.lock:
                ids.update({n: e.id for n, e in state.entries.items()})
            inputs = _resolved(res, ids, applied.images, digests)
            if res["type"] == CONTAINER:
                _container_step(res, plan.steps[name], ctx, inputs)
            else:
                _command_step(res, plan.steps[name], ctx, inputs)

        _run_graph(graph, work, max_workers)
        for action in ctx.at_end:
            action()
        _deletes(plan, ctx)
    except HarnessError as err:
        err.applied = applied
        raise
    return applied


def _simple_step(res: dict[str, Any], step: plan_mod.Step, ctx: _Context) -> None:
    name, state, applied = res["name"], ctx.state, ctx.applied
    entry = state.entries.get(name)
    if res["type"] == IMAGE:
        state.entries[name] = Entry(IMAGE, dict(res["inputs"]), applied.images[name])
        applied.actions[name] = "built"
        return
    if step.op in ("same", "record", "update"):
        assert entry is not None
        state.entries[name] = Entry(res["type"], dict(res["inputs"]), entry.id)
        made = entry.id
        applied.actions[name] = "kept" if step.op == "same" else "recorded"
    else:
        made = _create_network(res, state) if res["type"] == NETWORK else _create_volume(res, state)
        state.entries[name] = Entry(res["type"], dict(res["inputs"]), made)
        applied.actions[name] = "created"
    if res["type"] == NETWORK:
        applied.networks[name] = made
    else:
        applied.volumes[name] = str(res["inputs"].get("name") or name)


def _deletes(plan: plan_mod.Plan, ctx: _Context) -> None:
    """What the program no longer has, dependents first: commands (their stored delete), then
    containers (stopped with their grace), then networks and volumes."""
    order = ("command:", CONTAINER, NETWORK, VOLUME, IMAGE)
    for kind in order:
        for step in [s for s in plan.steps.values() if s.op == "delete" and s.type.startswith(kind)]:
            entry = ctx.state.entries.get(step.name)
            if entry is None:
                continue
            if kind == "command:":
                ctx.delete_command(step.name)
            elif kind == CONTAINER:
                delete_container(entry.id, int(entry.inputs.get("destroyGraceSeconds") or 0))
                del ctx.state.entries[step.name]
            elif kind == NETWORK:
                api("DELETE", f"/networks/{entry.id}", ok=(204, 404))
                del ctx.state.entries[step.name]
            else:
                # A Volume resource's delete removes it, data and all; an Image's keeps the local image.
                if kind == VOLUME:
                    api("DELETE", f"/volumes/{urllib.parse.quote(entry.id)}", ok=(204, 404))
                del ctx.state.entries[step.name]
            ctx.applied.actions[step.name] = "deleted"


def _check_command(res: dict[str, Any]) -> None:
    inputs = _Inputs(f"{res['name']} ({res['type']})", res["inputs"])
    for key in ("create", "delete", "update", "triggers", "stdin"):
        inputs.get(key)
    inputs.done()


def _member_target(res: dict[str, Any]) -> str | None:
    """The gateway a member command (or the gateway's readmit, a `sh -c` of several) runs in."""
    create = str(res["inputs"].get("create", ""))
    match = MEMBER.match(create)
    if match:
        return match.group(1)
    words = shlex.split(create)
    if words[:2] == ["sh", "-c"] and len(words) == 4:
        found = {m.group(1) if (m := MEMBER.match(part.strip())) else None for part in words[2].split("&&")}
        if len(found) == 1 and None not in found:
            return found.pop()
    return None


def _reload_target(res: dict[str, Any]) -> str | None:
    match = RELOAD.match(str(res["inputs"].get("create", "")))
    return match.group(1) if match else None


def _host_command_target(res: dict[str, Any]) -> str | None:
    return _reload_target(res) or _member_target(res)


def _is_gate(res: dict[str, Any]) -> bool:
    return res["type"] == "command:local:Command" and res["inputs"].get("create") == GATE


class GateFailedError(HarnessError):
    """The canary gate failed; `report` is what it printed."""

    def __init__(self, message: str, report: str) -> None:
        super().__init__(message)
        self.report = report


# --- teardown -----------------------------------------------------------------------------------


def teardown(graceful: bool = False, only: Applied | None = None, state: State | None = None) -> list[str]:
    """Remove every labelled container (with its anonymous volumes) and network; named volumes stay,
    as after a `pulumi destroy` of the containers. `graceful` stops each container first with its
    destroyGraceSeconds, as the provider's delete does. `only` limits the removal to what one
    `apply` created (tests that share the engine with a running stack). Returns the names removed;
    what is removed leaves `state` (default: `STATE`; every state without `only`)."""
    states = [STATE if state is None else state] if only is not None else [STATE, *([state] if state else [])]
    removed = []
    for container in _labelled("containers"):
        if only is not None and container["Id"] not in only.containers.values():
            continue
        if graceful and container.get("State") == "running":
            grace = (container.get("Labels") or {}).get(GRACE_LABEL, "0")
            delete_container(container["Id"], int(grace))
        _remove_container(container["Id"])
        removed.append(container["Names"][0].lstrip("/"))
    for network in _labelled("networks"):
        if only is not None and network["Id"] not in only.networks.values():
            continue
        api("DELETE", f"/networks/{network['Id']}", ok=(204, 404))
        removed.append(network["Name"])
    for st in states:
        if only is None:
            st.entries.clear()
            continue
        gone = set(only.containers.values()) | set(only.networks.values())
        for name in [n for n, e in st.entries.items() if e.id in gone or n in only.actions]:
            del st.entries[name]
    return removed


def destroy(names: list[str], state: State | None = None) -> None:
    """`pulumi destroy --target` of containers in `state`: the provider's delete, a stop with the
    `destroyGraceSeconds` the state holds, then the removal."""
    state = STATE if state is None else state
    for name in names:
        entry = state.entries.pop(name)
        delete_container(entry.id, int(entry.inputs.get("destroyGraceSeconds") or 0))


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
    source = get_or_none(f"/images/{urllib.parse.quote(VLLM_IMAGE, safe='')}/json")
    assert source is not None
    for name in sorted(workers):
        target = get_or_none(f"/images/{urllib.parse.quote(name, safe='')}/json")
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
