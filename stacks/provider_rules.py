"""What the real providers do with each input the program sets: replace, update in place, or
only record it; and the form their Read stores, so a second `pulumi up` can be planned here.

`pulumi up` never runs in this project, so the harness and the read-back checks plan from this
table. Every row cites the upstream line it was read from. Pins (see UPSTREAM): the snapshot of
pulumi/pulumi-docker has no v5.2.0 tag; v5.1.0 and its newest commit both bridge
kreuzwerker/terraform-provider-docker v4.5.0. The installed pulumi_docker 5.2.0 SDK also has
`deviceCgroupRules` and `uploads[].owner/group`, added upstream after the snapshot (kreuzwerker
issues #975, #996; release PR #998, 4.6.0), so those rows rest on the SDK, not a cited line.

Diff semantics that apply to every bridged row (terraform-plugin-sdk v2, schema.go diffString):
an input absent from the program compares as its type's zero value unless the field is Computed
(COMPUTED lists those). Create ends in Read (funcs:673) so state is the read-back; Update does not
call Read, so after an in-place or state-only update the state holds the written form until the
next refresh or replacement. Log options: dockerd merges its own default log-opts into a
container's when the container uses the daemon's default driver, and its cache-* opts always
(moby v20.10.24 daemon/logs.go:177-197, loggerutils/cache/validate.go:31), and Read stores them
(funcs:952), so `logOpts` diffs (ForceNew) whenever the host's daemon.json adds any.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/image:Image"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
LOCAL_COMMAND = "command:local:Command"
REMOTE_COMMAND = "command:remote:Command"

Change = Literal["replace", "update", "state"]

UPSTREAM: dict[str, str] = {
    "kreuzwerker/terraform-provider-docker": "5074970c71ce6cc393c74942d5d628943834beb9 (v4.5.0)",
    "pulumi/pulumi-docker": "e944612c4c970123d9a16a48c40d37dc84c89a70 (v5.1.0; v5.2.0 absent from snapshot)",
    "pulumi/pulumi-command": "7f3eb6f3b77cd0fa3895ba437a695dd393f7dd25 (v1.2.1)",
    "moby/moby": "5d6db842238e3c4f5f9fb9ad70ea46b35227d084 (v20.10.24)",
}

_TF = "kreuzwerker/terraform-provider-docker@5074970:internal/provider/"
_RC = _TF + "resource_docker_container.go:"
_RF = _TF + "resource_docker_container_funcs.go:"
_NET = _TF + "resource_docker_network.go:"
_VOL = _TF + "resource_docker_volume.go:"
_PD = "pulumi/pulumi-docker@e944612:provider/"
_CMD = "pulumi/pulumi-command@7f3eb6f:provider/pkg/provider/"
_MOBY = "moby/moby@5d6db84:"

# pulumi-docker maps docker_container with DeleteBeforeReplace; Network/Volume do not, so
# their replacement is created first (a fixed `name` collides with the old one).
CONTAINER_DELETE_BEFORE_REPLACE = True
CONTAINER_DELETE_BEFORE_REPLACE_SOURCE = _PD + "resources.go:114"
# Create, update and delete each default to 20 minutes; `wait_timeout` runs inside create.
DEFAULT_TIMEOUT_SECONDS = {"create": 1200, "update": 1200, "delete": 1200}
DEFAULT_TIMEOUT_SOURCE = _RC + "12"
WAIT_TIMEOUT_DEFAULT = 60
WAIT_TIMEOUT_SOURCE = _RC + "89"
# Delete: ContainerStop with timeout destroy_grace_seconds when > 0, else an explicit 0 (which
# overrides the container's StopTimeout: stop signal, then SIGKILL at once), then a forced remove.
# The value comes from the stored state, so a grace set in the same apply as a replace is not used.
DESTROY_STOP_TIMEOUT_SOURCE = _RF + "1086"
DAEMON_MEMORY_SWAP_DEFAULT_SOURCE = _MOBY + "daemon/daemon_unix.go:343"
DAEMON_SHM_SIZE_DEFAULT_MIB = 64
DAEMON_LOG_OPTS_MERGE_SOURCE = _MOBY + "daemon/logs.go:177"
# pulumi-command: an input change is an update, which runs `update`, else `create` again;
# `triggers` is replaceOnChanges; the engine creates the replacement first and deletes the old
# command last, running its stored `delete` with its stored inputs and previous outputs.
COMMAND_UPDATE_RUNS_CREATE_SOURCE = _CMD + "local/commandController.go:80"  # remote: remote/commandController.go:76
# Command implements CustomUpdate and CustomDelete but no CustomDiff: infer's default diff.
COMMAND_DIFF_SOURCE = _CMD + "local/commandController.go:28"
COMMAND_TRIGGERS_REPLACE_SOURCE = _CMD + "common/inputs.go:10"
COMMAND_DELETE_USES_STATE_SOURCE = _CMD + "local/commandController.go:93"
COMMAND_SHELL = ("/bin/sh", "-c")  # local, when `interpreter` is unset
COMMAND_SHELL_SOURCE = _CMD + "local/commandOutputs.go:48"
COMMAND_ENV_PREVIOUS_OUTPUT = ("PULUMI_COMMAND_STDOUT", "PULUMI_COMMAND_STDERR")
COMMAND_ENV_SOURCE = _CMD + "local/commandOutputs.go:88"
# Remote commands run as an SSH session's command (session.Run), i.e. the remote user's login
# shell runs it, not a fixed /bin/sh -c.
REMOTE_COMMAND_SHELL_SOURCE = _CMD + "remote/commandOutputs.go:95"

# Optional+Computed container fields: an absent input never diffs against what Read stored.
COMPUTED = {
    CONTAINER: frozenset(
        {"hostname", "command", "entrypoints", "user", "securityOpts", "stopSignal", "stopTimeout", "labels"}
        | {"envs", "shmSize", "logDriver", "healthcheck", "ipcMode", "init", "ports[].external"}
    ),
}


# Schema defaults (resource_docker_container.go at the pin, line per entry): an input the program
# leaves out is compared as its default, not as absent.
DEFAULTS: dict[str, dict[str, Any]] = {
    CONTAINER: {
        "readOnly": False,  # :66
        "wait": False,  # :81
        "waitTimeout": 60,  # :89
        "restart": "no",  # :233
        "ports[].ip": "0.0.0.0",  # :512
        "ports[].protocol": "tcp",  # :528
        "memorySwap": 0,  # :853
        "networkMode": "bridge",  # :906
        "healthcheck.interval": "0s",  # :1062
        "healthcheck.timeout": "0s",  # :1069
        "healthcheck.startPeriod": "0s",  # :1076
        "healthcheck.startInterval": "0s",  # :1083
        "healthcheck.retries": 0,  # :1090
    },
}


class UnclassifiedInputError(KeyError):
    """An input the program sets that the table does not classify."""


@dataclass(frozen=True)
class Rule:
    change: Change
    readback: str
    source: str
    via: str = ""
    note: str = ""


def decimal_cpus(nano: int) -> str:
    """nanoInt64ToDecimalString (helpers.go:133), including its quirk: it tests the count of
    zeros in the whole string, so 10 CPUs read back as "10." and 0.05 as "0.1"."""
    if nano == 0:
        return "0"
    sign, n = ("-" if nano < 0 else ""), abs(nano)
    whole, frac = divmod(n, 10**9)
    text = f"{sign}{whole}.{frac:09d}"
    if text.count("0") == 9:
        tenths = (n + 5 * 10**7) // 10**8  # big.Rat.FloatString rounds half away from zero
        return f"{sign}{tenths // 10}.{tenths % 10}"
    return text.rstrip("0")


def _frac(v: int, prec: int) -> tuple[str, int]:
    digits, printed = "", False
    for _ in range(prec):
        digit = v % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        v //= 10
    return ("." + digits if printed else ""), v


def go_duration(ns: int) -> str:
    """Go time.Duration.String(): what Read stores for healthcheck durations (funcs:961)."""
    neg, u = ns < 0, abs(ns)
    if u < 10**9:
        if u == 0:
            return "0s"
        prec, unit = (0, "ns") if u < 10**3 else (3, "µs") if u < 10**6 else (6, "ms")
        frac, u = _frac(u, prec)
        text = f"{u}{frac}{unit}"
    else:
        frac, u = _frac(u, 9)
        text = f"{u % 60}{frac}s"
        u //= 60
        if u:
            text = f"{u % 60}m{text}"
            u //= 60
            if u:
                text = f"{u}h{text}"
    return "-" + text if neg else text


_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 6 * 10**10, "h": 36 * 10**11}
_MAX = 1 << 63


def _digits(s: str) -> int:
    return len(s) - len(s.lstrip("0123456789"))


def parse_go_duration(text: str) -> int:
    """Go time.ParseDuration, step for step (Create applies it to healthcheck durations,
    funcs:148): the fraction is accumulated until it would overflow and applied in float64."""
    s, total = text, 0
    neg = s[:1] == "-"
    if s[:1] in ("-", "+"):
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"time: invalid duration {text!r}")
    while s:
        if not (s[0] == "." or s[0] in "0123456789"):
            raise ValueError(f"time: invalid duration {text!r}")
        pre = _digits(s)
        whole, s = (int(s[:pre]) if pre else 0), s[pre:]
        if whole > _MAX:
            raise ValueError(f"time: invalid duration {text!r}")
        frac, scale, post = 0, 1.0, 0
        if s[:1] == ".":
            post = _digits(s[1:])
            digits, s = s[1 : 1 + post], s[1 + post :]
            for c in digits:
                if frac > (_MAX - 1) // 10 or frac * 10 + int(c) > _MAX:
                    break  # leadingFraction ignores digits past overflow
                frac, scale = frac * 10 + int(c), scale * 10
        if not pre and not post:
            raise ValueError(f"time: invalid duration {text!r}")
        i = next((k for k, c in enumerate(s) if c == "." or c in "0123456789"), len(s))
        unit, s = s[:i], s[i:]
        if unit not in _UNITS:
            raise ValueError(f"time: unknown or missing unit in duration {text!r}")
        if whole > _MAX // _UNITS[unit]:
            raise ValueError(f"time: invalid duration {text!r}")
        value = whole * _UNITS[unit]
        if frac:
            value += int(float(frac) * (float(_UNITS[unit]) / scale))
        total += value
        if value > _MAX or total > _MAX:
            raise ValueError(f"time: invalid duration {text!r}")
    if not neg and total > _MAX - 1:
        raise ValueError(f"time: invalid duration {text!r}")
    return -total if neg else total


def mib(value: int) -> int:
    """memory, shm_size: bytes/1024/1024 (funcs:932, :945)."""
    return int(value) // (1024 * 1024)


def memory_swap_mib(value: int) -> int:
    """memory_swap, memory_reservation: MiB when > 0, else the raw value (-1, 0) (funcs:935, :941)."""
    return int(value) // (1024 * 1024) if value > 0 else int(value)


def log_opts_as_reported(config: dict[str, str] | None) -> dict[str, str]:
    """LogConfig.Config as the daemon reports it, defaults merged in (funcs:952, :983)."""
    return dict(config or {})


def reported(value: Any) -> Any:
    """Read stores the inspect value unchanged."""
    return value


def trim_slash(name: str) -> str:
    return name.lstrip("/")


def init_or_false(value: bool | None) -> bool:
    return bool(value)


def label_set(labels: dict[str, str] | None) -> list[dict[str, str]]:
    """mapToLabelSet: the object's labels as {label, value} (network funcs:176, volume:309)."""
    return [{"label": k, "value": v} for k, v in sorted((labels or {}).items())]


def port_list(ports: dict[str, list[dict[str, str]] | None] | None) -> list[dict[str, Any]]:
    """flattenContainerPorts (structures.go:35): every binding, sorted by port then protocol."""

    def key(k: str) -> tuple[int, str]:
        port, proto = k.split("/")
        return int(port), proto

    out: list[dict[str, Any]] = []
    for k in sorted(ports or {}, key=key):
        port, proto = key(k)
        for b in (ports or {})[k] or []:
            out.append(
                {
                    "internal": port,
                    "external": int(b.get("HostPort") or 0),
                    "ip": b.get("HostIp", ""),
                    "protocol": proto,
                }
            )
    return out


def mount_list(mounts: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """getDockerContainerMounts (structures.go:388), for the fields this program sets."""
    return [
        {"target": m["Target"], "source": m.get("Source", ""), "type": m["Type"], "readOnly": bool(m.get("ReadOnly"))}
        for m in mounts or []
    ]


def device_request_list(requests: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """flattenDeviceRequests (structures.go:500)."""
    out = []
    for r in requests or []:
        item: dict[str, Any] = {"driver": r.get("Driver", ""), "count": r.get("Count", 0)}
        if r.get("DeviceIDs"):
            item["deviceIds"] = list(r["DeviceIDs"])
        if r.get("Capabilities") and r["Capabilities"][0]:
            item["capabilities"] = list(r["Capabilities"][0])
        if r.get("Options"):
            item["options"] = dict(r["Options"])
        out.append(item)
    return out


READBACK: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        decimal_cpus,
        go_duration,
        mib,
        memory_swap_mib,
        log_opts_as_reported,
        reported,
        trim_slash,
        init_or_false,
        label_set,
        port_list,
        mount_list,
        device_request_list,
    )
}


_CU = "ContainerUpdate"
_UPD = "ContainerUpdate (funcs:1016 HasChange list, :1068); never replaces"
_ST = (
    "not ForceNew and not in Update's HasChange list (funcs:1016): written to state, the container keeps the old value"
)
_MOUNT = "parent `mounts` is ForceNew (:328); Read stores HostConfig.Mounts (funcs:881)"
_DEV = "parent `device_requests` is ForceNew (:774); Read flattenDeviceRequests (funcs:927)"
_UP = "parent `upload` is ForceNew (:987); Read never sets uploads (funcs:959)"
_HC = "healthcheck is Optional+Computed (:1045), not ForceNew, not updated: " + _ST
_ENGINE_STATE = "recorded only; Read never sets it (funcs:931)"

_NOTES = {"ST": _ST, "HC": _HC, "MOUNT": _MOUNT, "DEV": _DEV, "UP": _UP, "UPD": _UPD, "RO": _ENGINE_STATE}

# path, change, readback, line of the field in the schema file, note (continued on indented lines)
_CONTAINER_ROWS = """
name                          replace trim_slash              50
readOnly                      replace reported                64
wait                          state   input                   79 used only inside create (funcs:590); {ST}
waitTimeout                   state   input                   86 create's wait (funcs:614), inside the 20 min create
      timeout
image                         replace reported               141 Read: Config.Image, or the image id when the input
      starts with sha256: (funcs:842)
hostname                      replace reported               148 Computed; Config.Hostname (funcs:847)
command                       replace reported               163 Config.Cmd (funcs:849)
entrypoints                   replace reported               172 Config.Entrypoint (funcs:850)
user                          replace reported               181 Config.User; DiffSuppressFunc treats an empty new
      value as no change (:187)
restart                       update  reported               230 RestartPolicy.Name (funcs:857); {UPD}
maxRetryCount                 update  reported               238 RestartPolicy.MaximumRetryCount (funcs:858)
capabilities.adds             replace reported               271 HostConfig.CapAdd, set only when CapAdd or CapDrop
      is non-empty (funcs:872)
capabilities.drops            replace reported               280 HostConfig.CapDrop (funcs:872)
securityOpts                  replace reported               291 HostConfig.SecurityOpt (funcs:854);
      systempaths=unconfined is dropped at create (funcs:691)
stopSignal                    replace reported               314 Config.StopSignal (funcs:977)
stopTimeout                   replace reported               321 Config.StopTimeout (funcs:978)
mounts                        replace mount_list             328 {MOUNT}
mounts[].readOnly             replace mount_list             351 {MOUNT}
mounts[].source               replace mount_list             340 {MOUNT}
mounts[].target               replace mount_list             335 {MOUNT}
mounts[].type                 replace mount_list             345 {MOUNT}
volumes[].containerPath       replace input                  447 Read does not set volumes (funcs:882)
volumes[].hostPath            replace input                  453 Read does not set volumes (funcs:882)
tmpfs                         state   reported               482 HostConfig.Tmpfs (funcs:883); {ST}
ports[].external              replace port_list              501 flattenContainerPorts of NetworkSettings.Ports when
      running or must_run (funcs:802)
ports[].internal              replace port_list              494 one state entry per binding the daemon reports
      (a 0.0.0.0 bind: one entry on this 20.10 engine, measured)
ports[].ip                    replace port_list              509 StateFunc maps empty to 0.0.0.0 (:515); protocol
      defaults to tcp (:528)
envs                          replace input                  590 Read sets neither env nor labels (funcs:893)
labels[].label                replace input                  833 ForceNew+Computed; Read does not set labels
      (funcs:893)
labels[].value                replace input                  833 ForceNew+Computed; Read does not set labels
      (funcs:893)
destroyGraceSeconds           state   input                  827 {RO}; delete stops with it when > 0, else 0
      (funcs:1086-1093), read from the old state
memory                        update  mib                    842 HostConfig.Memory/1024/1024 (funcs:932)
memoryReservation             update  memory_swap_mib        848 MiB when > 0 (funcs:935)
memorySwap                    update  memory_swap_mib        856 not Computed; unset, dockerd makes it 2x memory
      (moby daemon_unix.go:343), Read stores that (funcs:941)
shmSize                       replace mib                    863 Computed; ShmSize/1024/1024 (funcs:945); daemon
      default 64 MiB (moby daemon_unix.go:347)
cpuShares                     update  reported               872 HostConfig.CPUShares (funcs:949)
cpus                          replace decimal_cpus          1158 ParseCPUs at create (funcs:355); Read
      nanoInt64ToDecimalString(NanoCPUs) if > 0 (funcs:947)
logDriver                     replace reported               886 Computed; LogConfig.Type (funcs:951)
logOpts                       replace log_opts_as_reported   894 LogConfig.Config when log_opts is set (funcs:952,
      :983), dockerd defaults merged (logs.go:177)
networkMode                   replace reported               901 Default bridge; HostConfig.NetworkMode (funcs:954)
networksAdvanced[].aliases    replace input                  922 Read sets networks_advanced only when state has none
      (import, funcs:786)
networksAdvanced[].name       replace input                  916 Read sets networks_advanced only when state has none
      (import, funcs:786)
pidMode                       replace reported               974 HostConfig.PidMode, only when set (funcs:956)
ipcMode                       replace reported              1111 Computed; HostConfig.IpcMode (funcs:973)
uploads[].content             replace input                  994 {UP}
uploads[].file                replace input                 1009 {UP}
uploads[].permissions         replace input                 1022 {UP}
uploads[].owner               replace input                  987 {UP}; `owner` postdates v4.5.0 (SDK 5.2.0 only)
uploads[].group               replace input                  987 {UP}; `group` postdates v4.5.0 (SDK 5.2.0 only)
healthcheck.tests             state   reported              1053 {HC}
healthcheck.interval          state   go_duration           1059 time.ParseDuration at create (funcs:148),
      Duration.String() in Read (funcs:961)
healthcheck.timeout           state   go_duration           1066 {HC}
healthcheck.startPeriod       state   go_duration           1073 {HC}
healthcheck.startInterval     state   go_duration           1080 {HC}
healthcheck.retries           state   reported              1087 {HC}
sysctls                       replace reported              1105 HostConfig.Sysctls (funcs:972)
init                          state   init_or_false         1126 create always sends Init=&init (funcs:448); Read
      *HostConfig.Init or false (funcs:865); {ST}
deviceRequests[].capabilities replace device_request_list    805 {DEV}
deviceRequests[].count        replace device_request_list    789 {DEV}
deviceRequests[].deviceIds    replace device_request_list    796 {DEV}
deviceRequests[].driver       replace device_request_list    782 {DEV}; Default cdi (:786)
"""

_NETWORK_ROWS = """
name                          replace reported                25 no Update function: every field replaces; Read Name
      (network funcs:175)
driver                        replace reported                40 Computed; Read Driver (network funcs:177)
internal                      replace reported                56 Read Internal (network funcs:178)
options                       replace reported                48 Computed; Read Options (network funcs:193)
labels[].label                replace label_set               32 Read mapToLabelSet(Labels) (network funcs:176)
labels[].value                replace label_set               32 Read mapToLabelSet(Labels) (network funcs:176)
"""

_VOLUME_ROWS = """
name                          replace reported                41 Read Name (volume:308)
driver                        replace reported                55 Computed; Read Driver (volume:310)
driverOpts                    replace reported                62 Read Options (volume:311)
labels[].label                replace label_set               48 Read mapToLabelSet(Labels) (volume:309)
labels[].value                replace label_set               48 Read mapToLabelSet(Labels) (volume:309)
"""


def _table(rows: str, src: str, via: str) -> dict[str, Rule]:
    parsed: dict[str, list[str]] = {}
    path = ""
    for line in rows.strip("\n").splitlines():
        if line.startswith(" "):
            parsed[path][-1] += " " + line.strip()
        else:
            path, *fields = line.split(maxsplit=4)
            parsed[path] = fields if len(fields) == 4 else [*fields, ""]
    table = {}
    for path, (change, readback, number, note) in parsed.items():
        if change not in ("replace", "update", "state"):
            raise ValueError(f"{path}: unknown change {change!r}")
        text = note.format(**_NOTES)
        table[path] = Rule(cast(Change, change), readback, f"{src}{number}", via if change == "update" else "", text)
    return table


RULES: dict[str, dict[str, Rule]] = {
    CONTAINER: _table(_CONTAINER_ROWS, _RC, _CU),
    NETWORK: _table(_NETWORK_ROWS, _NET, ""),
    VOLUME: _table(_VOLUME_ROWS, _VOL, ""),
}

_IMG = "native: Diff of stored __inputs vs new inputs, never a replace (provider.go:295); Update rebuilds (:457)"
_IMAGE_PATHS = {
    "build.context": "Check adds build.contextDigest = hashContext(...) (provider.go:202): a changed file rebuilds",
    "build.dockerfile": "",
    "build.args": "",
    "build.platform": "Check defaults it to linux/<arch> (provider.go:231)",
    "buildOnPreview": "Check normalises it (provider.go:141)",
    "imageName": "",
    "skipPush": "",
}
RULES[IMAGE] = {
    p: Rule("update", "input", _PD + "provider.go:295", "docker build (dockerBuild)", f"{_IMG}; {n}".rstrip("; "))
    for p, n in _IMAGE_PATHS.items()
}

_RERUN = "re-run update, else create"
_COMMON = {
    "create": "common/inputs.go:12",
    "update": "common/inputs.go:13",
    "delete": "common/inputs.go:14",
}
_LOCAL = {"stdin": 25, "logging": 26, "interpreter": 27, "dir": 28, "environment": 29, "addPreviousOutputInEnv": 32}
_REMOTE = {"stdin": 44, "logging": 45, "environment": 47, "addPreviousOutputInEnv": 48}
_CONN = {
    "user": 42,
    "password": 43,
    "host": 44,
    "port": 45,
    "privateKey": 46,
    "dialErrorLimit": 49,
    "perDialTimeout": 50,
    "hostKey": 51,
}
_CMD_NOTE = "a change is an update running `update`, else `create` (commandController.go:80): even `delete` alone"
_TRIG = Rule(
    "replace",
    "input",
    _CMD + "common/inputs.go:10",
    note="replaceOnChanges: new command created first, old stored delete runs at the end",
)


def _cmd_rules(fields: dict[str, int], base: str) -> dict[str, Rule]:
    rules = {k: Rule("update", "input", _CMD + v, _RERUN, _CMD_NOTE) for k, v in _COMMON.items()}
    rules.update({k: Rule("update", "input", f"{_CMD}{base}:{line}", _RERUN, _CMD_NOTE) for k, line in fields.items()})
    rules["triggers"] = _TRIG
    return rules


RULES[LOCAL_COMMAND] = _cmd_rules(_LOCAL, "local/base.go")
RULES[REMOTE_COMMAND] = _cmd_rules(_REMOTE, "remote/command.go")
RULES[REMOTE_COMMAND].update(
    {
        f"connection.{k}": Rule(
            "update",
            "input",
            f"{_CMD}remote/connection.go:{line}",
            _RERUN,
            "connection is not replaceOnChanges (remote/command.go:46)",
        )
        for k, line in _CONN.items()
    }
)


def rule(type_: str, path: str) -> Rule:
    try:
        return RULES[type_][path]
    except KeyError:
        raise UnclassifiedInputError(f"{type_}: input {path!r} is not classified in stacks/provider_rules.py") from None


_MAPS = frozenset({"logOpts", "tmpfs", "sysctls", "driverOpts", "options", "environment", "triggers"})
_MAP_PATHS = frozenset({"build.args"})


def input_paths(inputs: dict[str, Any]) -> set[str]:
    """Paths of a resource's inputs: nested keys joined with ".", list-of-dict elements as "[]";
    a map-valued input (or an empty list/dict, or a list of scalars) is one path."""
    paths: set[str] = set()

    def walk(path: str, key: str, value: Any) -> None:
        if key in _MAPS or path in _MAP_PATHS or not isinstance(value, (dict, list)) or not value:
            paths.add(path)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{path}.{k}", k, v)
        elif all(isinstance(v, dict) for v in value):
            for v in value:
                if not v:
                    paths.add(f"{path}[]")
                for k, x in v.items():
                    walk(f"{path}[].{k}", k, x)
        else:
            paths.add(path)

    for k, v in inputs.items():
        walk(k, k, v)
    return paths


def container_state(inspect: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The state resourceDockerContainerRead (funcs:750) stores after create, from `docker
    inspect` JSON: inspect values for the fields Read sets, the inputs for the rest."""
    cfg, host = inspect.get("Config") or {}, inspect.get("HostConfig") or {}
    state = {k: v for k, v in inputs.items()}
    image = str(inputs.get("image", ""))
    state.update(
        {
            "name": trim_slash(inspect["Name"]),
            "readOnly": bool(host.get("ReadonlyRootfs")),
            "image": inspect.get("Image") if image.startswith("sha256:") else cfg.get("Image"),
            "hostname": cfg.get("Hostname"),
            "command": cfg.get("Cmd"),
            "entrypoints": cfg.get("Entrypoint"),
            "user": cfg.get("User", ""),
            "securityOpts": host.get("SecurityOpt"),
            "restart": (host.get("RestartPolicy") or {}).get("Name", ""),
            "maxRetryCount": (host.get("RestartPolicy") or {}).get("MaximumRetryCount", 0),
            "init": init_or_false(host.get("Init")),
            "mounts": mount_list(host.get("Mounts")),
            "tmpfs": host.get("Tmpfs"),
            "memory": mib(host.get("Memory") or 0),
            "memoryReservation": memory_swap_mib(host.get("MemoryReservation") or 0),
            "memorySwap": memory_swap_mib(host.get("MemorySwap") or 0),
            "shmSize": mib(host.get("ShmSize") or 0),
            "cpuShares": host.get("CpuShares") or 0,
            "logDriver": (host.get("LogConfig") or {}).get("Type", ""),
            "networkMode": host.get("NetworkMode", ""),
            "sysctls": host.get("Sysctls"),
            "ipcMode": host.get("IpcMode", ""),
            "stopSignal": cfg.get("StopSignal", ""),
            "stopTimeout": cfg.get("StopTimeout"),
        }
    )
    if host.get("CapAdd") or host.get("CapDrop"):
        # Read sets both sets (funcs:872); an empty set and an absent one do not diff in the SDK.
        caps = {"adds": host.get("CapAdd") or [], "drops": host.get("CapDrop") or []}
        state["capabilities"] = {k: v for k, v in caps.items() if v}
    if inputs.get("logOpts"):
        state["logOpts"] = log_opts_as_reported((host.get("LogConfig") or {}).get("Config"))
    else:
        state.pop("logOpts", None)
    if inputs.get("pidMode"):
        state["pidMode"] = host.get("PidMode", "")
    if (host.get("NanoCpus") or 0) > 0:
        state["cpus"] = decimal_cpus(host["NanoCpus"])
    if inputs.get("deviceRequests"):
        state["deviceRequests"] = device_request_list(host.get("DeviceRequests"))
    if inputs.get("ports"):
        ports = port_list((inspect.get("NetworkSettings") or {}).get("Ports"))
        given = [p for p in inputs["ports"] if "protocol" in p]
        state["ports"] = (
            ports if given else [{k: v for k, v in p.items() if k != "protocol" or v != "tcp"} for p in ports]
        )
    check = cfg.get("Healthcheck")
    if check:
        state["healthcheck"] = {
            "tests": check.get("Test"),
            "interval": go_duration(check.get("Interval") or 0),
            "timeout": go_duration(check.get("Timeout") or 0),
            "startPeriod": go_duration(check.get("StartPeriod") or 0),
            "startInterval": go_duration(check.get("StartInterval") or 0),
            "retries": check.get("Retries") or 0,
        }
    return state
