"""Weaviate: the container the stacks declare, and its start script run for real with a stub.

Weaviate itself cannot run here (no Docker daemon or registry, and no Weaviate binary), so these
tests do not prove that Weaviate accepts the configuration. They check the declared environment
against Weaviate's documented variables (each one cites its doc page; the facts behind them,
with source lines at v1.39.0, are in docs/data-services-facts.md, part B), that no key or S3
credential appears in plaintext anywhere in the synth, and that the real `weaviate-start.sh`,
run with `sh`, hands a stub binary exactly the keys, credentials and argv Weaviate would get.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.data import weaviate
from components.data.weaviate import render_secrets_env, weaviate_env
from composition.platform import main as program
from stacks.config import WeaviateConfig
from stacks.secrets import parse_weaviate_keys as parse_api_keys
from tests.helpers import as_pulumi_config, valid_config
from tests.support.tools import require_tool
from tools.synth import Synth, run

CONTAINER = "docker:index/container:Container"
SCRIPT = weaviate.START_SCRIPT
KEYS = {"app": "wv-TOPSECRET-app-key-0123456789", "reader": "wv-TOPSECRET-reader+key/=abcdef"}
ACCESS_KEY = "AKIATOPSECRET0ACCESS"
SECRET_KEY = "TOPSECRET/backup+Secret=Key0123456789abcdef"
BACKUP = {"enabled": True, "bucket": "stack-backups", "path": "weaviate/test", "region": "eu-west-1"}
RUN_TIMEOUT = 10

ENV_VARS = "https://docs.weaviate.io/deploy/configuration/env-vars"


def env_of(synth: Synth) -> dict[str, str]:
    envs: list[str] = synth.named("weaviate")["inputs"]["envs"]
    return dict(e.split("=", 1) for e in envs)


def configured() -> dict[str, Any]:
    values = valid_config()
    values["weaviate"] = {"enabled": True, "backup": dict(BACKUP)}
    values["weaviateApiKeys"] = json.dumps(KEYS)
    values["weaviateBackupAccessKeyId"] = ACCESS_KEY
    values["weaviateBackupSecretAccessKey"] = SECRET_KEY
    return values


SECRET_KEYS = [
    "inference-stack:weaviateApiKeys",
    "inference-stack:weaviateBackupAccessKeyId",
    "inference-stack:weaviateBackupSecretAccessKey",
]


@pytest.fixture(scope="module")
def with_secrets() -> Synth:
    return run("test", as_pulumi_config(configured()), SECRET_KEYS, program)


# --- the declared container ------------------------------------------------------------------------


def test_prod_env_is_weaviates_documented_variables(prod: Synth) -> None:
    env = env_of(prod)
    data_mount = prod.named("weaviate")["inputs"]["mounts"]
    assert env == {
        # API-key authentication on; the keys themselves arrive through the secret file.
        # https://docs.weaviate.io/deploy/configuration/authentication and ENV_VARS
        "AUTHENTICATION_APIKEY_ENABLED": "true",
        # Key i belongs to user i (prod configures no keys, so one generated `admin` key).
        # https://docs.weaviate.io/deploy/configuration/authentication
        "AUTHENTICATION_APIKEY_USERS": "admin",
        # Anonymous access off; its documented default is true.
        # https://docs.weaviate.io/deploy/configuration/authentication and ENV_VARS
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
        # RBAC on, the first user as root (RBAC and AdminList are mutually exclusive).
        # https://docs.weaviate.io/deploy/configuration/configuring-rbac
        # https://docs.weaviate.io/deploy/configuration/authorization
        "AUTHORIZATION_RBAC_ENABLED": "true",
        # https://docs.weaviate.io/deploy/configuration/configuring-rbac
        "AUTHORIZATION_RBAC_ROOT_USERS": "admin",
        # Default `./data`, relative to `/`: pointed at the mounted volume instead. ENV_VARS
        "PERSISTENCE_DATA_PATH": "/var/lib/weaviate",
        # Default is the hostname (the container id in Docker): pinned so the node name survives
        # a replaced container. ENV_VARS
        "CLUSTER_HOSTNAME": "node1",
        # ENV_VARS (default `none`; stated explicitly)
        "DEFAULT_VECTORIZER_MODULE": "none",
        # ENV_VARS (default 10)
        "QUERY_DEFAULTS_LIMIT": "25",
        # https://docs.weaviate.io/deploy/configuration/telemetry
        "DISABLE_TELEMETRY": "true",
        # Go's runtime soft memory limit (https://pkg.go.dev/runtime#hdr-Environment_Variables),
        # listed on ENV_VARS; 85 % of the 4096 MiB container limit. Not covered by the facts file.
        "GOMEMLIMIT": "3481MiB",
        # backup-s3: https://docs.weaviate.io/deploy/configuration/backups (and ENV_VARS for
        # ENABLE_MODULES).
        "ENABLE_MODULES": "backup-s3",
        # https://docs.weaviate.io/deploy/configuration/backups (required, else the module fails init)
        "BACKUP_S3_BUCKET": "inference-stack-prod-backups",
        # https://docs.weaviate.io/deploy/configuration/backups (prefix inside the bucket)
        "BACKUP_S3_PATH": "weaviate/prod",
        # https://docs.weaviate.io/deploy/configuration/backups (SSL stays on unless `false`)
        "BACKUP_S3_USE_SSL": "true",
        # https://docs.weaviate.io/deploy/configuration/backups (`AWS_REGION`, else AWS_DEFAULT_REGION)
        "AWS_REGION": "eu-west-1",
    }
    assert data_mount == [{"type": "volume", "source": "prod-weaviate-data", "target": env["PERSISTENCE_DATA_PATH"]}]
    # No BACKUP_S3_ENDPOINT: AWS (the module's default endpoint, s3.amazonaws.com).


def test_configured_users_and_no_secret_in_plaintext(with_secrets: Synth) -> None:
    dump = json.dumps(with_secrets.resources)
    assert "TOPSECRET" not in dump
    for value in (*KEYS.values(), ACCESS_KEY, SECRET_KEY):
        assert value not in dump
    env = env_of(with_secrets)
    assert env["AUTHENTICATION_APIKEY_USERS"] == "app,reader"
    assert env["AUTHORIZATION_RBAC_ROOT_USERS"] == "app"
    assert env["BACKUP_S3_BUCKET"] == "stack-backups" and env["BACKUP_S3_PATH"] == "weaviate/test"
    for name in ("AUTHENTICATION_APIKEY_ALLOWED_KEYS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name not in env
    uploads = {u["file"]: u["content"] for u in with_secrets.named("weaviate")["inputs"]["uploads"]}
    assert uploads[weaviate.SECRETS_PATH] == "[secret]"
    # Configured keys replace the generated admin key.
    assert not [r for r in with_secrets.resources if r["name"] == "weaviate-admin-key"]


def test_an_s3_compatible_endpoint() -> None:
    cfg = WeaviateConfig.model_validate(
        {"enabled": True, "backup": {**BACKUP, "endpoint": "minio.internal:9000", "useSsl": False}}
    )
    env = weaviate_env(cfg, ["app"])
    # https://docs.weaviate.io/deploy/configuration/backups: host[:port], no scheme; plain HTTP.
    assert env["BACKUP_S3_ENDPOINT"] == "minio.internal:9000" and env["BACKUP_S3_USE_SSL"] == "false"
    no_backup = weaviate_env(WeaviateConfig.model_validate({"enabled": True}), ["app"])
    assert not any(k.startswith(("BACKUP_", "AWS_")) or k == "ENABLE_MODULES" for k in no_backup)


# --- the real start script, with a stub for the Weaviate binary -----------------------------------


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    """A stand-in `/bin/weaviate` that records its argv and environment, NUL-separated."""
    path = tmp_path / "bin" / "weaviate"
    path.parent.mkdir()
    path.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {tmp_path}/argv\nenv -0 > {tmp_path}/env\n')
    path.chmod(0o755)
    return path


def start(tmp_path: Path, stub: Path, secrets: str | None, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    if secrets is not None:
        (secrets_dir / "weaviate.env").write_text(secrets)
        (secrets_dir / "weaviate.env").chmod(0o400)
    return subprocess.run(
        ["sh", str(SCRIPT)],
        env={
            "PATH": os.environ["PATH"],
            "INFERENCE_STACK_SECRETS_DIR": str(secrets_dir),
            "WEAVIATE_BINARY": str(stub),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def recorded(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    env = dict(e.split("=", 1) for e in (tmp_path / "env").read_text().split("\0")[:-1])
    return argv, env


def test_the_stub_gets_the_keys_and_credentials_and_exact_argv(tmp_path: Path, stub: Path) -> None:
    users = list(parse_api_keys(json.dumps(KEYS)))
    cfg = WeaviateConfig.model_validate({"enabled": True, "backup": BACKUP})
    declared = weaviate_env(cfg, users)
    result = start(tmp_path, stub, render_secrets_env(KEYS, users, ACCESS_KEY, SECRET_KEY), declared)
    assert result.returncode == 0, result
    argv, env = recorded(tmp_path)
    assert argv == ["--host", "0.0.0.0", "--port", "8080", "--scheme", "http"]
    # Key i is user i's key: Weaviate pairs the two comma lists by position.
    assert env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"] == f"{KEYS['app']},{KEYS['reader']}"
    assert env["AUTHENTICATION_APIKEY_USERS"] == "app,reader"
    assert env["AWS_ACCESS_KEY_ID"] == ACCESS_KEY and env["AWS_SECRET_ACCESS_KEY"] == SECRET_KEY
    for name, value in declared.items():
        assert env[name] == value
    assert "TOPSECRET" not in result.stdout + result.stderr


def test_without_backup_credentials_only_the_keys_are_exported(tmp_path: Path, stub: Path) -> None:
    result = start(tmp_path, stub, render_secrets_env(KEYS, ["reader", "app"], None, None), {})
    assert result.returncode == 0, result
    _, env = recorded(tmp_path)
    assert env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"] == f"{KEYS['reader']},{KEYS['app']}"
    assert not any(name.startswith("AWS_") for name in env)


def test_a_missing_secrets_file_refuses_to_start(tmp_path: Path, stub: Path) -> None:
    result = start(tmp_path, stub, None, {"AUTHENTICATION_APIKEY_ENABLED": "true"})
    assert result.returncode == 1
    assert "weaviate.env is missing; refusing to start without API keys" in result.stderr
    assert not (tmp_path / "argv").exists()


@pytest.mark.parametrize(
    "keys",
    [
        {"app": "short"},
        {"app": "0123456789abcdef'; touch /tmp/pwned; '"},
        {"App": "0123456789abcdef0123"},
        {},
    ],
)
def test_keys_that_could_break_the_file_are_refused(keys: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        parse_api_keys(json.dumps(keys))


@pytest.mark.parametrize("bad", ["AKIA'$(id)'xx", "has space inside", "short"])
def test_credentials_that_could_break_the_file_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="AWS_"):
        render_secrets_env(KEYS, ["app"], bad, SECRET_KEY)
    with pytest.raises(ValueError, match="AWS_"):
        render_secrets_env(KEYS, ["app"], ACCESS_KEY, bad)


def test_shellcheck_start_script() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run([shellcheck, "-s", "sh", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
