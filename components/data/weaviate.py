"""Weaviate, the vector database: API keys on, anonymous access off, persistent, backed up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from components.hardening import STATE_LOG, Health, in_place, settings
from components.hosts.host import GpuHost
from stacks.config import WeaviateConfig
from stacks.network import WEAVIATE_PORT, weaviate_container, weaviate_url
from stacks.secrets import S3_CREDENTIAL, parse_weaviate_keys

START_SCRIPT = Path(__file__).parent / "files" / "weaviate-start.sh"
START_PATH = "/opt/inference-stack/weaviate-start.sh"
SECRETS_PATH = "/run/secrets/weaviate.env"
DATA_PATH = "/var/lib/weaviate"
READY_URL = f"http://127.0.0.1:{WEAVIATE_PORT}/v1/.well-known/ready"


def weaviate_env(cfg: WeaviateConfig, users: list[str]) -> dict[str, str]:
    """Non-secret environment, each variable as Weaviate's docs name it:
    https://docs.weaviate.io/deploy/configuration/env-vars (auth, persistence, modules) and
    https://docs.weaviate.io/deploy/configuration/backups#s3-aws-or-s3-compatible (backup-s3)."""
    env = {
        # API keys on; the keys themselves come from the secret file (weaviate-start.sh).
        "AUTHENTICATION_APIKEY_ENABLED": "true",
        "AUTHENTICATION_APIKEY_USERS": ",".join(users),
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
        # RBAC with the first user as root; without authorization every key is all-powerful anyway.
        "AUTHORIZATION_RBAC_ENABLED": "true",
        "AUTHORIZATION_RBAC_ROOT_USERS": users[0],
        "PERSISTENCE_DATA_PATH": DATA_PATH,
        # Pinned: the default is the container id, which changes when the container is replaced
        # and then strands the data under the old node name.
        "CLUSTER_HOSTNAME": "node1",
        "DEFAULT_VECTORIZER_MODULE": "none",
        "QUERY_DEFAULTS_LIMIT": "25",
        "DISABLE_TELEMETRY": "true",
        "GOMEMLIMIT": f"{int(cfg.memory_mb * 0.85)}MiB",
    }
    backup = cfg.backup
    if backup.enabled:
        env["ENABLE_MODULES"] = "backup-s3"
        env["BACKUP_S3_BUCKET"] = backup.bucket or ""
        env["BACKUP_S3_PATH"] = backup.path
        env["BACKUP_S3_USE_SSL"] = "true" if backup.use_ssl else "false"
        if backup.endpoint:
            env["BACKUP_S3_ENDPOINT"] = backup.endpoint
        if backup.region:
            env["AWS_REGION"] = backup.region
    return env


def render_secrets_env(keys: dict[str, str], users: list[str], access_key: str | None, secret_key: str | None) -> str:
    """The secret file weaviate-start.sh sources. Every value was checked against a safe alphabet,
    so single quotes cannot be broken out of."""
    lines = [f"AUTHENTICATION_APIKEY_ALLOWED_KEYS='{','.join(keys[u] for u in users)}'"]
    if access_key is not None and secret_key is not None:
        for name, value in (("AWS_ACCESS_KEY_ID", access_key), ("AWS_SECRET_ACCESS_KEY", secret_key)):
            if not S3_CREDENTIAL.fullmatch(value):
                raise ValueError(f"{name} has characters an S3 credential never has")
            lines.append(f"{name}='{value}'")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class WeaviateArgs:
    config: WeaviateConfig
    host: GpuHost
    api_keys: pulumi.Output[str]
    """`weaviateApiKeys` (secret JSON)."""
    users: list[str]
    """The users of those keys, in order (not secret)."""
    stack: str
    backup_access_key_id: pulumi.Output[str] | None = None
    backup_secret_access_key: pulumi.Output[str] | None = None


class Weaviate(pulumi.ComponentResource):
    """Weaviate with API-key auth (anonymous off, RBAC with the first user as root), data on a
    named volume at `PERSISTENCE_DATA_PATH`, a readiness healthcheck and no published port.
    Keys and S3 credentials are a secret file exported by the start script into Weaviate's own
    environment. With backups on, the backup-s3 module writes to the configured bucket (AWS or
    any S3-compatible endpoint) and `make backup-check` proves the newest backup is recent."""

    address: pulumi.Output[str]

    def __init__(self, name: str, args: WeaviateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference-stack:data:Weaviate", name, None, opts)
        cfg, host = args.config, args.host
        on_host = host.options(self)
        container_name = weaviate_container(args.stack)
        volume = host.data_volume(f"{name}-data", f"{args.stack}-weaviate-data", self)
        creds = [args.backup_access_key_id, args.backup_secret_access_key]
        secrets = pulumi.Output.all(args.api_keys, *[c for c in creds if c is not None]).apply(
            lambda values: render_secrets_env(
                parse_weaviate_keys(values[0]), args.users, *(values[1:3] if len(values) == 3 else (None, None))
            )
        )
        env = weaviate_env(cfg, args.users)
        container = docker.Container(
            name,
            name=container_name,
            hostname=container_name,
            image=cfg.image,
            entrypoints=["/bin/sh", START_PATH],
            envs=[f"{k}={v}" for k, v in sorted(env.items())],
            uploads=[
                docker.ContainerUploadArgs(file=START_PATH, content=START_SCRIPT.read_text(), permissions="0555"),
                docker.ContainerUploadArgs(
                    file=SECRETS_PATH, content=pulumi.Output.secret(secrets), permissions="0400"
                ),
            ],
            mounts=[docker.ContainerMountArgs(type="volume", source=volume.name, target=DATA_PATH)],
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=host.network_name, aliases=["weaviate"])],
            wait=True,
            wait_timeout=180,
            **settings(
                cpus=cfg.cpus,
                memory_mb=cfg.memory_mb,
                logs=STATE_LOG,
                # Alpine's busybox wget; the readiness endpoint needs no key.
                health=Health(["CMD", "wget", "-q", "--spider", READY_URL], 10, 5, 6, 30),
                # Weaviate flushes its LSM stores on SIGTERM; give it time.
                grace_seconds=60,
            ),
            opts=in_place(on_host),
        )
        self.address = pulumi.Output.from_input(weaviate_url(args.stack))
        self.container = container
        self.register_outputs({"address": self.address})
