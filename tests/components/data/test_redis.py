"""Redis: the generated config run by a real redis-server, and the container the stacks declare.

The server half runs Debian's `redis-server` (7.0; the image is 7.4, the directives used are all
7.0-era) on exactly the config `render_redis_conf` generates, with its own `data_dir`/`acl_file`
parameters pointed into a temp dir. Adapted for a test host, and nothing else (checked by
`test_only_port_and_bind_are_adapted`): `port` -> a free port, `bind 0.0.0.0 -::*` -> `bind
127.0.0.1`. The password reaches it only through the rendered ACL file, as in the container.

The synth half reads `Pulumi.prod.yaml` and small variants under Pulumi's mock runtime.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from components.data.redis import PASSWORD_PATH, render_acl, render_redis_conf
from composition.loader import load
from composition.platform import build_hosts, build_redis, redis_urls
from composition.platform import main as program
from stacks.config import RedisConfig
from tests.components.data.redis_server import ADAPTED, RedisServer, RespError, adapt_conf
from tests.components.data.redis_values import CACHE_REDIS, PASSWORD, PROD_REDIS
from tests.helpers import as_pulumi_config, valid_config
from tools.synth import Synth, run

CONTAINER = "docker:index/container:Container"


# --- the generated config, for real ---------------------------------------------------------------


def test_only_port_and_bind_are_adapted() -> None:
    assert PROD_REDIS.persistence == "aof" and PROD_REDIS.maxmemory_policy == "noeviction"
    shipped = render_redis_conf(PROD_REDIS).splitlines()
    for_test = adapt_conf(render_redis_conf(PROD_REDIS, data_dir="/tmp/x/data", acl_file="/tmp/x/acl"), 16379)
    changed = {a.split(" ", 1)[0] for a, b in zip(shipped, for_test.splitlines(), strict=True) if a != b}
    # `dir` and the ACL `include` are render_redis_conf's own parameters; `port`/`bind` are adapted.
    assert changed == ADAPTED | {"dir", "include"}
    assert "bind 0.0.0.0 -::*" in shipped and "port 6379" in shipped
    assert "protected-mode yes" in shipped and "include /run/secrets/redis-acl.conf" in shipped


def test_commands_need_auth_and_the_password_works(prod_server: RedisServer) -> None:
    with prod_server.client(authenticated=False) as anon:
        for command in (("PING",), ("GET", "k"), ("SET", "k", "v"), ("CONFIG", "GET", "*")):
            reply = anon.call(*command)
            assert isinstance(reply, RespError) and reply.code == "NOAUTH", (command, reply)
        assert anon.call("AUTH", PASSWORD) == "OK"
        assert anon.call("SET", "k", "v") == "OK" and anon.call("GET", "k") == "v"
    with prod_server.client(authenticated=False) as named:
        # `AUTH default <password>`, the form `redis://default:<password>@…` URLs send.
        assert named.call("AUTH", "default", PASSWORD) == "OK"
        assert named.call("PING") == "PONG"


def test_a_bad_password_is_refused(prod_server: RedisServer) -> None:
    with prod_server.client(authenticated=False) as client:
        for attempt in (("AUTH", PASSWORD[:-1] + "!"), ("AUTH", "default", "x" * 40), ("AUTH", "")):
            reply = client.call(*attempt)
            assert isinstance(reply, RespError) and reply.code == "WRONGPASS", (attempt, reply)
        reply = client.call("GET", "k")
        assert isinstance(reply, RespError) and reply.code == "NOAUTH"


def test_the_acl_file_holds_only_the_sha256(prod_server: RedisServer) -> None:
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    acl = prod_server.acl_file.read_text()
    assert acl == f"user default on #{digest} ~* &* +@all\n"
    assert PASSWORD not in acl and PASSWORD not in prod_server.conf_file.read_text()
    with prod_server.client() as client:
        (rule,) = client.call("ACL", "LIST")
    assert rule.startswith("user default on ") and f" #{digest} " in rule and PASSWORD not in rule
    assert PASSWORD not in prod_server.log()
    with pytest.raises(ValueError, match="at least 16"):
        render_acl("short-password")


def test_memory_settings_are_the_configured_ones(prod_server: RedisServer) -> None:
    with prod_server.client() as client:

        def get(name: str) -> str:
            reply = client.call("CONFIG", "GET", name)
            assert isinstance(reply, list) and reply[0] == name, reply
            value: str = reply[1]
            return value

        assert get("maxmemory-policy") == PROD_REDIS.maxmemory_policy == "noeviction"
        assert int(get("maxmemory")) == PROD_REDIS.maxmemory_mb * 1024 * 1024
        assert get("appendonly") == "yes" and get("appendfsync") == "everysec" and get("save") == ""
        assert get("protected-mode") == "yes"
        # The config forbids DEBUG and MODULE, so no client can load code or crash it on purpose.
        for command in (("DEBUG", "SLEEP", "0"), ("MODULE", "LOAD", "/nonexistent.so")):
            reply = client.call(*command)
            assert isinstance(reply, RespError) and "not allowed" in reply.message, (command, reply)


@pytest.mark.parametrize("policy", ["noeviction", "allkeys-lru"])
def test_the_policy_decides_what_happens_at_maxmemory(redis: Callable[..., RedisServer], policy: str) -> None:
    server = redis(CACHE_REDIS.model_copy(update={"maxmemory_mb": 16, "maxmemory_policy": policy}))
    server.start()
    value = "v" * 1024
    written, errors = 0, []
    with server.client() as client:
        for batch in range(40):  # up to 40 MiB into a 16 MiB Redis
            replies = client.pipeline([("SET", f"k{batch}:{i}", value) for i in range(1024)])
            written += sum(r == "OK" for r in replies)
            errors += [r for r in replies if isinstance(r, RespError)]
            if errors:
                break
        size = client.call("DBSIZE")
    if policy == "noeviction":
        # Application data: writes fail loudly at the limit, nothing already stored disappears.
        assert errors and errors[0].code == "OOM", errors[:1]
        assert size == written
    else:
        # A pure cache: writes keep succeeding and old keys make room.
        assert not errors and written == 40 * 1024
        assert 0 < size < written


def test_aof_keeps_what_was_written_a_second_before_kill_9(
    redis: Callable[..., RedisServer], record_property: Callable[[str, object], None]
) -> None:
    server = redis(PROD_REDIS)
    server.start()
    settled, recent = 5000, 0
    with server.client() as client:
        replies = client.pipeline([("SET", f"settled:{i}", f"value-{i}") for i in range(settled)])
        assert replies == ["OK"] * settled
        # `appendfsync everysec`: after a full second the batch is on disk, whatever happens next.
        time.sleep(1.2)
        # More writes right up to the crash, inside the last second; counted, not asserted. Redis
        # write()s the AOF before it replies, so a killed process usually loses none of them: the
        # one-second window is about fsync, i.e. an OS crash or power loss, which kill -9 is not.
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            replies = client.pipeline([("SET", f"recent:{recent + i}", "x") for i in range(200)])
            assert replies == ["OK"] * 200
            recent += 200
    last_ack = time.monotonic()
    server.kill9()
    since_ack = time.monotonic() - last_ack
    assert sorted(p.name for p in server.data_dir.iterdir()) == ["appendonlydir"]  # no RDB: `save ""`

    server.start()
    with server.client() as client:
        values = client.call("MGET", *[f"settled:{i}" for i in range(settled)])
        assert values == [f"value-{i}" for i in range(settled)]
        survived = client.call("EXISTS", *[f"recent:{i}" for i in range(recent)])
    assert "append only file" in server.log().lower()
    print(
        f"kill -9 {since_ack * 1000:.0f} ms after the last ack: {settled}/{settled} keys written 1.2 s "
        f"before survived; {survived}/{recent} written in the last 0.5 s survived"
    )
    record_property("settled_survived", f"{settled}/{settled}")
    record_property("recent_survived", f"{survived}/{recent}")


def test_without_persistence_nothing_touches_the_data_dir(redis: Callable[..., RedisServer]) -> None:
    server = redis(CACHE_REDIS)
    server.start()
    with server.client() as client:
        assert client.pipeline([("SET", f"k{i}", "v" * 100) for i in range(2000)]) == ["OK"] * 2000
        assert client.call("CONFIG", "GET", "appendonly") == ["appendonly", "no"]
        assert client.call("CONFIG", "GET", "maxmemory-policy") == ["maxmemory-policy", "allkeys-lru"]
    assert list(server.data_dir.iterdir()) == []
    server.shutdown()  # a clean stop, as `docker stop` does
    assert list(server.data_dir.iterdir()) == []

    server.start()
    with server.client() as client:
        assert client.call("DBSIZE") == 0
        client.pipeline([("SET", f"k{i}", "v") for i in range(100)])
    server.kill9()
    assert list(server.data_dir.iterdir()) == []


# --- the container the stacks declare --------------------------------------------------------------


def container(synth: Synth, name: str = "redis") -> dict[str, Any]:
    inputs: dict[str, Any] = synth.named(name)["inputs"]
    return inputs


def test_prod_hands_its_redis_block_to_redis_and_publishes_no_port(prod: Synth) -> None:
    # The container itself, built alone from the same block: tests/components/data/test_redis_alone.py.
    redis = container(prod)
    assert "ports" not in redis or not redis["ports"]
    uploads = {u["file"]: u for u in redis["uploads"]}
    assert uploads["/usr/local/etc/redis/redis.conf"]["content"] == render_redis_conf(PROD_REDIS)
    assert redis["mounts"] == [{"type": "volume", "source": "prod-redis-data", "target": "/data"}]


def offload_config(hosts: int) -> dict[str, Any]:
    values = valid_config()
    if hosts == 2:
        values["hosts"] = [
            {"name": "gpu-a", "gpus": {"count": 2}, "privateAddress": "10.0.0.11"},
            {"name": "gpu-b", "gpus": {"count": 2}, "privateAddress": "10.0.0.12"},
        ]
    values["redis"] = {"enabled": True, "kvCacheOffload": True, "maxmemoryPolicy": "allkeys-lru"}
    values["redisPassword"] = PASSWORD
    return values


def synth_offload(hosts: int) -> Synth:
    return run("test", as_pulumi_config(offload_config(hosts)), ["inference-stack:redisPassword"], program)


def test_kv_cache_offload_wires_lmcache_into_every_worker() -> None:
    synth = synth_offload(hosts=1)
    assert PASSWORD not in json.dumps(synth.resources)
    workers = [c for c in synth.of_type(CONTAINER) if c["parent"] == "chat"]
    assert len(workers) == 2
    for worker in workers:
        inputs = worker["inputs"]
        command = inputs["command"]
        transfer = json.loads(command[command.index("--kv-transfer-config") + 1])
        assert transfer == {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
        env = dict(e.split("=", 1) for e in inputs["envs"])
        assert env["LMCACHE_CONFIG_FILE"] == "/run/secrets/lmcache.yaml"
        assert env["LMCACHE_TRACK_USAGE"] == "false"
        assert not any("redis://" in e for e in inputs["envs"])
        uploads = {u["file"]: u for u in inputs["uploads"]}
        assert uploads["/run/secrets/lmcache.yaml"]["content"] == "[secret]"
    # Workers on the Redis host reach it over the container network: nothing is published.
    assert not container(synth).get("ports")
    assert container(synth)["uploads"][0]["content"] == render_redis_conf(
        RedisConfig.model_validate(offload_config(1)["redis"])
    )


def test_multi_host_offload_publishes_only_on_the_gateway_private_address() -> None:
    synth = synth_offload(hosts=2)
    assert PASSWORD not in json.dumps(synth.resources)
    assert container(synth)["ports"] == [{"internal": 6379, "external": 6379, "ip": "10.0.0.11"}]
    published = [c["name"] for c in synth.of_type(CONTAINER) if c["inputs"].get("ports")]
    assert "redis" in published
    for worker in (c for c in synth.of_type(CONTAINER) if c["parent"] == "chat"):
        assert {u["file"]: u["content"] for u in worker["inputs"]["uploads"]}["/run/secrets/lmcache.yaml"] == "[secret]"


@pytest.mark.parametrize("configured", [True, False], ids=["configured-password", "generated-password"])
def test_the_password_is_a_secret_output(configured: bool) -> None:
    values = offload_config(hosts=2)
    if not configured:
        del values["redisPassword"]
    captured: dict[str, Any] = {}

    async def build_platform() -> None:
        stack = load()
        hosts = build_hosts(stack)
        redis = build_redis(stack, hosts)
        assert redis is not None
        captured["password"] = await redis.password.is_secret()
        captured["url"] = await redis.url.is_secret()
        urls = redis_urls(stack, redis)
        captured["host_urls"] = {h: await u.is_secret() for h, u in urls.items()}
        # Where each host's workers find Redis (the password part cut off).
        captured["targets"] = {h: (await u.future() or "").rsplit("@", 1)[-1] for h, u in urls.items()}

    secret_keys = ["inference-stack:redisPassword"] if configured else []
    synth = run("test", as_pulumi_config(values), secret_keys, build_platform)
    assert captured == {
        "password": True,
        "url": True,
        "host_urls": {"gpu-a": True, "gpu-b": True},
        "targets": {"gpu-a": "test-redis:6379", "gpu-b": "10.0.0.11:6379"},
    }
    assert PASSWORD not in json.dumps(synth.resources)
    uploads = {u["file"]: u["content"] for u in container(synth)["uploads"]}
    assert uploads["/run/secrets/redis-acl.conf"] == uploads[PASSWORD_PATH] == "[secret]"
