"""Redis for the platform: the workers' shared KV-cache store and an application cache."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from components.hardening import STATE_LOG, Health, in_place, settings
from components.hosts.host import GpuHost
from stacks.config import RedisConfig
from stacks.network import REDIS_PORT, redis_container, redis_url

TEMPLATE = Path(__file__).parent / "files" / "redis.conf.template"
CONF_PATH = "/usr/local/etc/redis/redis.conf"
ACL_PATH = "/run/secrets/redis-acl.conf"
PASSWORD_PATH = "/run/secrets/redis-password"
DATA_DIR = "/data"
REDIS_UID = "999"  # the official image's `redis` user
# Its shutdown: the AOF fsync and, with `save` lines, one RDB of at most maxmemory. Ample for both.
GRACE_SECONDS = 60


def render_redis_conf(cfg: RedisConfig, data_dir: str = DATA_DIR, acl_file: str = ACL_PATH) -> str:
    if cfg.maxmemory_policy is None:
        raise ValueError("redis.maxmemoryPolicy is required")
    aof = cfg.persistence == "aof"
    values = {
        "ACL_FILE": acl_file,
        "DATA_DIR": data_dir,
        "MAXMEMORY_MB": str(cfg.maxmemory_mb),
        "MAXMEMORY_POLICY": cfg.maxmemory_policy,
        "APPENDONLY": "yes" if aof else "no",
        # RDB snapshots fork the whole dataset; with AOF they add nothing a restart needs.
        "SAVE": '""',
        "PERSISTENCE_NOTE": (
            "AOF, fsync every second: a crash loses at most the last second of writes."
            if aof
            else "none: memory only, a restart starts empty (a pure cache)."
        ),
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def render_acl(password: str) -> str:
    """The default user, with only the SHA-256 of its password."""
    if len(password) < 16:
        raise ValueError("the Redis password must be at least 16 characters")
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"user default on #{digest} ~* &* +@all\n"


@dataclass(frozen=True)
class RedisArgs:
    config: RedisConfig
    host: GpuHost
    password: pulumi.Output[str]
    stack: str
    publish_address: str | None = None
    """Publish on this private address (for KV-cache offload from workers on other hosts)."""


class Redis(pulumi.ComponentResource):
    """Redis with auth on, protected mode on, bounded memory and a chosen eviction policy.

    The config is a generated file; the password reaches Redis only as a SHA-256 ACL entry in a
    secret file and reaches the healthcheck as a 0400 file, never an env var or argv. Persistence
    is AOF with `appendfsync everysec` on a named volume (at most one second lost on a crash), or
    none for a pure cache (memory only, on tmpfs, so nothing touches the disk). It runs as the
    image's `redis` user with no published port, unless workers
    on other hosts offload their KV cache to it, and then only on the host's private address.
    """

    address: pulumi.Output[str]
    """`host:port` on the platform network."""
    password: pulumi.Output[str]
    """Secret."""
    url: pulumi.Output[str]
    """`redis://:<password>@host:port` on the platform network, secret, for LMCache and applications."""

    def __init__(self, name: str, args: RedisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference-stack:data:Redis", name, None, opts)
        cfg, host = args.config, args.host
        # Rendered before the first child: a config it refuses registers nothing.
        conf = render_redis_conf(cfg)
        on_host = host.options(self)
        container_name = redis_container(args.stack)
        mounts = []
        tmpfs = None
        if cfg.persistence == "aof":
            volume = host.data_volume(f"{name}-data", f"{args.stack}-redis-data", self)
            mounts.append(docker.ContainerMountArgs(type="volume", source=volume.name, target=DATA_DIR))
        else:
            tmpfs = {DATA_DIR: f"rw,size={cfg.maxmemory_mb + 64}m,uid={REDIS_UID}"}
        secret_password: pulumi.Output[str] = pulumi.Output.secret(args.password)
        ports = None
        if args.publish_address is not None:
            ports = [docker.ContainerPortArgs(internal=REDIS_PORT, external=REDIS_PORT, ip=args.publish_address)]
        files = [
            docker.ContainerUploadArgs(file=CONF_PATH, content=conf, permissions="0444"),
            docker.ContainerUploadArgs(
                file=ACL_PATH,
                content=pulumi.Output.secret(secret_password.apply(render_acl)),
                owner=REDIS_UID,
                permissions="0400",
            ),
            docker.ContainerUploadArgs(
                file=PASSWORD_PATH, content=secret_password, owner=REDIS_UID, permissions="0400"
            ),
        ]
        container = docker.Container(
            name,
            name=container_name,
            hostname=container_name,
            image=cfg.image,
            command=["redis-server", CONF_PATH],
            user=f"{REDIS_UID}:{REDIS_UID}",
            uploads=files,
            mounts=mounts,
            # Not read-only: pulumi-docker copies `uploads` in at "/", which Docker refuses on a read-only
            # root filesystem (tests/components/test_uploads.py).
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=host.network_name, aliases=["redis"])],
            ports=ports,
            wait=True,
            wait_timeout=90,
            **settings(
                cpus=cfg.cpus,
                memory_mb=cfg.memory_mb,
                logs=STATE_LOG,
                # `redis-cli ping` exits 0 even on an auth error; only PONG means healthy.
                health=Health(
                    ["CMD-SHELL", f'REDISCLI_AUTH="$(cat {PASSWORD_PATH})" redis-cli ping | grep -q PONG'], 10, 3, 3, 10
                ),
                tmpfs=tmpfs,
                # SIGTERM makes Redis fsync its append-only file (and write an RDB when `save` is
                # configured) before it exits; a kill at once loses up to the last second of writes.
                grace_seconds=GRACE_SECONDS,
            ),
            opts=in_place(on_host),
        )
        self.address = pulumi.Output.from_input(f"{container_name}:{REDIS_PORT}")
        self.password = secret_password
        self.url = self.url_at(f"{container_name}:{REDIS_PORT}")
        self.container = container
        self.register_outputs({"address": self.address, "password": self.password})

    def url_at(self, target: str) -> pulumi.Output[str]:
        """The URL with Redis reached at `target` (`host:port`, `stacks.network.redis_target`), secret."""
        return pulumi.Output.secret(self.password.apply(functools.partial(redis_url, target)))
