"""A pool of GPU-reserved vLLM workers serving one model."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from components.gateway import members
from components.gateway.gateway import Membership
from components.hardening import settings, timeouts
from components.hosts.host import GpuHost
from components.workers import canary, layout, rollout, spec
from stacks.config import LmCacheConfig, WorkerGroup
from stacks.inventory import Gpu
from stacks.placement import Placement
from stacks.preflight import PreflightError, worker_problems


@dataclass(frozen=True)
class VllmWorkerPoolArgs:
    group: WorkerGroup
    placements: list[Placement]
    """Where each worker runs (from `stacks.placement.place`)."""
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
    fingerprints: dict[str, str] = field(default_factory=dict)
    """Each worker's `spec.fingerprint`, by placement name, for its `inference-stack.spec` label."""
    seats: dict[str, layout.Seat] = field(default_factory=dict)
    """Where each worker's container goes in this update (`layout.seat`), by placement name;
    unlisted workers stay on their own GPUs and name, delete-before-replace."""


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
        super().__init__("inference-stack:workers:VllmWorkerPool", name, None, opts)
        group = args.group
        uploads = [
            docker.ContainerUploadArgs(file=spec.PROBE_PATH, content=spec.probe_source(), permissions="0555"),
            docker.ContainerUploadArgs(file=spec.ENTRYPOINT_PATH, content=spec.entrypoint_source(), permissions="0555"),
            docker.ContainerUploadArgs(
                file=spec.API_KEY_PATH, content=pulumi.Output.secret(args.api_key), permissions="0400"
            ),
        ]
        if args.hf_token is not None:
            uploads.append(
                docker.ContainerUploadArgs(
                    file=spec.HF_TOKEN_PATH,
                    content=pulumi.Output.secret(args.hf_token),
                    permissions="0400",
                )
            )
        containers: dict[str, docker.Container] = {}
        self.admits: list[tuple[list[str], pulumi.Resource]] = []
        self.rollout_plan = rollout.plan(args.placements, group.rollout.max_unavailable, args.seats)
        by_name = {p.name: p for p in args.placements}
        joined: dict[str, pulumi.Resource] = {}
        canary_containers: list[docker.Container] = []
        gated: list[pulumi.Resource] | None = None
        for step in self.rollout_plan:
            placement = by_name[step.worker]
            worker_group = placement.group
            base = placement.container_name(args.stack)
            seat = args.seats.get(placement.name) or layout.Seat(base, placement.devices, rollout.DELETE_FIRST, "")
            # Where it runs now: its own GPUs, or the spare ones it moved to.
            placed = dataclasses.replace(placement, devices=seat.devices)
            if not placement.canary and gated is None and group.canary is not None:
                # Every canary worker is in the plan before the rest: gate them, then raise their
                # weight or (at 100 %) promote them, before the rest of the group may roll.
                gated = self._canary(name, group, canary_containers, args)
            host = args.hosts[placement.host.name]
            on_host = host.options(self)
            # The previous wave must be healthy and back in the gateway before this one goes.
            on_host = pulumi.ResourceOptions.merge(
                on_host,
                pulumi.ResourceOptions(
                    depends_on=[joined[w] for w in step.after] + (gated or []),
                    delete_before_replace=step.strategy == rollout.DELETE_FIRST,
                ),
            )
            worker = f"{name}-{placement.host.name}-{placement.index}"
            container_name = seat.name
            ports = None
            if placement.published_port is not None:
                ports = [
                    docker.ContainerPortArgs(
                        internal=worker_group.port,
                        external=placement.published_port,
                        ip=placement.host.private_address,
                    )
                ]
            device_requests = None
            if worker_group.accelerator == "nvidia":
                device_requests = [
                    docker.ContainerDeviceRequestArgs(
                        driver="nvidia",
                        device_ids=list(placed.devices),
                        capabilities=["gpu"],
                    )
                ]
            offload = args.lmcache is not None
            tracing = args.tracing.get(placement.host.name, ())
            all_labels = {
                **args.labels,
                **spec.labels(placed, args.stack),
                layout.SLOT_LABEL: placement.name,
                layout.SPEC_LABEL: args.fingerprints[placement.name],
            }
            worker_uploads = list(uploads)
            if args.lmcache is not None:
                lm = args.lmcache
                url = args.redis_urls[placement.host.name]
                worker_uploads.append(
                    docker.ContainerUploadArgs(
                        file=spec.LMCACHE_CONFIG_PATH,
                        content=pulumi.Output.secret(url.apply(functools.partial(spec.lmcache_yaml, lm))),
                        permissions="0400",
                    )
                )
            wait_seconds = spec.wait_timeout_seconds(worker_group)
            container = docker.Container(
                worker,
                name=container_name,
                hostname=container_name,
                image=self._checked_image(placed, host),
                entrypoints=["/bin/sh", spec.ENTRYPOINT_PATH],
                command=spec.vllm_args(worker_group, kv_offload=offload, tracing=tracing),
                envs=spec.worker_env(worker_group, kv_offload=offload),
                device_requests=device_requests,
                mounts=[
                    docker.ContainerMountArgs(
                        type="volume",
                        source=host.model_cache_volume,
                        target=spec.HF_HOME,
                        read_only=worker_group.model.offline(),
                    ),
                ],
                # A host directory per worker on fast storage; Docker creates it when missing.
                volumes=[
                    docker.ContainerVolumeArgs(
                        # The slot's directory, whichever of its two names runs: a moved worker
                        # keeps its compiled graphs (the old one only reads them meanwhile).
                        host_path=f"{placement.host.compile_cache_path}/{base}",
                        container_path=spec.VLLM_CACHE_ROOT,
                    )
                ],
                uploads=worker_uploads,
                shm_size=spec.shm_size_mb(worker_group),
                cpu_shares=int(worker_group.resources.cpu_reservation * 1024),
                memory_reservation=worker_group.resources.memory_reservation_mb,
                max_retry_count=worker_group.max_restarts,
                networks_advanced=[
                    docker.ContainerNetworksAdvancedArgs(
                        name=host.network_name,
                        # The slot's name too, for Prometheus: it scrapes the slot, wherever it runs.
                        aliases=list(dict.fromkeys([base, container_name])),
                    )
                ],
                ports=ports,
                wait=True,
                wait_timeout=wait_seconds,
                stop_signal="SIGTERM",
                **settings(
                    cpus=worker_group.resources.cpus,
                    memory_mb=worker_group.resources.memory_mb,
                    logs=(worker_group.logs.max_size, worker_group.logs.max_file),
                    health=spec.health(worker_group),
                    # The gateway drained the worker first (its member's delete); what still runs
                    # after that drain timed out gets this long, as vLLM finishes requests on SIGTERM.
                    grace_seconds=spec.GRACE_SECONDS,
                    labels=all_labels,
                    restart="on-failure",
                ),
                opts=timeouts(on_host, wait_seconds=wait_seconds, grace_seconds=spec.GRACE_SECONDS),
            )
            containers[placement.name] = container
            if placement.canary:
                canary_containers.append(container)
            address = placement.address(args.stack)
            if placement.published_port is None:
                address = f"{container_name}:{worker_group.port}"
            joined[placement.name] = self._membership(worker, container, placement, address, args) or container
        self.containers = [containers[p.name] for p in args.placements]
        self.urls = pulumi.Output.from_input([f"http://{p.address(args.stack)}" for p in args.placements])
        self.compile_cache_dirs = [f"{p.host.compile_cache_path}/{args.stack}-{p.name}" for p in args.placements]
        self.container_names = pulumi.Output.all(*[c.name for c in self.containers]).apply(list)
        self.api_key = pulumi.Output.secret(args.api_key)
        self.register_outputs({"urls": self.urls, "containerNames": self.container_names})

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
            parent=self,
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
        if m is None or target is None or release is None:
            raise ValueError(f"group {group.name}: a canary needs the gateway and the gate's target")
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
