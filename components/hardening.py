"""Settings every container of the platform shares."""

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from stacks.provider_rules import decimal_cpus, go_duration

SECOND = 10**9

# CIS Docker 5.25: a setuid binary inside an image cannot raise a process's privileges. None of the
# platform's images needs that (nginx's master drops to its workers with setuid(2), which this allows).
SECURITY_OPTS = ["no-new-privileges:true"]


def capabilities(*adds: str) -> docker.ContainerCapabilitiesArgs:
    """CIS 5.3: start from no capabilities at all and add back only what the image's own startup
    needs. Docker's default set (14, including CHOWN, DAC_OVERRIDE, FOWNER, NET_RAW, MKNOD) is far
    more than a service that runs as a fixed user, or as root in directories root owns, ever uses.
    The integration tests run every ci container with exactly this set."""
    return docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=sorted(adds) or None)


def in_place(opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    """Replace the container delete-first. Every container here has a fixed name (and many a
    fixed host port), which Docker will not give to a second container while the first exists;
    Pulumi's default create-before-delete then fails the update (pulumi/pulumi-docker#1356,
    "by design"). Worker pools add their own drain and ordering (`components/workers/rollout.py`)."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True))


# Every option Docker's json-file driver (and the options dockerd applies to any driver) accepts,
# each set on purpose. dockerd fills every option a container leaves out from its own
# `log-opts` in daemon.json when the driver matches (moby daemon/logs.go, mergeAndVerifyLogConfig),
# and the provider stores the merged map as the container's `log_opts`, a replacing field: a user's
# daemon.json would otherwise replace every container on every `pulumi up`. The cache options do
# nothing for json-file (it reads its own files); they are set only so nothing is merged.
# `max-buffer-size` is left out: Docker refuses it with `mode=blocking` (a daemon.json that sets it
# without `mode` fails the create loudly: README, "What a second `pulumi up` does").
LOG_DEFAULTS = {
    "compress": "true",
    "env": "",
    "env-regex": "",
    "labels": "",
    "labels-regex": "",
    "tag": "",
    "mode": "blocking",
    "cache-disabled": "true",
    "cache-max-size": "20m",
    "cache-max-file": "5",
    "cache-compress": "true",
}
# A change of these fields is recorded in state by the Docker provider but never reaches the running
# container (not ForceNew, not in its update: `stacks/provider_rules.py`). Their digest rides in
# this label, which is ForceNew, so an edit replaces the container instead of being dropped.
RECREATE_LABEL = "inference-stack.recreate-on"


@dataclass(frozen=True)
class Health:
    """A Docker healthcheck in seconds; written as Go durations, the form the provider reads back."""

    test: list[str]
    interval: int
    timeout: int
    retries: int
    start_period: int
    # No start_interval: engines before API 1.44 (Docker 25) drop it and the provider reads back
    # "0s", a change planned on every `pulumi up` that never arrives (a worker's start would be probed faster).

    def args(self) -> docker.ContainerHealthcheckArgs:
        return docker.ContainerHealthcheckArgs(
            tests=self.test,
            interval=go_duration(self.interval * SECOND),
            timeout=go_duration(self.timeout * SECOND),
            retries=self.retries,
            start_period=go_duration(self.start_period * SECOND),
        )


def recreate_digest(health: Health | None, tmpfs: dict[str, str] | None) -> str:
    """The `RECREATE_LABEL` value: a digest of the fields the provider would only record."""
    recorded_only = {"healthcheck": None if health is None else dataclasses.asdict(health), "tmpfs": tmpfs}
    return hashlib.sha256(json.dumps(recorded_only, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LogSize:
    """A json-file log's bound: `max_file` files of `max_size` each, the most it takes on disk."""

    max_size: str
    max_file: int


# Four tiers, sized by what each container writes and who reads it after an incident. Summed over
# one host's containers they stay far below a data disk's free-space alerts.
# The edge writes one JSON line per request, the record an incident review reads first: the most
# lines, kept longest (500 MB).
REQUEST_LOG = LogSize("100m", 5)
# Stateful services log startup, persistence, compaction and slow-query lines, read after a crash
# or a restore (150 MB).
STATE_LOG = LogSize("50m", 3)
# Sidecars and UIs (Grafana, Jaeger, DCGM, the status exporter) log their start and their errors
# (60 MB).
SIDECAR_LOG = LogSize("20m", 3)
# The nginx exporter logs one line at start and a line per failed scrape (30 MB).
EXPORTER_LOG = LogSize("10m", 3)


def log_opts(logs: LogSize) -> dict[str, str]:
    """The complete json-file options: a size-bounded log that no daemon default changes."""
    return {**LOG_DEFAULTS, "max-size": logs.max_size, "max-file": str(logs.max_file)}


def settings(
    *,
    cpus: float,
    memory_mb: int,
    logs: LogSize,
    health: Health | None = None,
    tmpfs: dict[str, str] | None = None,
    grace_seconds: int = 0,
    labels: dict[str, str] | None = None,
    restart: str = "unless-stopped",
    caps: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The `docker.Container` arguments every platform container shares, each in the form the
    provider reads back from `docker inspect`, so a second `pulumi up` finds nothing to change.

    `memory_swap` equals `memory`: no swap at all. Docker would otherwise give twice the memory
    (the provider then reads a value the program never wrote), and a model server or gateway that
    swaps is slower than one restarted by the OOM killer. `grace_seconds` is both the daemon's stop
    timeout and the provider's `destroy_grace_seconds`: without the latter the provider's delete
    kills a container at once, whatever its stop signal promises."""
    all_labels = {**(labels or {}), RECREATE_LABEL: recreate_digest(health, tmpfs)}
    args: dict[str, Any] = {
        "security_opts": SECURITY_OPTS,
        "capabilities": capabilities(*caps),
        "cpus": decimal_cpus(round(cpus * 1e9)),
        "memory": memory_mb,
        "memory_swap": memory_mb,
        "log_driver": "json-file",
        "log_opts": log_opts(logs),
        "restart": restart,
        "labels": [docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(all_labels.items())],
    }
    if health is not None:
        args["healthcheck"] = health.args()
    if tmpfs is not None:
        args["tmpfs"] = tmpfs
    if grace_seconds:
        args["stop_timeout"] = grace_seconds
        args["destroy_grace_seconds"] = grace_seconds
    return args


# The Docker provider's own timeout for a container's create, update and delete
# (`stacks/provider_rules.py`: DEFAULT_TIMEOUT_SECONDS); a create includes the wait for healthy.
PROVIDER_TIMEOUT_SECONDS = 20 * 60
# Pulling, creating, uploading and starting around the wait itself.
TIMEOUT_MARGIN_SECONDS = 300


def timeouts(opts: pulumi.ResourceOptions, *, wait_seconds: int = 0, grace_seconds: int = 0) -> pulumi.ResourceOptions:
    """`customTimeouts` for a container whose wait for healthy or stop grace, with a margin, would
    pass the provider's default: a slow model load must not fail its create half way."""
    create = wait_seconds + TIMEOUT_MARGIN_SECONDS
    delete = grace_seconds + TIMEOUT_MARGIN_SECONDS
    if max(create, delete) <= PROVIDER_TIMEOUT_SECONDS:
        return opts
    longest = f"{max(create, delete, PROVIDER_TIMEOUT_SECONDS)}s"
    custom = pulumi.CustomTimeouts(
        create=f"{max(create, PROVIDER_TIMEOUT_SECONDS)}s",
        update=longest,
        delete=f"{max(delete, PROVIDER_TIMEOUT_SECONDS)}s",
    )
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(custom_timeouts=custom))
