"""Where each worker runs: which host, which GPUs, which published port.

Pure: it reads nothing. `stacks/rules.py` checks the fleet and seats the workers through
`Seats`, so the placement the rules approve is exactly the one the components deploy.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from stacks.config import HostConfig, StackConfig, WorkerGroup
from stacks.errors import ConfigIssue, key_path
from stacks.model_files import ModelFiles
from stacks.preflight import shape_from_config_json


@dataclass(frozen=True)
class Placement:
    """One worker container: which group, which host, which GPUs."""

    group: WorkerGroup
    host: HostConfig
    index: int
    """Position of this worker among its group's workers on the host."""
    devices: tuple[str, ...]
    """Device ids for the NVIDIA device request; empty for `cpu` workers."""
    published_port: int | None
    """Host port on the host's private address (multi-host stacks only)."""
    canary: bool = False
    """Runs the group's canary release (`group` is then the released group) and joins the
    canary pool until the release is promoted."""

    @property
    def pool(self) -> str:
        """The gateway pool the worker joins: its group's, or the group's canary pool."""
        return canary_pool(self.group.name) if self.canary else self.group.name

    @property
    def name(self) -> str:
        return f"{self.group.name}-{self.host.name}-{self.index}"

    def container_name(self, stack: str) -> str:
        return f"{stack}-{self.name}"

    def address(self, stack: str) -> str:
        """`host:port` as the gateway host reaches this worker: the published port on the private
        address when it publishes one (it runs on another host), else its container name."""
        if self.published_port is not None:
            return f"{self.host.private_address}:{self.published_port}"
        return f"{self.container_name(stack)}:{self.group.port}"


def canary_pool(group: str) -> str:
    return f"{group}-canary"


class Seats:
    """Each host's GPUs as the groups take them, in the stack's order: a group without
    `gpuAssignments` takes the GPUs no earlier group took."""

    def __init__(self, cfg: StackConfig) -> None:
        self._used: dict[str, dict[str, str]] = {h.name: {} for h in cfg.hosts}
        self._multi_host = len(cfg.hosts) > 1
        self._gateway_host = cfg.gateway_host()

    def place(self, g: int, group: WorkerGroup, host: HostConfig) -> tuple[list[Placement], list[ConfigIssue]]:
        """The group's workers on `host`, and why some could not be seated. On a multi-host stack a
        worker away from the gateway publishes `port + index` on the host's private address."""
        found, issues = _place_on_host(g, group, host, self._used[host.name])
        if self._multi_host and host.name != self._gateway_host:
            found = [Placement(group, host, p.index, p.devices, group.port + p.index) for p in found]
        return found, issues


def with_canaries(cfg: StackConfig, placements: list[Placement]) -> list[Placement]:
    """The last `canary.workers` workers of a group with a canary run its release, and at 100 %
    every worker does; the canary workers keep their names, so nothing is replaced when the
    release is folded into the group."""
    result = list(placements)
    for group in cfg.workers:
        if group.canary is None:
            continue
        released = group.released()
        mine = [i for i, p in enumerate(result) if p.group.name == group.name]
        canaries = set(mine[-group.canary.workers :])
        promoted = group.canary.weight_percent == 100
        for i in mine:
            p = result[i]
            if i in canaries or promoted:
                result[i] = Placement(released, p.host, p.index, p.devices, p.published_port, i in canaries)
    return result


def with_cached_shape(group: WorkerGroup, host: HostConfig, files: ModelFiles) -> WorkerGroup:
    """The group with its model shape read from `config.json` in this machine's model cache, when
    the stack declares none and the cache (a local host's) already holds the revision. `files`
    is what the loader read of the caches (`model_files.read_cached`)."""
    model = group.model
    if model.shape is not None or host.ssh is not None:
        return group
    cached = files.get((model.id, model.revision))
    if cached is None:
        return group
    try:
        shape = shape_from_config_json(cached.config)
    except (ValueError, ValidationError, AssertionError):
        return group
    return group.model_copy(update={"model": model.model_copy(update={"shape": shape})})


def _place_on_host(
    g: int, group: WorkerGroup, host: HostConfig, used: dict[str, str]
) -> tuple[list[Placement], list[ConfigIssue]]:
    where = ("workers", g)
    if group.accelerator == "cpu":
        count = group.replicas_per_host or 1
        return [Placement(group, host, i, (), None) for i in range(count)], []
    devices = host.gpus.devices()
    if not devices:
        return [], [
            ConfigIssue(
                key_path((*where, "accelerator")),
                "nvidia",
                f"host `{host.name}` declares no GPUs",
                f"declare the host's GPUs under `hosts[].gpus`, or set `accelerator: cpu` for group `{group.name}`",
            )
        ]
    if group.gpu_assignments is not None:
        assignments = group.gpu_assignments
        issues = _assignment_issues(where, group, host, len(devices))
    else:
        assignments, issues = _free_assignments(where, group, host, devices, used)
    if issues:
        return [], issues
    return _seat(where, group, host, [tuple(devices[p] for p in a) for a in assignments], assignments, used)


def _assignment_issues(
    where: tuple[str | int, ...], group: WorkerGroup, host: HostConfig, gpus: int
) -> list[ConfigIssue]:
    """What is wrong with the positions `gpuAssignments` lists for one host."""
    assignments, tp = group.gpu_assignments or [], group.model.tensor_parallel_size
    issues = []
    if group.replicas_per_host is not None and group.replicas_per_host != len(assignments):
        issues.append(
            ConfigIssue(
                key_path((*where, "replicasPerHost")),
                group.replicas_per_host,
                f"`gpuAssignments` lists {len(assignments)} workers",
                "remove `replicasPerHost` or make them agree",
            )
        )
    for w, positions in enumerate(assignments):
        if len(positions) != tp:
            issues.append(
                ConfigIssue(
                    key_path((*where, "gpuAssignments", w)),
                    positions,
                    f"tensor-parallel size is {tp}, so each worker needs exactly {tp} GPU(s)",
                    f"give worker {w} {tp} GPU(s), or set `model.tensorParallelSize: {len(positions)}`",
                )
            )
        if [p for p in positions if not 0 <= p < gpus]:
            issues.append(
                ConfigIssue(
                    key_path((*where, "gpuAssignments", w)),
                    positions,
                    f"host `{host.name}` has {gpus} GPU(s), positions 0..{gpus - 1}",
                    "use positions the host has, or declare more GPUs on the host",
                )
            )
    return issues


def _free_assignments(
    where: tuple[str | int, ...], group: WorkerGroup, host: HostConfig, devices: list[str], used: dict[str, str]
) -> tuple[list[list[int]], list[ConfigIssue]]:
    """Positions for `replicasPerHost` workers (or as many as fit) from the GPUs still free."""
    tp = group.model.tensor_parallel_size
    free = [i for i, d in enumerate(devices) if d not in used]
    wanted = group.replicas_per_host if group.replicas_per_host is not None else len(free) // tp
    if wanted == 0 or wanted * tp > len(free):
        return [], [
            ConfigIssue(
                key_path((*where, "replicasPerHost")),
                group.replicas_per_host,
                f"{max(wanted, 1)} worker(s) x {tp} GPU(s) do not fit in the {len(free)} free GPU(s) of "
                f"host `{host.name}` ({len(devices)} in all, the rest taken by earlier groups)",
                "lower `replicasPerHost` or `model.tensorParallelSize`, or declare more GPUs on the host",
            )
        ]
    return [free[i * tp : (i + 1) * tp] for i in range(wanted)], []


def _seat(
    where: tuple[str | int, ...],
    group: WorkerGroup,
    host: HostConfig,
    workers: list[tuple[str, ...]],
    assignments: list[list[int]],
    used: dict[str, str],
) -> tuple[list[Placement], list[ConfigIssue]]:
    """One worker per device tuple, each GPU marked as taken; a GPU taken twice, or MIG
    instances joined into one tensor-parallel worker, is an issue."""
    placements, issues = [], []
    for w, (ids, positions) in enumerate(zip(workers, assignments, strict=True)):
        name = f"{group.name}-{host.name}-{w}"
        for device in ids:
            if device in used:
                issues.append(
                    ConfigIssue(
                        key_path((*where, "gpuAssignments", w)),
                        positions,
                        f"GPU `{device}` on host `{host.name}` is already assigned to worker `{used[device]}`",
                        "give each worker its own GPUs; two vLLM engines on one GPU both OOM",
                    )
                )
            used[device] = name
        if len(ids) > 1 and any(d.startswith("MIG-") for d in ids):
            issues.append(
                ConfigIssue(
                    key_path((*where, "gpuAssignments", w)),
                    positions,
                    "a MIG instance cannot join a tensor-parallel group (no NCCL peer access between instances)",
                    "run one worker per MIG instance with `tensorParallelSize: 1`",
                )
            )
        placements.append(Placement(group, host, w, ids, None))
    return placements, issues
