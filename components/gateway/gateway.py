"""The nginx gateway: the only published port of the platform."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from components import inline
from components.gateway import members, nginx, routing, status_metrics
from components.hardening import REQUEST_LOG, SIDECAR_LOG, Health, in_place, settings, timeouts
from components.hosts.base import Host
from stacks import network
from stacks.config import GatewayConfig
from stacks.secrets import GATE_CLIENT, GENERATED_CLIENT, parse_client_keys

HEALTHZ = f"http://127.0.0.1:{nginx.LISTEN_PORT}/healthz"
# nginx's own exit after its last stream, and the provider's stop call around it.
EXIT_MARGIN_SECONDS = 15


def gateway_grace_seconds(gw: GatewayConfig) -> int:
    """How long a replaced or destroyed gateway may take to stop: nginx's graceful shutdown keeps
    each open stream for at most `worker_shutdown_timeout`, the read timeout (nginx.conf)."""
    return gw.read_timeout_seconds + EXIT_MARGIN_SECONDS


@dataclass(frozen=True)
class GatewayArgs:
    config: GatewayConfig
    host: Host
    """The host the gateway runs on; its workers are reached over the container network."""
    routes: list[nginx.Route]
    worker_key: pulumi.Output[str]
    """The key the workers require (secret); the gateway sends it instead of the client's."""
    client_keys: pulumi.Output[str] | None
    """`gatewayApiKeys`: a JSON object of client name to key (secret). None refuses every request."""
    stack: str
    status_metrics: bool = False
    """Count responses by HTTP status with an mtail sidecar (`status_metrics.py`) for Prometheus."""
    gate_key: pulumi.Output[str] | None = None
    """The canary gate's own key (client `canary-gate`, the only one that may address a pool)."""
    generate_client_key: bool = False
    """Also accept a generated key (client `generated`, `Gateway.client_key`), for first requests."""


def with_own_keys(client_keys: str, gate_key: str, generated_key: str) -> dict[str, str]:
    """The stack's client keys (`gatewayApiKeys`' JSON, checked by the model's parser, which
    refuses the gateway's own names) plus the gateway's own: the canary gate's and the generated one."""
    own = {GATE_CLIENT: gate_key, GENERATED_CLIENT: generated_key}
    return {**parse_client_keys(client_keys), **{name: key for name, key in own.items() if key}}


def routed_pools(routes: list[nginx.Route]) -> list[nginx.Pool]:
    """The pools that have a prefix-cache router (`balance: cache_aware`), each once."""
    pools = [pool for r in routes for pool in (r.stable, *([r.canary] if r.canary else []), *r.extra)]
    return [pool for pool in pools if pool.router is not None]


def router_addresses(routes: list[nginx.Route]) -> dict[str, str]:
    """members.sh's `ROUTERS/<pool>/address` files: each group's router, a joined group's being
    the pool's it joins."""
    files = {}
    for pool in routed_pools(routes):
        assert pool.router is not None
        for group in (pool.group, *pool.joined):
            files[f"{members.ROUTERS_DIR}/{nginx.ident(group)}/address"] = routing.address(pool.router) + "\n"
    return files


def uploads(
    args: GatewayArgs, generated_key: pulumi.Output[str] | None, status_syslog: str | None
) -> list[docker.ContainerUploadArgs]:
    """What the gateway container receives: nginx.conf, the client and worker key files (secret,
    readable by the master only), the membership script and where each pool's router is."""
    clients = pulumi.Output.all(args.client_keys or "{}", args.gate_key or "", generated_key or "").apply(
        lambda v: nginx.render_clients_map(with_own_keys(v[0], v[1], v[2]))
    )
    return [
        docker.ContainerUploadArgs(
            file=nginx.CONFIG_PATH,
            content=nginx.render_nginx_conf(args.config, args.routes, status_syslog=status_syslog),
            permissions="0444",
        ),
        docker.ContainerUploadArgs(
            file=f"{nginx.SECRETS_DIR}/clients.map", content=pulumi.Output.secret(clients), permissions="0400"
        ),
        docker.ContainerUploadArgs(
            file=f"{nginx.SECRETS_DIR}/worker-auth.conf",
            content=pulumi.Output.secret(args.worker_key.apply(nginx.render_worker_auth)),
            permissions="0400",
        ),
        docker.ContainerUploadArgs(file=members.SCRIPT_PATH, content=members.script_source(), permissions="0555"),
        *(
            docker.ContainerUploadArgs(file=path, content=content, permissions="0444")
            for path, content in router_addresses(args.routes).items()
        ),
    ]


@dataclass(frozen=True)
class Membership:
    """What a worker pool needs to put its workers into the gateway and take them out
    (`members.py`): the commands run on the gateway's host, inside this container."""

    host: Host
    container: docker.Container
    container_name: str
    config: GatewayConfig


class Gateway(pulumi.ComponentResource):
    """nginx in front of the vLLM workers, tuned so it adds nothing measurable to TTFT.

    The config (`nginx.conf.template`, rendered by `nginx.py`) streams without buffering or
    caching, balances with `least_conn` over keepalive HTTP/1.1 connections, retries another
    worker on connection errors and 502/503 before any byte is sent, serves only the OpenAI
    inference endpoints, maps client keys to names, swaps in the workers' own key, rate-limits per
    key and logs JSON with a request id. It is the only container with a published port, bound to
    `listenAddress` (loopback unless the stack says otherwise). nginx.conf names no worker: each
    worker joins its pool when it is healthy and leaves it before it is stopped, through
    per-worker commands (`members.py`, `Membership`) and a graceful reload (old nginx workers
    finish their streams, new ones resolve the container names again). So the gateway starts
    before the workers, and a rolling update never changes its config. A reload is chosen over
    nginx's upstream `resolve` because the same config then works on every nginx the tests can
    run (Debian's 1.22 lacks `resolve`), and because a reload is an event Pulumi knows about
    rather than a DNS poll. Secrets arrive as files. The root filesystem stays writable, because
    Docker refuses the provider's file uploads into a read-only one.
    With `status_metrics`, an mtail sidecar counts responses by HTTP status from one syslog line
    per request, for Prometheus (stub_status has no status codes).
    With `balance: cache_aware`, every pool (each model's stable pool and its canary's) gets a
    vllm-router container between nginx and its workers (`routing.py`): nginx's upstream for the
    pool is the router, and the members' admits and drains reach the router's worker API too, so
    rolling updates, canaries and drains work as without it. The canary's router exists whether or
    not a canary runs, as its pool does, so starting a canary changes no container.
    """

    url: pulumi.Output[str]
    container_name: pulumi.Output[str]
    edge_network: pulumi.Output[str]
    """The gateway's bridge network, for services that scrape or sit beside it."""
    status_exporter: str | None
    """`container:port` of the per-status metrics on the edge network, or None when they are off."""
    router_exporters: list[str]
    """`container:port` of each prefix-cache router's metrics on the edge network (none unless
    `balance: cache_aware`)."""
    membership: Membership
    client_key: pulumi.Output[str] | None
    """The generated client key (secret), or None when the stack does not generate one."""

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference-stack:gateway:Gateway", name, None, opts)
        self._name = name
        gw, host = args.config, args.host
        edge = docker.Network(
            f"{name}-edge",
            name=network.gateway_container(args.stack),
            driver="bridge",
            labels=[docker.NetworkLabelArgs(label="inference-stack.role", value="gateway")],
            opts=host.options(self),
        )
        self.client_key = self._generated_key(name) if args.generate_client_key else None
        mtail = self._status_exporter(name, args, edge) if args.status_metrics else None
        status_syslog = f"{mtail[1]}:{status_metrics.SYSLOG_PORT}" if mtail else None
        files = uploads(args, self.client_key, status_syslog)
        pools = routed_pools(args.routes)
        routers, records = self._routers(name, args, edge, pools) if pools else ([], None)
        resolved = [*([mtail[0]] if mtail else []), *routers]
        container = self._nginx(name, args, edge, files, resolved, records)
        container_name = network.gateway_container(args.stack)
        if resolved:
            # nginx resolved mtail's and the routers' names when it loaded its config: re-resolve
            # when one of them is replaced.
            host.run_command(
                f"{name}-reload",
                ["docker", "kill", "--signal", "HUP", container_name],
                triggers=[container.id, *(c.id for c in resolved)],
                parent=self,
                depends_on=[container],
            )
        self.membership = Membership(host, container, container_name, gw)
        self.url = pulumi.Output.from_input(f"http://{gw.listen_address}:{gw.port}")
        self.container_name = container.name
        self.edge_network = edge.name
        self.status_exporter = f"{mtail[1]}:{status_metrics.METRICS_PORT}" if mtail else None
        self.router_exporters = [routing.address(str(pool.router), routing.METRICS_PORT) for pool in pools]
        self.register_outputs(
            {
                "url": self.url,
                "containerName": self.container_name,
                "statusExporter": self.status_exporter,
                "routerExporters": self.router_exporters,
            }
        )

    def _generated_key(self, name: str) -> pulumi.Output[str]:
        # Letters and digits need no quoting in the printed commands. The provider keeps the
        # result secret in state; marked here too, so every output derived from it is.
        password = random.RandomPassword(
            f"{name}-client-key", length=40, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        return pulumi.Output.secret(password.result)

    def _nginx(
        self,
        name: str,
        args: GatewayArgs,
        edge: docker.Network,
        files: list[docker.ContainerUploadArgs],
        resolved: list[docker.Container],
        records: docker.Volume | None,
    ) -> docker.Container:
        gw, host = args.config, args.host
        container_name = network.gateway_container(args.stack)
        grace = gateway_grace_seconds(gw)
        mounts = None
        if records is not None:
            mounts = [docker.ContainerMountArgs(type="volume", source=records.name, target=routing.RECORDS_DIR)]
        return docker.Container(
            f"{name}-nginx",
            name=container_name,
            hostname=container_name,
            image=gw.image,
            uploads=files,
            mounts=mounts,
            ports=[docker.ContainerPortArgs(internal=nginx.LISTEN_PORT, external=gw.port, ip=gw.listen_address)],
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=edge.name),
                docker.ContainerNetworksAdvancedArgs(name=host.network_name),
            ],
            # Not read-only: pulumi-docker copies `uploads` in at "/", which Docker refuses on a read-only
            # root filesystem (tests/components/test_uploads.py).
            wait=True,
            wait_timeout=60,
            # SIGQUIT is nginx's graceful shutdown: in-flight streams finish first, each for at most
            # `worker_shutdown_timeout` (the read timeout). The provider's delete waits that long,
            # plus a margin for nginx's exit, before it kills what is left.
            stop_signal="SIGQUIT",
            **settings(
                cpus=gw.cpus,
                memory_mb=gw.memory_mb,
                logs=REQUEST_LOG,
                health=Health(["CMD", "wget", "-q", "-O", "/dev/null", HEALTHZ], 10, 3, 3, 5),
                # Request bodies over 1 MiB spill here (up to clientMaxBodySize each).
                tmpfs={"/tmp": "rw,size=256m"},
                grace_seconds=grace,
                labels={"inference-stack.role": "gateway"},
                # The master, root, creates its temp dirs for the worker user and then runs the
                # workers as that user: nothing else of Docker's default set.
                caps=("CHOWN", "SETGID", "SETUID"),
            ),
            # nginx resolves mtail's name (the syslog server) and the routers' when it loads its
            # config: they come first.
            opts=timeouts(
                in_place(
                    pulumi.ResourceOptions(
                        parent=self,
                        provider=host.provider,
                        depends_on=[*host.ready, *resolved],
                    )
                ),
                grace_seconds=grace,
            ),
        )

    def readmit(self, admits: list[tuple[list[str], pulumi.Resource]]) -> None:
        """A replaced gateway starts with no members (they live in its container): this step,
        triggered by the gateway container's id, admits every worker again, each with the same
        command as its own member step. On a first deploy it runs once after them, harmlessly."""
        if not admits:
            return
        self.membership.host.run_command(
            f"{self._name}-readmit",
            inline.argv("sh", " &&\n".join(shlex.join(argv) for argv, _ in admits) + "\n", "readmit.sh"),
            triggers=[self.membership.container.id],
            parent=self,
            depends_on=[self.membership.container, *(command for _, command in admits)],
        )

    def _status_exporter(self, name: str, args: GatewayArgs, edge: docker.Network) -> tuple[docker.Container, str]:
        """mtail beside nginx, built on the gateway host from `mtail/` (there is no official image),
        reachable only on the edge network: nginx sends it syslog, Prometheus scrapes it."""
        on_host = args.host.options(self)
        image = self._local_image(f"{name}-mtail-image", status_metrics.IMAGE, status_metrics.CONTEXT_DIR, args)
        mtail_name = network.gateway_status_container(args.stack)
        container = docker.Container(
            f"{name}-mtail",
            name=mtail_name,
            hostname=mtail_name,
            # The local image id: a rebuild (a changed program or Dockerfile) replaces the container.
            image=image.repo_digest,
            command=status_metrics.command(),
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=edge.name)],
            read_only=True,
            **settings(cpus=0.5, memory_mb=128, logs=SIDECAR_LOG, labels={"inference-stack.role": "gateway-status"}),
            opts=in_place(on_host),
        )
        return container, mtail_name

    def _local_image(self, name: str, image_name: str, context_dir: Path, args: GatewayArgs) -> docker.Image:
        """An image built on the gateway host from a folder beside this module (there is no official
        one). The context is relative to the working directory (the Pulumi project root, where
        `pulumi up` and `make render` run), so a render does not depend on the checkout's path."""
        return docker.Image(
            name,
            image_name=image_name,
            build=docker.DockerBuildArgs(context=os.path.relpath(context_dir)),
            skip_push=True,
            opts=args.host.options(self),
        )

    def _routers(
        self, name: str, args: GatewayArgs, edge: docker.Network, pools: list[nginx.Pool]
    ) -> tuple[list[docker.Container], docker.Volume]:
        """A router per pool, one image for all, and the volume where members.sh records each
        router's members for its next start (it outlives a replaced router and a replaced gateway)."""
        image = self._local_image(f"{name}-router-image", routing.IMAGE, routing.CONTEXT_DIR, args)
        records = docker.Volume(
            f"{name}-router-records", name=f"{args.stack}-router-records", opts=args.host.options(self)
        )
        return [self._router(name, args, edge, pool, image, records) for pool in pools], records

    def _router(
        self,
        name: str,
        args: GatewayArgs,
        edge: docker.Network,
        pool: nginx.Pool,
        image: docker.Image,
        records: docker.Volume,
    ) -> docker.Container:
        """vllm-router in front of one pool, built on the gateway host from `router/` like mtail.
        On the edge network (nginx and Prometheus reach it) and the workers' (it reaches them); it
        publishes nothing. It starts with the members recorded on the volume, read-only here."""
        assert pool.router is not None
        gw = args.config
        # Streams pass through it: a stop waits as long as nginx's does for them.
        grace = gateway_grace_seconds(gw)
        return docker.Container(
            f"{name}-router-{pool.group}",
            name=pool.router,
            hostname=pool.router,
            # The local image id: a rebuild (a changed Dockerfile, pin or script) replaces the container.
            image=image.repo_digest,
            command=routing.command(gw.router),
            envs=routing.env(pool.router),
            mounts=[
                docker.ContainerMountArgs(
                    type="volume", source=records.name, target=routing.RECORDS_MOUNT, read_only=True
                )
            ],
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=edge.name),
                docker.ContainerNetworksAdvancedArgs(name=args.host.network_name),
            ],
            read_only=True,
            wait=True,
            wait_timeout=60,
            **settings(
                cpus=gw.router.cpus,
                memory_mb=gw.router.memory_mb,
                logs=SIDECAR_LOG,
                health=Health(routing.healthcheck(), 10, 5, 3, 10),
                grace_seconds=grace,
                labels={"inference-stack.role": "router", "inference-stack.pool": pool.group},
            ),
            opts=timeouts(in_place(args.host.options(self)), grace_seconds=grace),
        )
