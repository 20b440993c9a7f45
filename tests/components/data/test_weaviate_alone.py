"""Weaviate built alone, on a stub host: no stack file, no other component. Its own container
(entrypoint, uploads, volume, healthcheck, no published port, hardening), its environment as
`weaviate_env` renders it, and its secret file as `render_secrets_env` renders it, never in
plaintext."""

from __future__ import annotations

import json
from typing import Any

import pulumi

from components.data import weaviate
from components.data.weaviate import Weaviate, WeaviateArgs, render_secrets_env, weaviate_env
from stacks.config import WeaviateConfig
from tests.components.data.test_weaviate import ACCESS_KEY, BACKUP, KEYS, SECRET_KEY
from tests.support.alone import assert_hardened, assert_only, children
from tests.support.stub_host import stub_host
from tools.synth import SECRET, Synth, run

CONFIG = WeaviateConfig.model_validate({"enabled": True, "backup": BACKUP})
USERS = list(KEYS)


def build(credentials: bool = True, reveal: bool = False) -> Synth:
    def program() -> None:
        Weaviate(
            "weaviate",
            WeaviateArgs(
                config=CONFIG,
                host=stub_host(),
                api_keys=pulumi.Output.secret(json.dumps(KEYS)),
                users=USERS,
                stack="prod",
                backup_access_key_id=pulumi.Output.secret(ACCESS_KEY) if credentials else None,
                backup_secret_access_key=pulumi.Output.secret(SECRET_KEY) if credentials else None,
            ),
        )

    return run("prod", {}, [], program, reveal=reveal)


def container(synth: Synth) -> dict[str, Any]:
    inputs: dict[str, Any] = synth.named("weaviate")["inputs"]
    return inputs


def test_weaviate_alone_is_its_container_and_its_volume_on_the_stub_host() -> None:
    synth = build()
    assert_only(synth, "weaviate")
    assert {r["name"] for r in children(synth, "weaviate")} == {"weaviate", "weaviate-data"}
    assert_hardened(synth, writable={"weaviate"})
    inputs = container(synth)
    assert not inputs.get("ports")
    assert inputs["entrypoints"] == ["/bin/sh", weaviate.START_PATH]
    assert "command" not in inputs  # so argv is the script's: `--host 0.0.0.0 --port 8080 --scheme http`
    uploads = {u["file"]: u for u in inputs["uploads"]}
    assert uploads[weaviate.START_PATH]["content"] == weaviate.START_SCRIPT.read_text()
    assert uploads[weaviate.SECRETS_PATH] == {
        "file": "/run/secrets/weaviate.env",
        "content": SECRET,
        "permissions": "0400",
    }
    # Readiness needs no key (answered before auth), and Alpine has busybox wget but no curl.
    assert inputs["healthcheck"]["tests"] == [
        "CMD",
        "wget",
        "-q",
        "--spider",
        "http://127.0.0.1:8080/v1/.well-known/ready",
    ]
    assert inputs["mounts"] == [{"type": "volume", "source": "prod-weaviate-data", "target": weaviate.DATA_PATH}]
    assert inputs["networksAdvanced"] == [{"name": "stub-workers", "aliases": ["weaviate"]}]
    assert synth.named("weaviate-data")["type"] == "docker:index/volume:Volume"
    assert "weaviate-data" in synth.retained


def test_its_environment_is_the_renderer_s_and_no_key_or_credential_is_in_plaintext() -> None:
    synth = build()
    env = dict(e.split("=", 1) for e in container(synth)["envs"])
    assert env == weaviate_env(CONFIG, USERS)
    for name in ("AUTHENTICATION_APIKEY_ALLOWED_KEYS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name not in env
    dump = json.dumps(synth.resources)
    assert "TOPSECRET" not in dump
    for value in (*KEYS.values(), ACCESS_KEY, SECRET_KEY):
        assert value not in dump


def test_its_secret_file_is_the_renderer_s_with_and_without_backup_credentials() -> None:
    for credentials, (access, secret) in ((True, (ACCESS_KEY, SECRET_KEY)), (False, (None, None))):
        revealed = build(credentials=credentials, reveal=True)
        uploads = {u["file"]: u["content"] for u in container(revealed)["uploads"]}
        assert uploads[weaviate.SECRETS_PATH] == render_secrets_env(KEYS, USERS, access, secret)
