"""One worker's Docker container, from its placement and seat: the resource `VllmWorkerPool`
creates per worker. The parts that are plain data (its ports, GPU request, labels, uploads) are
functions of their own, so the pool's loop only orders the workers and wires them together."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import pulumi
import pulumi_docker as docker

from components.hardening import LogSize, settings, timeouts
from components.hosts.host import GpuHost
from components.workers import layout, rollout, spec
from stacks.config import LmCacheConfig
from stacks.placement import Placement


def seat_of(placement: Placement, stack: str, seats: dict[str, layout.Seat]) -> layout.Seat:
    """Where the worker's container goes in this update; unlisted, it stays on its own GPUs and
    name, delete-before-replace."""
    return seats.get(placement.name) or layout.Seat(
        placement.container_name(stack), placement.devices, rollout.DELETE_FIRST, ""
    )


def seated(placement: Placement, seat: layout.Seat) -> Placement:
    """The placement where it runs now: its own GPUs, or the spare ones it moved to."""
    return dataclasses.replace(placement, devices=seat.devices)


def shared_uploads(
    api_key: pulumi.Output[str], hf_token: pulumi.Output[str] | None
) -> list[docker.ContainerUploadArgs]:
    """The files every worker of the pool gets: the probe, the entrypoint and the secrets."""
    uploads = [
        docker.ContainerUploadArgs(file=spec.HEALTHCHECK_PATH, content=spec.healthcheck_source(), permissions="0555"),
        docker.ContainerUploadArgs(file=spec.ENTRYPOINT_PATH, content=spec.entrypoint_source(), permissions="0555"),
        docker.ContainerUploadArgs(file=spec.API_KEY_PATH, content=pulumi.Output.secret(api_key), permissions="0400"),
    ]
    if hf_token is not None:
        uploads.append(
            docker.ContainerUploadArgs(
                file=spec.HF_TOKEN_PATH,
                content=pulumi.Output.secret(hf_token),
                permissions="0400",
            )
        )
    return uploads


def lmcache_upload(lm: LmCacheConfig, redis_url: pulumi.Output[str]) -> docker.ContainerUploadArgs:
    return docker.ContainerUploadArgs(
        file=spec.LMCACHE_CONFIG_PATH,
        content=pulumi.Output.secret(redis_url.apply(functools.partial(spec.lmcache_yaml, lm))),
        permissions="0400",
    )


def published_ports(placement: Placement) -> list[docker.ContainerPortArgs] | None:
    if placement.published_port is None:
        return None
    return [
        docker.ContainerPortArgs(
            internal=placement.group.port,
            external=placement.published_port,
            ip=placement.host.private_address,
        )
    ]


def gpu_requests(placed: Placement) -> list[docker.ContainerDeviceRequestArgs] | None:
    if placed.group.accelerator != "nvidia":
        return None
    return [docker.ContainerDeviceRequestArgs(driver="nvidia", device_ids=list(placed.devices), capabilities=["gpu"])]


def container_labels(placed: Placement, stack: str, fingerprint: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        **extra,
        **spec.labels(placed, stack),
        layout.SLOT_LABEL: placed.name,
        layout.SPEC_LABEL: fingerprint,
    }


def gateway_address(placement: Placement, seat: layout.Seat, stack: str) -> str:
    """Where the gateway reaches the worker: its published port, else its container on the network."""
    if placement.published_port is None:
        return f"{seat.name}:{placement.group.port}"
    return placement.address(stack)


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """Everything one worker's container is made of, besides its host and options."""

    placement: Placement
    seat: layout.Seat
    stack: str
    image: pulumi.Input[str]
    uploads: list[docker.ContainerUploadArgs]
    labels: dict[str, str]
    kv_offload: bool
    tracing: Sequence[str]
    scale_out: bool = False
    """Serve the prefix-cache router's tokenize calls (`spec.vllm_args`)."""


def worker_container(name: str, w: WorkerSpec, host: GpuHost, opts: pulumi.ResourceOptions) -> docker.Container:
    placement, group, container_name = w.placement, w.placement.group, w.seat.name
    base = placement.container_name(w.stack)
    wait_seconds = spec.wait_timeout_seconds(group)
    return docker.Container(
        name,
        name=container_name,
        hostname=container_name,
        image=w.image,
        entrypoints=["/bin/sh", spec.ENTRYPOINT_PATH],
        command=spec.vllm_args(group, kv_offload=w.kv_offload, tracing=w.tracing, scale_out=w.scale_out),
        envs=spec.worker_env(group, kv_offload=w.kv_offload),
        device_requests=gpu_requests(seated(placement, w.seat)),
        mounts=[
            docker.ContainerMountArgs(
                type="volume",
                source=host.model_cache_volume,
                target=spec.HF_HOME,
                read_only=group.model.offline(),
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
        uploads=w.uploads,
        shm_size=spec.shm_size_mb(group),
        cpu_shares=int(group.resources.cpu_reservation * 1024),
        memory_reservation=group.resources.memory_reservation_mb,
        max_retry_count=group.max_restarts,
        networks_advanced=[
            docker.ContainerNetworksAdvancedArgs(
                name=host.network_name,
                # The slot's name too, for Prometheus: it scrapes the slot, wherever it runs.
                aliases=list(dict.fromkeys([base, container_name])),
            )
        ],
        ports=published_ports(placement),
        wait=True,
        wait_timeout=wait_seconds,
        stop_signal="SIGTERM",
        **settings(
            cpus=group.resources.cpus,
            memory_mb=group.resources.memory_mb,
            logs=LogSize(group.logs.max_size, group.logs.max_file),
            health=spec.health(group),
            # The gateway drained the worker first (its member's delete); what still runs
            # after that drain timed out gets this long, as vLLM finishes requests on SIGTERM.
            grace_seconds=spec.GRACE_SECONDS,
            labels=w.labels,
            restart="on-failure",
        ),
        opts=timeouts(opts, wait_seconds=wait_seconds, grace_seconds=spec.GRACE_SECONDS),
    )
