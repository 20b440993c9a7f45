"""A pool of GPU-reserved vLLM workers serving one model."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from components.gateway import members
from components.gateway.gateway import Membership
from components.hosts.host import GpuHost
from components.workers import canary, container, layout, rollout
from stacks.config import LmCacheConfig, WorkerGroup
from stacks.inventory import Gpu
from stacks.placement import Placement
from stacks.preflight import PreflightError, worker_problems


@dataclass(frozen=True)
class VllmWorkerPoolArgs:
    group: WorkerGroup
    placements: list[Placement]
    """Where each worker runs (from `stacks.rules.check`)."""
    hosts: dict[str, GpuHost]
    """The prepared Docker hosts, by host name."""
    api_key: pulumi.Output[str]
    """The key workers require; must be a Pulumi secret."""
    hf_token: pulumi.Output[str] | None = None
    """Hugging Face token (secret), only when the model is gated and downloaded by workers."""
    stack: str = "dev"
    lmcache: LmCacheConfig | None = None
    """KV-cache offload settings, when the workers offload to Redis."""
    redis_urls: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    """Redis URL (secret) as each host's workers reach it, by host name."""
    labels: dict[str, str] = field(default_factory=dict)
    tracing: dict[str, list[str]] = field(default_factory=dict)
    """vLLM tracing flags (`spec.tracing_args`) per host name; none when tracing is off."""
    membership: Membership | None = None
    """The gateway the workers join once healthy and leave before they stop (`rollout.py`)."""
    gate: canary.GateTarget | None = None
    """Where the canary gate reaches the gateway and Prometheus; needed when the group has a canary."""
    scale_out: bool = False
    """The gateway routes the group by prefix cache (`balance: cache_aware`): the workers serve the
    router's tokenize calls (`spec.vllm_args`)."""
    fingerprints: dict[str, str] = field(default_factory=dict)
    """Each worker's `spec.fingerprint`, by placement name, for its `inference-stack.spec` label."""
    seats: dict[str, layout.Seat] = field(default_factory=dict)
    """Where each worker's container goes in this update (`layout.seat`), by placement name;
    unlisted workers stay on their own GPUs and name, delete-before-replace."""


def check(args: VllmWorkerPoolArgs) -> None:
    """What the pool refuses, before it registers anything: found in the loop instead, a missing
    gateway would fail the pool with its canary containers already registered."""
    group = args.group
    if group.canary is not None and (args.membership is None or args.gate is None):
        raise ValueError(f"group {group.name}: a canary needs the gateway and the gate's target")
    for p in args.placements:
        if p.host.name not in args.hosts:
            raise ValueError(f"worker `{p.name}`: no prepared host `{p.host.name}`")
        if p.name not in args.fingerprints:
            raise ValueError(f"worker `{p.name}`: no spec fingerprint")
        if args.lmcache is not None and p.host.name not in args.redis_urls:
            raise ValueError(f"worker `{p.name}`: KV offload needs a Redis URL for host `{p.host.name}`")


class VllmWorkerPool(pulumi.ComponentResource):
    """vLLM OpenAI-compatible workers, one container per placement.

    Each worker reserves exactly its GPUs through a Docker device request (driver `nvidia`,
    explicit device ids, capability `gpu`), so two engines never share a GPU by accident. Weights
    come from the host's model-cache volume, read-only and with `HF_HUB_OFFLINE=1` when they are
    pre-fetched; torch.compile and CUDA-graph artefacts persist in a per-worker directory under
    the host's `compileCachePath`, so a restart skips work already done (per worker, because
    concurrent writers to one cache directory race). The image is handed over only once the
    preflight passed on the GPUs the host verification measured. `pulumi up` waits until the
    two-tier healthcheck passes: `/health`, then a real "What is 2 + 2? Answer in digits."
    completion. Secrets are uploaded as files (mode 0400) and read by the entrypoint, never put
    in the container's env or argv. Restarts are `on-failure` with a bounded count: a worker that cannot load its model
    stops instead of thrashing the GPU. A change that replaces the workers rolls through them
    `rollout.maxUnavailable` at a time, each drained from the gateway first and put back once
    healthy (`rollout.py`); so does a first deploy. A replaced worker goes create-before-delete
    onto a spare GPU when its host has one (`layout.py`). A `canary` runs its release on the last
    workers, gated before its share of the traffic rises (`canary.py`).
    """

    containers: list[docker.Container]
    rollout_plan: list[rollout.Step]
    """The order in which a change replaces the workers."""
    compile_cache_dirs: list[str]
    """Host directories of the workers' compile caches."""
    urls: pulumi.Output[list[str]]
    """Base URLs of the workers, as the gateway reaches them."""
    container_names: pulumi.Output[list[str]]
    api_key: pulumi.Output[str]

    def __init__(self, name: str, args: VllmWorkerPoolArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        check(args)
        super().__init__("inference-stack:workers:VllmWorkerPool", name, None, opts)
        group = args.group
        uploads = container.shared_uploads(args.api_key, args.hf_token)
        containers: dict[str, docker.Container] = {}
        self.admits: list[tuple[list[str], pulumi.Resource]] = []
        self.rollout_plan = rollout.plan(args.placements, group.rollout.max_unavailable, args.seats)
        by_name = {p.name: p for p in args.placements}
        joined: dict[str, pulumi.Resource] = {}
        canary_containers: list[docker.Container] = []
        gated: list[pulumi.Resource] | None = None
        for step in self.rollout_plan:
            placement = by_name[step.worker]
            if not placement.canary and gated is None and group.canary is not None:
                # Every canary worker is in the plan before the rest: gate them, then raise their
                # weight or (at 100 %) promote them, before the rest of the group may roll.
                gated = self._canary(name, group, canary_containers, args)
            # The previous wave must be healthy and back in the gateway before this one goes.
            after = [joined[w] for w in step.after] + (gated or [])
            worker = f"{name}-{placement.host.name}-{placement.index}"
            seat = container.seat_of(placement, args.stack, args.seats)
            made = self._worker(worker, placement, seat, step, after, uploads, args)
            containers[placement.name] = made
            if placement.canary:
                canary_containers.append(made)
            address = container.gateway_address(placement, seat, args.stack)
            joined[placement.name] = self._membership(worker, made, placement, address, args) or made
        self.containers = [containers[p.name] for p in args.placements]
        self.urls = pulumi.Output.from_input([f"http://{p.address(args.stack)}" for p in args.placements])
        self.compile_cache_dirs = [f"{p.host.compile_cache_path}/{args.stack}-{p.name}" for p in args.placements]
        self.container_names = pulumi.Output.all(*[c.name for c in self.containers]).apply(list)
        self.api_key = pulumi.Output.secret(args.api_key)
        self.register_outputs({"urls": self.urls, "containerNames": self.container_names})

    def _worker(
        self,
        worker: str,
        placement: Placement,
        seat: layout.Seat,
        step: rollout.Step,
        after: list[pulumi.Resource],
        uploads: list[docker.ContainerUploadArgs],
        args: VllmWorkerPoolArgs,
    ) -> docker.Container:
        host = args.hosts[placement.host.name]
        on_host = pulumi.ResourceOptions.merge(
            host.options(self),
            pulumi.ResourceOptions(depends_on=after, delete_before_replace=step.strategy == rollout.DELETE_FIRST),
        )
        placed = container.seated(placement, seat)
        worker_uploads = list(uploads)
        if args.lmcache is not None:
            worker_uploads.append(container.lmcache_upload(args.lmcache, args.redis_urls[placement.host.name]))
        made_of = container.WorkerSpec(
            placement=placement,
            seat=seat,
            stack=args.stack,
            image=self._checked_image(placed, host),
            uploads=worker_uploads,
            labels=container.container_labels(placed, args.stack, args.fingerprints[placement.name], args.labels),
            kv_offload=args.lmcache is not None,
            tracing=args.tracing.get(placement.host.name, ()),
            scale_out=args.scale_out,
        )
        return container.worker_container(worker, made_of, host, on_host)

    def _membership(
        self, worker: str, container: docker.Container, placement: Placement, address: str, args: VllmWorkerPoolArgs
    ) -> pulumi.Resource | None:
        """The command that puts the worker into the gateway (create) and drains it (delete).
        Its trigger is the container's id, so replacing the container replaces it: Pulumi deletes
        it first, which drains the worker, and creates it again once the new container is
        healthy. A replaced gateway is refilled by the gateway's own readmit step instead, so
        replacing the gateway never drains the workers."""
        m = args.membership
        if m is None:
            return None
        admit = members.admit_argv(m.container_name, placement.pool, address, m.config)
        command = m.host.run_command(
            f"{worker}-member",
            admit,
            triggers=[container.id],
            # Under the worker it admits, where the tree shows it; it was the pool's child before,
            # and the alias keeps that URN, so existing stacks neither drain nor re-admit.
            parent=container,
            aliases=[pulumi.Alias(parent=self)],
            depends_on=[container, m.container],
            delete=members.drain_argv(
                m.container_name, placement.pool, address, placement.group.rollout.drain_timeout_seconds
            ),
        )
        self.admits.append((admit, command))
        return command

    def _canary(
        self, name: str, group: WorkerGroup, workers: list[docker.Container], args: VllmWorkerPoolArgs
    ) -> list[pulumi.Resource]:
        """The gate, then the split (below 100 %) or the promotion (at 100 %), as `canary.py` says.
        Returns what the rest of the group waits for before it rolls: the promotion, or nothing."""
        m, target, release = args.membership, args.gate, group.canary
        # `check` refused a canary without them before any resource was made.
        assert m is not None and target is not None and release is not None
        params = canary.gate_params(group, target)
        gate = m.host.run_command(
            f"{name}-canary-gate",
            canary.GATE_ARGV,
            # A new canary worker is gated again; so is any change to what the gate checks (`stdin`).
            triggers=[w.id for w in workers],
            parent=self,
            depends_on=[*workers, *(command for _, command in self.admits)],
            stdin=pulumi.Output.secret(target.key.apply(functools.partial(canary.gate_stdin, params))),
        )
        if release.weight_percent < 100:
            create, delete = canary.split_step(m.container_name, group)
            split = m.host.run_command(
                f"{name}-canary-split", create, triggers=[], parent=self, depends_on=[gate], delete=delete
            )
            self.admits.append((create, split))
            return []
        promote_argv = canary.promote_step(m.container_name, group)
        promote = m.host.run_command(
            f"{name}-canary-promote", promote_argv, triggers=[w.id for w in workers], parent=self, depends_on=[gate]
        )
        self.admits.append((promote_argv, promote))
        return [promote]

    @staticmethod
    def _checked_image(placement: Placement, host: GpuHost) -> pulumi.Input[str]:
        """The image, once the preflight passed on the inventory the host measured. Failing here,
        inside an Output, stops `up` before this worker is created."""
        image = placement.group.image
        if host.inventory is None or placement.group.accelerator != "nvidia":
            return image

        def check(gpus: list[Gpu] | None) -> str:
            if gpus is None:
                return image
            problems = worker_problems(placement.group, placement.devices, gpus, placement.host.name)
            if problems:
                raise PreflightError(f"worker `{placement.name}` cannot start:\n  " + "\n  ".join(problems))
            return image

        return host.inventory.apply(check)
