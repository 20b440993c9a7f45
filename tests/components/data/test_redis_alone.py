"""Redis built alone, on a stub host: no stack file, no workers, no other component. Its own
container (user, mounts, uploads, published port, hardening), its password kept secret, the
config check before its first child, and its healthcheck run against a real redis-server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.data.redis import PASSWORD_PATH, Redis, RedisArgs, render_redis_conf
from stacks.config import RedisConfig
from tests.components.data.redis_server import RedisServer
from tests.components.data.redis_values import CACHE_REDIS, PASSWORD, PROD_REDIS
from tests.support.alone import assert_hardened, assert_only, children
from tests.support.stub_host import stub_host
from tests.support.tools import require_tool
from tools.synth import SECRET, Synth, run

HEALTH_TIMEOUT = 10


def build(cfg: RedisConfig, stack: str = "prod", publish_address: str | None = None) -> Synth:
    def program() -> None:
        Redis("redis", redis_args(cfg, stack, publish_address))

    return run(stack, {}, [], program)


def redis_args(cfg: RedisConfig, stack: str = "prod", publish_address: str | None = None) -> RedisArgs:
    return RedisArgs(
        config=cfg,
        host=stub_host(),
        password=pulumi.Output.secret(PASSWORD),
        stack=stack,
        publish_address=publish_address,
    )


def container(synth: Synth) -> dict[str, Any]:
    inputs: dict[str, Any] = synth.named("redis")["inputs"]
    return inputs


def test_redis_alone_is_its_container_and_its_volume_on_the_stub_host() -> None:
    synth = build(PROD_REDIS)
    assert_only(synth, "redis")
    assert {r["name"] for r in children(synth, "redis")} == {"redis", "redis-data"}
    assert_hardened(synth, writable={"redis"})
    redis = container(synth)
    assert "ports" not in redis or not redis["ports"]
    assert redis["user"] == "999:999"
    # Not read-only: the provider's uploads need a writable root (tests/components/test_uploads.py).
    assert not redis.get("readOnly")
    assert redis["command"] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    assert redis["mounts"] == [{"type": "volume", "source": "prod-redis-data", "target": "/data"}]
    assert redis["networksAdvanced"] == [{"name": "stub-workers", "aliases": ["redis"]}]
    assert not redis.get("envs")  # nothing (in particular no password) in the environment
    uploads = {u["file"]: u for u in redis["uploads"]}
    assert uploads["/usr/local/etc/redis/redis.conf"]["content"] == render_redis_conf(PROD_REDIS)
    assert uploads["/usr/local/etc/redis/redis.conf"]["permissions"] == "0444"
    for secret in ("/run/secrets/redis-acl.conf", PASSWORD_PATH):
        assert uploads[secret]["content"] == SECRET
        assert uploads[secret]["permissions"] == "0400" and uploads[secret]["owner"] == "999"
    assert synth.named("redis-data")["type"] == "docker:index/volume:Volume"
    assert "redis-data" in synth.retained


def test_it_publishes_only_on_the_address_it_is_given_and_a_pure_cache_keeps_to_memory() -> None:
    published = container(build(PROD_REDIS, publish_address="10.0.0.11"))
    assert published["ports"] == [{"internal": 6379, "external": 6379, "ip": "10.0.0.11"}]
    cache = build(CACHE_REDIS)
    assert [r["name"] for r in children(cache, "redis")] == ["redis"], "no volume without persistence"
    assert not container(cache).get("mounts")
    assert container(cache)["tmpfs"] == {"/data": f"rw,size={CACHE_REDIS.maxmemory_mb + 64}m,uid=999"}
    conf = next(u for u in container(cache)["uploads"] if u["file"] == "/usr/local/etc/redis/redis.conf")
    assert conf["content"] == render_redis_conf(CACHE_REDIS)


def test_its_password_url_and_secret_files_stay_secret() -> None:
    captured: dict[str, bool] = {}

    async def program() -> None:
        redis = Redis("redis", redis_args(PROD_REDIS))
        captured["password"] = await redis.password.is_secret()
        captured["url"] = await redis.url.is_secret()
        captured["url_at"] = await redis.url_at("10.0.0.11:6379").is_secret()

    synth = run("prod", {}, [], program)
    assert captured == {"password": True, "url": True, "url_at": True}
    assert PASSWORD not in json.dumps(synth.resources)
    uploads = {u["file"]: u["content"] for u in container(synth)["uploads"]}
    assert uploads["/run/secrets/redis-acl.conf"] == uploads[PASSWORD_PATH] == SECRET


def test_a_config_the_renderer_refuses_registers_no_child() -> None:
    def program() -> None:
        with pytest.raises(ValueError, match=r"redis\.maxmemoryPolicy is required"):
            Redis("redis", redis_args(PROD_REDIS.model_copy(update={"maxmemory_policy": None})))

    synth = run("prod", {}, [], program)
    assert children(synth, "redis") == []


def healthcheck_script(synth: Synth) -> str:
    test = container(synth)["healthcheck"]["tests"]
    assert test[0] == "CMD-SHELL" and len(test) == 2
    script: str = test[1]
    return script


@pytest.mark.parametrize("password_file", ["right", "wrong", "missing"])
def test_the_healthcheck_passes_only_with_the_right_password(
    prod_server: RedisServer, tmp_path: Path, password_file: str
) -> None:
    cli = require_tool("redis-cli")
    script = healthcheck_script(build(PROD_REDIS))
    assert script == f'REDISCLI_AUTH="$(cat {PASSWORD_PATH})" redis-cli ping | grep -q PONG'
    secret = tmp_path / "redis-password"
    if password_file != "missing":
        secret.write_text(PASSWORD if password_file == "right" else "not-the-redis-password-at-all")
    # Adapted: the password file's path, and host/port flags for this server.
    here = script.replace(PASSWORD_PATH, str(secret)).replace(
        "redis-cli ping", f"{cli} -h 127.0.0.1 -p {prod_server.port} ping"
    )
    result = subprocess.run(["sh", "-c", here], capture_output=True, text=True, timeout=HEALTH_TIMEOUT)
    assert (result.returncode == 0) == (password_file == "right"), result
    assert PASSWORD not in result.stdout + result.stderr
    if password_file == "wrong":
        # Why the grep: redis-cli itself exits 0 on a refused password.
        bare = subprocess.run(
            ["sh", "-c", here.removesuffix(" | grep -q PONG")], capture_output=True, text=True, timeout=HEALTH_TIMEOUT
        )
        assert bare.returncode == 0 and "PONG" not in bare.stdout, bare
